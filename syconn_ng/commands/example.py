"""`syconn-ng example [DIR]`: make a small synthetic tissue and say what is in it and where."""

from __future__ import annotations

from pathlib import Path

import click

from syconn_ng.commands.synth import _triple, summary_lines
from syconn_ng.layers import to_cloudpath


@click.command("example")
@click.argument("directory", default="example_analysis", type=click.Path(file_okay=False))
@click.option("--seed", default=1, show_default=True, type=click.IntRange(min=0), help="Random seed of the tissue.")
@click.option("--shape", default="256,256,128", show_default=True, callback=_triple(int), help="Volume size in voxels X,Y,Z.")
def example(directory, seed, shape):
    """Generate a small synthetic tissue (256 x 256 x 128 voxels) into DIRECTORY and summarise it."""
    from syconn_ng.synth.generate import LAYERS, generate_tissue

    out = Path(directory)
    click.echo(f"generating a synthetic tissue into {out} ...")
    stats = generate_tissue(out, shape=shape, seed=seed, progress=True)
    for line in summary_lines(stats):
        click.echo(line)
    click.echo("layers (Neuroglancer sources):")
    for name in LAYERS:
        click.echo(f"  {name:18s} precomputed://{to_cloudpath(out / name)}")
    click.echo(f"skeletons: {out / 'skeletons'} (plain), {out / 'skeletons_labelled'} (compartment comments)")
    click.echo(f"truth tables: {out / 'truth'}; analysis config: {out / 'syconn.toml'}")
