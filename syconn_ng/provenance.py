"""Provenance: what made a stage's outputs — its config section, model files (sha256), code version, inputs.

Written by the pipeline after a stage finishes to `state/<stage>/provenance.json` (indented
JSON, readable as is, and printed by `syconn-ng run DIR --status`). The parameter hash that
decides whether a stage must re-run is the driver's (`state/<stage>/_params.json`); this file
says in words what went into it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import time
from pathlib import Path

from syconn_ng.layers import atomic_write_text

PROVENANCE = "provenance.json"
MODELS_DIR = Path(__file__).parent / "models"
# the config section of a stage, where it is not named like the stage
SECTIONS = {"barrier": "cnn", "organelles": "cnn", "myelin_syntype": "cnn"}


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """The package version and, in a git checkout, `git describe --always --dirty`."""
    from syconn_ng import __version__

    git = None
    repo = Path(__file__).resolve().parent.parent
    if (repo / ".git").exists():
        try:
            git = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty", "--tags"], capture_output=True,
                                 text=True, timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            git = None
    return {"package": __version__, "git": git}


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


MODEL_SUFFIXES = (".pt", ".skops")


def _files_in(value, found: list) -> list:
    """Every existing model file named inside a nested parameter dict (as a value or as a key), without repeats."""
    items = []
    if isinstance(value, dict):
        items = list(value.keys()) + list(value.values())
    elif isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str) and value.endswith(MODEL_SUFFIXES) and Path(value).is_file() and Path(value) not in found:
        found.append(Path(value))
    for v in items:
        _files_in(v, found)
    return found


def model_files(stage, analysis, params: dict) -> list[Path]:
    """The model files a stage uses: `stage.model_files(analysis)` if it says, `stage.model_path(analysis)` (the
    CNN stages), and every .pt / .skops file its parameters name."""
    if getattr(analysis.config.oracle, stage.name, ""):
        return []
    if hasattr(stage, "model_files"):
        return [Path(p) for p in stage.model_files(analysis)]
    found = [Path(stage.model_path(analysis))] if hasattr(stage, "model_path") else []
    return _files_in(params, found)


def _layers_in(value, found: list) -> list:
    """Every layer path (a string with '://') inside a nested parameter dict, in order, without repeats."""
    if isinstance(value, dict):
        for v in value.values():
            _layers_in(v, found)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _layers_in(v, found)
    elif isinstance(value, str) and "://" in value and value not in found:
        found.append(value)
    return found


def _model_record(path: Path) -> dict:
    record = {"path": str(path), "sha256": file_sha256(path) if path.is_file() else None,
              "bytes": path.stat().st_size if path.is_file() else None, "bundled": path.parent == MODELS_DIR}
    meta = path.with_suffix(".json")
    if meta.is_file() and meta != path:
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            record["trained_on"] = info.get("training", {}).get("data") if isinstance(info.get("training"), dict) else info.get("training_data")
        except json.JSONDecodeError:
            pass
    return record


def stage_provenance(stage, analysis, *, params: dict | None = None) -> dict:
    """The provenance record of `stage` in `analysis` (params: the stage's parameters, recomputed if None)."""
    params = stage.params(analysis) if params is None else params
    section = SECTIONS.get(stage.name, stage.name)
    config = {section: analysis.config.section_params(section)} if hasattr(analysis.config, section) else {}
    try:
        phash = json.loads((analysis.state_dir / stage.name / "_params.json").read_text(encoding="utf-8"))["params_hash"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        phash = None
    upstream = getattr(stage, "upstream", None)
    return {
        "stage": stage.name,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params_hash": phash,
        "config": config,
        "dataset": {"raw": analysis.raw_layer, "voxel_size_nm": list(analysis.voxel_size_nm),
                    "chunk_size": list(analysis.config.chunking.chunk_size), "task_size": list(analysis.config.chunking.task_size)},
        "oracle": {k: v for k, v in analysis.config.section_params("oracle").items() if v},
        "models": [_model_record(p) for p in model_files(stage, analysis, params)],
        "code": code_version(),
        "inputs": {"layers": _layers_in(params, []), "upstream": list(upstream(analysis)) if upstream else [],
                   "skeletons": params.get("skeletons", {})},
    }


def write_provenance(stage, analysis) -> Path:
    """Write `state/<stage>/provenance.json` atomically; returns its path."""
    path = analysis.state_dir / stage.name / PROVENANCE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(stage_provenance(stage, analysis), indent=1, sort_keys=False) + "\n")
    return path


def read_provenance(analysis, stage_name: str) -> dict | None:
    try:
        return json.loads((analysis.state_dir / stage_name / PROVENANCE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def format_provenance(record: dict) -> list[str]:
    """A few readable lines of a provenance record."""
    code = record["code"]
    lines = [f"  written {record['written']} by syconn_ng {code['package']}" + (f" (git {code['git']})" if code.get("git") else "")
             + f", parameter hash {record['params_hash']}"]
    for m in record["models"]:
        lines.append(f"  model {m['path']} sha256 {str(m['sha256'])[:16]}…" + (" (bundled)" if m.get("bundled") else ""))
    for layer in record["inputs"]["layers"]:
        lines.append(f"  input {layer}")
    if record["inputs"]["upstream"]:
        lines.append(f"  after {', '.join(record['inputs']['upstream'])}")
    if record["inputs"].get("skeletons"):
        lines.append(f"  skeletons: {len(record['inputs']['skeletons'])} file(s)")
    for k, v in record["oracle"].items():
        lines.append(f"  oracle {k} = {v}")
    for section, values in record["config"].items():
        lines.append(f"  [{section}] " + ", ".join(f"{k} = {v}" for k, v in values.items()))
    return lines
