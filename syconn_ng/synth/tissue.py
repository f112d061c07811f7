"""`Tissue`: the complete geometry of a synthetic volume as flat numpy arrays, and `build_tissue`.

The tissue is the single source of truth: every label layer, table, skeleton and the raw EM
are computed from it (chunk by chunk), so they agree by construction. Lengths are nm in
the tissue frame (voxel (i, j, k) has its centre at ``(i, j, k) * voxel_size_nm``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from syconn_ng.synth.geometry import CELL_TYPE_SPECS, G_RATIO, MYELIN_SPECS, Grower, MyelinPlan, Region, point_segment_distance
from syconn_ng.synth.mitochondria import place_mitochondria
from syconn_ng.synth.synapses import place_synapses_and_contacts

FILL_TARGET = 0.7  # share of the volume inside capsules that the automatic cell count aims at
FILL_NM = 85.0  # cells extend this far beyond their capsules into free space (closing the ECS)
SOMATA_PER_UM3 = 0.004


@dataclass
class Tissue:
    """All geometry of one synthetic tissue; indices (cell, mito, cloud, synapse) are 0-based."""

    shape_vx: tuple[int, int, int]
    voxel_size_nm: tuple[float, float, float]
    seed: int
    fill_nm: float  # how far cells reach beyond their capsules into free space
    cell_ids: np.ndarray  # (C,) uint64
    cell_types: list[str]
    soma_centre_nm: np.ndarray  # (C, 3), NaN where the cell has no soma
    soma_radius_nm: np.ndarray  # (C,)
    nucleus_centre_nm: np.ndarray
    nucleus_radius_nm: np.ndarray
    cap_a: np.ndarray  # (S, 3) capsules of the cells
    cap_b: np.ndarray
    cap_ra: np.ndarray
    cap_rb: np.ndarray
    cap_cell: np.ndarray  # (S,) int32 cell index
    cap_comp: np.ndarray  # (S,) int8 compartment code
    mi_a: np.ndarray  # (Q, 3) capsules of the mitochondria
    mi_b: np.ndarray
    mi_r: np.ndarray
    mi_s0: np.ndarray  # arc length (nm) along the mitochondrion at a and b (for cristae)
    mi_s1: np.ndarray
    mi_obj: np.ndarray  # (Q,) mitochondrion index
    mito_cell: np.ndarray  # (M,) cell index per mitochondrion
    vc_centre_nm: np.ndarray  # (V, 3)
    vc_radius_nm: np.ndarray
    vc_cell: np.ndarray
    ves_pos_nm: np.ndarray  # (K, 3) vesicle centres
    ves_cell: np.ndarray
    ves_vc: np.ndarray  # (K,) cloud index
    syn_pre: np.ndarray  # (N,) cell index
    syn_post: np.ndarray
    syn_centre_nm: np.ndarray
    syn_normal: np.ndarray
    syn_radius_nm: np.ndarray
    syn_asym: np.ndarray  # (N,) bool
    syn_post_comp: np.ndarray
    syn_vc: np.ndarray  # (N,) cloud index
    contact_a: np.ndarray
    contact_b: np.ndarray
    contact_centre_nm: np.ndarray
    contact_comp_b: np.ndarray
    node_pos_nm: np.ndarray  # (P, 3) geometry graph
    node_radius_nm: np.ndarray
    node_comp: np.ndarray
    node_cell: np.ndarray
    node_parent: np.ndarray
    missing_sections: list[int]
    shifted_sections: list[tuple[int, int, int]]  # (z, dx, dy) in voxels
    # myelin (opt-in): internodes as arc-length intervals (nm) along their cell's axon, and the arc
    # length of the myelinated axons' capsule ends and nodes (NaN elsewhere); all empty without myelin
    my_cell: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (I,) cell index
    my_s0: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (I,) start of the internode
    my_s1: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (I,) end
    cap_s0: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (S,) at cap_a
    cap_s1: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (S,) at cap_b
    node_s_nm: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (P,)
    g_ratio: float = G_RATIO

    @property
    def has_myelin(self) -> bool:
        """Whether the tissue was grown with myelin (then it has a myelin truth layer, even if empty)."""
        return len(self.cap_s0) > 0

    @property
    def volume_um3(self) -> float:
        return float(np.prod(np.asarray(self.shape_vx) * np.asarray(self.voxel_size_nm)) / 1e9)


def build_tissue(shape_vx, voxel_size_nm, seed: int, *, n_cells: int = 0, synapses_per_um3: float = 1.0,
                 artefacts: bool = True, myelin: dict[str, float] | None = None) -> Tissue:
    """Grow the cells, spines, synapses, contacts and organelles of a tissue (deterministic in `seed`).

    n_cells: cells with neurites in the volume; 0 = as many as dense neuropil holds. myelin: None
    (none, the default) or the share of each cell type's axons that are myelinated, e.g.
    ``{"EA": 0.8, "INT": 0.3}``; myelinated stretches carry no boutons, so the tissue differs from
    the same seed's tissue without myelin.
    """
    rng = np.random.default_rng(seed)
    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    shape = np.asarray(shape_vx, dtype=np.int64)
    region = Region(np.zeros(3), (shape - 1) * vs)
    g = Grower(region, rng, MyelinPlan(seed, myelin) if myelin is not None else None)
    vol_um3 = float(np.prod(shape * vs) / 1e9)
    n_somata = max(1, int(round(vol_um3 * SOMATA_PER_UM3)))
    # neurites cross the volume, so the cells it takes grow with its cross-section, not its volume
    scale = max(1.0, (vol_um3 / 16.8) ** (2 / 3))
    ids = np.sort(rng.choice(np.arange(1, 10_000_000), size=int(2000 * scale) + 16 * n_cells + 100,
                             replace=False)).astype(np.uint64)
    present: list[int] = []  # cell indices with capsules in the volume
    coverage = _Coverage(region)

    def grow(ctype, soma_inside, thin_only=False):
        n0 = g.index.n
        ci = g.add_cell(int(ids[len(g.m.cells)]), ctype, soma_inside=soma_inside, thin_only=thin_only)
        if ci >= 0 and _in_volume(g, n0):
            present.append(ci)
        coverage.update(g.index, n0)

    for k in range(n_somata):
        grow(("MSN", "GP", "INT")[k % 3], True)
    # Big things first, small things into the gaps: whole cells until no more fit, then single
    # thin neurites (axons, distal dendrites) until even those find no room.
    window = int(40 * scale)
    for phase_types, thin_only in ((["EA", "MSN", "INT", "GP"], False), (["EA", "MSN", "INT", "GP"], True)):
        w = np.array([CELL_TYPE_SPECS[t].weight * (0.5 if thin_only and t == "EA" else 1.0) for t in phase_types])
        history: list[float] = []
        for k in range(max(8 * n_cells, int(1000 * scale))):
            history.append(coverage.fraction())
            if n_cells and len(present) >= (n_cells if thin_only else n_cells // 2):
                break
            stalled = len(history) > window and history[-1] - history[-window] < 0.006
            if not n_cells and (history[-1] >= FILL_TARGET or stalled):
                break
            ctype = phase_types[k] if k < len(phase_types) else phase_types[rng.choice(len(w), p=w / w.sum())]
            grow(ctype, False, thin_only=thin_only)
    synapses, clouds, contacts, boutons = place_synapses_and_contacts(
        g, rng, n_synapses=round(synapses_per_um3 * vol_um3), touch_nm=2 * FILL_NM - 25.0)
    mitos = place_mitochondria(g, rng, boutons)
    missing, shifted = (_artefact_sections(rng, int(shape[2])) if artefacts else ([], []))
    tissue = _freeze(g, shape_vx, voxel_size_nm, seed, synapses, clouds, contacts, mitos, missing, shifted)
    return _with_myelin(tissue, g) if myelin is not None else tissue


def myelin_fractions(overrides: dict[str, float] | None = None) -> dict[str, float]:
    """The myelinated share of each cell type's axons: `MYELIN_SPECS`, with `overrides` (type -> share)."""
    out = {t: spec.fraction for t, spec in MYELIN_SPECS.items()}
    for t, v in (overrides or {}).items():
        if t not in CELL_TYPE_SPECS or not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"myelin fraction {t}={v}: expected a cell type of {sorted(CELL_TYPE_SPECS)} and a share in [0, 1]")
        if float(v) > 0 and t not in MYELIN_SPECS:
            raise ValueError(f"myelin fraction {t}={v}: only {sorted(MYELIN_SPECS)} axons are myelinated")
        out[t] = float(v)
    return out


def _with_myelin(tissue: Tissue, g: Grower) -> Tissue:
    """The tissue with its myelin plan: internodes of cells whose axon was grown, arc lengths."""
    from dataclasses import replace

    n_cap, n_node = g.index.n, len(g.m.node_pos)
    cap_s0, cap_s1, node_s = np.full(n_cap, np.nan), np.full(n_cap, np.nan), np.full(n_node, np.nan)
    for i, (s0, s1) in g.cap_s.items():
        cap_s0[i], cap_s1[i] = s0, s1
    for k, s in g.node_s.items():
        node_s[k] = s
    grown = set(tissue.cap_cell[np.isfinite(cap_s0)].tolist())
    cells = sorted(c for c in g.myelin.internodes if c in grown)
    iv = [g.myelin.internodes[c] for c in cells]
    return replace(
        tissue,
        my_cell=np.concatenate([np.full(len(v), c, np.int64) for c, v in zip(cells, iv)]) if cells else np.zeros(0, np.int64),
        my_s0=np.concatenate([v[:, 0] for v in iv]) if cells else np.zeros(0),
        my_s1=np.concatenate([v[:, 1] for v in iv]) if cells else np.zeros(0),
        cap_s0=cap_s0, cap_s1=cap_s1, node_s_nm=node_s,
    )


def _artefact_sections(rng, n_z: int):
    """Missing sections (~1 in 150, at least one from 64 sections) and sections shifted in xy
    (~1 in 80, at least one from 32 sections), never the first or last."""
    z = np.arange(1, n_z - 1)
    u = rng.random(len(z))
    missing = [int(v) for v in z[u < 1 / 150]]
    shifted_z = [int(v) for v in z[(u >= 1 / 150) & (u < 1 / 150 + 1 / 80)]]
    if n_z >= 64 and not missing:
        missing = [int(rng.choice([v for v in z if v not in shifted_z]))]
    if n_z >= 32 and not shifted_z:
        shifted_z = [int(rng.choice([v for v in z if v not in missing]))]
    shifts = []
    for v in shifted_z:
        d = rng.integers(2, 7, 2) * rng.choice([-1, 1], 2)
        shifts.append((v, int(d[0]), int(d[1])))
    return missing, shifts


def _in_volume(g: Grower, start: int) -> bool:
    """Whether any capsule from index `start` on has its centre in the volume."""
    ix = g.index
    return bool(g.region.inside_volume((ix.a[start: ix.n] + ix.b[start: ix.n]) / 2).any())


class _Coverage:
    """Which of a grid of sample points in the volume lie inside some capsule (the fill so far)."""

    def __init__(self, region: Region, n: int = 18):
        axes = [np.linspace(lo, hi, n) for lo, hi in zip(region.lo, region.hi)]
        self.points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        self.covered = np.zeros(len(self.points), dtype=bool)

    def update(self, ix, start: int):
        """Mark the points inside capsules `start:` of the index `ix`."""
        if start >= ix.n:
            return
        todo = np.flatnonzero(~self.covered)
        if not len(todo):
            return
        d, t = point_segment_distance(self.points[todo], ix.a[start: ix.n], ix.b[start: ix.n])
        r = ix.ra[start: ix.n] + t * (ix.rb[start: ix.n] - ix.ra[start: ix.n])
        self.covered[todo[(d < r).any(axis=1)]] = True

    def fraction(self) -> float:
        return float(self.covered.mean())


def _freeze(g, shape_vx, voxel_size_nm, seed, synapses, clouds, contacts, mitos, missing, shifted) -> Tissue:
    m, ix, n = g.m, g.index, g.index.n
    C = len(m.cells)
    nan3 = np.full(3, np.nan)
    mi_a, mi_b, mi_r, mi_s0, mi_s1, mi_obj = [], [], [], [], [], []
    for k, mito in enumerate(mitos):
        p = mito.points_nm
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
        for j in range(len(p) - 1):
            mi_a.append(p[j]), mi_b.append(p[j + 1]), mi_r.append(mito.radius_nm)
            mi_s0.append(s[j]), mi_s1.append(s[j + 1]), mi_obj.append(k)
    ves = [c.vesicles_nm for c in clouds]
    f = lambda xs, shape=(0, 3): np.asarray(xs, dtype=np.float64).reshape((-1,) + shape[1:])  # noqa: E731
    return Tissue(
        shape_vx=tuple(int(v) for v in shape_vx),
        voxel_size_nm=tuple(float(v) for v in voxel_size_nm),
        seed=int(seed),
        fill_nm=FILL_NM,
        cell_ids=np.array([c.id for c in m.cells], dtype=np.uint64),
        cell_types=[c.type for c in m.cells],
        soma_centre_nm=np.array([c.soma_centre_nm if c.soma_centre_nm is not None else nan3 for c in m.cells]).reshape(C, 3),
        soma_radius_nm=np.array([c.soma_radius_nm for c in m.cells], dtype=np.float64),
        nucleus_centre_nm=np.array([c.nucleus_centre_nm if c.nucleus_centre_nm is not None else nan3 for c in m.cells]).reshape(C, 3),
        nucleus_radius_nm=np.array([c.nucleus_radius_nm for c in m.cells], dtype=np.float64),
        cap_a=ix.a[:n].copy(), cap_b=ix.b[:n].copy(), cap_ra=ix.ra[:n].copy(), cap_rb=ix.rb[:n].copy(),
        cap_cell=ix.cell[:n].copy(), cap_comp=ix.comp[:n].copy(),
        mi_a=f(mi_a), mi_b=f(mi_b), mi_r=f(mi_r, (0,)), mi_s0=f(mi_s0, (0,)), mi_s1=f(mi_s1, (0,)),
        mi_obj=np.asarray(mi_obj, dtype=np.int64), mito_cell=np.array([mi.cell for mi in mitos], dtype=np.int64),
        vc_centre_nm=f([c.centre_nm for c in clouds]), vc_radius_nm=f([c.radius_nm for c in clouds], (0,)),
        vc_cell=np.array([c.cell for c in clouds], dtype=np.int64),
        ves_pos_nm=f(np.concatenate(ves) if ves else []),
        ves_cell=np.array([c.cell for c in clouds for _ in c.vesicles_nm], dtype=np.int64),
        ves_vc=np.array([k for k, c in enumerate(clouds) for _ in c.vesicles_nm], dtype=np.int64),
        syn_pre=np.array([s.pre for s in synapses], dtype=np.int64),
        syn_post=np.array([s.post for s in synapses], dtype=np.int64),
        syn_centre_nm=f([s.centre_nm for s in synapses]), syn_normal=f([s.normal for s in synapses]),
        syn_radius_nm=f([s.radius_nm for s in synapses], (0,)),
        syn_asym=np.array([s.type == "asymmetric" for s in synapses], dtype=bool),
        syn_post_comp=np.array([s.post_comp for s in synapses], dtype=np.int64),
        syn_vc=np.array([s.vc for s in synapses], dtype=np.int64),
        contact_a=np.array([c.cell_a for c in contacts], dtype=np.int64),
        contact_b=np.array([c.cell_b for c in contacts], dtype=np.int64),
        contact_centre_nm=f([c.centre_nm for c in contacts]),
        contact_comp_b=np.array([c.comp_b for c in contacts], dtype=np.int64),
        node_pos_nm=f(m.node_pos), node_radius_nm=f(m.node_radius, (0,)),
        node_comp=np.asarray(m.node_comp, dtype=np.int8), node_cell=np.asarray(m.node_cell, dtype=np.int64),
        node_parent=np.asarray(m.node_parent, dtype=np.int64),
        missing_sections=missing, shifted_sections=shifted,
    )


def demote_synapses(tissue: Tissue, drop: np.ndarray) -> Tissue:
    """The tissue with the synapses flagged in `drop` (N,) bool turned into close contacts:
    their sj and vesicle cloud are removed, the touching bouton stays."""
    from dataclasses import replace

    keep = ~np.asarray(drop, dtype=bool)
    keep_vc = np.zeros(len(tissue.vc_cell), dtype=bool)
    keep_vc[tissue.syn_vc[keep]] = True
    new_vc = np.cumsum(keep_vc) - 1
    d = ~keep
    return replace(
        tissue,
        syn_pre=tissue.syn_pre[keep], syn_post=tissue.syn_post[keep], syn_centre_nm=tissue.syn_centre_nm[keep],
        syn_normal=tissue.syn_normal[keep], syn_radius_nm=tissue.syn_radius_nm[keep], syn_asym=tissue.syn_asym[keep],
        syn_post_comp=tissue.syn_post_comp[keep], syn_vc=new_vc[tissue.syn_vc[keep]],
        vc_centre_nm=tissue.vc_centre_nm[keep_vc], vc_radius_nm=tissue.vc_radius_nm[keep_vc], vc_cell=tissue.vc_cell[keep_vc],
        ves_pos_nm=tissue.ves_pos_nm[keep_vc[tissue.ves_vc]], ves_cell=tissue.ves_cell[keep_vc[tissue.ves_vc]],
        ves_vc=new_vc[tissue.ves_vc[keep_vc[tissue.ves_vc]]],
        contact_a=np.concatenate([tissue.contact_a, tissue.syn_pre[d]]),
        contact_b=np.concatenate([tissue.contact_b, tissue.syn_post[d]]),
        contact_centre_nm=np.concatenate([tissue.contact_centre_nm, tissue.syn_centre_nm[d]]),
        contact_comp_b=np.concatenate([tissue.contact_comp_b, tissue.syn_post_comp[d]]),
    )

