"""Myelin against the synthetic truth (tissues made with `syconn-ng synth --myelin`): voxel scores of
`layers/myelin` against `truth/myelin`, and the per-node myelinated flag of `tables/compartments.csv`
against `truth/nodes.csv`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from syconn_ng.evaluation import rounded
from syconn_ng.evaluation._layers import read_whole


def node_scores(truth, pred) -> dict:
    """Accuracy, precision, recall, F1 of the predicted `myelinated` flags (DataFrames cell, node, myelinated)
    against the truth's, on the traced nodes; and the all-unmyelinated baseline."""
    from syconn_ng.cnn.metrics import voxel_scores

    m = truth.merge(pred, on=["cell", "node"], how="left", suffixes=("_true", "_pred"))
    t = m["myelinated_true"].to_numpy(bool)
    p = m["myelinated_pred"].fillna(0).to_numpy(bool)
    s = voxel_scores(p, t)
    return {"accuracy": float(np.mean(t == p)) if len(t) else float("nan"), "precision": s["precision"], "recall": s["recall"],
            "f1": s["f1"], "baseline": float(np.mean(~t)) if len(t) else float("nan"), "n": int(len(t)),
            "n_myelinated": int(t.sum())}


def evaluate(analysis_dir: Path, truth_dir: Path) -> dict:
    import pandas as pd

    from syconn_ng.analysis import Analysis
    from syconn_ng.cnn.metrics import voxel_scores

    truth_layer = read_whole(Path(truth_dir) / "truth" / "myelin")
    if truth_layer is None:
        return {"skipped": "the tissue has no myelin (made without --myelin)"}
    analysis = Analysis.open(analysis_dir)
    out = {}
    pred = read_whole(analysis.input_layer("myelin"))
    if pred is not None:
        out["voxel"] = voxel_scores(pred >= 128, truth_layer > 0)
    out["input"] = "oracle" if analysis.config.oracle.myelin else "cnn"
    table = Path(analysis_dir) / "tables" / "compartments.csv"
    columns = pd.read_csv(table, nrows=0).columns if table.exists() else []
    if "myelinated" in columns:
        truth = pd.read_csv(Path(truth_dir) / "truth" / "nodes.csv", usecols=["cell", "node", "myelinated"])
        out["nodes"] = node_scores(truth, pd.read_csv(table, usecols=["cell", "node", "myelinated"]))
    if not out.get("voxel") and "nodes" not in out:
        return {"skipped": "no layers/myelin and no node myelin (run the 'myelin_syntype' and 'compartments' stages)"}
    return rounded(out)
