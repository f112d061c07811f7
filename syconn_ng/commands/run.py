"""`syconn-ng run ANALYSIS_DIR`: run the pipeline's stages (or some of them) on an executor."""

from __future__ import annotations

import logging

import click

EXECUTORS = ("local", "dask", "slurm", "sge")


@click.command()
@click.argument("analysis_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--only", multiple=True, metavar="STAGE", help="Run only this stage (repeatable).")
@click.option("--force", "force", multiple=True, metavar="STAGE", help="Redo this stage from scratch (repeatable).")
@click.option("--executor", type=click.Choice(EXECUTORS), default=None, help="Where tasks run (default: [executor] kind).")
@click.option("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Worker processes (0 = all cores).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--verbose", is_flag=True, help="Log every task.")
def run(analysis_dir, only, force, executor, scheduler, workers, quiet, verbose):
    """Run the stages of ANALYSIS_DIR in pipeline order; finished tasks are skipped, so a re-run resumes."""
    from syconn_ng.analysis import Analysis
    from syconn_ng.engine import make_executor, run_stage
    from syconn_ng.stages import available, get_stage

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")
    analysis = Analysis.open(analysis_dir)
    names = list(only) or available()
    stages = [get_stage(n) for n in names]  # unknown names fail before any work
    for name in force:
        get_stage(name)
    ex = make_executor(analysis.config, kind=executor, workers=workers, scheduler=scheduler)
    try:
        for stage in stages:
            report = run_stage(stage, analysis, force=stage.name in force, progress=not quiet, executor=ex)
            click.echo(f"{stage.name}: {report.ran} task(s) run, {report.skipped} already done, "
                       f"{report.seconds:.1f} s, {report.voxels / max(report.seconds, 1e-9) / 1e6:.1f} Mvox/s")
    finally:
        ex.close()
