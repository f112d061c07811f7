"""Test data for the `compartments` and `celltypes` stages: a session tissue's oracle analysis
(`hulls_data.synth_analysis`; seed 1, or the dense seed 6 — never used for training the bundled forests)
copied and run through compartments (→ synapses → celltypes), once per session and tissue (file lock +
completion marker)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hulls_data import synth_analysis
from syconn_ng.analysis import Analysis


def compartments_analysis(synth_dir, tmp_path_factory, *, with_celltypes: bool = False) -> Analysis:
    """A copy of the session's hulls analysis after the compartments stage (and, if asked, synapses and celltypes)."""
    from filelock import FileLock

    from syconn_ng.engine import LocalExecutor, run_stage
    from syconn_ng.stages import get_stage

    source = synth_analysis(synth_dir, tmp_path_factory)
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = root / f"compartments_on_{Path(synth_dir).name}"
    with FileLock(str(root / f"compartments_on_{Path(synth_dir).name}.lock")):
        if not (out / ".complete").exists():
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(source.root, out)
            (out / ".complete").unlink(missing_ok=True)
            executor = LocalExecutor(1)
            try:
                run_stage(get_stage("compartments"), Analysis.open(out), executor=executor, progress=False)
            finally:
                executor.close()
            (out / ".complete").write_text("ok\n")
        if with_celltypes and not (out / ".celltypes_complete").exists():
            analysis = Analysis.open(out)
            executor = LocalExecutor(1)
            try:
                for name in ("synapses", "celltypes"):
                    run_stage(get_stage(name), analysis, executor=executor, progress=False)
            finally:
                executor.close()
            (out / ".celltypes_complete").write_text("ok\n")
    return Analysis.open(out)
