"""Myelin per skeleton node: the myelin probability in a thin shell just outside the node's hull, a
threshold, and a majority vote along the skeleton (SyConn: a box mean > 100/255, then a vote within 2 µm).

SyConn's fixed 10 × 10 × 5 voxel box around a node lies inside any axon thicker than 100 nm, where
no myelin is; the sheath wraps the hull, so the shell starts at the node's hull radius.
"""

from __future__ import annotations

import numpy as np

from syconn_ng.compartments.smoothing import smooth_probabilities


def shell_means(read, positions_vx: np.ndarray, radius_nm: np.ndarray, *, voxel_size_nm, shell_nm: float) -> np.ndarray:
    """(N,) mean myelin probability (0-1) over the voxels between each node's hull radius and `shell_nm`
    beyond it; NaN radii take the cell's median (100 nm without any).

    read(box) -> (X, Y, Z) uint8 myelin probabilities x 255 of a `syconn_ng.box.Box` (clipped by the caller's
    reader; voxels outside the dataset read as 0). positions_vx (N, 3) float voxel coordinates.
    """
    from syconn_ng.box import Box

    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    n = len(positions_vx)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    r = np.asarray(radius_nm, dtype=np.float64).copy()
    known = np.isfinite(r) & (r > 0)
    r[~known] = np.median(r[known]) if known.any() else 100.0
    outer = r + shell_nm
    reach = np.ceil(outer[:, None] / vs).astype(np.int64)  # (N, 3) voxels each side
    centre = np.rint(positions_vx).astype(np.int64)
    lo, hi = (centre - reach).min(axis=0), (centre + reach + 1).max(axis=0)
    data = read(Box(lo, hi))
    for i in range(n):
        a, b = centre[i] - reach[i] - lo, centre[i] + reach[i] + 1 - lo
        block = data[a[0]:b[0], a[1]:b[1], a[2]:b[2]]
        axes = [(np.arange(s0, s1) + lo[k] - positions_vx[i, k]) * vs[k] for k, (s0, s1) in enumerate(zip(a, b))]
        d2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
        shell = (d2 >= r[i] ** 2) & (d2 <= outer[i] ** 2)
        out[i] = float(block[shell].mean()) / 255.0 if shell.any() else 0.0
    return out


def myelinated(positions_nm: np.ndarray, edges: np.ndarray, values: np.ndarray, *, threshold: float, vote_um: float) -> np.ndarray:
    """(N,) bool: shell means above `threshold`, then the majority (by path length) of the nodes within
    `vote_um` along the skeleton (0 = no vote)."""
    flag = (np.nan_to_num(values, nan=0.0) > threshold).astype(np.float64)[:, None]
    voted = smooth_probabilities(positions_nm, edges, flag, distance_nm=vote_um * 1000.0)
    return voted[:, 0] > 0.5


def node_myelin(read, positions_vx: np.ndarray, edges: np.ndarray, radius_nm: np.ndarray, *, voxel_size_nm, bounds,
                shell_nm: float, threshold: float, vote_um: float, max_box_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """(myelin shell means (N,), myelinated (N,) bool) of one cell, reading the myelin layer in boxes of nodes
    along the skeleton that stay under `max_box_voxels` (a long axon is never read as one box)."""
    from syconn_ng.hulls.raycast import node_batches

    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    values = np.full(len(positions_vx), np.nan)
    r = np.asarray(radius_nm, dtype=np.float64).copy()
    known = np.isfinite(r) & (r > 0)
    r[~known] = np.median(r[known]) if known.any() else 100.0  # the cell's, not a batch's
    margin = np.ceil((np.nanmax(r, initial=100.0) + shell_nm) / vs).astype(int) + 1
    for idx, _ in node_batches(positions_vx, edges, margin_vx=margin, bounds=bounds, max_box_voxels=max_box_voxels):
        values[idx] = shell_means(read, positions_vx[idx], r[idx], voxel_size_nm=vs, shell_nm=shell_nm)
    return values, myelinated(positions_vx * vs, edges, values, threshold=threshold, vote_um=vote_um)
