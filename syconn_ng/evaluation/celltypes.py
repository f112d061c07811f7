"""Cell-type accuracy against the synthetic truth (`truth/cells.csv`): accuracy, per-class F1, confusion
matrix and majority baseline over every traced cell, and again over the cells with at least
`MIN_PATH_UM` of skeleton (most cells in a small volume are short fragments)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from syconn_ng.evaluation import rounded

MIN_PATH_UM = 2.0  # "long" cells: enough skeleton to carry their type's morphology (median fragment: 1.1 µm)


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


def compare_cells(truth, pred, *, min_path_um: float = MIN_PATH_UM) -> dict:
    """Scores of predicted types (DataFrame id, type, path_length_um) against the truth (id, type) of the traced cells."""
    m = truth.merge(pred, on="id", how="inner", suffixes=("_true", "_pred"))
    classes = sorted(set(m["type_true"]) | set(m["type_pred"]))
    t, p = m["type_true"].to_numpy(str), m["type_pred"].to_numpy(str)
    long = (m["path_length_um"] >= min_path_um).to_numpy()
    return {**type_scores(t, p, classes), "missing": int(len(truth) - len(m)),
            "long_cells": {"min_path_um": min_path_um, **type_scores(t[long], p[long], classes)}}


def evaluate(analysis_dir: Path, truth_dir: Path) -> dict:
    import pandas as pd

    table = Path(analysis_dir) / "tables" / "cells.csv"
    if not table.exists():
        return {"skipped": "no tables/cells.csv (run the 'celltypes' stage)"}
    truth = pd.read_csv(Path(truth_dir) / "truth" / "cells.csv", usecols=["id", "type", "traced"])
    truth = truth[truth["traced"] == 1][["id", "type"]]
    pred = pd.read_csv(table, usecols=["id", "type", "path_length_um"])
    return rounded(compare_cells(truth, pred))


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
