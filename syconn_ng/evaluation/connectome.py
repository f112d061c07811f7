"""The wiring diagram against the synthetic truth: Pearson r of the connection weights (summed synaptic
area) over the union of connected pairs, and precision / recall / F1 of the connected (pre, post) pairs.

The prediction is the `connectome` stage's `tables/matrix.csv`; the truth is `truth/synapses.csv` with the
same `[connectome]` synapse-type and axo-dendritic filters (the probability filter has no truth
counterpart), restricted to synapses between two traced cells: the pipeline only knows traced cells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from syconn_ng.connectome.matrix import DENDRITIC, pair_weights, read_matrix_csv


def matrix_pairs(matrix: pd.DataFrame) -> pd.Series:
    """Non-zero entries of a post × pre matrix as a Series indexed (pre_cell, post_cell)."""
    m = matrix.to_numpy(np.float64)
    post, pre = np.nonzero(m)
    idx = pd.MultiIndex.from_arrays([matrix.columns.to_numpy(np.uint64)[pre], matrix.index.to_numpy(np.uint64)[post]],
                                    names=["pre_cell", "post_cell"])
    return pd.Series(m[post, pre], index=idx).sort_index()


def score_pairs(pred: pd.Series, true: pd.Series) -> dict:
    """Weight r over the union of pairs (a missing pair weighs 0), pair precision / recall / F1, counts.

    pred, true: summed weight per (pre_cell, post_cell) pair, positive entries only.
    """
    union = pred.index.union(true.index)
    p = pred.reindex(union, fill_value=0.0).to_numpy(np.float64)
    t = true.reindex(union, fill_value=0.0).to_numpy(np.float64)
    r = float(np.corrcoef(p, t)[0, 1]) if len(union) >= 2 and p.std() > 0 and t.std() > 0 else float("nan")
    hit = len(pred.index.intersection(true.index))
    precision = hit / len(pred) if len(pred) else float("nan")
    recall = hit / len(true) if len(true) else float("nan")
    f1 = 2 * hit / (len(pred) + len(true)) if len(pred) + len(true) else float("nan")
    return {"weight_r": r, "pair_precision": precision, "pair_recall": recall, "pair_f1": f1,
            "n_pairs_true": len(true), "n_pairs_pred": len(pred), "n_pairs_matched": hit}


def true_synapses(truth_dir: Path, *, synapse_type: str = "all", axo_dendritic_only: bool = False) -> pd.DataFrame:
    """Truth synapses between traced cells, with the connectome filters that have a truth counterpart."""
    syn = pd.read_csv(truth_dir / "truth" / "synapses.csv", dtype={"pre_cell": np.uint64, "post_cell": np.uint64})
    cells = pd.read_csv(truth_dir / "truth" / "cells.csv", dtype={"id": np.uint64})
    traced = cells.loc[cells["traced"] == 1, "id"].to_numpy(np.uint64)
    keep = np.isin(syn["pre_cell"].to_numpy(np.uint64), traced) & np.isin(syn["post_cell"].to_numpy(np.uint64), traced)
    if synapse_type != "all":
        keep &= (syn["type"] == synapse_type).to_numpy()
    if axo_dendritic_only:
        keep &= syn["post_compartment"].isin(DENDRITIC).to_numpy()
    return syn[keep].reset_index(drop=True)


def evaluate(analysis_dir: Path, truth_dir: Path) -> dict:
    from syconn_ng.config import load_config
    from syconn_ng.evaluation import rounded

    matrix_csv = Path(analysis_dir) / "tables" / "matrix.csv"
    if not matrix_csv.exists():
        return {"skipped": "no tables/matrix.csv (run the connectome stage)"}
    p = load_config(analysis_dir).connectome
    true = true_synapses(Path(truth_dir), synapse_type=p.synapse_type, axo_dendritic_only=p.axo_dendritic_only)
    scores = score_pairs(matrix_pairs(read_matrix_csv(matrix_csv)), pair_weights(true))
    return rounded(scores)
