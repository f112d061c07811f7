"""`syconn-ng downsample LAYER`: add downsampled scales to one precomputed volume layer (e.g. raw EM that lacks them)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import click

EXECUTORS = ("local", "dask", "slurm", "sge")


def _state_root(cloudpath: str, analysis, state: str | None) -> Path:
    """Where the done-markers go: --state, else the analysis' state/, else a hidden folder inside a local layer."""
    from syconn_ng.errors import SyconnError
    from syconn_ng.layers import local_dir

    if state:
        return Path(state)
    if analysis is not None:
        return analysis.state_dir
    d = local_dir(cloudpath)
    if d is None:
        raise SyconnError(f"{cloudpath} is not a local layer: give --state DIR (a local folder for the done-markers) or --analysis DIR")
    return d / ".syconn-ng-state"


@click.command()
@click.argument("layer")
@click.option("--analysis", "analysis_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="An analysis directory: LAYER may then be one of its layers by name (cells, barrier, ...; 'raw' = its raw EM), "
                   "and its [executor] and state/ are used.")
@click.option("--mips", type=click.IntRange(min=-1), default=-1, show_default=True,
              help="Scales to add below full resolution; -1 = until a scale fits in one chunk or is <= --min-size across.")
@click.option("--min-size", "min_size_vx", type=click.IntRange(min=1), default=64, show_default=True,
              help="No further scale once the largest side of a scale is at most this many voxels.")
@click.option("--executor", type=click.Choice(EXECUTORS), default=None, help="Where tasks run (default: [executor] kind, else local).")
@click.option("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786 (implies --executor dask).")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Worker processes (0 = all cores).")
@click.option("--state", default=None, metavar="DIR",
              help="Folder for the done-markers (default: the analysis' state/, else LAYER/.syconn-ng-state for a local layer).")
@click.option("--fill-missing", is_flag=True, help="Read missing chunks of LAYER as zeros instead of failing.")
@click.option("--force", is_flag=True, help="Rebuild every scale, also scales the layer already had.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def downsample(layer, analysis_dir, mips, min_size_vx, executor, scheduler, workers, state, fill_missing, force, quiet):
    """Add downsampled scales to LAYER (a precomputed path or URL, or a layer name of --analysis).

    Images are averaged, segmentations take the most frequent id (tinybrain). x and y are halved at
    each scale, z too once its voxel side is within sqrt(2) of x/y's. Work runs as tasks on the
    executor; a re-run skips finished blocks. A layer that already has scales is checked and left
    as it is unless --force.
    """
    from syconn_ng.analysis import Analysis
    from syconn_ng.config import Config
    from syconn_ng.downsample import DownsampleStage, DownsampleTarget, check_scales
    from syconn_ng.engine import make_executor, run_stage
    from syconn_ng.engine.state import StageState
    from syconn_ng.layers import open_layer, to_cloudpath

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    analysis = Analysis.open(analysis_dir) if analysis_dir else None
    if analysis is not None and "/" not in layer and "://" not in layer:
        path = analysis.raw_layer if layer == "raw" else analysis.layer_path(layer)
    else:
        path = to_cloudpath(layer)
    vol = open_layer(path)  # one clear error if it is not a layer
    check_scales(vol.info, vol.cloudpath)
    target = DownsampleTarget(analysis.config if analysis is not None else Config(), _state_root(vol.cloudpath, analysis, state))
    slug = Path(vol.cloudpath.rstrip("/")).name + "-" + hashlib.sha256(vol.cloudpath.encode()).hexdigest()[:8]
    stage = DownsampleStage(vol.cloudpath, max_mips=mips, min_size_vx=min_size_vx, fill_missing=fill_missing,
                            min_block=target.config.chunking.task_size, name=f"downsample-{slug}")
    known = (StageState(target.state_dir, stage.name, "").dir / "_params.json").exists()
    if len(vol.info["scales"]) > 1 and not known and not force:
        keys = ", ".join(s["key"] for s in vol.info["scales"])
        click.echo(f"{vol.cloudpath} already has {len(vol.info['scales'])} scales ({keys}), checked; --force rebuilds them")
        return
    if scheduler and not executor:
        executor = "dask"
    ex = make_executor(target.config, kind=executor, workers=workers, scheduler=scheduler)
    try:
        report = run_stage(stage, target, force=force, progress=not quiet, executor=ex)
    finally:
        ex.close()
    scales = open_layer(vol.cloudpath).info["scales"]
    click.echo(f"{vol.cloudpath}: {len(scales)} scales ({', '.join(s['key'] for s in scales)}); "
               f"{report.ran} task(s) run, {report.skipped} already done, {report.seconds:.1f} s")
