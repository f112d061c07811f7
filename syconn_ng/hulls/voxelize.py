"""Hulls → cell label voxels: a voxel belongs to a cell if it lies inside the region of one of the
cell's nodes, the region bounded by that node's ray end points.

A node's region is the intersection of the half-spaces x·uᵢ ≤ ℓᵢ of its kept rays (direction uᵢ,
length ℓᵢ): every ray end point bounds it, and a long tilted ray cannot stretch it sideways (the
nearest-ray lookup does: a ray tilted 60° along a neurite is twice its radius long). Its radial
function ρ(d) = minᵢ ℓᵢ / (d·uᵢ) is tabulated per cube-map direction bin (no ray within
`max_gap_deg` of a bin: outside), and a voxel at distance r in bin b is inside if r ≤ ρ[b].
Voxel distances and bins come from a template cached per box size, so rasterising a node is one
gather and two comparisons per voxel. A voxel claimed by nodes of two cells goes to the cell
whose claiming node is nearer.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from syconn_ng.box import Box


# ---------------------------------------------------------------- directions on a cube map

def bin_index(vectors: np.ndarray, n: int) -> np.ndarray:
    """Cube-map bin (0 .. 6·n² − 1) of each (..., 3) vector (any length; zero vectors get bin 0)."""
    v = np.asarray(vectors, dtype=np.float64)
    a = np.abs(v)
    axis = np.argmax(a, axis=-1)
    major = np.take_along_axis(v, axis[..., None], axis=-1)[..., 0]
    denom = np.where(major == 0, 1.0, np.abs(major))
    u_axis, v_axis = (axis + 1) % 3, (axis + 2) % 3
    u = np.take_along_axis(v, u_axis[..., None], axis=-1)[..., 0] / denom
    w = np.take_along_axis(v, v_axis[..., None], axis=-1)[..., 0] / denom
    iu = np.clip(((u + 1) * 0.5 * n).astype(np.int64), 0, n - 1)
    iw = np.clip(((w + 1) * 0.5 * n).astype(np.int64), 0, n - 1)
    face = 2 * axis + (major > 0)
    return (face * n * n + iu * n + iw).astype(np.int32)


@lru_cache(maxsize=8)
def bin_centres(n: int) -> np.ndarray:
    """(6·n², 3) float64 unit vector at the centre of each cube-map bin (inverse of `bin_index`)."""
    face, rest = np.divmod(np.arange(6 * n * n), n * n)
    iu, iw = np.divmod(rest, n)
    axis, positive = face // 2, face % 2 == 1
    out = np.zeros((len(face), 3))
    rows = np.arange(len(face))
    out[rows, axis] = np.where(positive, 1.0, -1.0)
    out[rows, (axis + 1) % 3] = (iu + 0.5) / n * 2 - 1
    out[rows, (axis + 2) % 3] = (iw + 0.5) / n * 2 - 1
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def node_bin_lengths(node_nm: np.ndarray, points_nm: np.ndarray, point_node: np.ndarray, *, n_bins: int,
                     max_gap_deg: float) -> np.ndarray:
    """(K, 6·n_bins²) float32: per node and direction bin, how far (nm) the node's region reaches.

    node_nm (K, 3); points_nm (P, 3) hull points; point_node (P,) their node (0 .. K−1), sorted.
    The reach in bin direction d is minᵢ ℓᵢ / (d·uᵢ) over the node's rays with d·uᵢ > 0; bins with
    no ray within `max_gap_deg` get −1 (outside).
    """
    centres = bin_centres(n_bins)
    out = np.full((len(node_nm), len(centres)), -1.0, dtype=np.float32)
    if len(point_node) == 0:
        return out
    cos_gap = np.cos(np.deg2rad(max_gap_deg))
    offset = points_nm - node_nm[point_node]
    length = np.linalg.norm(offset, axis=1)
    unit = offset / np.maximum(length, 1e-9)[:, None]
    bounds = np.searchsorted(point_node, np.arange(len(node_nm) + 1))
    for k in range(len(node_nm)):
        lo, hi = bounds[k], bounds[k + 1]
        if hi == lo:
            continue
        dots = centres @ unit[lo:hi].T  # (B, R)
        with np.errstate(divide="ignore"):
            reach = np.where(dots > 1e-6, length[lo:hi] / np.maximum(dots, 1e-6), np.inf).min(axis=1)
        out[k] = np.where(dots.max(axis=1) >= cos_gap, reach, -1.0)
    return out


# ---------------------------------------------------------------- which nodes to rasterise

def voxelize_nodes(node_nm: np.ndarray, radius_nm: np.ndarray, degree: np.ndarray, *, spacing: float) -> np.ndarray:
    """(N,) bool: the nodes whose regions are rasterised, thinned to `spacing` × radius apart.

    Nodes are taken by decreasing radius; a chain node (degree 2) closer than `spacing` × r to a
    taken node of radius r is left out (its region lies mostly inside that node's); end and branch
    nodes always stay. Along a thin neurite every node stays; in a soma a few large regions replace
    dozens of overlapping ones.
    """
    from scipy.spatial import cKDTree

    n = len(node_nm)
    keep = np.zeros(n, dtype=bool)
    valid = np.isfinite(radius_nm) & (radius_nm > 0)
    if not valid.any():
        return keep
    idx = np.flatnonzero(valid)
    order = idx[np.argsort(-radius_nm[idx], kind="stable")]
    tree = cKDTree(node_nm[idx])
    near = tree.query_ball_point(node_nm[order], spacing * radius_nm[order])
    dropped = np.zeros(n, dtype=bool)
    for i, neighbours in zip(order, near):
        if dropped[i]:
            continue
        keep[i] = True
        dropped[idx[neighbours]] = True
    keep |= valid & (degree != 2)
    return keep


# ---------------------------------------------------------------- rasterising

@lru_cache(maxsize=16)
def _template(half: tuple[int, int, int], voxel_size_nm: tuple[float, float, float], n_bins: int):
    """Distance (nm, float32) and cube-map bin (int32) of every voxel of a (2h + 1)³ box from its centre."""
    axes = [np.arange(-h, h + 1, dtype=np.float64) * s for h, s in zip(half, voxel_size_nm)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    dist = np.linalg.norm(grid, axis=-1).astype(np.float32)
    return dist, bin_index(grid, n_bins)


def rasterize_stars(box: Box, nodes_vx: np.ndarray, lengths: np.ndarray, labels: np.ndarray, *, voxel_size_nm,
                    n_bins: int) -> np.ndarray:
    """(X, Y, Z) uint64 labels of `box`: each voxel takes the label of the nearest node whose region holds it.

    nodes_vx (K, 3) float voxels; lengths (K, 6·n_bins²) float32 from `node_bin_lengths`; labels
    (K,) uint64 (the cell id of each node). Node centres are rounded to the nearest voxel.
    """
    vs = tuple(float(v) for v in voxel_size_nm)
    out = np.zeros(box.shape, dtype=np.uint64)
    best = np.full(box.shape, np.inf, dtype=np.float32)
    start = np.asarray(box.start)
    centre = np.rint(nodes_vx).astype(np.int64)
    reach = np.max(lengths, axis=1)
    # template sizes rounded up to multiples of 4 voxels, so a few cached templates serve all nodes
    half = (np.ceil(np.maximum(reach, 0)[:, None] / np.asarray(vs) / 4).astype(np.int64) + 1) * 4
    for k in np.flatnonzero(reach >= 0):
        h = half[k]
        node_box = Box(centre[k] - h, centre[k] + h + 1).intersect(box)
        if node_box.empty():
            continue
        dist, bins = _template(tuple(int(v) for v in h), vs, n_bins)
        t = node_box.slices(relative_to=centre[k] - h)
        o = node_box.slices(relative_to=start)
        d = dist[t]
        claim = (d <= lengths[k][bins[t]]) & (d < best[o])
        best[o][claim] = d[claim]
        out[o][claim] = labels[k]
    return out


# ---------------------------------------------------------------- growth up to the membranes

def grow_labels(labels: np.ndarray, free: np.ndarray, steps_vx) -> np.ndarray:
    """Labels grown into unlabelled `free` voxels, one voxel per step along each axis (6-neighbours).

    labels (X, Y, Z) uint64; free (X, Y, Z) bool (off the barrier); steps_vx (3,) steps per axis
    (e.g. 4, 4, 2 for 40 nm at 10 × 10 × 20 nm). The hull's node regions stop a few voxels short
    of the membrane (rays end where they enter it, region boundaries are cut between rays); this
    fills that rim without crossing a membrane. Where two labels reach a voxel in the same step,
    the first in axis order (x−, x+, y−, ...) wins. A voxel's result depends only on voxels
    within `steps_vx` of it, so boxes grown by that halo give the same result as the whole volume.
    """
    out = np.where(free, labels, np.uint64(0))
    steps = [int(s) for s in steps_vx]
    for it in range(max(steps, default=0)):
        new = out.copy()
        for axis in range(3):
            if it >= steps[axis]:
                continue
            for direction in (1, -1):
                src = [slice(None)] * 3
                dst = [slice(None)] * 3
                src[axis] = slice(0, -1) if direction > 0 else slice(1, None)
                dst[axis] = slice(1, None) if direction > 0 else slice(0, -1)
                neighbour = out[tuple(src)]
                target = new[tuple(dst)]
                take = (target == 0) & free[tuple(dst)] & (neighbour > 0)
                target[take] = neighbour[take]
        out = new
    return out
