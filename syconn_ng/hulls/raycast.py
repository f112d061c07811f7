"""Cell hulls by ray casting (SyConn v1): rays leave every skeleton node and stop in the barrier.

All rays of a batch of nodes march together, a quarter voxel per step, with `np.take` on the
flattened barrier box; each ray stops on its own (masks and compaction, no per-ray loop). A ray
stops when the barrier summed over the voxels it entered reaches a threshold; its hull point is
where it entered that membrane (or, SyConn's way, where it stopped). Directions are isotropic in
nm, so anisotropic voxels (10 × 10 × 20 nm) give round neurites. Node radius = median ray length.
Everything is deterministic: ray tilts come from a generator seeded with (seed, cell id).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from syconn_ng.box import Box

BARRIER_FULL_SCALE = 255  # uint8 barrier layers: 255 = certainly membrane
GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))
FIRST_BOX_MARGIN_NM = 600.0  # rays are first cast in boxes this far around their nodes


@dataclass(frozen=True)
class RayParams:
    """The ray-casting parameters (the `[hulls]` section of the config; see its documentation)."""

    node_spacing_nm: float = 50.0
    rays_per_node: int = 100
    rays_in_plane: int = 20
    max_tilt_deg: float = 60.0
    rays_per_end_node: int = 200
    end_max_tilt_deg: float = 90.0
    step_vx: float = 0.25
    barrier_cutoff: float = 0.4
    barrier_threshold: float = 2.2
    hull_at: str = "entry"
    max_ray_length_nm: float = 3000.0
    max_dist_mult: float = 1.4
    outlier_neighbors: int = 20
    outlier_radius_nm: float = 220.0
    seed: int = 0
    max_box_voxels: int = 50_000_000

    @classmethod
    def from_config(cls, section: dict) -> "RayParams":
        return cls(**{k: section[k] for k in cls.__dataclass_fields__})


# ---------------------------------------------------------------- skeleton preparation

def interpolate_skeleton(positions_vx: np.ndarray, edges: np.ndarray, *, voxel_size_nm, spacing_nm: float):
    """Insert nodes along edges longer than `spacing_nm` so no two neighbours are farther apart.

    positions_vx: (N, 3) float voxels; edges: (E, 2) int indices. Returns (positions (N', 3)
    float64 voxels, edges (E', 2) int64, original (N',) int64: index of the input node, -1 for
    inserted ones). The input nodes come first, in their order.
    """
    pos = np.asarray(positions_vx, dtype=np.float64).reshape(-1, 3)
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    n = len(pos)
    length = np.linalg.norm((pos[e[:, 1]] - pos[e[:, 0]]) * vs, axis=1)
    extra = np.maximum(np.ceil(length / spacing_nm).astype(np.int64) - 1, 0)
    total = int(extra.sum())
    if total == 0:
        return pos, e, np.arange(n)
    edge_of = np.repeat(np.arange(len(e)), extra)
    first = np.cumsum(extra) - extra  # position of each edge's first new node among the new nodes
    k = np.arange(total) - np.repeat(first, extra) + 1  # 1..extra along the edge
    t = k / (extra[edge_of] + 1.0)
    a, b = pos[e[edge_of, 0]], pos[e[edge_of, 1]]
    new_pos = a + t[:, None] * (b - a)
    new_ids = n + np.arange(total)
    # chain per edge: a → new_1 → ... → new_k → b
    prev = np.where(k == 1, e[edge_of, 0], new_ids - 1)
    chain = np.stack([prev, new_ids], axis=1)
    last = np.flatnonzero(k == extra[edge_of])
    closing = np.stack([new_ids[last], e[edge_of[last], 1]], axis=1)
    kept = e[extra == 0]
    return (np.concatenate([pos, new_pos]), np.concatenate([kept, chain, closing]),
            np.concatenate([np.arange(n), np.full(total, -1)]))


def node_tangents(positions_nm: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(N, 3) unit skeleton directions: the main axis of each node's edge directions (z where none).

    The main axis of Σ d dᵀ over incident edges is the central difference on a chain and does not
    depend on how edges are oriented.
    """
    n = len(positions_nm)
    t = np.zeros((n, 3, 3))
    if len(edges):
        d = positions_nm[edges[:, 1]] - positions_nm[edges[:, 0]]
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        outer = d[:, :, None] * d[:, None, :]
        np.add.at(t, edges[:, 0], outer)
        np.add.at(t, edges[:, 1], outer)
    _, vec = np.linalg.eigh(t)
    tangent = vec[:, :, 2]
    tangent[np.abs(t).sum(axis=(1, 2)) == 0] = (0.0, 0.0, 1.0)
    return tangent


def node_degrees(n: int, edges: np.ndarray) -> np.ndarray:
    """(N,) int number of edges at each node."""
    return np.bincount(np.asarray(edges, dtype=np.int64).ravel(), minlength=n)


def ray_directions(tangents: np.ndarray, end_node: np.ndarray, p: RayParams, rng: np.random.Generator):
    """Ray directions (unit, nm space) for every node, SyConn's scheme.

    A node casts `rays_per_node` rays (`rays_per_end_node` at end nodes): `rays_in_plane` evenly
    spaced in the plane orthogonal to its tangent, the rest at golden-angle azimuths tilted out of
    the plane by a uniform random angle within ±`max_tilt_deg` (±`end_max_tilt_deg` at end nodes).
    Returns (ray_node (M,) int64, directions (M, 3) float64, cos_tilt (M,) float64), rays grouped
    by node in node order.
    """
    n = len(tangents)
    counts = np.where(end_node, p.rays_per_end_node, p.rays_per_node).astype(np.int64)
    ray_node = np.repeat(np.arange(n), counts)
    j = np.arange(len(ray_node)) - np.repeat(np.cumsum(counts) - counts, counts)  # ray index within its node
    in_plane = j < p.rays_in_plane
    azimuth = np.where(in_plane, 2 * np.pi * j / max(p.rays_in_plane, 1), GOLDEN_ANGLE * j)
    max_tilt = np.deg2rad(np.where(end_node[ray_node], p.end_max_tilt_deg, p.max_tilt_deg))
    # one draw per ray of the whole cell, in node order: the same tilts whatever the batching
    tilt = np.where(in_plane, 0.0, rng.uniform(-1.0, 1.0, size=len(ray_node)) * max_tilt)
    t = tangents[ray_node]
    helper = np.where(np.abs(t[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    u = np.cross(t, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = np.cross(t, u)
    c = np.cos(tilt)[:, None]
    d = c * (np.cos(azimuth)[:, None] * u + np.sin(azimuth)[:, None] * v) + np.sin(tilt)[:, None] * t
    return ray_node, d / np.linalg.norm(d, axis=1, keepdims=True), c[:, 0]


# ---------------------------------------------------------------- marching

def barrier_lut(cutoff: float) -> np.ndarray:
    """(256,) float32: barrier value per uint8 level as a fraction of full scale, 0 at or below `cutoff`."""
    levels = np.arange(256, dtype=np.float32)
    return np.where(levels > cutoff * BARRIER_FULL_SCALE, levels / BARRIER_FULL_SCALE, 0.0).astype(np.float32)


def cast_rays(barrier: np.ndarray, origins_vx: np.ndarray, directions: np.ndarray, *, voxel_size_nm, step_vx: float,
              cutoff: float, threshold: float, max_length_nm: float):
    """How far each ray travels through the barrier before stopping.

    barrier: (X, Y, Z) uint8, full scale 255; origins_vx: (M, 3) positions in the array's voxel
    coordinates (voxel i spans [i - 0.5, i + 0.5)); directions: (M, 3) unit vectors in nm space.
    A ray advances `step_vx` × the smallest voxel side per step; each voxel it enters adds its
    barrier value (`barrier_lut(cutoff)`); it stops once the sum reaches `threshold`.
    Returns (entry_nm, stop_nm, left): (M,) float32 distances at which the ray entered the barrier
    run it stopped in, and at which it stopped, NaN for rays that did not stop within
    `max_length_nm` or left the array; left (M,) bool, the ray left the array before stopping
    (cast it again in a larger box).
    """
    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    step_nm = float(step_vx) * float(vs.min())
    n_steps = int(np.floor(max_length_nm / step_nm))
    shape = np.asarray(barrier.shape[:3], dtype=np.int64)
    if not (barrier.flags.c_contiguous or barrier.flags.f_contiguous):
        barrier = np.ascontiguousarray(barrier)
    flat_barrier = barrier.ravel(order="K")  # a view in memory order: the strides below index it
    strides = np.asarray(barrier.strides[:3], dtype=np.int64) // barrier.itemsize
    lut = barrier_lut(cutoff)
    m = len(origins_vx)
    entry_out = np.full(m, np.nan, dtype=np.float32)
    stop_out = np.full(m, np.nan, dtype=np.float32)
    left = np.zeros(m, dtype=bool)
    if m == 0:
        return entry_out, stop_out, left
    o = (np.asarray(origins_vx, dtype=np.float64) + 0.5).T.astype(np.float32)  # +0.5: floor gives the voxel
    d = (np.asarray(directions, dtype=np.float64) * (step_nm / vs)).T.astype(np.float32)  # voxels per step
    idx = np.arange(m)
    prev, outside = _flat_index(o, strides, shape)
    left[outside] = True
    acc = np.where(outside, np.float32(np.inf), np.float32(0.0))  # an origin outside the array ends at once
    last_clear = np.zeros(m, dtype=np.int32)  # last step at which the ray was in a voxel without barrier
    for k in range(1, n_steps + 1):
        flat, outside = _flat_index(o + np.float32(k) * d, strides, shape)
        value = lut[flat_barrier[flat]]
        acc += np.where(flat != prev, value, np.float32(0.0))
        last_clear[value == 0] = k
        prev = flat
        stopped = (acc >= threshold) | outside
        if stopped.any():
            hit = stopped & ~outside
            stop_out[idx[hit]] = k * step_nm
            entry_out[idx[hit]] = (last_clear[hit] + 1) * step_nm
            left[idx[outside]] = True
            go = ~stopped
            idx, o, d, prev, acc, last_clear = idx[go], o[:, go], d[:, go], prev[go], acc[go], last_clear[go]
            if not len(idx):
                break
    return entry_out, stop_out, left


def _flat_index(pos: np.ndarray, strides: np.ndarray, shape: np.ndarray):
    """Flat array index of the voxels holding (3, M) positions (already shifted by +0.5), clamped to the
    array, and (M,) bool: which positions lie outside it. Few, whole-array calls: this runs every step."""
    i = np.floor(pos).astype(np.int64)
    high = shape[:, None] - 1
    outside = ((i < 0) | (i > high)).any(axis=0)
    np.maximum(i, 0, out=i)
    np.minimum(i, high, out=i)
    return (i * strides[:, None]).sum(axis=0), outside


# ---------------------------------------------------------------- radii and hull points

def median_per_group(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups,) float32 median of the finite `values` of each group; NaN for groups without any."""
    ok = np.isfinite(values)
    v, g = values[ok].astype(np.float64), group[ok]
    order = np.lexsort((v, g))
    v, g = v[order], g[order]
    counts = np.bincount(g, minlength=n_groups)
    start = np.cumsum(counts) - counts
    out = np.full(n_groups, np.nan, dtype=np.float32)
    has = counts > 0
    lo = start[has] + (counts[has] - 1) // 2
    hi = start[has] + counts[has] // 2
    out[has] = (v[lo] + v[hi]) / 2
    return out


def outlier_mask(points_nm: np.ndarray, *, neighbors: int, radius_nm: float) -> np.ndarray:
    """(P,) bool: points with at least `neighbors` other points within `radius_nm` (SyConn's outlier test)."""
    if neighbors <= 0 or len(points_nm) == 0:
        return np.ones(len(points_nm), dtype=bool)
    from scipy.spatial import cKDTree

    if len(points_nm) <= neighbors:
        return np.zeros(len(points_nm), dtype=bool)
    dist, _ = cKDTree(points_nm).query(points_nm, k=[neighbors + 1], distance_upper_bound=radius_nm)
    return np.isfinite(dist[:, 0])


# ---------------------------------------------------------------- whole cell

@dataclass
class CellHull:
    """A cell's hull. Nodes include the interpolated ones (`node_id` 0); hull points are kept rays' ends.

    node_vx (N, 3) float32 voxels; node_id (N,) uint64; edges (E, 2) int32; radius_nm (N,) float32
    (median ray length, NaN if no ray of the node stopped); points_vx (P, 3) float32 voxels;
    point_node (P,) int32 index of the node each hull point belongs to; point_at_face (P,) bool:
    the ray ended at a face of the dataset, not in a membrane.
    """

    node_vx: np.ndarray
    node_id: np.ndarray
    edges: np.ndarray
    radius_nm: np.ndarray
    points_vx: np.ndarray
    point_node: np.ndarray
    point_at_face: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def dataset_pad_vx(p: RayParams) -> int:
    """Voxels of full barrier around the dataset: enough for any ray to stop before leaving them."""
    return int(np.ceil(p.barrier_threshold)) + 2


def ray_margin_vx(p: RayParams, voxel_size_nm) -> np.ndarray:
    """(3,) voxels a box must extend beyond its nodes to hold every ray up to the maximum length."""
    return np.ceil(p.max_ray_length_nm / np.asarray(voxel_size_nm, dtype=np.float64)).astype(np.int64) + 2


def _subgraph(edges: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """The edges among `nodes` (sorted indices), renumbered to positions in `nodes`."""
    index = np.full(int(max(edges.max(initial=-1), nodes.max(initial=-1))) + 1, -1, dtype=np.int64)
    index[nodes] = np.arange(len(nodes))
    both = (index[edges[:, 0]] >= 0) & (index[edges[:, 1]] >= 0) if len(edges) else np.zeros(0, dtype=bool)
    return index[edges[both]].reshape(-1, 2)


def node_batches(positions_vx: np.ndarray, edges: np.ndarray, *, margin_vx, bounds: Box, max_box_voxels: int):
    """Nodes grouped along the skeleton (depth-first) into batches whose barrier box stays under `max_box_voxels`.

    Returns a list of (node indices, Box); a batch has one node at least. Boxes are the batch's
    bounding box grown by `margin_vx` and clipped to `bounds`.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components, depth_first_order

    n = len(positions_vx)
    if n == 0:
        return []
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr() if len(edges) else coo_matrix((n, n)).tocsr()
    n_comp, comp = connected_components(graph, directed=False)
    order = []
    for c in range(n_comp):
        root = int(np.flatnonzero(comp == c)[0])
        order.append(depth_first_order(graph, root, directed=False, return_predecessors=False))
    order = np.concatenate(order)
    margin = np.asarray(margin_vx, dtype=np.int64)
    lo_b, hi_b = np.asarray(bounds.start), np.asarray(bounds.stop)
    pos = np.rint(positions_vx[order]).astype(np.int64)
    out, start = [], 0
    while start < n:
        lo = np.maximum(np.minimum.accumulate(pos[start:], axis=0) - margin, lo_b)
        hi = np.minimum(np.maximum.accumulate(pos[start:], axis=0) + margin + 1, hi_b)
        size = np.prod(np.maximum(hi - lo, 0), axis=1)
        take = max(1, int(np.searchsorted(size, max_box_voxels, side="right")))
        out.append((np.sort(order[start: start + take]), Box(lo[take - 1], hi[take - 1])))
        start += take
    return out


def cell_hull(read_barrier: Callable[[Box], np.ndarray], positions_vx: np.ndarray, node_ids: np.ndarray, edges: np.ndarray,
              *, cell_id: int, voxel_size_nm, bounds: Box, params: RayParams) -> CellHull:
    """The hull of one cell from its skeleton.

    read_barrier: Box → (X, Y, Z) uint8 barrier of that box, with full barrier (255) outside the
    dataset; positions_vx (N, 3) 0-based voxels; node_ids (N,) uint64; edges (E, 2) node indices;
    bounds: the dataset's Box. Nodes are interpolated every `node_spacing_nm` and rays cast in
    boxes of nodes (the result does not depend on how nodes are batched). A node's radius is the
    median over its rays of the ray length projected onto the plane orthogonal to the skeleton
    (SyConn takes the plain length, which tilted rays inflate), leaving out rays that ended at the
    dataset's faces; hull points farther from the axis (from an end node: from the node) than
    `max_dist_mult` radii, or with too few neighbours, are dropped.
    """
    p = params
    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    pos, e, original = interpolate_skeleton(positions_vx, edges, voxel_size_nm=vs, spacing_nm=p.node_spacing_nm)
    n = len(pos)
    ids = np.zeros(n, dtype=np.uint64)
    ids[original >= 0] = np.asarray(node_ids, dtype=np.uint64)[original[original >= 0]]
    tangents = node_tangents(pos * vs, e)
    end_node = node_degrees(n, e) < 2
    rng = np.random.default_rng([int(p.seed), int(cell_id)])
    ray_node, directions, cos_tilt = ray_directions(tangents, end_node, p, rng)
    length = np.full(len(ray_node), np.nan, dtype=np.float32)
    counts = np.bincount(ray_node, minlength=n)
    starts = np.cumsum(counts) - counts
    pad = dataset_pad_vx(p)
    # most rays stop near their node: a small box first, then a box holding the longest ray for the
    # rays that left it (either way a ray's length comes from a box holding its whole path)
    todo = np.ones(len(ray_node), dtype=bool)
    margins = [ray_margin_vx(replace(p, max_ray_length_nm=min(p.max_ray_length_nm, FIRST_BOX_MARGIN_NM)), vs),
               ray_margin_vx(p, vs)]
    for margin in margins:
        nodes = np.unique(ray_node[todo])
        for batch, box in node_batches(pos[nodes], _subgraph(e, nodes), margin_vx=margin, bounds=bounds.grow(pad),
                                       max_box_voxels=p.max_box_voxels):
            batch = nodes[batch]
            c = counts[batch]
            rays = np.repeat(starts[batch] - (np.cumsum(c) - c), c) + np.arange(c.sum())
            rays = rays[todo[rays]]
            barrier = read_barrier(box)
            entry, stop, left = cast_rays(barrier, pos[ray_node[rays]] - np.asarray(box.start), directions[rays], voxel_size_nm=vs,
                                          step_vx=p.step_vx, cutoff=p.barrier_cutoff, threshold=p.barrier_threshold,
                                          max_length_nm=p.max_ray_length_nm)
            length[rays] = entry if p.hull_at == "entry" else stop
            todo[rays] = left
        if not todo.any():
            break
    end_nm = pos[ray_node] * vs + directions * np.nan_to_num(length)[:, None]
    # rays that ran into the dataset's faces end there: hull points, but they say nothing of the radius
    at_face = np.isfinite(length) & ~bounds.contains(np.rint(end_nm / vs))
    axial = length * cos_tilt.astype(np.float32)
    radius = median_per_group(np.where(at_face, np.nan, axial), ray_node, n)
    # an end node's rays along the neurite would reach its far end: there the plain length counts (SyConn's rule)
    reach = np.where(end_node[ray_node], length, axial)
    keep = np.isfinite(length) & (reach <= p.max_dist_mult * radius[ray_node])
    points_nm = end_nm[keep]
    good = outlier_mask(points_nm, neighbors=p.outlier_neighbors, radius_nm=p.outlier_radius_nm)
    return CellHull(
        node_vx=pos.astype(np.float32), node_id=ids, edges=e.astype(np.int32), radius_nm=radius,
        points_vx=(points_nm[good] / vs).astype(np.float32), point_node=ray_node[keep][good].astype(np.int32),
        point_at_face=at_face[keep][good],
    )
