"""Accuracy of an analysis against synthetic ground truth: one module per stage, one table, one JSON object.

Each module `syconn_ng.evaluation.<name>` exposes ``evaluate(analysis_dir: Path, truth_dir: Path) -> dict``:
`analysis_dir` is the analysis (holding `syconn.toml`, `layers/`, `tables/`); `truth_dir` is the
folder `syconn-ng synth` made, the one HOLDING `truth/` (read `truth_dir / "truth" / "nodes.csv"`).
It returns plain JSON-able nested dicts, floats rounded to 4 decimals, or ``{"skipped": "<why>"}``
when the stage's outputs are missing. Only evaluation ever reads `truth/`; the pipeline never does.
"""

from __future__ import annotations

import importlib
import math
import warnings
from pathlib import Path

from syconn_ng.errors import InputError

# stage order of the table; a module that does not exist yet is reported as skipped
MODULES = ("organelles", "myelin", "hulls", "compartments", "synapses", "celltypes", "connectome")


def truth_root(path) -> Path:
    """The synthetic tissue folder holding `truth/`, given that folder or its `truth/` subfolder."""
    p = Path(path).resolve()
    if (p / "truth" / "cells.csv").is_file():
        return p
    if (p / "cells.csv").is_file() and p.name == "truth":
        return p.parent
    raise InputError(p, "not a synthetic ground-truth folder (expected truth/cells.csv in it; make one with `syconn-ng synth`)")


def evaluate_analysis(analysis_dir, truth_dir, *, modules=MODULES) -> dict:
    """Every module's scores: {stage: dict}. A module that fails reports {"error": "..."} instead of hiding the rest."""
    analysis_dir = Path(analysis_dir).resolve()
    if not (analysis_dir / "syconn.toml").is_file():
        raise InputError(analysis_dir, "not an analysis directory (no syconn.toml)")
    gt = truth_root(truth_dir)
    out = {}
    for name in modules:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            out[name] = {"skipped": "no evaluation for this stage yet"}
            continue
        try:
            with warnings.catch_warnings():  # e.g. sklearn on classes absent from a small tissue: the numbers say it
                warnings.simplefilter("ignore")
                out[name] = module.evaluate(analysis_dir, gt)
        except InputError:
            raise
        except Exception as err:  # one broken scorer must not hide the other stages' numbers
            out[name] = {"error": f"{type(err).__name__}: {err}"}
    return out


def rounded(value, digits: int = 4):
    """`value` with every float rounded (NaN → None), numpy scalars as Python numbers, keys as strings."""
    if isinstance(value, dict):
        return {str(k): rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, digits)
    return value


def flat_rows(prefix: str, value, depth: int):
    """(dotted key, scalar) pairs of a nested dict, at most `depth` levels deep; lists are left out."""
    if isinstance(value, dict):
        if depth == 0:
            return
        for k, v in value.items():
            yield from flat_rows(f"{prefix}.{k}" if prefix else str(k), v, depth - 1)
    elif not isinstance(value, (list, tuple)):
        yield prefix, value


# long breakdowns that stay in the JSON but would drown the table
TABLE_SKIP = ("confusion",)


def format_table(scores: dict, *, depth: int = 3) -> str:
    """The scores as an aligned text table: stage, metric, value (nested keys joined by dots; confusion matrices left out)."""
    lines = []
    scores = {stage: {k: v for k, v in result.items() if k not in TABLE_SKIP} for stage, result in scores.items()}
    for stage, result in scores.items():
        if "skipped" in result or "error" in result:
            lines.append((stage, "skipped" if "skipped" in result else "ERROR", str(result.get("skipped", result.get("error")))))
            continue
        for key, value in flat_rows("", result, depth):
            text = f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))
            lines.append((stage, key, text))
    w0 = max([len(r[0]) for r in lines] + [5])
    w1 = max([len(r[1]) for r in lines] + [6])
    out = [f"{'stage':{w0}}  {'metric':{w1}}  value", f"{'-' * w0}  {'-' * w1}  -----"]
    last = None
    for stage, key, text in lines:
        out.append(f"{stage if stage != last else '':{w0}}  {key:{w1}}  {text}")
        last = stage
    return "\n".join(out)
