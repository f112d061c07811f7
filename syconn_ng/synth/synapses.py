"""Synapses and non-synaptic close contacts where axons pass dendrites, spine heads and somata.

A synapse is a bouton (a varicosity of the axon) that touches the partner: the cleft is the
boundary between the two, its sj a thin disc of that boundary, its vesicle cloud a ball
inside the bouton next to the cleft. A close contact is an axon shaft or a bouton touching a
dendrite, spine or soma with no sj and no vesicles, so a detector has look-alikes to reject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from syconn_ng.synth.geometry import AXON, CELL_TYPE_SPECS, DENDRITE, SOMA, SPINE_HEAD, Grower

SAMPLE_NM = 50.0  # spacing of the centre-line samples searched for appositions
VESICLE_RADIUS_NM = 20.0


@dataclass
class Synapse:
    pre: int  # cell index
    post: int
    centre_nm: np.ndarray  # on the pre/post boundary
    normal: np.ndarray  # unit, pre → post
    radius_nm: float  # of the sj disc
    type: str
    post_comp: int
    vc: int  # index into the vesicle clouds


@dataclass
class VesicleCloud:
    cell: int
    centre_nm: np.ndarray
    radius_nm: float
    vesicles_nm: np.ndarray  # (K, 3) vesicle centres


@dataclass
class Contact:
    cell_a: int  # the axon's cell
    cell_b: int
    centre_nm: np.ndarray
    comp_b: int


@dataclass
class Bouton:
    cell: int
    centre_nm: np.ndarray
    radius_nm: float
    normal: np.ndarray  # towards the partner


def _centre_line_samples(g: Grower, comps):
    """Points every ~SAMPLE_NM along the capsules of compartments `comps`: pos, radius, cell, comp."""
    ix = g.index
    sel = np.flatnonzero(np.isin(ix.comp[: ix.n], comps))
    pos, rad, cell, comp = [], [], [], []
    for i in sel:
        a, b = ix.a[i], ix.b[i]
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / SAMPLE_NM)))
        t = (np.arange(n) + 0.5) / n
        pos.append(a + t[:, None] * (b - a))
        rad.append(ix.ra[i] + t * (ix.rb[i] - ix.ra[i]))
        cell.append(np.full(n, ix.cell[i]))
        comp.append(np.full(n, ix.comp[i]))
    if not pos:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(pos), np.concatenate(rad), np.concatenate(cell), np.concatenate(comp)


def _nearest_partner(g: Grower, points, radii, cells):
    """For each axon point: the gap (nm) to the nearest other cell's dendrite, spine head or
    soma surface, that surface's centre point, radius, cell and compartment."""
    p_pos, p_rad, p_cell, p_comp = _centre_line_samples(g, [DENDRITE, SPINE_HEAD])
    n = len(points)
    best_gap = np.full(n, np.inf)
    best_pt = np.zeros((n, 3))
    best_r = np.zeros(n)
    best_cell = np.full(n, -1)
    best_comp = np.full(n, -1)
    if len(p_pos) and n:
        k = min(24, len(p_pos))
        d, j = cKDTree(p_pos).query(points, k=k)
        d, j = d.reshape(n, k), j.reshape(n, k)
        gap = d - radii[:, None] - p_rad[j]
        gap[p_cell[j] == cells[:, None]] = np.inf
        m = np.argmin(gap, axis=1)
        rows = np.arange(n)
        best_gap = gap[rows, m]
        jj = j[rows, m]
        best_pt, best_r, best_cell, best_comp = p_pos[jj], p_rad[jj], p_cell[jj], p_comp[jj]
    for ci, cell in enumerate(g.m.cells):
        if cell.soma_centre_nm is None:
            continue
        gap = np.linalg.norm(points - cell.soma_centre_nm, axis=1) - radii - cell.soma_radius_nm
        better = (gap < best_gap) & (cells != ci)
        best_gap = np.where(better, gap, best_gap)
        best_pt[better] = cell.soma_centre_nm
        best_r[better] = cell.soma_radius_nm
        best_cell[better] = ci
        best_comp[better] = SOMA
    return best_gap, best_pt, best_r, best_cell, best_comp


def _sites(g: Grower, points, radii, cells, *, touch_nm, spacing_nm, avoid=np.zeros((0, 3))):
    """Appositions: axon points whose nearest partner surface is closer than `touch_nm`, at
    least `spacing_nm` apart along one axon (half that between axons), away from `avoid`."""
    gap, pt, rp, pcell, pcomp = _nearest_partner(g, points, radii, cells)
    grid_nm = max(spacing_nm, 1.0)
    taken: dict[tuple, list] = {}  # grid cell -> [(point, cell)], for the spacing rule

    def crowded(p, c):
        g0 = np.floor(p / grid_nm).astype(int)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dz in (-1, 0, 1):
                    for q, qc in taken.get((g0[0] + dx, g0[1] + dy, g0[2] + dz), ()):
                        d = np.linalg.norm(q - p)
                        if d < spacing_nm / 2 or (d < spacing_nm and qc == c):
                            return True
        return False

    def take(p, c):
        taken.setdefault(tuple(np.floor(p / grid_nm).astype(int)), []).append((p, c))

    for p in avoid:
        take(p, -1)
    sites: list[dict] = []
    for i in np.argsort(gap, kind="stable"):
        if gap[i] > touch_nm:
            break
        if spacing_nm > 0 and crowded(points[i], cells[i]):
            continue
        normal = (pt[i] - points[i]) / max(np.linalg.norm(pt[i] - points[i]), 1e-9)
        centre = points[i] + normal * (radii[i] + gap[i] / 2)
        if not g.region.inside_volume(centre):
            continue
        sites.append(dict(pre=int(cells[i]), post=int(pcell[i]), comp=int(pcomp[i]), a=points[i],
                          ra=float(radii[i]), normal=normal, centre=centre))
        take(points[i], int(cells[i]))
    return sites


def place_synapses_and_contacts(g: Grower, rng: np.random.Generator, *, n_synapses: int, touch_nm: float):
    """Synapses at boutons that touch another cell's dendrite, spine head or soma; close contacts
    where axon shafts (or boutons not chosen) touch one.

    About `n_synapses` synapses (fewer where there are not enough touching boutons), chosen by
    the pre type's preference for the partner compartment; never fewer contacts than synapses.
    Two surfaces 'touch' when closer than `touch_nm` (the extracellular space closes there).
    """
    m = g.m
    var = np.asarray(g.varicosities, dtype=np.int64)
    v_pos = np.asarray(m.node_pos)[var].reshape(-1, 3)
    v_rad = np.asarray(m.node_radius)[var]
    v_cell = np.asarray(m.node_cell)[var]
    bouton_sites = _sites(g, v_pos, v_rad, v_cell, touch_nm=touch_nm, spacing_nm=0.0)
    for s in bouton_sites:
        s["bouton"] = s["a"]
    a_pos, a_rad, a_cell, _ = _centre_line_samples(g, [AXON])
    off_bouton = np.ones(len(a_pos), dtype=bool)
    for p, r in zip(v_pos, v_rad):
        off_bouton &= np.linalg.norm(a_pos - p, axis=1) > r + 150
    shaft_sites = _sites(g, a_pos[off_bouton], a_rad[off_bouton], a_cell[off_bouton], touch_nm=touch_nm,
                         spacing_nm=800.0, avoid=v_pos)

    weights = []
    for s in bouton_sites:
        pref = CELL_TYPE_SPECS[m.cells[s["pre"]].type].post_preference
        excitatory = 6.0 if m.cells[s["pre"]].type == "EA" else 1.0  # most synapses in Area X are excitatory inputs
        weights.append(excitatory * {DENDRITE: pref[0], SPINE_HEAD: pref[1], SOMA: pref[2]}[s["comp"]])
    w = np.maximum(np.asarray(weights, dtype=float), 1e-6)
    order = np.argsort(-(np.log(w) + rng.gumbel(size=len(w))), kind="stable") if len(w) else np.zeros(0, int)
    n_syn = min(int(n_synapses), (len(bouton_sites) + len(shaft_sites)) // 2, len(bouton_sites))

    synapses: list[Synapse] = []
    clouds: list[VesicleCloud] = []
    boutons: list[Bouton] = []
    for i in order[:n_syn]:
        s = bouton_sites[i]
        spec = CELL_TYPE_SPECS[m.cells[s["pre"]].type]
        rb, normal, b_centre = s["ra"], s["normal"], s["bouton"]
        asym = spec.synapse_type == "asymmetric"
        radius = min(rng.uniform(120, 220) if asym else rng.uniform(100, 170), 0.7 * rb)
        rv = min(rng.uniform(90, 160), rb - 50.0)
        v_centre = b_centre + normal * (rb - rv - 25.0)
        clouds.append(VesicleCloud(s["pre"], v_centre, rv, _vesicles(rng, v_centre, rv, b_centre, rb, s["centre"])))
        synapses.append(Synapse(s["pre"], s["post"], s["centre"], normal, radius, spec.synapse_type, s["comp"], len(clouds) - 1))
        boutons.append(Bouton(s["pre"], b_centre, rb, normal))
    contacts = [Contact(s["pre"], s["post"], s["centre"], s["comp"])
                for s in shaft_sites + [bouton_sites[i] for i in order[n_syn:]]]
    return synapses, clouds, contacts, boutons


def _vesicles(rng, centre, radius, bouton_centre, bouton_radius, cleft):
    """Vesicle centres (K, 3) packed in the cloud, denser near the cleft, 2 radii apart."""
    n_target = int(0.45 * (radius / VESICLE_RADIUS_NM) ** 3)
    cand = centre + rng.normal(size=(6 * n_target + 10, 3)) * radius / 2
    inside = (np.linalg.norm(cand - centre, axis=1) < radius - VESICLE_RADIUS_NM) & (
        np.linalg.norm(cand - bouton_centre, axis=1) < bouton_radius - 2 * VESICLE_RADIUS_NM)
    cand = cand[inside]
    near = np.linalg.norm(cand - cleft, axis=1)
    cand = cand[np.argsort(near + rng.uniform(0, radius, len(cand)))]
    kept: list[np.ndarray] = []
    for p in cand:
        if len(kept) >= n_target:
            break
        if not kept or np.min(np.linalg.norm(np.asarray(kept) - p, axis=1)) > 2.1 * VESICLE_RADIUS_NM:
            kept.append(p)
    return np.asarray(kept).reshape(-1, 3)
