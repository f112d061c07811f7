"""Contact sites: where two different cells of the `cells` layer come within a distance across the membrane.

The `cells` layer leaves membranes unlabelled, so two touching cells are separated by a thin run
of 0 voxels. Along each axis, every run of 0s bounded by two different cells and no wider than
`contact_dist_nm` marks its voxels and the two bounding voxels as contact voxels of that pair
(the axis with the narrowest gap wins). The cost is a few passes over the box, whatever the
number of cells, and grows with the contacts, not with the pairs of cells. Contact voxels of
one pair that touch (26-connectivity) form one contact site.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _runs_along(cells: np.ndarray, axis: int):
    """Per voxel: the nearest labelled voxel at or before it and after it along `axis` (indices, -1 / n if none)."""
    n = cells.shape[axis]
    shape = [1, 1, 1]
    shape[axis] = n
    idx = np.arange(n, dtype=np.int32).reshape(shape)
    labelled = cells > 0
    prev = np.maximum.accumulate(np.where(labelled, idx, -1), axis=axis)
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(labelled, idx, n), axis=axis), axis=axis), axis=axis)
    return prev, nxt


def contact_voxels(cells: np.ndarray, *, voxel_size_nm, contact_dist_nm: float):
    """Contact voxels of a box of the cells layer, with the pair of cells at each.

    cells: (X, Y, Z) uint64 cell ids, 0 = membrane / unlabelled. A voxel is a contact voxel if,
    along some axis, it lies in (or bounds) a run of 0s between two different cells no wider
    than `contact_dist_nm` (two different cells touching face to face count as a run of 0).
    Returns (cell_a, cell_b, area_nm2): (X, Y, Z) uint64, uint64 with cell_a < cell_b (0 = not
    a contact voxel), and float32, the voxel's share of the contact area: the face area across
    the run's axis divided by the run's voxels, so a site's shares sum to its area projected
    onto the axes across its gaps.
    """
    cells = np.asarray(cells)
    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    a_out = np.zeros(cells.shape, np.uint64)
    b_out = np.zeros(cells.shape, np.uint64)
    area = np.zeros(cells.shape, np.float32)
    best = np.full(cells.shape, np.inf, np.float32)  # gap (nm) of the run that marked each voxel
    for axis in range(3):
        n = cells.shape[axis]
        if n < 2:
            continue
        face_nm2 = float(np.prod(np.delete(vs, axis)))
        prev, nxt = _runs_along(cells, axis)
        lo = np.take_along_axis(cells, np.clip(prev, 0, n - 1), axis=axis)
        hi = np.take_along_axis(cells, np.clip(nxt, 0, n - 1), axis=axis)
        gap_vx = (nxt - prev - 1).astype(np.float32)
        zero_run = (cells == 0) & (prev >= 0) & (nxt < n) & (lo != hi) & (lo > 0) & (hi > 0) & (gap_vx * vs[axis] <= contact_dist_nm)
        gap_nm = gap_vx * np.float32(vs[axis])
        share = np.float32(face_nm2) / (gap_vx + 2)
        _mark(zero_run, lo, hi, gap_nm, share, a_out, b_out, area, best)
        # the labelled voxels bounding a contact run take its pair; cells touching face to face are a run of none
        touch_gap = np.zeros(cells.shape, np.float32)
        touch_share = np.full(cells.shape, np.float32(face_nm2 / 2))
        for here, there in ((_cut(axis, 0, n - 1), _cut(axis, 1, n)), (_cut(axis, 1, n), _cut(axis, 0, n - 1))):
            c = cells[here]
            run = zero_run[there] & (c > 0)
            _mark(run, lo[there], hi[there], gap_nm[there], share[there], a_out[here], b_out[here], area[here], best[here])
            touch = (c > 0) & (cells[there] > 0) & (cells[there] != c)
            _mark(touch, c, cells[there], touch_gap[here], touch_share[here], a_out[here], b_out[here], area[here], best[here])
    return a_out, b_out, area


def _cut(axis: int, start: int, stop: int):
    sl = [slice(None)] * 3
    sl[axis] = slice(start, stop)
    return tuple(sl)


def _mark(mask, c1, c2, gap_nm, share, a_out, b_out, area, best):
    """Record pair (c1, c2) at `mask` voxels whose gap is narrower than the one recorded so far."""
    take = mask & (gap_nm < best)
    a_out[take] = np.minimum(c1, c2)[take]
    b_out[take] = np.maximum(c1, c2)[take]
    area[take] = share[take]
    best[take] = gap_nm[take]


@dataclass
class Pieces:
    """Contact-site pieces of one box: per piece the pair, voxels, area and coordinate sums; and the
    voxels on the box's faces (for joining pieces across boxes)."""

    cell_a: np.ndarray  # (K,) uint64
    cell_b: np.ndarray  # (K,) uint64
    voxels: np.ndarray  # (K,) int64
    area_nm2: np.ndarray  # (K,) float64
    coord_sum: np.ndarray  # (K, 3) float64, global voxel coordinates summed
    face_vx: np.ndarray  # (F, 3) int64 global coordinates of piece voxels on the box faces
    face_piece: np.ndarray  # (F,) int64 index of their piece
    labels: np.ndarray  # (X, Y, Z) uint32 piece index + 1 per voxel of the box (0 = none)


def contact_pieces(cell_a: np.ndarray, cell_b: np.ndarray, area_nm2: np.ndarray, *, offset_vx=(0, 0, 0)) -> Pieces:
    """Connected components (26-connectivity) of the contact voxels of each pair in one box.

    cell_a, cell_b, area_nm2: the (X, Y, Z) outputs of `contact_voxels` cropped to the box;
    offset_vx: the box's global start. Returns `Pieces`.
    """
    import cc3d
    import fastremap

    shape = cell_a.shape
    contact = cell_b > 0
    pair_index = np.zeros(shape, np.uint32)
    if contact.any():
        pairs, inverse = np.unique(np.stack([cell_a[contact], cell_b[contact]], 1), axis=0, return_inverse=True)
        pair_index[contact] = inverse.ravel().astype(np.uint32) + 1
    else:
        pairs = np.zeros((0, 2), np.uint64)
    labels = cc3d.connected_components(pair_index, connectivity=26, out_dtype=np.uint32)
    labels, _ = fastremap.renumber(labels, in_place=True)
    labels = labels.astype(np.uint32)
    k = int(labels.max()) if labels.size else 0
    vox = np.argwhere(labels > 0)
    lab = labels[tuple(vox.T)].astype(np.int64) - 1
    count = np.bincount(lab, minlength=k)
    coord_sum = np.stack([np.bincount(lab, weights=vox[:, i] + offset_vx[i], minlength=k) for i in range(3)], 1) if k else np.zeros((0, 3))
    area = np.bincount(lab, weights=area_nm2[tuple(vox.T)], minlength=k)
    first = np.zeros(k, np.int64)
    first[lab[::-1]] = np.arange(len(lab))[::-1]  # a voxel of each piece, for its pair
    pidx = pair_index[tuple(vox[first].T)].astype(np.int64) - 1 if k else np.zeros(0, np.int64)
    on_face = np.zeros(len(vox), bool)
    for i in range(3):
        on_face |= (vox[:, i] == 0) | (vox[:, i] == shape[i] - 1)
    return Pieces(cell_a=pairs[pidx, 0].astype(np.uint64), cell_b=pairs[pidx, 1].astype(np.uint64), voxels=count.astype(np.int64),
                  area_nm2=area, coord_sum=coord_sum, face_vx=vox[on_face] + np.asarray(offset_vx, np.int64),
                  face_piece=lab[on_face], labels=labels)


def join_pieces(cell_a, cell_b, face_vx, face_piece) -> np.ndarray:
    """Site index of every piece: pieces of the same pair whose face voxels touch (26-neighbours) are one site.

    cell_a, cell_b: (K,) pair of every piece (global piece index); face_vx: (F, 3) global voxel
    coordinates on box faces; face_piece: (F,) their global piece index. Returns (K,) int64 site
    indices 0..S-1, numbered in order of each site's first piece.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    k = len(cell_a)
    if k == 0:
        return np.zeros(0, np.int64)
    edges = np.zeros((0, 2), np.int64)
    if len(face_vx):
        pairs = cKDTree(face_vx).query_pairs(r=np.sqrt(3) + 1e-6, output_type="ndarray")
        p, q = face_piece[pairs[:, 0]], face_piece[pairs[:, 1]]
        same = (p != q) & (cell_a[p] == cell_a[q]) & (cell_b[p] == cell_b[q])
        edges = np.stack([p[same], q[same]], 1)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(k, k))
    _, comp = connected_components(graph, directed=False)
    _, first = np.unique(comp, return_index=True)
    order = np.argsort(np.argsort(first))  # renumber components by their first piece
    return order[comp].astype(np.int64)
