"""`syconn-ng run [ANALYSIS_DIR]`: run the pipeline's stages (or some of them) on an executor."""

from __future__ import annotations

import logging

import click

EXECUTORS = ("local", "dask", "slurm", "sge")


def _names(values) -> list[str]:
    """Repeatable options that also take comma-separated lists."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


@click.command()
@click.argument("analysis_dir", default=".", type=click.Path(exists=True, file_okay=False))
@click.option("--from", "start", metavar="STAGE", default=None, help="Start at this stage (earlier ones are taken as done).")
@click.option("--until", metavar="STAGE", default=None, help="Stop after this stage.")
@click.option("--only", multiple=True, metavar="STAGE", help="Run only this stage (repeatable, or comma-separated).")
@click.option("--force", "force", multiple=True, metavar="STAGE", help="Redo this stage from scratch; its dependants follow (repeatable).")
@click.option("--executor", type=click.Choice(EXECUTORS), default=None, help="Where tasks run (default: [executor] kind).")
@click.option("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786 (implies --executor dask).")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Worker processes (0 = all cores).")
@click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default=None,
              help="CNN device; saved as [cnn] device in syconn.toml.")
@click.option("--oracle", default=None, metavar="LAYERS",
              help="Feed ground-truth layers instead of CNN outputs: 'barrier,organelles' (from the synthetic tissue's "
                   "truth/), 'barrier=PATH', or 'none'; saved as [oracle] in syconn.toml.")
@click.option("--status", is_flag=True, help="Show which stages are done and their provenance; run nothing.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--verbose", is_flag=True, help="Log every task.")
def run(analysis_dir, start, until, only, force, executor, scheduler, workers, device, oracle, status, quiet, verbose):
    """Run the stages of ANALYSIS_DIR in pipeline order; finished work is skipped, so a re-run resumes.

    Inputs are checked before any work starts. Each finished stage records its provenance in
    state/<stage>/provenance.json. A stage whose parameters (or an upstream stage) changed is redone.
    """
    from syconn_ng.analysis import Analysis
    from syconn_ng.engine import make_executor
    from syconn_ng.pipeline import apply_overrides, run_pipeline, select_stages, summary_lines

    logging.basicConfig(level=logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO), format="%(message)s")
    analysis = Analysis.open(analysis_dir)
    if status:
        for line in status_lines(analysis):
            click.echo(line)
        return
    names = select_stages(only=_names(only), start=start, until=until)
    force = _names(force)
    analysis, changed = apply_overrides(analysis, oracle=oracle, device=device)
    for change in changed:
        click.echo(f"syconn.toml: {change}")
    if scheduler and not executor:
        executor = "dask"
    ex = make_executor(analysis.config, kind=executor, workers=workers, scheduler=scheduler)
    try:
        summary = run_pipeline(analysis, names, force=force, executor=ex, progress=not quiet, echo=click.echo)
    finally:
        ex.close()
    for line in summary_lines(summary):
        click.echo(line)


def status_lines(analysis) -> list[str]:
    """Per registered stage: done (with its provenance) or not."""
    from syconn_ng.engine.driver import STAGE_DONE
    from syconn_ng.provenance import format_provenance, read_provenance
    from syconn_ng.stages import available

    lines = []
    for name in available():
        done = (analysis.state_dir / name / f"{STAGE_DONE}.json").exists()
        lines.append(f"{name}: {'done' if done else 'not run'}")
        record = read_provenance(analysis, name) if done else None
        if record:
            lines += format_provenance(record)
    return lines
