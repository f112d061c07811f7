"""The whole pipeline: choose stages, check inputs, run them in order (skipping finished work), record
provenance, summarise. Used by `syconn-ng run`, `syconn-ng example` and `Analysis.run`."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from syconn_ng.errors import SyconnError
from syconn_ng.layers import to_cloudpath

ORACLE_LAYERS = ("barrier", "organelles", "myelin")
log = logging.getLogger("syconn_ng")


def select_stages(*, only=(), start: str | None = None, until: str | None = None) -> list[str]:
    """Registered stage names in pipeline order: `only` (any order given), else from `start` to `until` inclusive."""
    from syconn_ng.stages import available, get_stage

    names = available()
    for n in list(only) + [s for s in (start, until) if s]:
        get_stage(n)  # unknown or not registered: one clear error before any work
    if only:
        if start or until:
            raise SyconnError("--only cannot be combined with --from / --until")
        return [n for n in names if n in set(only)]
    lo = names.index(start) if start else 0
    hi = names.index(until) + 1 if until else len(names)
    if lo >= hi:
        raise SyconnError(f"--from {start} comes after --until {until} in the pipeline ({', '.join(names)})")
    return names[lo:hi]


def parse_oracle(text: str, analysis_root: Path, raw_path: str) -> dict[str, str]:
    """`--oracle` → {layer: path}: 'barrier,organelles' (the synthetic tissue's `truth/<layer>`), 'barrier=PATH', 'none'.

    A bare name is looked up as `truth/<name>` in the analysis directory, then beside the raw layer.
    'none' (or '') clears every oracle layer.
    """
    out = {name: "" for name in ORACLE_LAYERS}
    if text.strip().lower() in ("", "none"):
        return out
    for item in (s.strip() for s in text.split(",") if s.strip()):
        name, _, path = item.partition("=")
        name = name.strip()
        if name not in ORACLE_LAYERS:
            raise SyconnError(f"--oracle: unknown layer {name!r} (expected {', '.join(ORACLE_LAYERS)}, NAME=PATH or 'none')")
        if not path:
            candidates = [analysis_root / "truth" / name]
            if "://" not in raw_path or raw_path.startswith("file://"):
                candidates.append(Path(raw_path.removeprefix("file://")).parent / "truth" / name)
            found = [c for c in candidates if (c / "info").is_file()]
            if not found:
                raise SyconnError(f"--oracle {name}: no ground-truth layer at {' or '.join(map(str, candidates))} "
                                  f"(give one as {name}=PATH)")
            path = str(found[0].relative_to(analysis_root)) if found[0].is_relative_to(analysis_root) else str(found[0])
        out[name] = path.strip()
    return out


def apply_overrides(analysis, *, oracle: str | None = None, device: str | None = None):
    """Options that change results are saved into `syconn.toml` (so it always describes the outputs and a plain
    re-run resumes); returns the re-opened Analysis and the changed keys as 'section.key = value' strings."""
    from syconn_ng.config import config_from_dict, write_config

    cfg = analysis.config
    changes = {}
    if oracle is not None:
        for name, path in parse_oracle(oracle, analysis.root, analysis.raw_layer).items():
            if getattr(cfg.oracle, name) != path:
                changes[("oracle", name)] = path
    if device is not None and cfg.cnn.device != device:
        changes[("cnn", "device")] = device
    if not changes:
        return analysis, []
    data = {s: dict(cfg.section_params(s)) for s in cfg.__dataclass_fields__}
    for (section, key), value in changes.items():
        data[section][key] = value
    new = config_from_dict(data, analysis.root / "syconn.toml")  # validated before it is written
    write_config(new, analysis.root)
    return type(analysis).open(analysis.root), [f"{s}.{k} = {v!r}" for (s, k), v in changes.items()]


@dataclass
class RunSummary:
    """What a pipeline run did: per stage (ran, skipped, seconds) and the counts of its results."""

    root: Path
    stages: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict:
        """Cells, synapses and connected pairs, from whichever tables exist."""
        import pandas as pd

        tables = self.root / "tables"
        out = {}
        if (tables / "cells.csv").is_file():
            out["cells"] = len(pd.read_csv(tables / "cells.csv", usecols=["id"]))
        elif (tables / "nodes.csv").is_file():
            out["cells"] = int(pd.read_csv(tables / "nodes.csv", usecols=["cell"]).cell.nunique())
        if (tables / "synapses.csv").is_file():
            syn = pd.read_csv(tables / "synapses.csv", usecols=["pre_cell", "post_cell"])
            out["synapses"] = len(syn)
            out["connected_pairs"] = len(syn.drop_duplicates())
        return out


def run_pipeline(analysis, names: list[str], *, force=(), executor=None, progress: bool = True,
                 echo: Callable[[str], None] | None = None) -> RunSummary:
    """Run the stages `names` in order on `executor` (one is made from the config if None, closed at the end).

    Inputs are checked before any work; each stage's provenance is written when it finished.
    Raises StageError (after the failing stage's other tasks ran) on the first stage with failures.
    """
    from syconn_ng.engine.state import analysis_lock
    from syconn_ng.preflight import check_inputs
    from syconn_ng.stages import get_stage

    stages = [get_stage(n) for n in names]
    for n in force:
        get_stage(n)
        if n not in names:
            raise SyconnError(f"--force {n}: {n!r} is not among the stages this run selects ({', '.join(names)}); "
                              f"add it with --only/--from, or leave --force out")
    check_inputs(analysis, stages)
    with analysis_lock(analysis.state_dir, "this run"):
        return _run_stages(analysis, stages, force, executor, progress, echo)


def _run_stages(analysis, stages, force, executor, progress, echo) -> RunSummary:
    from syconn_ng.engine import make_executor, run_stage
    from syconn_ng.provenance import PROVENANCE, write_provenance

    own = executor is None
    executor = make_executor(analysis.config) if own else executor
    summary = RunSummary(analysis.root)
    t0 = time.perf_counter()
    said = set()
    try:
        for stage in stages:
            for key, note in getattr(stage, "notes", lambda a: {})(analysis).items():
                if key not in said:  # once per run, whichever stage notices it first
                    said.add(key)
                    (echo or log.warning)(f"note: {note}")
            report = run_stage(stage, analysis, force=stage.name in force, progress=progress, executor=executor)
            if report.ran or not (analysis.state_dir / stage.name / PROVENANCE).exists():
                write_provenance(stage, analysis)
            summary.stages.append({"stage": stage.name, "ran": report.ran, "skipped": report.skipped, "seconds": report.seconds})
            if echo:
                echo(f"{stage.name}: {report.ran} task(s) run, {report.skipped} already done, {report.seconds:.1f} s")
    finally:
        summary.seconds = time.perf_counter() - t0
        if own:
            executor.close()
    return summary


def review_lines(root: Path) -> list[str]:
    """How to look at the results: `syconn-ng serve DIR` once that command exists, else the layers' Neuroglancer sources."""
    from syconn_ng.cli import COMMANDS

    if "serve" in COMMANDS:
        return [f"review: syconn-ng serve {root}"]
    layers = sorted(p for p in (root / "layers").glob("*") if (p / "info").is_file())
    return ["layers (Neuroglancer precomputed; serve them over HTTP with CORS and add precomputed://http://HOST/<name>):"] + [
        f"  {p.name:12s} {to_cloudpath(p)}" for p in layers]


def summary_lines(summary: RunSummary, *, review: bool = True) -> list[str]:
    """The final summary of a run: per-stage times, counts, where the outputs are, how to review (if `review`)."""
    lines = [f"{'stage':14s} {'ran':>5s} {'skipped':>8s} {'seconds':>8s}"]
    for s in summary.stages:
        lines.append(f"{s['stage']:14s} {s['ran']:5d} {s['skipped']:8d} {s['seconds']:8.1f}")
    lines.append(f"{'total':14s} {'':5s} {'':8s} {summary.seconds:8.1f}")
    counts = summary.counts()
    if counts:
        lines.append(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()))
    lines.append(f"outputs: layers in {summary.root / 'layers'}, tables in {summary.root / 'tables'}, "
                 f"provenance in {summary.root / 'state'}/<stage>/provenance.json")
    return lines + (review_lines(summary.root) if review else [])
