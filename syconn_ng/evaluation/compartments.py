"""Compartment accuracy against the synthetic truth (`truth/nodes.csv`): node accuracy, balanced accuracy
and per-class F1 for axon / dendrite / soma (spine parts count as dendrite), the same for shaft /
spine_head / spine_neck on the truly dendritic nodes, the majority-class baselines, and the mean
probability given to each node's true axon / dendrite / soma class (a change that moves probabilities
without flipping a label shows there)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from syconn_ng.evaluation import rounded

COARSE = {"axon": "axon", "dendrite": "dendrite", "soma": "soma", "spine_head": "dendrite", "spine_neck": "dendrite"}
SPINE = {"dendrite": "shaft", "spine_head": "spine_head", "spine_neck": "spine_neck"}


def scores(true: np.ndarray, pred: np.ndarray, classes) -> dict:
    """accuracy, balanced_accuracy, f1 per class, majority_baseline and n for label arrays (N,) str."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score, f1_score

    if len(true) == 0:
        return {"n": 0}
    present = [c for c in classes if (true == c).any()]
    f1 = f1_score(true, pred, labels=list(classes), average=None, zero_division=0)
    with warnings.catch_warnings():  # a predicted class absent from the truth is fine here
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(true, pred))
    return {"accuracy": float(np.mean(true == pred)), "balanced_accuracy": balanced,
            "f1": {c: float(v) for c, v in zip(classes, f1) if c in present},
            "majority_baseline": float(max(np.mean(true == c) for c in classes)), "n": int(len(true))}


def compare_nodes(truth, pred) -> dict:
    """Scores of predicted compartments (DataFrame cell, node, compartment) against the truth's (same columns)."""
    m = truth.merge(pred, on=["cell", "node"], how="left", suffixes=("_true", "_pred"))
    m["compartment_pred"] = m["compartment_pred"].fillna("missing")
    t, p = m["compartment_true"].to_numpy(str), m["compartment_pred"].to_numpy(str)
    coarse = scores(np.array([COARSE[v] for v in t]), np.array([COARSE.get(v, v) for v in p]), ("axon", "dendrite", "soma"))
    dend = np.isin(t, list(SPINE))
    spine_classes = ("shaft", "spine_head", "spine_neck")
    spines = scores(np.array([SPINE[v] for v in t[dend]]), np.array([SPINE.get(v, v) for v in p[dend]]), spine_classes)
    both = dend & np.isin(p, list(SPINE))  # the spine forest alone: nodes both truth and prediction call dendritic
    spines["given_dendrite"] = scores(np.array([SPINE[v] for v in t[both]]), np.array([SPINE[v] for v in p[both]]), spine_classes)
    out = {**coarse, "spines": spines, "fine_accuracy": float(np.mean(t == p)), "missing": int((p == "missing").sum())}
    if "p_axon" in m:  # P(axon), P(dendrite incl. spine parts), P(soma) of the true coarse class
        coarse_p = {"axon": m["p_axon"], "soma": m["p_soma"],
                    "dendrite": m["p_dendrite"] + m.get("p_spine_head", 0.0) + m.get("p_spine_neck", 0.0)}
        true_coarse = np.array([COARSE[v] for v in t])
        prob = np.select([true_coarse == c for c in coarse_p], [coarse_p[c].to_numpy(float) for c in coarse_p])
        out["true_class_probability"] = float(np.nan_to_num(prob, nan=0.0).mean()) if len(prob) else float("nan")  # missing: 0
    return out


def evaluate(analysis_dir: Path, truth_dir: Path) -> dict:
    import pandas as pd

    table = Path(analysis_dir) / "tables" / "compartments.csv"
    if not table.exists():
        return {"skipped": "no tables/compartments.csv (run the 'compartments' stage)"}
    truth = pd.read_csv(Path(truth_dir) / "truth" / "nodes.csv", usecols=["cell", "node", "compartment"])
    columns = ["cell", "node", "compartment", "p_axon", "p_dendrite", "p_soma", "p_spine_head", "p_spine_neck"]
    pred = pd.read_csv(table, usecols=lambda c: c in columns)
    return rounded(compare_nodes(truth, pred))
