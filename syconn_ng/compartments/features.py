"""Node features for the compartment forests: statistics of the hull radii, organelles and topology
in windows of path distance along a cell's skeleton, computed for all nodes of a cell at once.

A window sum is a (sources × nodes) reachability mask from `scipy.sparse.csgraph.dijkstra` with a
distance limit, multiplied with a (nodes × values) matrix: one matrix product gives every windowed
statistic. Each node stands for the path length around it (half its incident edges), so the
statistics do not depend on how densely a tracer placed nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ORGANELLE_KINDS = ("mi", "vc", "sj")
# radius histogram bin edges (nm): thin axons, axons and spine necks, dendrites, somata
RADIUS_BINS_NM = (0.0, 40.0, 60.0, 80.0, 110.0, 150.0, 200.0, 280.0, 400.0, 700.0, np.inf)
FAR_UM = 20.0  # distances to the nearest end / branch point are capped here (none in reach = far)
_BLOCK = 1024  # dijkstra sources per block: bounds the (block × nodes) mask


@dataclass(frozen=True)
class CellGraph:
    """One cell's skeleton as the features need it.

    positions_nm (N, 3) float64; edges (E, 2) int64 indices; radius_nm (N,) float64 (NaN = unknown);
    organelles {kind: (node_index (K,) int64, volume_nm3 (K,) float64)} for the objects mapped to the cell.
    """

    positions_nm: np.ndarray
    edges: np.ndarray
    radius_nm: np.ndarray
    organelles: dict


def adjacency(positions_nm: np.ndarray, edges: np.ndarray):
    """Symmetric (N, N) CSR matrix of edge lengths in nm (zero-length edges get 1e-3 nm so they count)."""
    from scipy.sparse import coo_matrix

    n = len(positions_nm)
    if len(edges) == 0:
        return coo_matrix((n, n)).tocsr()
    length = np.linalg.norm(positions_nm[edges[:, 0]] - positions_nm[edges[:, 1]], axis=1)
    length = np.maximum(length, 1e-3)
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    return coo_matrix((np.concatenate([length, length]), (rows, cols)), shape=(n, n)).tocsr()


def node_lengths_nm(positions_nm: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(N,) path length each node stands for: half the summed length of its edges (isolated nodes: 1 nm)."""
    out = np.zeros(len(positions_nm))
    if len(edges):
        length = np.linalg.norm(positions_nm[edges[:, 0]] - positions_nm[edges[:, 1]], axis=1)
        np.add.at(out, edges[:, 0], length / 2)
        np.add.at(out, edges[:, 1], length / 2)
    return np.maximum(out, 1.0)


def window_sums(adj, values: np.ndarray, window_nm: float) -> np.ndarray:
    """(N, K) sums of `values` (N, K) over the nodes within path distance `window_nm` of each node.

    window_nm = inf sums over each node's connected component.
    """
    from scipy.sparse.csgraph import connected_components, dijkstra

    n = adj.shape[0]
    if not np.isfinite(window_nm):
        _, comp = connected_components(adj, directed=False)
        per = np.zeros((comp.max() + 1 if n else 0, values.shape[1]))
        np.add.at(per, comp, values)
        return per[comp]
    out = np.empty((n, values.shape[1]))
    for start in range(0, n, _BLOCK):
        idx = np.arange(start, min(n, start + _BLOCK))
        d = dijkstra(adj, directed=False, indices=idx, limit=window_nm)
        out[idx] = np.isfinite(d).astype(np.float64) @ values
    return out


def nearest_distance_nm(adj, targets: np.ndarray, *, cap_nm: float) -> np.ndarray:
    """(N,) path distance from each node to the nearest of `targets` (indices), capped at `cap_nm`."""
    from scipy.sparse.csgraph import dijkstra

    n = adj.shape[0]
    if len(targets) == 0:
        return np.full(n, cap_nm)
    d = dijkstra(adj, directed=False, indices=targets, min_only=True, limit=cap_nm)
    return np.minimum(d, cap_nm)


def terminal_segments(adj, degree: np.ndarray, node_len: np.ndarray):
    """Per node: length (nm) of the terminal segment it lies on (0 if on none) and the radius index of its base.

    A terminal segment is a chain of nodes of degree ≤ 2 holding an end node and joined to the rest
    of the cell at one branch node (its base) — a spine, or a short side branch. Returns
    (length_nm (N,), base (N,) int64 index of the branch node, -1 if none).
    """
    from scipy.sparse import diags
    from scipy.sparse.csgraph import connected_components

    n = adj.shape[0]
    branch = degree >= 3
    keep = diags((~branch).astype(np.float64))
    inner = (keep @ adj @ keep).tocsr()
    inner.eliminate_zeros()
    _, comp = connected_components(inner, directed=False)
    comp = np.where(branch, -1, comp)
    n_comp = comp.max() + 1 if n else 0
    seg_len = np.bincount(comp[~branch], weights=node_len[~branch], minlength=n_comp)
    has_end = np.bincount(comp[degree <= 1], minlength=n_comp)[:n_comp] > 0
    # the branch nodes a segment touches: edges between a segment node and a branch node
    coo = adj.tocoo()
    touch = (~branch[coo.row]) & branch[coo.col]
    seg_of_edge, base_of_edge = comp[coo.row[touch]], coo.col[touch]
    n_bases = np.bincount(seg_of_edge, minlength=n_comp)
    base = np.full(n_comp, -1, dtype=np.int64)
    base[seg_of_edge] = base_of_edge
    terminal = has_end & (n_bases == 1)
    length = np.where((comp >= 0) & terminal[np.maximum(comp, 0)], seg_len[np.maximum(comp, 0)], 0.0)
    node_base = np.where(length > 0, base[np.maximum(comp, 0)], -1)
    return length, node_base


def _window_block(prefix: str, adj, w: np.ndarray, r: np.ndarray, onehot: np.ndarray, organelle_cols: np.ndarray,
                  is_end: np.ndarray, is_branch: np.ndarray, window_nm: float) -> dict[str, np.ndarray]:
    """The windowed statistics of one window size (see `node_features`)."""
    vol = np.pi * r ** 2 * w  # hull volume each node stands for (nm³)
    cols = np.column_stack([w, w * r, w * r ** 2, vol, is_end, is_branch, onehot * w[:, None], organelle_cols])
    s = window_sums(adj, cols, window_nm)
    length, mean = s[:, 0], s[:, 1] / s[:, 0]
    std = np.sqrt(np.maximum(s[:, 2] / length - mean ** 2, 0.0))
    out = {
        f"{prefix}_len_um": length / 1000.0,
        f"{prefix}_rad_mean": mean,
        f"{prefix}_rad_std": std,
        f"{prefix}_rad_cv": std / np.maximum(mean, 1.0),
        f"{prefix}_n_end": s[:, 4],
        f"{prefix}_n_branch": s[:, 5],
    }
    hist = s[:, 6:6 + onehot.shape[1]] / length[:, None]
    for b in range(onehot.shape[1]):
        out[f"{prefix}_rad_hist{b}"] = hist[:, b]
    org = s[:, 6 + onehot.shape[1]:]
    vol_um3 = np.maximum(s[:, 3] / 1e9, 1e-6)
    for i, kind in enumerate(ORGANELLE_KINDS):
        count, ovol = org[:, 2 * i], org[:, 2 * i + 1] / 1e9
        out[f"{prefix}_{kind}_n"] = count
        out[f"{prefix}_{kind}_per_um"] = count / np.maximum(length / 1000.0, 1e-3)
        out[f"{prefix}_{kind}_vol_frac"] = ovol / vol_um3
        out[f"{prefix}_{kind}_mean_um3"] = np.where(count > 0, ovol / np.maximum(count, 1), 0.0)
    return out


def node_features(cell: CellGraph, *, window_um: float, small_window_um: float):
    """Features of every node of one cell: (N, F) float32 array and the F feature names.

    Per window (`small_window_um`, `window_um` and the whole connected fragment, prefixes `ws`,
    `wl`, `cell`): path length (µm), length-weighted radius mean / std / coefficient of variation
    (varicosities), a 10-bin radius histogram (`RADIUS_BINS_NM`), end and branch node counts, and
    per organelle kind (mi, vc, sj) count, count per µm, volume fraction of the hull and mean size.
    Per node: radius, radius over the large window's mean, degree, path distance to the nearest end
    and branch node (µm, capped at `FAR_UM`), the terminal segment's length and its base's radius.
    """
    pos, edges = cell.positions_nm, np.asarray(cell.edges, dtype=np.int64).reshape(-1, 2)
    n = len(pos)
    r = np.asarray(cell.radius_nm, dtype=np.float64)
    finite = np.isfinite(r)
    r = np.where(finite, r, np.median(r[finite]) if finite.any() else 0.0)
    adj = adjacency(pos, edges)
    w = node_lengths_nm(pos, edges)
    degree = np.bincount(edges.ravel(), minlength=n) if len(edges) else np.zeros(n, dtype=np.int64)
    is_end, is_branch = (degree <= 1).astype(np.float64), (degree >= 3).astype(np.float64)
    onehot = np.zeros((n, len(RADIUS_BINS_NM) - 1))
    onehot[np.arange(n), np.clip(np.searchsorted(RADIUS_BINS_NM, r, side="right") - 1, 0, onehot.shape[1] - 1)] = 1.0
    organelle_cols = np.zeros((n, 2 * len(ORGANELLE_KINDS)))
    for i, kind in enumerate(ORGANELLE_KINDS):
        node_idx, volume = cell.organelles.get(kind, (np.zeros(0, np.int64), np.zeros(0)))
        np.add.at(organelle_cols[:, 2 * i], node_idx, 1.0)
        np.add.at(organelle_cols[:, 2 * i + 1], node_idx, volume)

    feats: dict[str, np.ndarray] = {}
    for prefix, window in (("ws", small_window_um * 1000.0), ("wl", window_um * 1000.0), ("cell", np.inf)):
        feats.update(_window_block(prefix, adj, w, r, onehot, organelle_cols, is_end, is_branch, window))
    far = FAR_UM * 1000.0
    term_len, base = terminal_segments(adj, degree, w)
    feats.update({
        "radius_nm": r,
        "radius_rel": r / np.maximum(feats["wl_rad_mean"], 1.0),
        "radius_rel_small": r / np.maximum(feats["ws_rad_mean"], 1.0),
        "degree": degree.astype(np.float64),
        "dist_end_um": nearest_distance_nm(adj, np.flatnonzero(is_end), cap_nm=far) / 1000.0,
        "dist_branch_um": nearest_distance_nm(adj, np.flatnonzero(is_branch), cap_nm=far) / 1000.0,
        "terminal_len_um": term_len / 1000.0,
        "terminal_base_rel": np.where(base >= 0, r / np.maximum(r[np.maximum(base, 0)], 1.0), 0.0),
        "terminal_base_radius_nm": np.where(base >= 0, r[np.maximum(base, 0)], 0.0),
    })
    names = list(feats)
    return np.column_stack([feats[k] for k in names]).astype(np.float32), names


def nearest_nodes(positions_nm: np.ndarray, points_nm: np.ndarray) -> np.ndarray:
    """(K,) index of the node nearest to each point (Euclidean, nm)."""
    from scipy.spatial import cKDTree

    if len(points_nm) == 0:
        return np.zeros(0, dtype=np.int64)
    return cKDTree(positions_nm).query(points_nm)[1].astype(np.int64)
