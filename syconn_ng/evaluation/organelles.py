"""Organelle objects (`layers/mi|vc|sj`) against the true objects (`truth/mi|vc|sj`): object P/R/F1 at IoU >= 0.5.

Truth objects smaller than the `objects` stage's `min_voxels_<kind>` are left out, as in
`syconn_ng.cnn.evaluate` (the stage drops such slivers by design).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from syconn_ng.evaluation import rounded
from syconn_ng.evaluation._layers import read_whole

KINDS = ("mi", "vc", "sj")
MIN_IOU = 0.5


def score_objects(pred: np.ndarray, truth: np.ndarray, *, min_truth_voxels: int, min_iou: float = MIN_IOU) -> dict:
    """Object precision, recall, F1 of two (X, Y, Z) label arrays, truth objects under `min_truth_voxels` removed."""
    from syconn_ng.cnn.metrics import object_scores

    truth = truth.copy()
    ids, sizes = np.unique(truth[truth > 0], return_counts=True)
    truth[np.isin(truth, ids[sizes < min_truth_voxels])] = 0
    s = object_scores(pred, truth, min_iou=min_iou)
    return {"precision": s["precision"], "recall": s["recall"], "f1": s["f1"], "n_true": s["truth_objects"],
            "n_pred": s["pred_objects"], "mean_matched_iou": s["mean_matched_iou"]}


def evaluate(analysis_dir: Path, truth_dir: Path) -> dict:
    from syconn_ng.analysis import Analysis

    analysis = Analysis.open(analysis_dir)
    out = {}
    for kind in KINDS:
        pred = read_whole(analysis.layer_path(kind))
        if pred is None:
            return {"skipped": f"no layers/{kind}: run the 'objects' stage"}
        truth = read_whole(Path(truth_dir) / "truth" / kind)
        out[kind] = score_objects(pred, truth, min_truth_voxels=getattr(analysis.config.objects, f"min_voxels_{kind}"))
    out["input"] = "oracle" if analysis.config.oracle.organelles else "cnn"
    return rounded(out)
