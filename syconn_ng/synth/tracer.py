"""Skeletons as a human tracer would draw them from the tissue's true cell graphs.

Nodes every ~100-300 nm along each centre line with sub-radius placement jitter, rounded to
voxels (KNOSSOS stores integers), radii estimated within ±30 %, a few short branches missed,
and only the part inside the volume (nothing outside can be traced). Each node keeps its true
compartment and radius for the truth table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from syconn_ng.io.skeleton import Node, Parameters, Skeleton, Tree
from syconn_ng.synth.geometry import COMPARTMENTS, SOMA, SPINE_HEAD, SPINE_NECK
from syconn_ng.synth.tissue import Tissue

MISSED_BRANCH_P = 0.12  # chance a tracer overlooks a terminal branch shorter than 1 µm
MISSED_BRANCH_NM = 1000.0
SOMA_EXTRA_NODES = 8  # nodes a tracer scatters over a soma besides its centre (those inside the volume)


@dataclass
class TracedNode:
    node_id: int
    pos_vx: np.ndarray  # (3,) int64, 0-based voxel
    radius_vx: float  # the true local radius (x voxels)
    traced_radius_vx: float  # what the tracer set
    comp: int
    parent: int  # node id, 0 for none
    arc_nm: float = float("nan")  # arc length along a myelinated axon (for the myelinated flag), else NaN


def trace_cell(tissue: Tissue, ci: int, rng: np.random.Generator, first_id: int) -> list[TracedNode]:
    """The traced nodes of cell `ci` (ids from `first_id`), in parent-before-child order."""
    vs = np.asarray(tissue.voxel_size_nm)
    idx = np.flatnonzero(tissue.node_cell == ci)
    if not len(idx):
        return []
    local = {g: k for k, g in enumerate(idx)}
    parent = np.array([local.get(tissue.node_parent[g], -1) for g in idx])
    pos = tissue.node_pos_nm[idx]
    rad = tissue.node_radius_nm[idx]
    comp = tissue.node_comp[idx].astype(int)
    arc = tissue.node_s_nm[idx] if tissue.has_myelin else np.full(len(idx), np.nan)
    children = [[] for _ in idx]
    for k, p in enumerate(parent):
        if p >= 0:
            children[p].append(k)
    dropped = _missed_branches(pos, parent, children, rng)
    soma_c, soma_r = tissue.soma_centre_nm[ci], tissue.soma_radius_nm[ci]
    has_soma = np.isfinite(soma_c[0])
    shape = np.asarray(tissue.shape_vx)

    out: list[TracedNode] = []
    traced_id = {}  # geometry node -> traced node id (or 0 where not traced)
    next_id = first_id

    def emit(p_nm, r_nm, c, parent_id, arc_nm=float("nan")):
        nonlocal next_id
        in_soma = has_soma and np.linalg.norm(p_nm - soma_c) < soma_r * 0.95
        if in_soma:
            c, r_nm = SOMA, soma_r
        jitter = _jitter(rng, (soma_r * 0.15) if in_soma else 0.22 * r_nm)
        v = np.rint((p_nm + jitter) / vs).astype(np.int64)
        if np.any(v < 0) or np.any(v >= shape):
            return 0  # outside the volume: not traceable
        r_true = (r_nm + (0.0 if in_soma else tissue.fill_nm)) / vs[0]
        out.append(TracedNode(next_id, v, float(r_true), float(r_true * rng.uniform(0.7, 1.3)), int(c), parent_id,
                              float(arc_nm)))
        next_id += 1
        return next_id - 1

    order = _preorder(parent, children)
    for k in order:
        if dropped[k]:
            continue
        p = parent[k]
        parent_id = traced_id.get(p, 0) if p >= 0 else 0
        if p >= 0:  # intermediate nodes along long edges
            length = np.linalg.norm(pos[k] - pos[p])
            n_extra = int(length // rng.uniform(100, 300))
            for j in range(1, n_extra + 1):
                f = j / (n_extra + 1)
                r, c = _along_edge(f, length, rad[p], rad[k], comp[p], comp[k])
                pid = emit(pos[p] + f * (pos[k] - pos[p]), r, c, parent_id, arc[p] + f * (arc[k] - arc[p]))
                parent_id = pid if pid else 0
        skip = (p >= 0 and len(children[k]) == 1 and comp[k] not in (SPINE_HEAD, SPINE_NECK, SOMA)
                and rng.random() < 0.15)
        traced_id[k] = parent_id if skip else emit(pos[k], rad[k], comp[k], parent_id, arc[k])
        if comp[k] == SOMA:
            _trace_soma(k, pos[k], soma_r, shape * vs - vs, traced_id, emit, rng)
    return out


def _trace_soma(k, centre, radius, hi_nm, traced_id, emit, rng):
    """A soma's node at its visible part when the volume's face cuts it, and a few more nodes
    scattered over it, as tracers mark a soma (only those inside the soma and the volume)."""
    base = centre
    if not traced_id[k]:
        face = np.clip(centre, 0, hi_nm)
        base = face + (face - centre) / max(np.linalg.norm(face - centre), 1e-9) * 0.2 * radius
        if np.linalg.norm(base - centre) >= 0.8 * radius:
            return
        traced_id[k] = emit(base, radius, SOMA, 0)
        if not traced_id[k]:
            return
    for _ in range(SOMA_EXTRA_NODES):
        u = rng.normal(size=3)
        p = base + u / np.linalg.norm(u) * rng.uniform(0.2, 0.5) * radius
        if np.linalg.norm(p - centre) < 0.8 * radius:
            emit(p, radius, SOMA, traced_id[k])


def _along_edge(f, length, r_parent, r_child, c_parent, c_child):
    """Radius and compartment a fraction `f` along an edge: spines are a thin neck ending in a
    head, not a cone; elsewhere the radius changes linearly."""
    if c_child == SPINE_NECK:  # from the shaft's centre line out to the neck
        return (r_parent, c_parent) if f * length < r_parent else (r_child, SPINE_NECK)
    if c_child == SPINE_HEAD:
        return (r_child, SPINE_HEAD) if (1 - f) * length < r_child else (r_parent, SPINE_NECK)
    return r_parent + f * (r_child - r_parent), c_child


def _jitter(rng, scale_nm):
    v = rng.normal(0, 1, 3)
    v *= min(abs(rng.normal(0, 0.5)), 1.0) * scale_nm / max(np.linalg.norm(v), 1e-9)
    return v


def _preorder(parent, children):
    order, stack = [], [k for k, p in enumerate(parent) if p < 0][::-1]
    while stack:
        k = stack.pop()
        order.append(k)
        stack.extend(children[k][::-1])
    return order


def _missed_branches(pos, parent, children, rng) -> np.ndarray:
    """(N,) bool: nodes of short terminal branches the tracer overlooked."""
    dropped = np.zeros(len(parent), dtype=bool)
    for end in (k for k in range(len(parent)) if not children[k]):
        branch, length, k = [end], 0.0, end
        while parent[k] >= 0 and len(children[parent[k]]) == 1:
            length += np.linalg.norm(pos[k] - pos[parent[k]])
            k = parent[k]
            branch.append(k)
        if parent[k] < 0:
            continue  # the whole neurite, not a side branch
        length += np.linalg.norm(pos[k] - pos[parent[k]])
        if length < MISSED_BRANCH_NM and rng.random() < MISSED_BRANCH_P:
            dropped[branch] = True
    for k in _preorder(parent, children):  # everything beyond a dropped node goes too
        if parent[k] >= 0 and dropped[parent[k]]:
            dropped[k] = True
    return dropped


def to_skeleton(cell_id: int, cell_type: str, nodes: list[TracedNode], voxel_size_nm, *, labelled: bool) -> Skeleton:
    """A one-tree Skeleton (tree id = cell id); `labelled` adds compartment and type comments."""
    tree = Tree(id=int(cell_id), comment=cell_type if labelled else "")
    for n in nodes:
        word = COMPARTMENTS[n.comp].replace("_", " ")
        tree.nodes.append(Node(id=n.node_id, x=float(n.pos_vx[0]), y=float(n.pos_vx[1]), z=float(n.pos_vx[2]),
                               radius=round(n.traced_radius_vx, 2), comment=word if labelled else ""))
        if n.parent:
            tree.edges.append((n.parent, n.node_id))
    params = Parameters(experiment="syconn_ng synthetic tissue", scale_nm=tuple(float(v) for v in voxel_size_nm))
    return Skeleton(trees=[tree], parameters=params)
