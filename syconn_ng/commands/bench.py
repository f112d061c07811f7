"""`syconn-ng bench`: the whole pipeline on synthetic tissue of given sizes, timed per stage (table + JSON)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click

from syconn_ng.commands.synth import _triple

DEFAULT_SHAPES = ((128, 128, 64), (256, 256, 128))


def _shapes(ctx, param, values):
    parse = _triple(int)
    return tuple(parse(ctx, param, v) for v in values) or DEFAULT_SHAPES


@click.command("bench")
@click.option("--shape", "shapes", multiple=True, callback=_shapes, metavar="X,Y,Z",
              help="Volume size in voxels (repeatable; default 128,128,64 and 256,256,128).")
@click.option("--oracle", is_flag=True, help="Feed the true barrier and organelle layers instead of running the CNNs.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Worker processes (0 = all cores).")
@click.option("--seed", type=int, default=None, help="Tissue seed (default 3, an evaluation seed).")
@click.option("--executor", type=click.Choice(("local", "dask")), default="local", show_default=True,
              help="local: a process pool per stage; dask: a distributed.LocalCluster per stage (scheduler and workers on 127.0.0.1).")
@click.option("--task-size", default="128,128,128", show_default=True, callback=_triple(int), help="Voxels per volume task.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write all results into this one file (default: benchmarks/results/<date>_<shape>.json per shape).")
@click.option("--out-dir", default="benchmarks/results", show_default=True, type=click.Path(file_okay=False),
              help="Folder of the per-shape result files (and of the results --report reads).")
@click.option("--workdir", default=None, type=click.Path(file_okay=False), help="Keep the tissues here (default: a temporary folder, removed).")
@click.option("--report", is_flag=True, help="Run nothing: read --out-dir's results, print Markdown tables, write --plot.")
@click.option("--profile", default=None, metavar="STAGE", help="After each shape, redo STAGE in one process under cProfile and print its hot spots.")
@click.option("--plot", default=None, type=click.Path(dir_okay=False), help="Scaling plot of the results (e.g. docs/img/scaling.png).")
def bench(shapes, oracle, workers, seed, executor, task_size, json_out, out_dir, workdir, report, profile, plot):
    """Generate synthetic tissue of each --shape, run every pipeline stage on it (each on a fresh process pool) and
    print per stage: wall time, Mvox/s per core, CPU seconds, peak RSS per worker (and an idle worker's); for the
    whole pipeline Gvox/h per core with and without the CNNs, against SyConn2's published rates. JSON results carry
    the machine (CPU, cores, RAM, torch, load average).
    """
    import json
    import os

    from syconn_ng.bench import (BENCH_SEED, load_results, markdown_tables, plot_scaling, profile_lines, result_path,
                                 save_result, summary_lines)
    from syconn_ng.layers import atomic_write_text

    if report:
        results = load_results(Path(out_dir).glob("*.json"))
        if not results:
            raise click.ClickException(f"no pipeline results in {out_dir}")
        click.echo(markdown_tables(results))
        if plot:
            click.echo(f"plot: {plot_scaling(results, Path(plot))}")
        return

    from syconn_ng.bench import bench_shape

    workers = workers or os.cpu_count() or 1
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="syconn_bench_"))
    results = []
    try:
        for shape in shapes:
            tissue = root / f"{'x'.join(map(str, shape))}{'_oracle' if oracle else ''}{'_dask' if executor == 'dask' else ''}"
            shutil.rmtree(tissue, ignore_errors=True)
            result = bench_shape(shape, workdir=tissue, workers=workers, oracle=oracle,
                                 seed=BENCH_SEED if seed is None else seed, task_size=task_size, profile=profile,
                                 executor=executor, echo=click.echo)
            results.append(result)
            for line in summary_lines(result) + (profile_lines(result["profile"]) if profile else []):
                click.echo(line)
            if not json_out:
                click.echo(f"results: {save_result(result, result_path(Path(out_dir), result))}")
    finally:
        if not workdir:
            shutil.rmtree(root, ignore_errors=True)
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(json_out), json.dumps(results, indent=1) + "\n")
        click.echo(f"results: {json_out}")
    if plot:
        click.echo(f"plot: {plot_scaling(results, Path(plot))}")
