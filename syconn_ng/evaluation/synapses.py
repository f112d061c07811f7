"""Synapses against the synthetic truth: detection (a predicted synapse matches a true one within
`MATCH_DIST_NM` and with the same unordered pair of cells, greedily by distance), then direction,
area and type of the matched ones.

The truth is restricted to synapses between two traced cells (`traced` in `truth/cells.csv`):
the pipeline knows only the cells it has skeletons for, so a synapse onto an untraced sliver is
out of its reach; how many were left out is reported as `n_true_untraced`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

MATCH_DIST_NM = 300.0


def match_synapses(pred: pd.DataFrame, true: pd.DataFrame, *, voxel_size_nm, max_dist_nm: float = MATCH_DIST_NM):
    """Pairs (i_pred, i_true) of row positions: same unordered cell pair, centroids within `max_dist_nm`,
    each row used once, closest pairs first.

    pred, true: tables with `pre_cell, post_cell, x, y, z` (voxels). Returns (M, 2) int64.
    """
    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    if len(pred) == 0 or len(true) == 0:
        return np.zeros((0, 2), np.int64)

    def keys(df):
        a, b = df["pre_cell"].to_numpy(np.uint64), df["post_cell"].to_numpy(np.uint64)
        return np.minimum(a, b), np.maximum(a, b)

    pa, pb = keys(pred)
    ta, tb = keys(true)
    pp, tp = pred[["x", "y", "z"]].to_numpy(np.float64) * vs, true[["x", "y", "z"]].to_numpy(np.float64) * vs
    cand = []
    for i in range(len(pred)):
        same = np.flatnonzero((ta == pa[i]) & (tb == pb[i]))
        if len(same):
            d = np.linalg.norm(tp[same] - pp[i], axis=1)
            cand += [(float(dd), i, int(j)) for dd, j in zip(d, same) if dd <= max_dist_nm]
    used_p, used_t, pairs = set(), set(), []
    for _, i, j in sorted(cand):
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            pairs.append((i, j))
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def score_synapses(pred: pd.DataFrame, true: pd.DataFrame, *, voxel_size_nm) -> dict:
    """Precision, recall, F1, direction / type accuracy and area Pearson r of the matched, counts; and where
    both tables name it, the accuracy of the postsynaptic compartment (spine_head / spine_neck / dendrite / soma)."""
    m = match_synapses(pred, true, voxel_size_nm=voxel_size_nm)
    n_pred, n_true, n_match = len(pred), len(true), len(m)
    precision = n_match / n_pred if n_pred else float("nan")
    recall = n_match / n_true if n_true else float("nan")
    f1 = 2 * n_match / (n_pred + n_true) if n_pred + n_true else float("nan")
    out = {"precision": precision, "recall": recall, "f1": f1, "n_true": n_true, "n_pred": n_pred, "n_matched": n_match,
           "direction_accuracy": float("nan"), "area_r": float("nan"), "type_accuracy": float("nan")}
    if n_match:
        p, t = pred.iloc[m[:, 0]], true.iloc[m[:, 1]]
        out["direction_accuracy"] = float(np.mean(p["pre_cell"].to_numpy(np.uint64) == t["pre_cell"].to_numpy(np.uint64)))
        out["type_accuracy"] = float(np.mean(p["type"].astype(str).to_numpy() == t["type"].astype(str).to_numpy()))
        if "post_compartment" in p and "post_compartment" in t:
            got = p["post_compartment"].astype(object).to_numpy()
            known = pd.notna(got) & (got.astype(str) != "")
            if known.any():
                out["post_compartment_accuracy"] = float(np.mean(got[known].astype(str) == t["post_compartment"].to_numpy()[known].astype(str)))
        if n_match >= 3:
            out["area_r"] = float(np.corrcoef(p["area_um2"].to_numpy(float), t["area_um2"].to_numpy(float))[0, 1])
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def evaluate(analysis_dir: Path, truth_dir: Path) -> dict:
    """Scores of `tables/synapses.csv` against `truth/synapses.csv` (see `score_synapses`)."""
    from syconn_ng.config import load_config

    path = Path(analysis_dir) / "tables" / "synapses.csv"
    if not path.exists():
        return {"skipped": "no tables/synapses.csv (run the 'synapses' stage)"}
    pred = pd.read_csv(path)
    true = pd.read_csv(Path(truth_dir) / "truth" / "synapses.csv")
    true, n_untraced = traced_only(true, pd.read_csv(Path(truth_dir) / "truth" / "cells.csv"))
    out = score_synapses(pred, true, voxel_size_nm=load_config(analysis_dir).dataset.voxel_size_nm)
    return {**out, "n_true_untraced": n_untraced}


def traced_only(true: pd.DataFrame, cells: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The true synapses whose two cells are traced (`cells.traced` == 1; all if the column is absent), and how many were dropped."""
    if "traced" not in cells.columns or len(true) == 0:
        return true, 0
    traced = set(cells.loc[cells["traced"] == 1, "id"].astype(np.uint64))
    keep = np.array([int(a) in traced and int(b) in traced for a, b in zip(true["pre_cell"], true["post_cell"])], dtype=bool)
    return true[keep].reset_index(drop=True), int((~keep).sum())


def pooled(scores: list[dict]) -> dict:
    """Scores of several tissues pooled: counts summed, rates recomputed, direction and type weighted by matches,
    area r the lowest of the tissues'."""
    ok = [s for s in scores if "n_true" in s]
    n_true, n_pred, matched = (sum(s[k] for s in ok) for k in ("n_true", "n_pred", "n_matched"))

    def weighted(key):
        return sum(s[key] * s["n_matched"] for s in ok if s["n_matched"]) / matched if matched else float("nan")

    rs = [s["area_r"] for s in ok if s["area_r"] == s["area_r"]]
    out = {"precision": matched / n_pred if n_pred else float("nan"), "recall": matched / n_true if n_true else float("nan"),
           "f1": 2 * matched / (n_true + n_pred) if n_true + n_pred else float("nan"),
           "direction_accuracy": weighted("direction_accuracy"), "type_accuracy": weighted("type_accuracy"),
           "area_r": min(rs) if rs else float("nan"), "n_true": n_true, "n_pred": n_pred, "n_matched": matched}
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def report_figure(results: dict[str, dict], baselines: dict[str, float], png) -> None:
    """Bar chart of pooled scores per run (e.g. {'oracle organelles': pooled(...), 'CNN organelles': ...}) with
    the trivial baselines and the targets marked; written to `png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["precision", "recall", "f1", "direction_accuracy", "type_accuracy", "area_r"]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    width = 0.8 / max(len(results), 1)
    for i, (name, r) in enumerate(results.items()):
        xs = np.arange(len(keys)) + (i - (len(results) - 1) / 2) * width
        ax.bar(xs, [r[k] for k in keys], width, label=f"{name} ({r['n_true']} true, {r['n_pred']} predicted)")
    for k, v in baselines.items():
        j = keys.index(k)
        ax.hlines(v, j - 0.45, j + 0.45, colors="k", linestyles=":", label="trivial baseline" if j == keys.index(next(iter(baselines))) else None)
    for k, v in (("f1", 0.85), ("direction_accuracy", 0.95)):
        j = keys.index(k)
        ax.hlines(v, j - 0.45, j + 0.45, colors="r", linestyles="--", label="target" if k == "f1" else None)
    ax.set_xticks(range(len(keys)), ["precision", "recall", "F1", "direction", "type", "area r"])
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
