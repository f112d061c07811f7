"""Cell-type accuracy against the synthetic truth (`truth/cells.csv`). The headline scores (accuracy,
balanced accuracy, per-class F1, confusion matrix, majority baseline) cover the *typeable* cells (column
`typeable` of `tables/cells.csv`: at least `[celltypes] min_typeable_um` of skeleton, and not a bare
axon piece), the ones that show enough of their cell to be typed. The same scores over every traced
cell (`all_cells`), the accuracy of the untypeable cells by reason (`untypeable`) and per skeleton-length
bin (`by_length`) show what the cut leaves out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from syconn_ng.evaluation import rounded

LENGTH_BINS_UM = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, np.inf)  # the accuracy-vs-length curve (docs/compartments.md)


def type_scores(true: np.ndarray, pred: np.ndarray, classes) -> dict:
    """accuracy, balanced_accuracy, f1, confusion {true: {pred: n}}, n_cells, majority_baseline for labels (N,) str."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score, f1_score

    if len(true) == 0:
        return {"n_cells": 0}
    classes = list(classes)
    f1 = f1_score(true, pred, labels=classes, average=None, zero_division=0)
    with warnings.catch_warnings():  # a predicted class absent from the truth is fine here
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(true, pred))
    return {"accuracy": float(np.mean(true == pred)), "balanced_accuracy": balanced,
            "f1": {c: float(v) for c, v in zip(classes, f1) if (true == c).any()},
            "confusion": {t: {p: int(np.sum((true == t) & (pred == p))) for p in classes} for t in classes if (true == t).any()},
            "n_cells": int(len(true)), "majority_baseline": float(max(np.mean(true == c) for c in classes))}


def _bin_name(lo: float, hi: float) -> str:
    return f">={lo:g}" if np.isinf(hi) else f"{lo:g}-{hi:g}"


def accuracy_by_length(true: np.ndarray, pred: np.ndarray, path_um: np.ndarray, edges=LENGTH_BINS_UM) -> dict:
    """{"lo-hi" µm: {"n_cells", "accuracy"}} per skeleton-length bin (bins without cells are left out)."""
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (path_um >= lo) & (path_um < hi)
        if inside.any():
            out[_bin_name(lo, hi)] = {"n_cells": int(inside.sum()), "accuracy": float(np.mean(true[inside] == pred[inside]))}
    return out


def compare_cells(truth, pred, *, min_typeable_um: float) -> dict:
    """Scores of predicted types (DataFrame id, type, path_length_um[, typeable, untypeable_reason]) against the truth
    (id, type) of the traced cells: the typeable cells' scores at the top level, then `all_cells`, `untypeable` and
    `by_length`. Without a `typeable` column (an older table) a cell is typeable when its path length reaches
    `min_typeable_um`."""
    m = truth.merge(pred, on="id", how="inner", suffixes=("_true", "_pred"))
    classes = sorted(set(m["type_true"]) | set(m["type_pred"]))
    t, p = m["type_true"].to_numpy(str), m["type_pred"].to_numpy(str)
    path = m["path_length_um"].to_numpy(np.float64)
    typeable = m["typeable"].to_numpy(bool) if "typeable" in m else path >= min_typeable_um
    if "untypeable_reason" in m:
        reason = m["untypeable_reason"].fillna("").astype(str).to_numpy()
    else:
        reason = np.where(typeable, "", "short")
    untypeable = {r: {"n_cells": int((reason == r).sum()), "accuracy": float(np.mean(t[reason == r] == p[reason == r]))}
                  for r in sorted(set(reason[~typeable]))}
    return {**type_scores(t[typeable], p[typeable], classes), "min_typeable_um": min_typeable_um,
            "untypeable_cells": int((~typeable).sum()), "missing": int(len(truth) - len(m)),
            "all_cells": type_scores(t, p, classes), "untypeable": untypeable, "by_length": accuracy_by_length(t, p, path)}


def evaluate(analysis_dir: Path, truth_dir: Path) -> dict:
    import pandas as pd

    from syconn_ng.config import load_config

    table = Path(analysis_dir) / "tables" / "cells.csv"
    if not table.exists():
        return {"skipped": "no tables/cells.csv (run the 'celltypes' stage)"}
    truth = pd.read_csv(Path(truth_dir) / "truth" / "cells.csv", usecols=["id", "type", "traced"])
    truth = truth[truth["traced"] == 1][["id", "type"]]
    pred = pd.read_csv(table, keep_default_na=False, na_values={"symmetric_out_fraction": [""]})
    out = compare_cells(truth, pred[[c for c in ("id", "type", "path_length_um", "typeable", "untypeable_reason") if c in pred]],
                        min_typeable_um=load_config(analysis_dir).celltypes.min_typeable_um)
    if "sign" in pred:
        out["sign"] = compare_signs(truth, pred[["id", "sign"]])
    return rounded(out)


def compare_signs(truth, pred) -> dict:
    """Accuracy of the predicted sign (excitatory / inhibitory, from outgoing synapse types) on the cells that have
    one, against the sign of the true type (its synapses' type: asymmetric = excitatory)."""
    from syconn_ng.synth.geometry import CELL_TYPE_SPECS

    m = truth.merge(pred, on="id", how="inner")
    m = m[m["sign"].astype(str) != ""]
    true = np.array(["excitatory" if CELL_TYPE_SPECS[t].synapse_type == "asymmetric" else "inhibitory" for t in m["type"]], dtype=object)
    return {"accuracy": float(np.mean(true == m["sign"].to_numpy(str))) if len(m) else float("nan"), "n_cells": int(len(m)),
            "inhibitory": int((true == "inhibitory").sum())}


def confusion_png(confusion: dict, path, *, title: str = "") -> None:
    """Draw a confusion matrix {true: {pred: n}} as a PNG (rows = truth, columns = prediction, row-normalised colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted(set(confusion) | {p for row in confusion.values() for p in row})
    m = np.array([[confusion.get(t, {}).get(p, 0) for p in classes] for t in classes], dtype=float)
    frac = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.1 * len(classes) + 1.5, 1.1 * len(classes) + 1))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(m[i, j]), ha="center", va="center", color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
