"""The `syconn-ng` command: a click group whose subcommands live in `syconn_ng.commands`.

Subcommands are imported only when called, so `syconn-ng --help` stays fast although the
pipeline imports torch and CloudVolume.
"""

from __future__ import annotations

import importlib
import sys

import click

from syconn_ng import __version__
from syconn_ng.errors import SyconnError

# name -> (module, attribute, one-line help shown by `syconn-ng --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "synth": ("syconn_ng.commands.synth", "synth", "Generate a synthetic EM tissue with complete ground truth."),
    "example": ("syconn_ng.commands.example", "example", "Synthetic tissue through the whole pipeline: accuracy table and report.html."),
    "init": ("syconn_ng.commands.init", "init", "Start an analysis directory with a commented syconn.toml."),
    "run": ("syconn_ng.commands.run", "run", "Run the pipeline's stages (resumable; local process pool or Dask)."),
    "evaluate": ("syconn_ng.commands.evaluate", "evaluate", "Score an analysis against synthetic ground truth (table or --json)."),
    "info": ("syconn_ng.commands.info", "info", "Summarise an annotation file or a precomputed layer (and check its shard files)."),
    "train": ("syconn_ng.commands.train", "train", "Train models: `train cnn` (U-Nets), `train compartments|spines|celltypes|synapses` (forests)."),
    "convert": ("syconn_ng.commands.convert", "convert", "Convert between .nml, .k.zip and .swc."),
    "export": ("syconn_ng.commands.export", "export", "Export an analysis as precomputed layers + Neuroglancer state to share."),
    "downsample": ("syconn_ng.commands.downsample", "downsample", "Add downsampled scales to a precomputed layer (tinybrain; resumable tasks)."),
    "bench": ("syconn_ng.commands.bench", "bench", "Time the whole pipeline on synthetic tissue per stage (table, JSON, scaling plot)."),
    "serve": ("syconn_ng.commands.serve", "serve", "Review in the browser: Neuroglancer beside a live wiring matrix, JSON API."),
    "import-knossos": (
        "syconn_ng.commands.import_knossos",
        "import_knossos",
        "Convert a KNOSSOS dataset (cubes) into precomputed layers.",
    ),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="syconn-ng")
def cli():
    """syconn-ng: from raw volume EM and KNOSSOS skeletons to a reviewed synaptic wiring diagram."""


def main(argv=None):
    """Entry point: run the CLI; a SyconnError becomes one line on stderr and exit status 2."""
    try:
        cli.main(args=argv, prog_name="syconn-ng", standalone_mode=False)
    except SyconnError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
