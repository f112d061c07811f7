"""`syconn-ng evaluate ANALYSIS_DIR --truth GT_DIR [--json]`: accuracy of every finished stage against synthetic truth."""

from __future__ import annotations

import json

import click


@click.command("evaluate")
@click.argument("analysis_dir", default=".", type=click.Path(exists=True, file_okay=False))
@click.option("--truth", "truth_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A folder made by `syconn-ng synth` (holding truth/), or its truth/ folder.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (stage → scores) instead of the table.")
def evaluate(analysis_dir, truth_dir, as_json):
    """Score ANALYSIS_DIR against the ground truth in GT_DIR: organelle objects, hulls and mapping, compartments,
    synapses, cell types and the wiring matrix; stages without outputs are listed as skipped."""
    from syconn_ng.evaluation import evaluate_analysis, format_table

    scores = evaluate_analysis(analysis_dir, truth_dir)
    click.echo(json.dumps(scores, indent=None if as_json else 1) if as_json else format_table(scores))
    failed = [name for name, result in scores.items() if "error" in result]
    if failed:
        raise click.ClickException(f"scoring failed for: {', '.join(failed)}")
