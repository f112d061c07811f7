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
    onto the axes across its gaps. Where several axes mark a voxel, the narrowest gap wins.
    """
    cells = np.asarray(cells)
    if not (cells.flags.c_contiguous or cells.flags.f_contiguous):
        cells = np.ascontiguousarray(cells)
    order = "F" if cells.flags.f_contiguous and not cells.flags.c_contiguous else "C"  # CloudVolume cutouts are Fortran
    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    shape = cells.shape
    flat = cells.ravel(order=order)  # a view; flat indices step by `strides` along each axis
    strides = np.asarray(cells.strides) // cells.itemsize
    a_out = np.zeros(flat.size, np.uint64)
    b_out = np.zeros(flat.size, np.uint64)
    area = np.zeros(flat.size, np.float32)
    best = np.full(flat.size, np.inf, np.float32)  # gap (nm) of the run that marked each voxel
    zero = np.flatnonzero(flat == 0)
    for axis in range(3):
        n = shape[axis]
        if n < 2:
            continue
        stride = int(strides[axis])
        face_nm2 = np.float32(np.prod(np.delete(vs, axis)))
        prev, nxt = (v.ravel(order=order)[zero] for v in _runs_along(cells, axis))
        pos = np.unravel_index(zero, shape, order=order)[axis]
        inside = (prev >= 0) & (nxt < n)
        z, prev, nxt, pos = zero[inside], prev[inside], nxt[inside], pos[inside]
        lo_i = z - (pos - prev).astype(np.int64) * stride
        hi_i = z + (nxt - pos).astype(np.int64) * stride
        lo, hi = flat[lo_i], flat[hi_i]
        gap_vx = (nxt - prev - 1).astype(np.float32)
        run = (lo != hi) & (gap_vx * np.float32(vs[axis]) <= contact_dist_nm)
        z, lo_i, hi_i, lo, hi, gap_vx = z[run], lo_i[run], hi_i[run], lo[run], hi[run], gap_vx[run]
        gap_nm = gap_vx * np.float32(vs[axis])
        share = face_nm2 / (gap_vx + 2)
        for where in (z, lo_i, hi_i):  # the run's 0s and the two labelled voxels bounding it
            _mark(where, lo, hi, gap_nm, share, a_out, b_out, area, best)
        # cells touching face to face: a run of no 0s
        sl0 = [slice(None)] * 3
        sl1 = [slice(None)] * 3
        sl0[axis], sl1[axis] = slice(0, n - 1), slice(1, n)
        c0, c1 = cells[tuple(sl0)], cells[tuple(sl1)]
        touch = np.flatnonzero(((c0 > 0) & (c1 > 0) & (c0 != c1)).ravel(order=order))
        if len(touch):
            i0 = np.ravel_multi_index(np.unravel_index(touch, c0.shape, order=order), shape, order=order)
            i1 = i0 + stride
            zeros_gap = np.zeros(len(i0), np.float32)
            half = np.full(len(i0), face_nm2 / 2, np.float32)
            for where in (i0, i1):
                _mark(where, flat[i0], flat[i1], zeros_gap, half, a_out, b_out, area, best)
    return a_out.reshape(shape, order=order), b_out.reshape(shape, order=order), area.reshape(shape, order=order)


def _mark(where, c1, c2, gap_nm, share, a_out, b_out, area, best):
    """Record pair (c1, c2) at flat indices `where` whose gap is narrower than the one recorded so far."""
    take = gap_nm < best[where]
    w = where[take]
    a_out[w] = np.minimum(c1, c2)[take]
    b_out[w] = np.maximum(c1, c2)[take]
    area[w] = share[take]
    best[w] = gap_nm[take]


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
        ua, ia = np.unique(cell_a[contact], return_inverse=True)  # 1-D uniques: much faster than unique rows
        ub, ib = np.unique(cell_b[contact], return_inverse=True)
        codes, inverse = np.unique(ia.ravel().astype(np.int64) * len(ub) + ib.ravel(), return_inverse=True)
        pairs = np.stack([ua[codes // len(ub)], ub[codes % len(ub)]], 1)
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
