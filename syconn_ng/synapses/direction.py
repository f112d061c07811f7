"""Synapse direction (which partner is presynaptic) and the partners' compartments at the synapse.

Rule: where both sides have vesicle clouds near the cleft, pre = the side whose nearest cloud is
closer (a bouton's cloud abuts its own active zone; a cell can hold a cloud of another of its
synapses a few hundred nm away). Otherwise pre = the side with more vesicle-cloud volume. Ties
(usually no cloud on either side) go to the side whose nearest skeleton node is more likely axon;
if that is unknown or equal too, to the side whose band beside the cleft is brighter (the
postsynaptic density darkens the other side); if equal, to the cell with the lower id.
`direction_confidence` is the pre side's share of the summed nearest-cloud distances (`vc_nearest`)
or of the vesicle volume (`vc`; 0.5 on a tie), so doubtful synapses can be filtered;
`direction_rule` says which rule decided.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ORDERED = ("band_raw", "band_ratio", "ref_raw", "vc_voxels", "mi_voxels", "fraction", "compartment", "p_axon")


def nearest_compartments(points_vx: np.ndarray, cells: np.ndarray, nodes: pd.DataFrame, *, voxel_size_nm):
    """Compartment and axon probability of each cell's skeleton node nearest to each point.

    points_vx: (N, 3) voxels; cells: (N,) uint64; nodes: `cell, x, y, z` plus optional
    `compartment`, `p_axon` columns (missing → '' and NaN). Returns (compartment (N,) object
    array, p_axon (N,) float); a cell without nodes gives '' and NaN.
    """
    from scipy.spatial import cKDTree

    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    n = len(points_vx)
    comp = np.full(n, "", dtype=object)
    p_axon = np.full(n, np.nan)
    if n == 0 or len(nodes) == 0:
        return comp, p_axon
    cells = np.asarray(cells, dtype=np.uint64)
    node_cell = nodes["cell"].to_numpy(np.uint64)
    has_comp = "compartment" in nodes.columns
    for cell in np.unique(cells):
        rows = np.flatnonzero(node_cell == cell)
        if len(rows) == 0:
            continue
        sel = np.flatnonzero(cells == cell)
        tree = cKDTree(nodes.iloc[rows][["x", "y", "z"]].to_numpy(np.float64) * vs)
        _, j = tree.query(np.asarray(points_vx, np.float64)[sel] * vs)
        hit = nodes.iloc[rows[np.atleast_1d(j)]]
        if has_comp:
            comp[sel] = hit["compartment"].fillna("").astype(str).to_numpy()
        if "p_axon" in nodes.columns:
            p_axon[sel] = hit["p_axon"].to_numpy(np.float64)
    return comp, p_axon


def orient(df: pd.DataFrame) -> pd.DataFrame:
    """Add `pre_cell`, `post_cell`, `direction_confidence`, `direction_rule` and the `_pre` / `_post`
    copies of the sided columns (`ORDERED`, from `_a` / `_b`).

    df: candidates with `cell_a`, `cell_b`, `vc_voxels_a/b` and optionally `vc_dist_a/b_nm`, `p_axon_a/b`.
    direction_rule: `vc_nearest` (both sides have clouds; the nearer decided), `vc` (vesicle volume
    decided), `axon` (tie broken by compartments), `psd` (by the bands' grey levels) or `id`.
    """
    out = df.copy()
    va, vb = out["vc_voxels_a"].to_numpy(np.float64), out["vc_voxels_b"].to_numpy(np.float64)
    da = out["vc_dist_a_nm"].to_numpy(np.float64) if "vc_dist_a_nm" in out else np.full(len(out), np.nan)
    db = out["vc_dist_b_nm"].to_numpy(np.float64) if "vc_dist_b_nm" in out else np.full(len(out), np.nan)
    nearest = (va > 0) & (vb > 0) & np.isfinite(da) & np.isfinite(db) & (da != db)
    pa = out["p_axon_a"].to_numpy(np.float64) if "p_axon_a" in out else np.full(len(out), np.nan)
    pb = out["p_axon_b"].to_numpy(np.float64) if "p_axon_b" in out else np.full(len(out), np.nan)
    axon_known = np.isfinite(pa) & np.isfinite(pb) & (pa != pb)
    ba = out["band_raw_a"].to_numpy(np.float64) if "band_raw_a" in out else np.zeros(len(out))
    bb = out["band_raw_b"].to_numpy(np.float64) if "band_raw_b" in out else np.zeros(len(out))
    by_id = out["cell_a"].to_numpy(np.uint64) < out["cell_b"].to_numpy(np.uint64)
    a_pre = np.where(nearest, da < db, np.where(va != vb, va > vb, np.where(axon_known, np.nan_to_num(pa) > np.nan_to_num(pb),
                                                                            np.where(ba != bb, ba > bb, by_id))))
    out["direction_rule"] = np.where(nearest, "vc_nearest", np.where(va != vb, "vc", np.where(axon_known, "axon", np.where(ba != bb, "psd", "id"))))
    total = va + vb
    with np.errstate(invalid="ignore", divide="ignore"):
        by_volume = np.where(total > 0, np.where(a_pre, va, vb) / total, 0.5)
        by_distance = np.where(a_pre, db, da) / (da + db)
    out["direction_confidence"] = np.round(np.where(nearest, by_distance, by_volume), 4)
    out["pre_cell"] = np.where(a_pre, out["cell_a"], out["cell_b"]).astype(np.uint64)
    out["post_cell"] = np.where(a_pre, out["cell_b"], out["cell_a"]).astype(np.uint64)
    for name in ORDERED:
        if f"{name}_a" in out:
            a, b = out[f"{name}_a"].to_numpy(), out[f"{name}_b"].to_numpy()
            out[f"{name}_pre"] = np.where(a_pre, a, b)
            out[f"{name}_post"] = np.where(a_pre, b, a)
    return out
