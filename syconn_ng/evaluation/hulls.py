"""Cell hulls (`layers/cells`) against the true cells, and the mi / vc mapping against the true owners.

* `median_iou`: median over traced cells of the voxel IoU of `layers/cells == id` and `truth/cells == id`;
* `mapping_accuracy`: of the detected mi and vc objects whose true owner is a traced cell (the owner
  is that of the true object they overlap most), the fraction `tables/mapping_<kind>.csv` gives to it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from syconn_ng.evaluation import rounded
from syconn_ng.evaluation._layers import read_whole


def cell_ious(pred: np.ndarray, truth: np.ndarray, cells) -> pd.DataFrame:
    """Per cell id: IoU and precision of `pred == id` against `truth == id`. pred, truth: (X, Y, Z) uint64."""
    from syconn_ng.cnn.metrics import overlap_table

    pi, ti, shared, p_size, t_size = overlap_table(pred, truth)
    same = pi == ti
    inter = dict(zip(pi[same].tolist(), shared[same].tolist()))
    rows = []
    for c in (int(c) for c in cells):
        i, p, t = inter.get(c, 0), p_size.get(c, 0), t_size.get(c, 0)
        rows.append((c, i / max(p + t - i, 1), i / max(p, 1)))
    return pd.DataFrame(rows, columns=["cell", "iou", "precision"])


def object_owners(pred: np.ndarray, truth: np.ndarray, truth_cells: pd.Series) -> pd.DataFrame:
    """For each predicted object, the true object it overlaps most and that object's cell (columns object, true_id, cell)."""
    both = (pred > 0) & (truth > 0)
    pairs, n = np.unique(np.stack([pred[both], truth[both]], axis=1), axis=0, return_counts=True)
    best = (pd.DataFrame({"object": pairs[:, 0].astype(np.int64), "true_id": pairs[:, 1].astype(np.int64), "n": n})
            .sort_values(["object", "n"]).drop_duplicates("object", keep="last"))
    best["cell"] = best.true_id.map(truth_cells)
    return best[["object", "true_id", "cell"]]


def evaluate(analysis_dir: Path, truth_dir: Path) -> dict:
    from syconn_ng.analysis import Analysis

    analysis = Analysis.open(analysis_dir)
    truth_dir = Path(truth_dir) / "truth"
    pred = read_whole(analysis.layer_path("cells"))
    nodes_path = analysis.tables_dir / "nodes.csv"
    if pred is None or not nodes_path.is_file():
        return {"skipped": "no layers/cells: run the 'hulls' stage"}
    traced = pd.read_csv(nodes_path, usecols=["cell"]).cell.unique().astype(np.int64)
    scores = cell_ious(pred, read_whole(truth_dir / "cells"), traced)
    out = {"median_iou": float(scores.iou.median()) if len(scores) else float("nan"),
           "iou_25": float(scores.iou.quantile(0.25)) if len(scores) else float("nan"),
           "median_precision": float(scores.precision.median()) if len(scores) else float("nan"),
           "n_cells": int(len(scores)), "input": "oracle" if analysis.config.oracle.barrier else "cnn"}
    organelles = pd.read_csv(truth_dir / "organelles.csv")
    correct, total = 0, 0
    for kind in ("mi", "vc"):
        table = analysis.tables_dir / f"mapping_{kind}.csv"
        objects = read_whole(analysis.layer_path(kind))
        if not table.is_file() or objects is None:
            out["mapping_accuracy"] = {"skipped": "no tables/mapping_*.csv: run the 'mapping' stage"}
            return rounded(out)
        owners = object_owners(objects, read_whole(truth_dir / kind),
                               organelles[organelles.kind == kind].set_index("id").cell)
        owners = owners[owners.cell.isin(traced)]
        assigned = pd.read_csv(table).set_index("object").cell
        ok = owners.object.map(assigned).to_numpy() == owners.cell.to_numpy()
        out[f"mapping_accuracy_{kind}"] = float(ok.mean()) if len(ok) else float("nan")
        out[f"mapped_{kind}"] = int(len(ok))
        correct, total = correct + int(ok.sum()), total + len(ok)
    out["mapping_accuracy"] = correct / total if total else float("nan")
    return rounded(out)
