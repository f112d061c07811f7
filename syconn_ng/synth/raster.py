"""Chunked rasterisation of a `Tissue` into per-voxel fields (cells, membranes, organelles).

Only the capsules whose bounding boxes reach a box are visited, each on its own small
sub-box, so the cost of a chunk grows with its content. Ownership: a voxel belongs to the
cell whose surface it lies deepest inside (signed distance to the capsule surface, i.e. the
nearest centre line once radii are accounted for; ties go to the capsule listed first);
cells reach `fill_nm` beyond their capsules into free space. Membranes are the voxels within
`MEMBRANE_NM` of a cell's boundary, so neighbouring cells are always separated by a barrier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from syconn_ng.box import Box
from syconn_ng.synth.geometry import PARANODE_NM
from syconn_ng.synth.tissue import Tissue

MEMBRANE_NM = 15.0  # membrane (barrier) thickness on each side of a cell boundary
SJ_HALF_THICKNESS_NM = 18.0  # the sj is the cleft ± this much between pre and post
SJ_SLAB_NM = 90.0  # how far from the planned cleft plane the boundary is searched for the sj
NO_MYELIN_NM = 1e4  # myelin_sd where there is no myelin


@dataclass
class Fields:
    """Per-voxel fields of one box (all (X, Y, Z)).

    owner: int32 cell index + 1 (0: extracellular space), including the membrane voxels;
    bdist: float32 nm to the nearest cell boundary (negative in extracellular space);
    mi/vc/sj: int32 object index + 1 (0: none), only inside the owning cell's interior;
    mi_sd: float32 nm to the nearest mitochondrion surface (negative inside), mi_s: float32 arc
    length along it; psd: int32 synapse index + 1 on the postsynaptic side near the cleft;
    vesicle: float32 in [0, 1] vesicle membrane darkness; nucleus_sd: float32 nm to a nucleus;
    myelin_sd: float32 nm to the inner surface of a myelin sheath (negative inside the sheath,
    positive in the axon it wraps; `NO_MYELIN_NM` elsewhere).
    """

    box: Box
    owner: np.ndarray
    bdist: np.ndarray
    mi: np.ndarray
    mi_sd: np.ndarray
    mi_s: np.ndarray
    vc: np.ndarray
    sj: np.ndarray
    psd: np.ndarray
    vesicle: np.ndarray
    nucleus_sd: np.ndarray
    myelin_sd: np.ndarray

    def interior(self) -> np.ndarray:
        """(X, Y, Z) bool: voxels inside a cell and off its membrane (and off any myelin sheath)."""
        return (self.owner > 0) & (self.bdist >= MEMBRANE_NM) & (self.myelin_sd >= MEMBRANE_NM)

    def membrane(self) -> np.ndarray:
        """(X, Y, Z) bool: the barrier: membranes, and myelin sheaths with the axon membrane inside them."""
        return (self.owner > 0) & ((self.bdist < MEMBRANE_NM) | (self.myelin_sd < MEMBRANE_NM))

    def myelin(self) -> np.ndarray:
        """(X, Y, Z) bool: myelin sheath voxels."""
        return (self.owner > 0) & (self.myelin_sd < 0)


def _grids(box: Box, voxel_size_nm):
    """Voxel-centre coordinates (nm) along x, y and z of `box`, as float32 1-D arrays."""
    return [np.arange(a, b, dtype=np.float32) * np.float32(v) for a, b, v in zip(box.start, box.stop, voxel_size_nm)]


def _sub_box(box: Box, lo_nm, hi_nm, voxel_size_nm) -> Box | None:
    vs = np.asarray(voxel_size_nm)
    lo = np.ceil(np.asarray(lo_nm) / vs).astype(int)
    hi = np.floor(np.asarray(hi_nm) / vs).astype(int) + 1
    sub = Box(lo, hi).intersect(box)
    return None if sub.empty() else sub


def _capsule_sd(sub: Box, box: Box, grids, a, b, ra, rb):
    """Signed distance (nm, float32) to the capsule a→b (radii ra→rb) on `sub`, and t in [0, 1]."""
    sl = sub.slices(relative_to=box.start)
    px, py, pz = (g[s] - np.float32(c) for g, s, c in zip(grids, sl, a))
    u = (b - a).astype(np.float32)
    uu = max(float(u @ u), 1e-6)
    s = px[:, None, None] * u[0] + py[None, :, None] * u[1] + pz[None, None, :] * u[2]
    t = np.clip(s / uu, 0.0, 1.0)
    pp = px[:, None, None] ** 2 + py[None, :, None] ** 2 + pz[None, None, :] ** 2
    d2 = np.maximum(pp - 2 * t * s + t * t * uu, 0.0)
    return np.sqrt(d2) - (np.float32(ra) + t * np.float32(rb - ra)), t


def _boxes_overlapping(lo, hi, box_lo, box_hi):
    return np.flatnonzero(np.all(hi >= box_lo, axis=1) & np.all(lo <= box_hi, axis=1))


def rasterise(tissue: Tissue, box: Box) -> Fields:
    """All per-voxel fields of `box` (voxels, may reach outside the volume for halos)."""
    vs = np.asarray(tissue.voxel_size_nm)
    fill = np.float32(tissue.fill_nm)
    grids = _grids(box, vs)
    box_lo, box_hi = np.asarray(box.start) * vs, (np.asarray(box.stop) - 1) * vs
    shape = box.shape
    sd1 = np.full(shape, fill, np.float32)
    sd2 = np.full(shape, fill, np.float32)
    id1 = np.zeros(shape, np.int32)
    id2 = np.zeros(shape, np.int32)

    r = np.maximum(tissue.cap_ra, tissue.cap_rb)[:, None] + tissue.fill_nm
    lo = np.minimum(tissue.cap_a, tissue.cap_b) - r
    hi = np.maximum(tissue.cap_a, tissue.cap_b) + r
    for i in _boxes_overlapping(lo, hi, box_lo, box_hi):
        sub = _sub_box(box, lo[i], hi[i], vs)
        if sub is None:
            continue
        d, _ = _capsule_sd(sub, box, grids, tissue.cap_a[i], tissue.cap_b[i], tissue.cap_ra[i], tissue.cap_rb[i])
        sl = sub.slices(relative_to=box.start)
        _merge(sd1[sl], id1[sl], sd2[sl], id2[sl], d, int(tissue.cap_cell[i]) + 1)

    owner = id1
    pair = (sd2 - sd1) / 2
    bdist = np.where(id2 > 0, np.minimum(fill - sd1, pair), fill - sd1).astype(np.float32)
    myelin_sd = _myelin(tissue, box, grids, owner, bdist)
    interior = (owner > 0) & (bdist >= MEMBRANE_NM) & (myelin_sd >= MEMBRANE_NM)
    _separate(owner, bdist, interior)

    mi, mi_sd, mi_s = _mitochondria(tissue, box, grids, owner, interior)
    vc = _clouds(tissue, box, grids, owner, interior, mi)
    sj, psd = _junctions(tissue, box, grids, owner, id2, pair)
    vesicle = _vesicles(tissue, box, grids, owner, interior)
    nucleus_sd = _nuclei(tissue, box, grids, owner)
    return Fields(box, owner, bdist, mi, mi_sd, mi_s, vc, sj, psd, vesicle, nucleus_sd, myelin_sd)


def _myelin(tissue, box, grids, owner, bdist):
    """myelin_sd (see `Fields`) of `box`: the sheath wraps the internodes of myelinated axons.

    In each direction from the axon's centre line the sheath is the outer (1 - g) of the way to
    the axon's boundary (g: the g-ratio), so it is concentric, always reaches the boundary and
    never closes the axon where neighbours squeeze it; over `PARANODE_NM` at each internode end g
    rises to 1 (the sheath thins out towards the node of Ranvier).
    """
    out = np.full(box.shape, NO_MYELIN_NM, np.float32)
    if not len(tissue.my_cell):
        return out
    vs = np.asarray(tissue.voxel_size_nm)
    box_lo, box_hi = np.asarray(box.start) * vs, (np.asarray(box.stop) - 1) * vs
    cells = np.unique(tissue.my_cell)
    caps = np.flatnonzero(np.isin(tissue.cap_cell, cells))
    r = np.maximum(tissue.cap_ra[caps], tissue.cap_rb[caps])[:, None] + tissue.fill_nm
    lo = np.minimum(tissue.cap_a[caps], tissue.cap_b[caps]) - r
    hi = np.maximum(tissue.cap_a[caps], tissue.cap_b[caps]) + r
    hit = _boxes_overlapping(lo, hi, box_lo, box_hi)
    if not len(hit):
        return out
    # per voxel of a myelinated cell: its nearest capsule of that cell, the centre-line distance
    # and the arc length there (NaN off the myelinated axon: soma, dendrites, stems)
    best = np.full(box.shape, np.inf, np.float32)
    rho = np.zeros(box.shape, np.float32)
    arc = np.full(box.shape, np.nan, np.float32)
    for j in hit:
        i = caps[j]
        sub = _sub_box(box, lo[j], hi[j], vs)
        if sub is None:
            continue
        d, t = _capsule_sd(sub, box, grids, tissue.cap_a[i], tissue.cap_b[i], tissue.cap_ra[i], tissue.cap_rb[i])
        sl = sub.slices(relative_to=box.start)
        better = (owner[sl] == tissue.cap_cell[i] + 1) & (d < best[sl])
        best[sl] = np.where(better, d, best[sl])
        rho[sl] = np.where(better, d + tissue.cap_ra[i] + t * (tissue.cap_rb[i] - tissue.cap_ra[i]), rho[sl])
        arc[sl] = np.where(better, tissue.cap_s0[i] + t * (tissue.cap_s1[i] - tissue.cap_s0[i]), arc[sl])
    on_axon = np.flatnonzero(np.isfinite(arc).ravel())
    cell_of = owner.ravel()[on_axon] - 1
    for c in np.unique(cell_of):
        sel = on_axon[cell_of == c]
        s = arc.ravel()[sel]
        mine = tissue.my_cell == c
        s0, s1 = tissue.my_s0[mine], tissue.my_s1[mine]
        k = np.clip(np.searchsorted(s0, s, side="right") - 1, 0, len(s0) - 1)
        inside = (s >= s0[k]) & (s < s1[k])
        edge = np.minimum(s - s0[k], s1[k] - s)
        g = 1 - (1 - tissue.g_ratio) * np.clip(edge / PARANODE_NM, 0, 1)
        sd = g * bdist.ravel()[sel] - (1 - g) * rho.ravel()[sel]
        out.ravel()[sel[inside]] = sd[inside]
    return out


def _separate(owner, bdist, interior):
    """Make sure no two cells' interiors touch face to face (across thin sections a boundary can
    fall between two voxel centres): such voxels become membrane (in place; box edges excepted)."""
    for ax in range(3):
        n = owner.shape[ax]
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[ax], b[ax] = slice(0, n - 1), slice(1, n)
        a, b = tuple(a), tuple(b)
        clash = interior[a] & interior[b] & (owner[a] != owner[b])
        if clash.any():
            bdist[a][clash] = np.minimum(bdist[a][clash], MEMBRANE_NM / 2)
            bdist[b][clash] = np.minimum(bdist[b][clash], MEMBRANE_NM / 2)
    interior &= bdist >= MEMBRANE_NM


def _merge(sd1, id1, sd2, id2, d, c):
    """Fold one capsule's signed distances `d` of cell `c` into the best-two-cells fields (in place)."""
    m = d < sd2
    if not m.any():
        return
    dd, s1, i1, s2, i2 = d[m], sd1[m], id1[m], sd2[m], id2[m]
    same = i1 == c
    first = ~same & (dd < s1)
    sd1[m] = np.where(same, np.minimum(s1, dd), np.where(first, dd, s1))
    id1[m] = np.where(first, c, i1)
    sd2[m] = np.where(same, s2, np.where(first, s1, dd))
    id2[m] = np.where(same, i2, np.where(first, i1, c))


def _mitochondria(tissue, box, grids, owner, interior):
    vs = np.asarray(tissue.voxel_size_nm)
    shape = box.shape
    mi = np.zeros(shape, np.int32)
    mi_sd = np.full(shape, 40.0, np.float32)
    mi_s = np.zeros(shape, np.float32)
    box_lo, box_hi = np.asarray(box.start) * vs, (np.asarray(box.stop) - 1) * vs
    r = tissue.mi_r[:, None] + 40.0
    lo = np.minimum(tissue.mi_a, tissue.mi_b) - r
    hi = np.maximum(tissue.mi_a, tissue.mi_b) + r
    for i in _boxes_overlapping(lo, hi, box_lo, box_hi):
        sub = _sub_box(box, lo[i], hi[i], vs)
        if sub is None:
            continue
        d, t = _capsule_sd(sub, box, grids, tissue.mi_a[i], tissue.mi_b[i], tissue.mi_r[i], tissue.mi_r[i])
        sl = sub.slices(relative_to=box.start)
        k = int(tissue.mi_obj[i])
        own = owner[sl] == tissue.mito_cell[k] + 1
        better = (d < mi_sd[sl]) & own
        mi_sd[sl] = np.where(better, d, mi_sd[sl])
        mi_s[sl] = np.where(better, tissue.mi_s0[i] + t * (tissue.mi_s1[i] - tissue.mi_s0[i]), mi_s[sl])
        mi[sl] = np.where(better & (d < 0) & interior[sl], k + 1, mi[sl])
    return mi, mi_sd, mi_s


def _clouds(tissue, box, grids, owner, interior, mi):
    vs = np.asarray(tissue.voxel_size_nm)
    vc = np.zeros(box.shape, np.int32)
    box_lo, box_hi = np.asarray(box.start) * vs, (np.asarray(box.stop) - 1) * vs
    r = tissue.vc_radius_nm[:, None]
    for i in _boxes_overlapping(tissue.vc_centre_nm - r, tissue.vc_centre_nm + r, box_lo, box_hi):
        c = tissue.vc_centre_nm[i]
        sub = _sub_box(box, c - r[i], c + r[i], vs)
        if sub is None:
            continue
        d, _ = _capsule_sd(sub, box, grids, c, c, r[i, 0], r[i, 0])
        sl = sub.slices(relative_to=box.start)
        inside = (d < 0) & interior[sl] & (owner[sl] == tissue.vc_cell[i] + 1) & (mi[sl] == 0)
        vc[sl] = np.where(inside, i + 1, vc[sl])
    return vc


def _junctions(tissue, box, grids, owner, second, pair):
    """sj: the pre/post boundary ± SJ_HALF_THICKNESS_NM inside each synapse's disc; psd: the
    postsynaptic side of that disc (the renderer thickens it for asymmetric synapses)."""
    vs = np.asarray(tissue.voxel_size_nm)
    sj = np.zeros(box.shape, np.int32)
    psd = np.zeros(box.shape, np.int32)
    box_lo, box_hi = np.asarray(box.start) * vs, (np.asarray(box.stop) - 1) * vs
    reach = np.maximum(tissue.syn_radius_nm, SJ_SLAB_NM)[:, None] + 10
    for i in _boxes_overlapping(tissue.syn_centre_nm - reach, tissue.syn_centre_nm + reach, box_lo, box_hi):
        c, n = tissue.syn_centre_nm[i], tissue.syn_normal[i]
        sub = _sub_box(box, c - reach[i], c + reach[i], vs)
        if sub is None:
            continue
        sl = sub.slices(relative_to=box.start)
        px, py, pz = (g[s] - np.float32(cc) for g, s, cc in zip(grids, sl, c))
        axial = px[:, None, None] * n[0] + py[None, :, None] * n[1] + pz[None, None, :] * n[2]
        rr = px[:, None, None] ** 2 + py[None, :, None] ** 2 + pz[None, None, :] ** 2 - axial**2
        disc = (np.abs(axial) < SJ_SLAB_NM) & (rr < tissue.syn_radius_nm[i] ** 2)
        pre, post = tissue.syn_pre[i] + 1, tissue.syn_post[i] + 1
        o, s2 = owner[sl], second[sl]
        between = ((o == pre) & (s2 == post)) | ((o == post) & (s2 == pre))
        sj[sl] = np.where(disc & between & (pair[sl] < SJ_HALF_THICKNESS_NM), i + 1, sj[sl])
        psd[sl] = np.where(disc & (o == post) & (s2 == pre) & (pair[sl] < 60.0), i + 1, psd[sl])
    return sj, psd


def _vesicles(tissue, box, grids, owner, interior):
    """Darkness of vesicle membranes (rings of radius ~20 nm), only inside their own cell."""
    from syconn_ng.synth.synapses import VESICLE_RADIUS_NM

    vs = np.asarray(tissue.voxel_size_nm)
    out = np.zeros(box.shape, np.float32)
    box_lo, box_hi = np.asarray(box.start) * vs, (np.asarray(box.stop) - 1) * vs
    r = VESICLE_RADIUS_NM + 12.0
    for i in _boxes_overlapping(tissue.ves_pos_nm - r, tissue.ves_pos_nm + r, box_lo, box_hi):
        c = tissue.ves_pos_nm[i]
        sub = _sub_box(box, c - r, c + r, vs)
        if sub is None:
            continue
        d, _ = _capsule_sd(sub, box, grids, c, c, VESICLE_RADIUS_NM, VESICLE_RADIUS_NM)
        sl = sub.slices(relative_to=box.start)
        ring = np.exp(-((d + 4.0) / 8.0) ** 2) * ((owner[sl] == tissue.ves_cell[i] + 1) & interior[sl])
        out[sl] = np.maximum(out[sl], ring)
    return out


def _nuclei(tissue, box, grids, owner):
    vs = np.asarray(tissue.voxel_size_nm)
    out = np.full(box.shape, 1e4, np.float32)
    box_lo, box_hi = np.asarray(box.start) * vs, (np.asarray(box.stop) - 1) * vs
    for ci in np.flatnonzero(tissue.nucleus_radius_nm > 0):
        c, rn = tissue.nucleus_centre_nm[ci], tissue.nucleus_radius_nm[ci]
        sub = _sub_box(box, c - rn - 50, c + rn + 50, vs)
        if sub is None or not (np.all(c + rn + 50 >= box_lo) and np.all(c - rn - 50 <= box_hi)):
            continue
        d, _ = _capsule_sd(sub, box, grids, c, c, rn, rn)
        sl = sub.slices(relative_to=box.start)
        out[sl] = np.where(owner[sl] == ci + 1, np.minimum(out[sl], d), out[sl])
    return out


def sj_areas_um2(tissue: Tissue) -> np.ndarray:
    """(N,) cleft area (µm²) of each planned synapse as it will be rasterised inside the volume.

    Each synapse's neighbourhood is rasterised on its own (the labels do not depend on the box),
    so synapses squeezed out by a third cell can be dropped before the volume is written.
    """
    vs = np.asarray(tissue.voxel_size_nm)
    volume = Box((0, 0, 0), tissue.shape_vx)
    areas = np.zeros(len(tissue.syn_pre))
    for i, (c, r) in enumerate(zip(tissue.syn_centre_nm, tissue.syn_radius_nm)):
        reach = max(r, SJ_SLAB_NM) + 20
        sub = Box(np.floor((c - reach) / vs).astype(int), np.ceil((c + reach) / vs).astype(int) + 1).intersect(volume)
        if sub.empty():
            continue
        n = int((rasterise(tissue, sub).sj == i + 1).sum())
        areas[i] = n * float(np.prod(vs)) / (2 * SJ_HALF_THICKNESS_NM) / 1e6
    return areas

