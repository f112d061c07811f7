"""Test data for the `compartments` and `celltypes` stages: the session's oracle analysis
(`hulls_data.synth_analysis`, seed 1, never used for training the bundled forests) copied and run
through compartments → synapses → celltypes, once per session (file lock + completion marker)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from hulls_data import synth_analysis
from syconn_ng.analysis import Analysis


def truth_synapse_table(synth_dir, voxel_size_nm) -> "pd.DataFrame":  # noqa: F821
    """truth/synapses.csv in the synapses stage's format (the stand-in while that stage has no bundled model)."""
    import pandas as pd

    t = pd.read_csv(Path(synth_dir) / "truth" / "synapses.csv")
    vs = np.asarray(voxel_size_nm)
    return pd.DataFrame({"id": t["id"], "pre_cell": t["pre_cell"], "post_cell": t["post_cell"], "x": t["x"], "y": t["y"], "z": t["z"],
                         "x_nm": t["x"] * vs[0], "y_nm": t["y"] * vs[1], "z_nm": t["z"] * vs[2], "area_um2": t["area_um2"],
                         "probability": 1.0, "type": t["type"], "pre_compartment": "axon",
                         "post_compartment": t["post_compartment"], "sj_id": t["sj_id"]})


def compartments_analysis(synth_dir, tmp_path_factory, *, with_celltypes: bool = False) -> Analysis:
    """A copy of the session's hulls analysis after the compartments stage (and, if asked, synapses and celltypes)."""
    from filelock import FileLock

    from syconn_ng.engine import LocalExecutor, run_stage
    from syconn_ng.layers import atomic_write_text
    from syconn_ng.stages import get_stage

    source = synth_analysis(synth_dir, tmp_path_factory)
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = root / "compartments_on_synth"
    with FileLock(str(root / "compartments_on_synth.lock")):
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
            atomic_write_text(analysis.tables_dir / "synapses.csv",
                              truth_synapse_table(synth_dir, analysis.voxel_size_nm).to_csv(index=False))
            executor = LocalExecutor(1)
            try:
                run_stage(get_stage("celltypes"), analysis, executor=executor, progress=False)
            finally:
                executor.close()
            (out / ".celltypes_complete").write_text("ok\n")
    return Analysis.open(out)
