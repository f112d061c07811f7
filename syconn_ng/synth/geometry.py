"""Cell morphologies as skeleton graphs with radii, grown into a volume with collision avoidance.

Everything here is in nm (x, y, z) in the tissue frame: voxel (i, j, k) has its centre at
``(i, j, k) * voxel_size_nm``. A cell is a graph of nodes (position, radius, compartment) and,
separately, the capsules that are rasterised (a capsule joins two centres with linearly
interpolated radii; a sphere is a capsule of length 0). Neurites are grown step by step; each
step picks, among a few directions near the current one, the one that overlaps other cells
least, so neurites pack densely, touch and pass close to each other without piercing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

COMPARTMENTS = ("axon", "dendrite", "soma", "spine_head", "spine_neck")
AXON, DENDRITE, SOMA, SPINE_HEAD, SPINE_NECK = range(5)
CELL_TYPES = ("EA", "MSN", "GP", "INT")


@dataclass(frozen=True)
class CellTypeSpec:
    """Morphology and organelle statistics of one cell type (lengths and radii in nm)."""

    weight: float  # share of the cells generated
    soma_radius_nm: tuple[float, float] | None
    n_dendrites: tuple[int, int]
    dendrite_radius_nm: tuple[float, float]
    dendrite_min_radius_nm: float
    dendrite_branch_per_um: float
    spine_interval_nm: tuple[float, float] | None
    axon_radius_nm: tuple[float, float]
    axon_branch_per_um: float
    varicosity_interval_nm: tuple[float, float]  # boutons en passant (beads) along the axon
    varicosity_radius_nm: tuple[float, float]
    mito_fraction: float  # of the cell's neurite volume
    mito_length_nm: tuple[float, float]
    synapse_type: str
    post_preference: tuple[float, float, float]  # weight of dendrite, spine_head, soma targets
    tortuosity_deg: float


# Area X of the zebra finch (SyConn's data), scaled so a soma fits a few-µm test volume.
CELL_TYPE_SPECS: dict[str, CellTypeSpec] = {
    "EA": CellTypeSpec(
        weight=0.30, soma_radius_nm=None, n_dendrites=(0, 0), dendrite_radius_nm=(0, 0),
        dendrite_min_radius_nm=0, dendrite_branch_per_um=0.0, spine_interval_nm=None,
        axon_radius_nm=(45, 70), axon_branch_per_um=0.06, varicosity_interval_nm=(500, 1200),
        varicosity_radius_nm=(190, 300), mito_fraction=0.10, mito_length_nm=(200, 400),
        synapse_type="asymmetric", post_preference=(0.3, 1.0, 0.05), tortuosity_deg=14,
    ),
    "MSN": CellTypeSpec(
        weight=0.40, soma_radius_nm=(1000, 1300), n_dendrites=(4, 6), dendrite_radius_nm=(230, 330),
        dendrite_min_radius_nm=150, dendrite_branch_per_um=0.18, spine_interval_nm=(200, 500),
        axon_radius_nm=(50, 70), axon_branch_per_um=0.05, varicosity_interval_nm=(1200, 2500),
        varicosity_radius_nm=(160, 240), mito_fraction=0.14, mito_length_nm=(400, 1100),
        synapse_type="symmetric", post_preference=(1.0, 0.0, 0.3), tortuosity_deg=24,
    ),
    "GP": CellTypeSpec(
        weight=0.12, soma_radius_nm=(1300, 1600), n_dendrites=(3, 5), dendrite_radius_nm=(420, 600),
        dendrite_min_radius_nm=300, dendrite_branch_per_um=0.08, spine_interval_nm=None,
        axon_radius_nm=(90, 130), axon_branch_per_um=0.02, varicosity_interval_nm=(1500, 3000),
        varicosity_radius_nm=(200, 300), mito_fraction=0.20, mito_length_nm=(700, 2000),
        synapse_type="symmetric", post_preference=(1.0, 0.0, 0.3), tortuosity_deg=16,
    ),
    "INT": CellTypeSpec(
        weight=0.18, soma_radius_nm=(900, 1150), n_dendrites=(3, 5), dendrite_radius_nm=(150, 220),
        dendrite_min_radius_nm=110, dendrite_branch_per_um=0.12, spine_interval_nm=None,
        axon_radius_nm=(32, 45), axon_branch_per_um=0.10, varicosity_interval_nm=(450, 900),
        varicosity_radius_nm=(120, 170), mito_fraction=0.15,
        mito_length_nm=(300, 800), synapse_type="symmetric", post_preference=(1.0, 0.2, 1.0),
        tortuosity_deg=28,
    ),
}


@dataclass(frozen=True)
class MyelinSpec:
    """Myelination of one cell type's axons (opt-in, ``generate_tissue(myelin=True)``), lengths in nm.

    Real internodes are 20-200 µm and nodes of Ranvier ~1 µm; both are scaled down so a few-µm
    volume shows internodes, nodes and bare stretches: internodes of 1-3 µm, nodes of ~0.3 µm.
    """

    fraction: float  # share of the type's cells whose axon is myelinated
    internode_nm: tuple[float, float] = (1000.0, 3000.0)
    node_nm: tuple[float, float] = (250.0, 350.0)  # node of Ranvier between two internodes
    phase_nm: tuple[float, float] = (-3000.0, 500.0)  # where the first internode starts on an axon entering the volume
    ais_nm: tuple[float, float] = (300.0, 800.0)  # bare initial segment of an axon leaving a soma in the volume
    bare_nm: tuple[float, float] = (800.0, 2000.0)  # bare, bouton-bearing stretch between myelinated ones
    bare_p: float = 0.25  # chance that an internode is followed by a bare stretch instead of a node


# Pallial afferents (EA) are mostly myelinated, a share of interneuron (INT) axons too; others never.
MYELIN_SPECS: dict[str, MyelinSpec] = {"EA": MyelinSpec(fraction=0.8), "INT": MyelinSpec(fraction=0.3)}
G_RATIO = 0.7  # axon radius / fibre radius inside an internode
PARANODE_NM = 100.0  # the sheath thins to nothing over this length at each end of an internode
MAX_PATH_NM = 25_000.0  # longest neurite path grown


class MyelinPlan:
    """Which cells' axons are myelinated and where (internodes as arc-length intervals along the
    axon, from where it starts growing; branches continue their parent's arc length).

    Its own random stream (`seed`, 14), so the choice does not shift the growth's draws.
    """

    def __init__(self, seed: int, fractions: dict[str, float]):
        self.rng = np.random.default_rng([seed, 14])
        self.fractions = fractions
        self.internodes: dict[int, np.ndarray] = {}  # cell index -> (I, 2) sorted [start, end) nm

    def assign(self, ci: int, ctype: str, *, from_soma: bool) -> None:
        """Decide (and lay out) the myelin of cell `ci`; called once per cell as it is grown.

        Axons that enter the volume from afar are met at a random phase of their internodes;
        axons that leave a soma in the volume start with a bare initial segment."""
        self.internodes.pop(ci, None)
        u = self.rng.random()
        spec = MYELIN_SPECS.get(ctype)
        if spec is None or u >= self.fractions.get(ctype, 0.0):
            return
        rng, out = self.rng, []
        s = rng.uniform(*(spec.ais_nm if from_soma else spec.phase_nm))
        while s < MAX_PATH_NM:
            end = s + rng.uniform(*spec.internode_nm)
            out.append((s, end))
            s = end + (rng.uniform(*spec.bare_nm) if rng.random() < spec.bare_p else rng.uniform(*spec.node_nm))
        self.internodes[ci] = np.asarray(out)

    def bare(self, ci: int, s_nm: float, margin_nm: float) -> bool:
        """Whether the axon of cell `ci` is unmyelinated within `margin_nm` of arc length `s_nm`."""
        iv = self.internodes.get(ci)
        if iv is None:
            return True
        return not np.any((iv[:, 0] < s_nm + margin_nm) & (iv[:, 1] > s_nm - margin_nm))


STEP_NM = 200.0  # growth step = spacing of the geometry nodes along a neurite
REGION_MARGIN_NM = 250.0  # neurites are grown this far beyond the volume so its faces look like tissue


@dataclass
class Cell:
    """One cell: id, type and its soma (centre, radius, nucleus), if it has one."""

    id: int
    type: str
    soma_centre_nm: np.ndarray | None = None
    soma_radius_nm: float = 0.0
    nucleus_centre_nm: np.ndarray | None = None
    nucleus_radius_nm: float = 0.0


@dataclass
class Morphology:
    """All cells' graphs and capsules, appended to while growing (plain lists, numpy at the end).

    Nodes: position (nm), radius (nm), compartment code, owning cell index, parent node index
    (-1 for a root). Capsules: two centres, two radii, owning cell index, compartment code.
    """

    cells: list[Cell] = field(default_factory=list)
    node_pos: list[np.ndarray] = field(default_factory=list)
    node_radius: list[float] = field(default_factory=list)
    node_comp: list[int] = field(default_factory=list)
    node_cell: list[int] = field(default_factory=list)
    node_parent: list[int] = field(default_factory=list)

    def add_node(self, pos, radius, comp, cell, parent) -> int:
        self.node_pos.append(np.asarray(pos, dtype=np.float64))
        self.node_radius.append(float(radius))
        self.node_comp.append(int(comp))
        self.node_cell.append(int(cell))
        self.node_parent.append(int(parent))
        return len(self.node_pos) - 1


class CapsuleIndex:
    """Capsules in a uniform grid hash: cheap 'what is near this point' queries while growing."""

    def __init__(self, cell_nm: float = 400.0):
        self.cell_nm = cell_nm
        self.grid: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        self._cap = 1024
        self.a = np.zeros((self._cap, 3))
        self.b = np.zeros((self._cap, 3))
        self.ra = np.zeros(self._cap)
        self.rb = np.zeros(self._cap)
        self.cell = np.zeros(self._cap, dtype=np.int32)
        self.comp = np.zeros(self._cap, dtype=np.int8)
        self.n = 0

    def add(self, a, b, ra, rb, cell, comp) -> int:
        if self.n == self._cap:
            self._cap *= 2
            for name in ("a", "b", "ra", "rb", "cell", "comp"):
                old = getattr(self, name)
                new = np.zeros((self._cap,) + old.shape[1:], dtype=old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        i = self.n
        self.a[i], self.b[i], self.ra[i], self.rb[i] = a, b, ra, rb
        self.cell[i], self.comp[i] = cell, comp
        self.n += 1
        r = max(ra, rb)
        lo = np.floor((np.minimum(a, b) - r) / self.cell_nm).astype(int)
        hi = np.floor((np.maximum(a, b) + r) / self.cell_nm).astype(int)
        for gx in range(lo[0], hi[0] + 1):
            for gy in range(lo[1], hi[1] + 1):
                for gz in range(lo[2], hi[2] + 1):
                    self.grid[(gx, gy, gz)].append(i)
        return i

    def near(self, lo, hi) -> np.ndarray:
        """Indices of capsules registered in grid cells overlapping the box [lo, hi] (nm)."""
        glo = np.floor(np.asarray(lo) / self.cell_nm).astype(int)
        ghi = np.floor(np.asarray(hi) / self.cell_nm).astype(int)
        found: set[int] = set()
        for gx in range(glo[0], ghi[0] + 1):
            for gy in range(glo[1], ghi[1] + 1):
                for gz in range(glo[2], ghi[2] + 1):
                    found.update(self.grid.get((gx, gy, gz), ()))
        return np.fromiter(found, dtype=np.int64, count=len(found))

    def overlap(self, points, radius, *, exclude=(), exclude_cells=()) -> np.ndarray:
        """(P,) how far spheres of `radius` at `points` (P, 3) reach into other capsules, as a
        fraction of the smaller of the two radii (0: no overlap; ~1: the thinner one is cut)."""
        pts = np.atleast_2d(points)
        # capsules are registered over their bounding box grown by their own radius, so only
        # the cells the spheres themselves reach need looking at
        idx = self.near(pts.min(0) - radius, pts.max(0) + radius)
        if len(idx):
            keep = ~np.isin(idx, np.fromiter(exclude, dtype=np.int64)) if exclude else np.ones(len(idx), bool)
            if len(exclude_cells):
                keep &= ~np.isin(self.cell[idx], np.asarray(exclude_cells))
            idx = idx[keep]
        if not len(idx):
            return np.zeros(len(pts))
        d, t = point_segment_distance(pts, self.a[idx], self.b[idx])
        rr = self.ra[idx] + t * (self.rb[idx] - self.ra[idx])
        return (np.maximum(0.0, radius + rr - d) / np.minimum(radius, rr)).max(axis=1)


def point_segment_distance(points, a, b):
    """Distance of each point (P, 3) to each segment a (M, 3) → b (M, 3); returns (P, M) d and t."""
    u = b - a
    uu = np.maximum((u * u).sum(1), 1e-9)
    pa = points[:, None, :] - a[None, :, :]
    t = np.clip((pa * u[None]).sum(2) / uu[None], 0.0, 1.0)
    diff = pa - t[..., None] * u[None]
    return np.sqrt((diff * diff).sum(2)), t


def random_unit(rng, n=None):
    v = rng.normal(size=(3,) if n is None else (n, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def perturb(direction, angle_rad, rng):
    """`direction` turned by `angle_rad` (scalar or (K,)) towards random perpendiculars; (3,) or (K, 3)."""
    d = direction / np.linalg.norm(direction)
    angle = np.asarray(angle_rad, dtype=np.float64)
    p = np.cross(d, random_unit(rng, angle.size))
    p /= np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-9)
    out = np.cos(angle).reshape(-1, 1) * d + np.sin(angle).reshape(-1, 1) * p
    return out[0] if angle.ndim == 0 else out


@dataclass
class Region:
    """The volume (nm: its first and last voxel centres, lo and hi) and the larger box neurites grow in."""

    lo: np.ndarray
    hi: np.ndarray
    margin_nm: float = REGION_MARGIN_NM

    @property
    def grow_lo(self):
        return self.lo - self.margin_nm

    @property
    def grow_hi(self):
        return self.hi + self.margin_nm

    def inside_growth(self, p) -> bool:
        return bool(np.all(p >= self.grow_lo) and np.all(p <= self.grow_hi))

    def inside_volume(self, p) -> np.ndarray:
        return np.all((p >= self.lo) & (p <= self.hi), axis=-1)

    def entry_point(self, start, target):
        """Where the straight line from `start` (outside) to `target` (inside) enters the growth box."""
        d = target - start
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (self.grow_lo - start) / d
            t2 = (self.grow_hi - start) / d
        tmin = np.nanmax(np.where(np.isfinite(t1), np.minimum(t1, t2), -np.inf))
        return start + max(tmin, 0.0) * d


class Grower:
    """Grows the cells of a tissue into a `Morphology` and a `CapsuleIndex` (deterministic per rng)."""

    def __init__(self, region: Region, rng: np.random.Generator, myelin: MyelinPlan | None = None):
        self.region = region
        self.rng = rng
        self.myelin = myelin
        self.node_s: dict[int, float] = {}  # arc length (nm) of myelinated axons' nodes and capsules
        self.cap_s: dict[int, tuple[float, float]] = {}
        self.m = Morphology()
        self.index = CapsuleIndex()
        self.varicosities: list[int] = []  # node indices of boutons en passant
        self.heads = CapsuleIndex()  # spine heads, for excitatory boutons to find
        self.head_taken = np.zeros(0, dtype=bool)
        self.somata: list[tuple[float, float, float, float]] = []  # centre and radius of every soma

    # -- capsules ------------------------------------------------------------------
    def capsule(self, a, b, ra, rb, cell, comp) -> int:
        return self.index.add(np.asarray(a, float), np.asarray(b, float), float(ra), float(rb), cell, comp)

    # -- cells ---------------------------------------------------------------------
    def add_cell(self, cell_id: int, ctype: str, *, soma_inside: bool, thin_only: bool = False) -> int:
        """Grow one cell of type `ctype`; returns its index (-1: no room for its soma).

        Somata lie in or outside the volume; `thin_only` grows a single thin neurite (axon or
        distal dendrite) of a cell whose soma is outside: what still fits into a dense neuropil.
        """
        rng, reg, spec = self.rng, self.region, CELL_TYPE_SPECS[ctype]
        ci = len(self.m.cells)
        cell = Cell(cell_id, ctype)
        self.m.cells.append(cell)
        size = reg.hi - reg.lo
        if spec.soma_radius_nm is None:  # EA: an axon passing through the volume
            if self.myelin is not None:
                self.myelin.assign(ci, ctype, from_soma=False)
            self._grow_passing(ci, AXON, spec, rng.uniform(*spec.axon_radius_nm), start=None)
            return ci
        R = rng.uniform(*spec.soma_radius_nm)
        if soma_inside:  # in small volumes the soma sits at a face, so it does not fill the volume
            at_face = min(size) < 3 * R
            centre = self._free_soma_position(R, reg.lo - 0.6 * R, reg.hi + 0.6 * R, min_margin=0.25 * R if at_face else None,
                                              max_margin=0.55 * R)
        else:  # far away: the cell only sends neurites into the volume
            centre = self._free_soma_position(R, reg.lo - 12_000.0, reg.hi + 12_000.0, min_margin=R + 300.0)
        if centre is None:
            self.m.cells.pop()
            return -1
        cell.soma_centre_nm, cell.soma_radius_nm = centre, R
        if self.myelin is not None:
            self.myelin.assign(ci, ctype, from_soma=soma_inside)
        self.somata.append((*centre, R))
        cell.nucleus_radius_nm = 0.55 * R
        cell.nucleus_centre_nm = centre + random_unit(rng) * 0.12 * R
        soma_node = self.m.add_node(centre, R, SOMA, ci, -1)
        n_dend = rng.integers(spec.n_dendrites[0], spec.n_dendrites[1] + 1)
        if soma_inside:
            soma_seg = self.capsule(centre, centre, R, R, ci, SOMA)
            dirs = random_unit(rng, n_dend + 1)
            for k, d in enumerate(dirs):
                comp = AXON if k == n_dend else DENDRITE
                r0 = rng.uniform(*(spec.axon_radius_nm if comp == AXON else spec.dendrite_radius_nm))
                self._grow_from_soma(ci, soma_node, soma_seg, centre, R, d, r0, comp, spec)
        elif thin_only:  # one thin neurite: an axon or a distal dendrite
            if rng.random() < 0.3:
                self._grow_passing(ci, AXON, spec, rng.uniform(*spec.axon_radius_nm), start=(soma_node, centre, R))
            else:
                self._grow_passing(ci, DENDRITE, spec, spec.dendrite_min_radius_nm, start=(soma_node, centre, R))
        else:  # only the neurites that reach the volume are grown (the rest is never seen)
            n_in = int(rng.integers(1, 4))
            for k in range(n_in + int(rng.random() < 0.4)):
                comp = AXON if k == n_in else DENDRITE
                r0 = rng.uniform(*(spec.axon_radius_nm if comp == AXON else spec.dendrite_radius_nm))
                if comp == DENDRITE:
                    r0 = max(spec.dendrite_min_radius_nm, r0 * rng.uniform(0.7, 0.95))
                self._grow_passing(ci, comp, spec, r0, start=(soma_node, centre, R))
        return ci

    def _free_soma_position(self, R, lo, hi, *, min_margin, max_margin=np.inf):
        """A soma centre in [lo, hi], between `min_margin` and `max_margin` (nm) outside the volume
        (None: anywhere), overlapping no other soma or neurite; None after a few tries."""
        reg = self.region
        somata = np.asarray(self.somata).reshape(-1, 4)
        for _ in range(60):
            c = self.rng.uniform(lo, hi)
            outside_by = float(np.linalg.norm(c - np.clip(c, reg.lo, reg.hi)))
            if min_margin is not None and not (min_margin <= outside_by <= max_margin):
                continue
            if np.any(np.linalg.norm(somata[:, :3] - c, axis=1) < R + somata[:, 3] + 200):
                continue
            if outside_by > R + 300 or self.index.overlap(c, R)[0] < 0.3:
                return c
        return None

    def _grow_from_soma(self, ci, soma_node, soma_seg, centre, R, direction, r0, comp, spec):
        start = centre + direction * R * 0.92
        node = self.m.add_node(start, r0 * 1.15, comp, ci, soma_node)
        stem = self.capsule(centre, start, r0 * 1.6, r0 * 1.15, ci, comp)
        self._grow_neurite(ci, node, start, direction, r0, comp, spec, recent=[soma_seg, stem])

    def _grow_passing(self, ci, comp, spec, r0, *, start):
        """A neurite that enters the growth box from outside and runs through the volume."""
        rng, reg = self.rng, self.region
        target = rng.uniform(reg.lo + 0.1 * (reg.hi - reg.lo), reg.hi - 0.1 * (reg.hi - reg.lo))
        if start is None:
            direction = random_unit(rng)
            origin = target - direction * 4.0 * np.linalg.norm(reg.grow_hi - reg.grow_lo)
            entry = reg.entry_point(origin, target)
            node = self.m.add_node(entry, r0, comp, ci, -1)
        else:
            soma_node, centre, R = start
            direction = (target - centre) / np.linalg.norm(target - centre)
            entry = reg.entry_point(centre, target)
            stem = self.m.add_node(centre + direction * R * 0.92, r0 * 1.15, comp, ci, soma_node)
            node = self.m.add_node(entry, r0, comp, ci, stem)  # the stem is never seen: no capsule
        if self.index.overlap(entry, r0)[0] > 0.9:
            return
        self._grow_neurite(ci, node, entry, direction, r0, comp, spec)

    def _grow_neurite(self, ci, node, pos, direction, r0, comp, spec, *, recent=()):
        """Random walk with persistence and collision avoidance; branches go on a stack."""
        rng, reg = self.rng, self.region
        branch_p = (spec.axon_branch_per_um if comp == AXON else spec.dendrite_branch_per_um) * STEP_NM / 1000
        r_min = 0.8 * spec.axon_radius_nm[0] if comp == AXON else spec.dendrite_min_radius_nm
        stack = [(node, pos, direction, r0, list(recent), 0.0)]
        seeks_spines = comp == AXON and spec.synapse_type == "asymmetric"
        myelinated = comp == AXON and self.myelin is not None and ci in self.myelin.internodes
        if myelinated:
            self.node_s.setdefault(node, 0.0)
        bead_margin = spec.varicosity_radius_nm[1] + PARANODE_NM  # boutons only on bare stretches
        while stack:
            node, pos, direction, r, recent, path = stack.pop()
            next_bead = rng.uniform(*spec.varicosity_interval_nm) if comp == AXON else np.inf
            next_spine = rng.uniform(*spec.spine_interval_nm) if (comp == DENDRITE and spec.spine_interval_nm) else np.inf
            since_bead = since_branch = since_spine = 0.0
            while path < MAX_PATH_NM:
                cand = self._candidates(direction, spec.tortuosity_deg)
                k = None
                bare = not myelinated or self.myelin.bare(ci, path + STEP_NM, bead_margin)
                if seeks_spines and since_bead >= 300.0 and bare:  # excitatory boutons form on spine heads
                    r_node = rng.uniform(*spec.varicosity_radius_nm)
                    k, depth = self._step_onto_spine(pos, direction, cand, r_node, recent, ci)
                    bead = k is not None
                if k is None:
                    bead = since_bead >= next_bead and bare
                    r_node = rng.uniform(*spec.varicosity_radius_nm) if bead else r
                    k, depth = self._best_step(pos, direction, cand, r_node, recent)
                if bead and depth > 0.6:  # no room for a bouton here: try further on
                    bead, r_node = False, r
                    k, depth = self._best_step(pos, direction, cand, r_node, recent)
                if depth > 0.9:  # squeeze through: look round more widely
                    cand = perturb(direction, np.deg2rad(rng.uniform(0, 110, 16)), rng)
                    k, depth = self._best_step(pos, direction, cand, r_node, recent)
                if depth > 0.9:
                    break  # no room: the neurite ends here
                new = pos + cand[k] * STEP_NM
                seg = self.capsule(pos, new, self.m.node_radius[node], r_node, ci, comp)
                node = self.m.add_node(new, r_node, comp, ci, node)
                recent = (recent + [seg])[-3:]
                if myelinated:
                    self.node_s[node] = path + STEP_NM
                    self.cap_s[seg] = (path, path + STEP_NM)
                if bead:
                    recent = (recent + [self.capsule(new, new, r_node, r_node, ci, comp)])[-3:]
                    if myelinated:
                        self.cap_s[recent[-1]] = (path + STEP_NM, path + STEP_NM)
                    self.varicosities.append(node)
                    since_bead, next_bead = 0.0, rng.uniform(*spec.varicosity_interval_nm)
                else:
                    since_bead += STEP_NM
                pos, direction = new, cand[k]
                path += STEP_NM
                if not reg.inside_growth(pos):
                    break
                if comp == DENDRITE:
                    r = max(r_min, r * 0.985)
                since_spine += STEP_NM
                if since_spine >= next_spine:
                    since_spine, next_spine = 0.0, rng.uniform(*spec.spine_interval_nm)
                    self._add_spine(ci, node, recent)
                since_branch += STEP_NM
                if since_branch > 600 and rng.random() < branch_p:
                    since_branch = 0.0
                    child_dir = perturb(direction, np.deg2rad(rng.uniform(35, 75)), rng)
                    child_r = max(r_min, r * rng.uniform(0.6, 0.85))
                    if comp == DENDRITE:
                        r = max(r_min, r * 0.9)
                    stack.append((node, pos, child_dir, child_r, list(recent), path))

    def _step_onto_spine(self, pos, direction, cand, r_node, recent, ci):
        """A step (index, overlap) whose bouton of radius `r_node` would touch a free spine head
        of another cell, or (None, 0) if no candidate does."""
        ends = pos[None] + cand * STEP_NM
        idx = self.heads.near(ends.min(0) - r_node - 300, ends.max(0) + r_node + 300)
        idx = idx[(self.heads.cell[idx] != ci) & ~self.head_taken[idx]] if len(idx) else idx
        if not len(idx):
            return None, 0.0
        gap = np.linalg.norm(ends[:, None] - self.heads.a[idx][None], axis=2) - r_node - self.heads.ra[idx][None]
        touching = (gap > -25.0) & (gap < 30.0)
        ok = np.flatnonzero(touching.any(axis=1) & (np.arccos(np.clip(cand @ direction, -1, 1)) < np.deg2rad(60)))
        if not len(ok):
            return None, 0.0
        k, depth = self._best_step(pos, direction, cand[ok], r_node, recent)
        if depth > 0.6:
            return None, 0.0
        self.head_taken[idx[touching[ok[k]]]] = True
        return int(ok[k]), depth

    def _best_step(self, pos, direction, cand, r_node, recent):
        """The candidate direction (index) that overlaps other capsules least, with its overlap."""
        depth = np.maximum(
            self.index.overlap(pos[None] + cand * STEP_NM, r_node, exclude=recent),
            self.index.overlap(pos[None] + cand * (STEP_NM / 2), r_node, exclude=recent),
        )
        angle = np.arccos(np.clip(cand @ direction, -1, 1))
        cost = np.maximum(depth - 0.1, 0.0) * 4.0 + angle
        k = int(np.argmin(cost))
        return k, float(depth[k])

    def _candidates(self, direction, tortuosity_deg):
        """14 unit directions: straight on, 7 turns of up to `tortuosity_deg`, 6 wider escapes."""
        rng = self.rng
        angles = np.concatenate([
            [abs(rng.normal(0, tortuosity_deg * 0.5))],
            rng.uniform(0, tortuosity_deg, 7),
            rng.uniform(tortuosity_deg, 70, 6),
        ])
        c = perturb(direction, np.deg2rad(angles), rng)
        return c / np.linalg.norm(c, axis=1, keepdims=True)

    # -- spines ----------------------------------------------------------------------
    def _add_spine(self, ci, base_node, recent) -> bool:
        """A spine (neck + head) from dendrite node `base_node`, in a direction where there is room."""
        rng, m = self.rng, self.m
        base, r_d = m.node_pos[base_node], m.node_radius[base_node]
        axis = base - m.node_pos[m.node_parent[base_node]]
        axis /= max(np.linalg.norm(axis), 1e-9)
        r_neck = rng.uniform(38, 55)
        r_head = rng.uniform(120, 220)
        best = None
        for _ in range(6):
            d = np.cross(axis, random_unit(rng))
            d /= max(np.linalg.norm(d), 1e-9)
            d = d + axis * rng.uniform(-0.3, 0.3)
            d /= np.linalg.norm(d)
            head = base + d * (r_d + rng.uniform(300, 900) + r_head * 0.8)
            neck_b = head - d * r_head * 0.7
            pts = np.array([base + (neck_b - base) * f for f in (0.6, 0.8, 1.0)])
            depth = max(self.index.overlap(pts, r_neck, exclude=recent).max(),
                        self.index.overlap(head, r_head, exclude=recent)[0])
            if best is None or depth < best[0]:
                best = (depth, neck_b, head)
        depth, neck_b, head = best
        if depth > 0.45:
            return False
        neck_node = m.add_node(base + (neck_b - base) * 0.75, r_neck, SPINE_NECK, ci, base_node)
        m.add_node(head, r_head, SPINE_HEAD, ci, neck_node)
        self.capsule(base, neck_b, r_neck, r_neck, ci, SPINE_NECK)
        self.capsule(head, head, r_head, r_head, ci, SPINE_HEAD)
        self.heads.add(head, head, r_head, r_head, ci, SPINE_HEAD)
        self.head_taken = np.append(self.head_taken, False)
        return True
