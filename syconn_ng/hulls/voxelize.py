"""Hulls → cell label voxels: a voxel belongs to a cell if it lies inside the region of one of the
cell's nodes, the star-shaped polyhedron bounded by that node's ray end points.

The polyhedron's faces are the triangles of the rays' directions on the sphere, each spanned by
three end points (`star_reach`); taking the nearest ray's length instead stretches the region
sideways (a ray tilted 60° along a neurite is twice its radius long), and cutting with planes
normal to the rays shrinks it near flat surfaces. Its reach is tabulated per cube-map direction
bin (no ray within `max_gap_deg` of a bin: outside), and a voxel at distance r in bin b is inside
if r ≤ reach[b].
Voxel distances and bins come from a template cached per box size, so rasterising a node is one
gather and two comparisons per voxel. A voxel claimed by nodes of two cells goes to the cell
whose claiming node is nearer.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from syconn_ng.box import Box


# ---------------------------------------------------------------- directions on a cube map

@lru_cache(maxsize=1)
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def bin_index(vectors: np.ndarray, n: int) -> np.ndarray:
    """Cube-map bin (0 .. 6·n² − 1) of each (..., 3) vector (any length; zero vectors get bin 0).

    The major axis a (largest |component|) and its sign pick the face 2a + (component > 0); the
    other two components, divided by the major one's magnitude, pick one of n × n cells on it.
    """
    v = np.asarray(vectors, dtype=np.float32)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    ax, ay, az = np.abs(x), np.abs(y), np.abs(z)
    is_x = (ax >= ay) & (ax >= az)
    is_y = ~is_x & (ay >= az)
    major = np.where(is_x, x, np.where(is_y, y, z))
    u = np.where(is_x, y, np.where(is_y, z, x))  # the next axes in cyclic order, as in `bin_centres`
    w = np.where(is_x, z, np.where(is_y, x, y))
    scale = np.float32(0.5 * n) / np.maximum(np.abs(major), np.float32(1e-30))
    iu = np.clip(((u * scale) + np.float32(0.5 * n)).astype(np.int32), 0, n - 1)
    iw = np.clip(((w * scale) + np.float32(0.5 * n)).astype(np.int32), 0, n - 1)
    face = 2 * np.where(is_x, 0, np.where(is_y, 1, 2)).astype(np.int32) + (major > 0)
    return face * (n * n) + iu * n + iw


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


def star_planes(directions: np.ndarray, lengths: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The face of one node's star-shaped polyhedron met in each query direction, as a plane.

    directions (R, 3) unit rays, lengths (R,) nm; query (B, 3) unit directions. The rays'
    directions are triangulated on the sphere (their convex hull); in a direction inside the
    spherical triangle of rays i, j, k the surface is the plane through their three end points.
    Flat membranes and dataset faces stay flat, round neurites round, and the surface never bulges
    past the end points. Returns (B, 4) float64 planes (unit normal n, offset c): a point x (nm,
    from the node) in that direction is inside if n·x ≤ c; c = −1 where no triangle holds it.
    """
    from scipy.spatial import ConvexHull, QhullError

    out = np.zeros((len(query), 4))
    out[:, 3] = -1.0
    if len(directions) < 4:
        return out
    try:
        hull = ConvexHull(directions)
    except QhullError:  # all rays in one plane: no triangulation
        return out
    triangles = hull.simplices  # (F, 3)
    # the triangle a direction d passes through is the facet it leaves the hull by: largest (n·d) / −c
    normal_f, c_f = hull.equations[:, :3], hull.equations[:, 3]
    with np.errstate(divide="ignore"):
        score = (query @ normal_f.T) / np.where(c_f < 0, -c_f, 0.0)
    face = np.argmax(score, axis=1)
    ok = np.ones(len(query), dtype=bool)
    if not np.all(c_f < -1e-9):  # the node is not inside its rays' hull: check that the triangle holds d
        corners = np.transpose(directions[triangles[face]], (0, 2, 1))  # (B, xyz, corner)
        ok = np.abs(np.linalg.det(corners)) > 1e-9
        weights = np.zeros((len(query), 3))
        weights[ok] = np.linalg.solve(corners[ok], query[ok][..., None])[..., 0]
        ok &= np.all(weights >= -1e-6, axis=1)
    ends = directions[triangles] * lengths[triangles][..., None]  # (F, 3 corners, 3) end points
    normal = np.cross(ends[:, 1] - ends[:, 0], ends[:, 2] - ends[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    offset = np.einsum("fj,fj->f", normal, ends[:, 0])
    flip = offset < 0  # orient normals away from the node
    normal[flip] *= -1
    offset[flip] *= -1
    ok &= np.einsum("bj,bj->b", normal[face], query) > 1e-9
    out[ok, :3] = normal[face[ok]]
    out[ok, 3] = offset[face[ok]]
    return out


def node_planes(node_nm: np.ndarray, points_nm: np.ndarray, point_node: np.ndarray, *, n_bins: int,
                max_gap_deg: float, min_length_nm: np.ndarray | None = None) -> np.ndarray:
    """(K, 6·n_bins², 4) float32: per node and direction bin, the plane bounding the node's region.

    node_nm (K, 3); points_nm (P, 3) hull points; point_node (P,) their node (0 .. K−1), sorted;
    min_length_nm (P,) optional: rays are taken at least this long (a ray that ended at a dataset
    face does not show where the cell ends). The plane is `star_planes` at the bin's centre
    direction; bins with no ray within `max_gap_deg` are outside (offset −1).
    """
    centres = bin_centres(n_bins)
    out = np.zeros((len(node_nm), len(centres), 4), dtype=np.float32)
    out[..., 3] = -1.0
    if len(point_node) == 0:
        return out
    cos_gap = np.cos(np.deg2rad(max_gap_deg))
    offset = points_nm - node_nm[point_node]
    length = np.linalg.norm(offset, axis=1)
    unit = offset / np.maximum(length, 1e-9)[:, None]
    if min_length_nm is not None:
        length = np.maximum(length, min_length_nm)
    bounds = np.searchsorted(point_node, np.arange(len(node_nm) + 1))
    with _blas().limit(limits=1):  # thousands of tiny products: BLAS threads only add overhead
        for k in range(len(node_nm)):
            lo, hi = bounds[k], bounds[k + 1]
            if hi == lo:
                continue
            planes = star_planes(unit[lo:hi], length[lo:hi], centres)
            planes[(centres @ unit[lo:hi].T).max(axis=1) < cos_gap, 3] = -1.0
            out[k] = planes
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

TEMPLATE_MAX_NM = 1024.0  # larger regions (somata) are computed on the spot instead of from a cached template
SLAB_VOXELS = 1 << 21  # ... in slabs of at most this many voxels


def _quantised_reach(reach_nm: np.ndarray) -> np.ndarray:
    """Reaches rounded up to powers of two (≥ 64 nm), so a handful of cached templates serve every node."""
    return 2.0 ** np.ceil(np.log2(np.maximum(reach_nm, 64.0)))


def _distances_and_bins(offsets: list[np.ndarray], voxel_size_nm, n_bins: int):
    """Distance (nm, float32) and cube-map bin (int16) of the voxels of a box, from per-axis voxel offsets."""
    grid = np.stack(np.meshgrid(*[(o * s).astype(np.float32) for o, s in zip(offsets, voxel_size_nm)], indexing="ij"), axis=-1)
    return np.sqrt((grid * grid).sum(-1)), bin_index(grid, n_bins).astype(np.int16)


@lru_cache(maxsize=8)
def _template(reach_nm: float, voxel_size_nm: tuple[float, float, float], n_bins: int):
    """`_distances_and_bins` of the box of half-size ceil(reach / voxel size) around a voxel."""
    half = [int(np.ceil(reach_nm / s)) for s in voxel_size_nm]
    return _distances_and_bins([np.arange(-h, h + 1, dtype=np.float64) for h in half], voxel_size_nm, n_bins)


def rasterize_stars(box: Box, nodes_vx: np.ndarray, planes: np.ndarray, reach_nm: np.ndarray, labels: np.ndarray, *,
                    voxel_size_nm, n_bins: int) -> np.ndarray:
    """(X, Y, Z) uint64 labels of `box`: each voxel takes the label of the nearest node whose region holds it.

    nodes_vx (K, 3) float voxels; planes (K, 6·n_bins², 4) float32 from `node_planes`; reach_nm
    (K,) how far each region extends at most (its longest ray); labels (K,) uint64 (the cell of
    each node). Node centres are rounded to the nearest voxel.
    """
    vs = tuple(float(v) for v in voxel_size_nm)
    vs_arr = np.asarray(vs)
    out = np.zeros(box.shape, dtype=np.uint64)
    best = np.full(box.shape, np.inf, dtype=np.float32)
    start = np.asarray(box.start)
    centre = np.rint(nodes_vx).astype(np.int64)
    reach_q = _quantised_reach(reach_nm)
    for k in np.flatnonzero(reach_nm >= 0):
        h = np.ceil(reach_q[k] / vs_arr).astype(np.int64)
        node_box = Box(centre[k] - h, centre[k] + h + 1).intersect(box)
        if node_box.empty():
            continue
        if reach_q[k] <= TEMPLATE_MAX_NM:
            dist, bins = _template(float(reach_q[k]), vs, n_bins)
            t = node_box.slices(relative_to=centre[k] - h)
            _claim(out, best, node_box, start, centre[k], dist[t], bins[t], planes[k], labels[k], vs)
            continue
        # a large region (a soma): computed on the spot, in slabs along x to bound the memory
        plane_size = node_box.shape[1] * node_box.shape[2]
        step = max(1, SLAB_VOXELS // max(plane_size, 1))
        for x0 in range(node_box.start[0], node_box.stop[0], step):
            slab = Box((x0, node_box.start[1], node_box.start[2]), (min(x0 + step, node_box.stop[0]),) + node_box.stop[1:])
            rel = [np.arange(a, b, dtype=np.float64) - c for a, b, c in zip(slab.start, slab.stop, centre[k])]
            d, b = _distances_and_bins(rel, vs, n_bins)
            _claim(out, best, slab, start, centre[k], d, b, planes[k], labels[k], vs)
    return out


def _claim(out, best, sub: Box, start, centre, dist, bins, planes, label, vs) -> None:
    """Label the voxels of `sub` inside one node's region that are nearer to it than to any node so far."""
    ox, oy, oz = ((np.arange(a, b) - c).astype(np.float32) * np.float32(v) for a, b, c, v in zip(sub.start, sub.stop, centre, vs))
    cols = np.ascontiguousarray(planes.T)  # gathers from contiguous columns, sums in place: 1.5x faster (profiled hot spot)
    inside = ox[:, None, None] * cols[0].take(bins)
    inside += oy[None, :, None] * cols[1].take(bins)
    inside += oz[None, None, :] * cols[2].take(bins)
    inside = inside <= cols[3].take(bins)
    o = sub.slices(relative_to=start)
    claim = inside & (dist < best[o])
    best[o][claim] = dist[claim]
    out[o][claim] = label


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
