"""Synapses and non-synaptic close contacts where axons pass dendrites, spine heads and somata.

A synapse is a bouton (a sphere on the axon) pressed against the partner: the cleft is the
flattened boundary between the two, its sj a thin disc of that boundary, its vesicle cloud a
ball inside the bouton next to the cleft. A close contact is the same apposition made by a
small swelling with no sj and no vesicles, so a detector has look-alikes to reject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from syconn_ng.synth.geometry import AXON, CELL_TYPE_SPECS, DENDRITE, SOMA, SPINE_HEAD, Grower

SAMPLE_NM = 50.0  # spacing of the centre-line samples searched for appositions
MAX_GAP_NM = 250.0  # an axon this close to a partner's surface can reach it with a bouton
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


def find_appositions(g: Grower):
    """Sites where an axon passes within MAX_GAP_NM of another cell's dendrite, spine head or soma.

    Returns a list of dicts (pre, post, axon point, partner point, radii, partner compartment),
    at most one per 800 nm of axon and none within 400 nm of another site.
    """
    reg = g.region
    a_pos, a_rad, a_cell, _ = _centre_line_samples(g, [AXON])
    inside = reg.inside_volume(a_pos)
    a_pos, a_rad, a_cell = a_pos[inside], a_rad[inside], a_cell[inside]
    p_pos, p_rad, p_cell, p_comp = _centre_line_samples(g, [DENDRITE, SPINE_HEAD])
    n = len(a_pos)
    best_gap = np.full(n, np.inf)
    best_pt = np.zeros((n, 3))
    best_r = np.zeros(n)
    best_cell = np.full(n, -1)
    best_comp = np.full(n, -1)
    if len(p_pos) and n:
        k = min(24, len(p_pos))
        d, j = cKDTree(p_pos).query(a_pos, k=k)
        d, j = d.reshape(n, k), j.reshape(n, k)
        gap = d - a_rad[:, None] - p_rad[j]
        gap[p_cell[j] == a_cell[:, None]] = np.inf
        m = np.argmin(gap, axis=1)
        rows = np.arange(n)
        best_gap = gap[rows, m]
        jj = j[rows, m]
        best_pt, best_r, best_cell, best_comp = p_pos[jj], p_rad[jj], p_cell[jj], p_comp[jj]
    for ci, cell in enumerate(g.m.cells):
        if cell.soma_centre_nm is None:
            continue
        gap = np.linalg.norm(a_pos - cell.soma_centre_nm, axis=1) - a_rad - cell.soma_radius_nm
        better = (gap < best_gap) & (a_cell != ci)
        best_gap = np.where(better, gap, best_gap)
        best_pt[better] = cell.soma_centre_nm
        best_r[better] = cell.soma_radius_nm
        best_cell[better] = ci
        best_comp[better] = SOMA
    sites: list[dict] = []
    taken = np.zeros((0, 3))
    taken_cell = np.zeros(0, int)
    for i in np.argsort(best_gap, kind="stable"):
        if best_gap[i] > MAX_GAP_NM:
            break
        if len(taken):
            dist = np.linalg.norm(taken - a_pos[i], axis=1)
            if np.any(dist < 400) or np.any((dist < 800) & (taken_cell == a_cell[i])):
                continue
        sites.append(dict(pre=int(a_cell[i]), post=int(best_cell[i]), a=a_pos[i], ra=float(a_rad[i]),
                          d=best_pt[i], rp=float(best_r[i]), comp=int(best_comp[i])))
        taken = np.vstack([taken, a_pos[i]])
        taken_cell = np.append(taken_cell, a_cell[i])
    return sites


def place_synapses_and_contacts(g: Grower, rng: np.random.Generator, *, n_synapses: int):
    """Turn apposition sites into synapses (boutons, sj, vesicle clouds) and close contacts.

    About `n_synapses` synapses (fewer if there are not enough sites), chosen by the pre
    type's preference for the partner compartment; the other sites become close contacts,
    and there are never fewer contacts than synapses.
    """
    sites = find_appositions(g)
    weights = []
    for s in sites:
        pref = CELL_TYPE_SPECS[g.m.cells[s["pre"]].type].post_preference
        weights.append({DENDRITE: pref[0], SPINE_HEAD: pref[1], SOMA: pref[2]}[s["comp"]])
    w = np.maximum(np.asarray(weights, dtype=float), 1e-6)
    order = np.argsort(-(np.log(w) + rng.gumbel(size=len(w))), kind="stable") if len(w) else np.zeros(0, int)
    n_syn_sites = min(int(n_synapses), len(sites) // 2)
    syn_sites = [sites[i] for i in order[:n_syn_sites]]
    contact_sites = [sites[i] for i in order[n_syn_sites:]]

    node_cell = np.asarray(g.m.node_cell)
    node_comp = np.asarray(g.m.node_comp)
    node_pos = np.asarray(g.m.node_pos)
    axon_nodes = {}
    for ci in {s["pre"] for s in sites}:
        ids = np.flatnonzero((node_cell == ci) & (node_comp == AXON))
        axon_nodes[ci] = (ids, node_pos[ids])
    contacts: list[Contact] = []
    for s in contact_sites:
        spec = CELL_TYPE_SPECS[g.m.cells[s["pre"]].type]
        rs = max(s["ra"] * rng.uniform(1.4, 2.2), 75.0)
        placed = _press(g, axon_nodes, s, rs, rng.uniform(25, 60), max_radius=spec.bouton_radius_nm[1])
        if placed is not None:
            contacts.append(Contact(s["pre"], s["post"], placed[1], s["comp"]))

    synapses: list[Synapse] = []
    clouds: list[VesicleCloud] = []
    boutons: list[Bouton] = []
    for s in syn_sites:
        if len(synapses) >= len(contacts):
            break
        spec = CELL_TYPE_SPECS[g.m.cells[s["pre"]].type]
        rb = rng.uniform(*spec.bouton_radius_nm)
        placed = _press(g, axon_nodes, s, rb, rng.uniform(50, 90), max_radius=rb, min_radius=0.7 * spec.bouton_radius_nm[0])
        if placed is None:
            continue
        (b_centre, rb), c, normal = placed[0], placed[1], placed[2]
        asym = spec.synapse_type == "asymmetric"
        radius = min(rng.uniform(110, 230) if asym else rng.uniform(90, 180), 0.75 * rb)
        rv = min(rng.uniform(100, 170), rb - 60.0)
        v_centre = c - normal * (rv + 25.0)
        clouds.append(VesicleCloud(s["pre"], v_centre, rv, _vesicles(rng, v_centre, rv, b_centre, rb, c)))
        synapses.append(Synapse(s["pre"], s["post"], c, normal, radius, spec.synapse_type, s["comp"], len(clouds) - 1))
        boutons.append(Bouton(s["pre"], b_centre, rb, normal))
    return synapses, clouds, contacts, boutons


def _press(g: Grower, axon_nodes, site, radius, overlap_nm, *, max_radius, min_radius=0.0):
    """Put a sphere on the axon at `site`, pressed `overlap_nm` into the partner.

    Returns ((centre, radius), boundary point, unit normal pre → post) or None where the
    sphere would not fit (it may shrink down to `min_radius`) or would press into a third cell.
    """
    a, d, rp = site["a"], site["d"], site["rp"]
    vec = d - a
    dist = float(np.linalg.norm(vec))
    if dist < 1.0:
        return None
    normal = vec / dist
    radius = min(radius, max_radius, dist - rp + overlap_nm)
    if radius < max(min_radius, site["ra"]):
        return None
    centre = d - normal * (rp + radius - overlap_nm)
    region = g.region
    boundary = centre + normal * (np.linalg.norm(d - centre) + radius - rp) / 2
    if not region.inside_volume(boundary):
        return None
    depth = g.index.overlap_depth(centre, radius, exclude_cells=(site["pre"], site["post"]))[0]
    if depth > 30.0:
        return None
    ids, pos = axon_nodes[site["pre"]]
    parent = int(ids[np.argmin(np.linalg.norm(pos - a, axis=1))])
    g.m.add_node(centre, radius, AXON, site["pre"], parent, key=True)
    if np.linalg.norm(centre - a) > 10.0:
        g.capsule(a, centre, site["ra"], min(radius, site["ra"] * 1.3), site["pre"], AXON)
    g.capsule(centre, centre, radius, radius, site["pre"], AXON)
    return (centre, radius), boundary, normal


def _vesicles(rng, centre, radius, bouton_centre, bouton_radius, cleft):
    """Vesicle centres (K, 3) packed in the cloud, denser near the cleft, 2 radii apart."""
    n_target = int(0.3 * (radius / VESICLE_RADIUS_NM) ** 3)
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
