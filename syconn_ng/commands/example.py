"""`syconn-ng example [DIR]`: synthetic tissue → the whole pipeline with the bundled models → accuracy table and report.html."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import click

from syconn_ng.commands.synth import _triple, summary_lines

# seed 2 is kept for evaluation reports: no bundled model was trained on it
EXAMPLE_SEED = 2
OUTPUTS = ("layers", "tables", "state", "scratch", "report.html")


def _same_tissue(out: Path, seed: int, shape) -> bool:
    """True if `out` already holds the complete synthetic tissue of this seed and shape (a re-run then resumes)."""
    try:
        stats = json.loads((out / "truth" / "stats.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return (out / ".example_tissue").exists() and stats.get("seed") == seed and list(stats.get("shape_vx", [])) == list(shape)


@click.command("example")
@click.argument("directory", default="example_analysis", type=click.Path(file_okay=False))
@click.option("--seed", default=EXAMPLE_SEED, show_default=True, type=click.IntRange(min=0), help="Random seed of the tissue.")
@click.option("--shape", default="256,256,128", show_default=True, callback=_triple(int), help="Volume size in voxels X,Y,Z.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Worker processes (0 = all cores).")
@click.option("--oracle", default=None, metavar="LAYERS", help="Use true layers instead of the CNNs, e.g. 'barrier,organelles'.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def example(directory, seed, shape, workers, oracle, quiet):
    """Make a synthetic tissue in DIRECTORY, run the whole pipeline on it with the bundled models (CNNs included),
    print the accuracy of every stage against the tissue's ground truth, and write DIRECTORY/report.html.

    Running it again in the same DIRECTORY resumes (finished stages are kept).
    """
    from syconn_ng.analysis import Analysis
    from syconn_ng.config import load_config, write_config
    from syconn_ng.engine import make_executor
    from syconn_ng.evaluation import evaluate_analysis, format_table
    from syconn_ng.pipeline import apply_overrides, review_lines, run_pipeline, select_stages
    from syconn_ng.pipeline import summary_lines as run_summary_lines
    from syconn_ng.report import write_report
    from syconn_ng.synth.generate import generate_tissue

    t0 = time.perf_counter()
    out = Path(directory)
    if _same_tissue(out, seed, shape):
        click.echo(f"{out}: the tissue (seed {seed}) is already there; resuming the pipeline")
    else:
        click.echo(f"generating a synthetic tissue into {out} (seed {seed}, {'x'.join(map(str, shape))} voxels) ...")
        stats = generate_tissue(out, shape=shape, seed=seed, progress=not quiet)
        for name in OUTPUTS:  # results of another tissue in this folder are stale
            p = out / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        # the tissue is one volume task: the CNN stages use every core in that task (smaller tasks measured slower,
        # tiles at task borders being predicted twice)
        cfg = load_config(out)
        cfg.cnn.threads = os.cpu_count() or 1
        write_config(cfg, out)
        (out / ".example_tissue").write_text("complete\n")
        for line in summary_lines(stats):
            click.echo(line)
    analysis, changed = apply_overrides(Analysis(out), oracle=oracle if oracle is not None else "none")
    for change in changed:
        click.echo(f"syconn.toml: {change}")
    executor = make_executor(analysis.config, workers=workers)
    try:
        summary = run_pipeline(analysis, select_stages(), executor=executor, progress=not quiet, echo=click.echo)
    finally:
        executor.close()
    for line in run_summary_lines(summary, review=False):
        click.echo(line)
    scores = evaluate_analysis(analysis.root, analysis.root)
    click.echo("\naccuracy against the tissue's ground truth (the pipeline never read truth/):")
    click.echo(format_table(scores))
    report = write_report(analysis, analysis.root / "report.html", scores=scores, summary=summary,
                          title=f"syconn_ng example: synthetic tissue, seed {seed}")
    click.echo(f"\nreport: {report}")
    for line in review_lines(analysis.root):
        click.echo(line)
    click.echo(f"example finished in {time.perf_counter() - t0:.0f} s")
