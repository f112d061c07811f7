"""The `objects` stage: organelle probabilities (sj, vc, mi) → connected objects with global uint64 ids.

Three passes over the task grid:
1. `label` (parallel): threshold and `cc3d` per task box; local labels go to a scratch layer,
   the six boundary faces and per-label statistics to a small file.
2. `stitch` (driver): union-find over labels that touch across task faces (edges and corners
   too for 18/26-connectivity), size filter on whole objects, global ids in a fixed order,
   the object tables.
3. `relabel` (parallel): local → global ids, written to `layers/sj|vc|mi`.

Id rule (the same for local, Dask and resumed runs): tasks in z, y, x order of their start;
within a task, labels by their first voxel in x-fastest scan order; an object takes the rank
of its first part in that order, counting only objects that pass the filters.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np

from syconn_ng.box import Box
from syconn_ng.engine.driver import Pass
from syconn_ng.errors import InputError
from syconn_ng.layers import (atomic_write_bytes, atomic_write_text, create_layer, layer_box, local_dir, open_layer, read_box,
                             remove_temp_files, write_box)

ORGANELLES = ("sj", "vc", "mi")  # channel order of the organelle probability layer
TABLE_COLUMNS = ("id", "voxels", "volume_nm3", "bbox_x0", "bbox_y0", "bbox_z0", "bbox_x1", "bbox_y1", "bbox_z1",
                 "centroid_x", "centroid_y", "centroid_z", "rep_x", "rep_y", "rep_z")
FACES = ("x0", "x1", "y0", "y1", "z0", "z1")


# ---------------------------------------------------------------- pure functions on arrays

def threshold_u8(fraction: float) -> int:
    """The uint8 threshold of a fraction of full scale, as SyConn computes it: int(fraction·255); voxels > it are in."""
    return int(fraction * 255)


def label_components(prob: np.ndarray, *, threshold: int, low: int | None = None, connectivity: int = 26):
    """Connected components of `prob > threshold` (or of `prob > low` when hysteresis is on).

    prob: (X, Y, Z) uint8. Returns (labels, n, has_high): labels (X, Y, Z) uint32, Fortran
    order, numbered 1..n by first voxel in x-fastest scan order; has_high (n + 1,) bool, whether
    a component holds a voxel above `threshold` (always True without hysteresis; index 0 unused).
    """
    import cc3d

    mask = np.asfortranarray(prob > (threshold if low is None else low))
    labels, n = cc3d.connected_components(mask, connectivity=connectivity, out_dtype=np.uint32, return_N=True)
    labels = np.asfortranarray(labels)
    if low is None:
        has_high = np.ones(n + 1, dtype=bool)
    else:
        has_high = np.bincount(labels[prob > threshold], minlength=n + 1) > 0
    return labels, int(n), has_high


def component_stats(labels: np.ndarray, n: int, *, origin=(0, 0, 0)) -> dict[str, np.ndarray]:
    """Per-label statistics of a labelled box, in global voxel coordinates (`origin` = the box start).

    labels: (X, Y, Z) uint labels 1..n numbered in x-fastest scan order. Returns arrays of
    length n: ``voxels`` int64; ``bbox_min``, ``bbox_max`` (n, 3) int64, half-open; ``coord_sum``
    (n, 3) float64 (sums of voxel coordinates, exact below 2**53); ``first`` (n, 3) int64, the
    first voxel in scan order.
    """
    flat = labels.ravel(order="F")
    nz = np.flatnonzero(flat)
    vals = flat[nz].astype(np.int64) - 1
    coords = np.stack(np.unravel_index(nz, labels.shape, order="F"), axis=1) + np.asarray(origin, dtype=np.int64)
    voxels = np.bincount(vals, minlength=n).astype(np.int64)
    coord_sum = np.stack([np.bincount(vals, weights=coords[:, a], minlength=n) for a in range(3)], axis=1)
    bbox_min = np.full((n, 3), np.iinfo(np.int64).max, dtype=np.int64)
    bbox_max = np.full((n, 3), np.iinfo(np.int64).min, dtype=np.int64)
    for a in range(3):
        np.minimum.at(bbox_min[:, a], vals, coords[:, a])
        np.maximum.at(bbox_max[:, a], vals, coords[:, a] + 1)
    # labels appear in scan order, so a label's first voxel is where the running maximum rises
    rises = np.flatnonzero(np.r_[True, vals[1:] > np.maximum.accumulate(vals)[:-1]]) if len(vals) else np.zeros(0, int)
    if len(rises) != n:
        raise ValueError("labels are not numbered in scan order")
    return {"voxels": voxels, "bbox_min": bbox_min, "bbox_max": bbox_max, "coord_sum": coord_sum, "first": coords[rises]}


def boundary_faces(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The six one-voxel boundary planes of a labelled box: x0, x1 (Y, Z); y0, y1 (X, Z); z0, z1 (X, Y)."""
    return {"x0": labels[0], "x1": labels[-1], "y0": labels[:, 0], "y1": labels[:, -1], "z0": labels[:, :, 0], "z1": labels[:, :, -1]}


def plane_offsets(connectivity: int) -> list[tuple[int, int]]:
    """In-plane offsets (du, dv) at which voxels on the two sides of a plane touch under `connectivity`."""
    if connectivity == 6:
        return [(0, 0)]
    if connectivity == 18:
        return [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]
    return [(du, dv) for du in (-1, 0, 1) for dv in (-1, 0, 1)]


def touching_pairs(low_side: np.ndarray, high_side_padded: np.ndarray, connectivity: int) -> np.ndarray:
    """Label pairs that touch across a plane.

    low_side: (U, V) labels just below the plane; high_side_padded: (U + 2, V + 2) labels just
    above it, with one extra voxel on each side from the neighbouring tasks (0 where none).
    Returns (K, 2) int64 pairs (low, high) of nonzero labels, duplicates removed.
    """
    nu, nv = low_side.shape
    out = []
    for du, dv in plane_offsets(connectivity):
        other = high_side_padded[1 + du: 1 + du + nu, 1 + dv: 1 + dv + nv]
        both = (low_side > 0) & (other > 0)
        if both.any():
            out.append(np.stack([low_side[both], other[both]], axis=1))
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(out).astype(np.int64), axis=0)


def merge_components(n_nodes: int, pairs: np.ndarray, *, voxels, bbox_min, bbox_max, coord_sum, first, has_high,
                     min_voxels: int):
    """Union of touching parts into objects, size and hysteresis filters, ids in order of the first part.

    Nodes are numbered 1..n_nodes in id order (task order, then scan order); per-node arrays have
    length n_nodes + 1 with row 0 unused. pairs: (K, 2) touching nodes. Returns (remap, table):
    remap (n_nodes + 1,) uint64 node → object id (0 = dropped); table a dict of column arrays
    (TABLE_COLUMNS except volume_nm3), ordered by id.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    size = n_nodes + 1
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(size, size))
    n_comp, comp = connected_components(graph, directed=False)
    _, first_node = np.unique(comp, return_index=True)  # smallest node of each component
    total = np.bincount(comp, weights=voxels, minlength=n_comp).astype(np.int64)
    high = np.bincount(comp, weights=has_high.astype(np.float64), minlength=n_comp) > 0
    keep = (total >= max(min_voxels, 1)) & high
    keep[comp[0]] = False
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(first_node[kept], kind="stable")]
    comp_id = np.zeros(n_comp, dtype=np.uint64)
    comp_id[kept] = np.arange(1, len(kept) + 1, dtype=np.uint64)
    remap = comp_id[comp]
    bmin = np.full((n_comp, 3), np.iinfo(np.int64).max, dtype=np.int64)
    bmax = np.full((n_comp, 3), np.iinfo(np.int64).min, dtype=np.int64)
    for a in range(3):
        np.minimum.at(bmin[:, a], comp[1:], bbox_min[1:, a])
        np.maximum.at(bmax[:, a], comp[1:], bbox_max[1:, a])
    sums = np.stack([np.bincount(comp, weights=coord_sum[:, a], minlength=n_comp) for a in range(3)], axis=1)
    vox = total[kept]
    centroid = sums[kept] / np.maximum(vox, 1)[:, None]
    rep = first[first_node[kept]]
    table = {"id": comp_id[kept], "voxels": vox}
    for a, ax in enumerate("xyz"):
        table[f"bbox_{ax}0"] = bmin[kept, a]
    for a, ax in enumerate("xyz"):
        table[f"bbox_{ax}1"] = bmax[kept, a]
    for a, ax in enumerate("xyz"):
        table[f"centroid_{ax}"] = centroid[:, a]
    for a, ax in enumerate("xyz"):
        table[f"rep_{ax}"] = rep[:, a]
    return remap, table


# ---------------------------------------------------------------- task grid and paths

def task_boxes(bounds: Box, task_size) -> list[Box]:
    """The task boxes tiling `bounds` (clipped at its end), in the id order: z, then y, then x of the start."""
    return sorted(bounds.chunks(task_size), key=lambda b: (b.start[2], b.start[1], b.start[0]))


def _scratch(analysis) -> Path:
    return analysis.scratch_dir("objects")


def _local_layer(analysis, kind: str) -> str:
    return "file://" + str(_scratch(analysis) / f"local_{kind}")


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# ---------------------------------------------------------------- pass 1: label

def label_task(analysis, task) -> dict:
    """Threshold + cc3d of one task box; writes local labels (scratch layer) and stats + faces."""
    p = task.params
    vol = open_layer(p["input"], fill_missing=p["missing_chunks"] == "zeros")
    prob = read_box(vol, task.box)
    arrays, counts = {}, {}
    for c, kind in enumerate(ORGANELLES):
        thr = threshold_u8(p["objects"][f"threshold_{kind}"])
        ratio = p["objects"]["hysteresis_ratio"]
        low = int(ratio * thr) if ratio > 0 else None
        labels, n, has_high = label_components(prob[..., c], threshold=thr, low=low, connectivity=p["objects"]["connectivity"])
        write_box(open_layer(_local_layer(analysis, kind)), task.box, labels)
        stats = component_stats(labels, n, origin=task.box.start)
        for name, arr in stats.items():
            arrays[f"{kind}_{name}"] = arr
        arrays[f"{kind}_has_high"] = has_high[1:]
        for face, arr in boundary_faces(labels).items():
            arrays[f"{kind}_face_{face}"] = arr
        counts[kind] = n
    out = _scratch(analysis) / "label" / f"{task.box.name()}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, _npz_bytes(**arrays))
    return counts


# ---------------------------------------------------------------- pass 2: stitch

def _padded_high_side(faces, grid, grid_of, index, axis: int, kind: str, offsets) -> np.ndarray:
    """The low face (along `axis`) of task `index`, as global node ids, padded by one voxel from its in-plane neighbours."""
    u_axis, v_axis = [a for a in range(3) if a != axis]
    face_name = FACES[2 * axis]
    center = _global(faces[index][f"{kind}_face_{face_name}"], offsets[index])
    nu, nv = center.shape
    padded = np.zeros((nu + 2, nv + 2), dtype=np.int64)
    padded[1:-1, 1:-1] = center
    g = grid[index]
    for du in (-1, 0, 1):
        for dv in (-1, 0, 1):
            if du == 0 and dv == 0:
                continue
            n_grid = list(g)
            n_grid[u_axis] += du
            n_grid[v_axis] += dv
            j = grid_of.get(tuple(n_grid))
            if j is None:
                continue
            f = _global(faces[j][f"{kind}_face_{face_name}"], offsets[j])
            src_u = slice(None) if du == 0 else (slice(-1, None) if du < 0 else slice(0, 1))
            dst_u = slice(1, -1) if du == 0 else (slice(0, 1) if du < 0 else slice(-1, None))
            src_v = slice(None) if dv == 0 else (slice(-1, None) if dv < 0 else slice(0, 1))
            dst_v = slice(1, -1) if dv == 0 else (slice(0, 1) if dv < 0 else slice(-1, None))
            padded[dst_u, dst_v] = f[src_u, src_v]
    return padded


def _global(local: np.ndarray, offset: int) -> np.ndarray:
    """Task-local labels as global node ids (0 stays 0)."""
    out = local.astype(np.int64)
    out[out > 0] += offset
    return out


def stitch_task(analysis, task) -> dict:
    """Merge the parts of every object across task faces; write id remaps and the object tables."""
    p = task.params
    boxes = task_boxes(Box(*p["input_bounds"]), p["task_size"])
    task_size = np.asarray(p["task_size"])
    origin = np.asarray(boxes[0].start) if boxes else np.zeros(3, int)
    grid = [tuple(int(v) for v in (np.asarray(b.start) - origin) // task_size) for b in boxes]
    grid_of = {g: i for i, g in enumerate(grid)}
    label_dir = _scratch(analysis) / "label"
    faces = []
    for b in boxes:
        with np.load(label_dir / f"{b.name()}.npz") as z:
            faces.append({k: z[k] for k in z.files})
    connectivity = p["objects"]["connectivity"]
    voxel_nm3 = float(np.prod(p["voxel_size_nm"]))
    counts = {}
    for kind in ORGANELLES:
        n_per = [len(f[f"{kind}_voxels"]) for f in faces]
        offsets = np.concatenate([[0], np.cumsum(n_per)]).astype(np.int64)
        n_nodes = int(offsets[-1])
        pairs = [np.zeros((0, 2), dtype=np.int64)]
        for i, g in enumerate(grid):
            for axis in range(3):
                up = list(g)
                up[axis] += 1
                j = grid_of.get(tuple(up))
                if j is None:
                    continue
                low_side = _global(faces[i][f"{kind}_face_{FACES[2 * axis + 1]}"], offsets[i])
                pairs.append(touching_pairs(low_side, _padded_high_side(faces, grid, grid_of, j, axis, kind, offsets), connectivity))
        node = {}
        for name, width in (("voxels", None), ("bbox_min", 3), ("bbox_max", 3), ("coord_sum", 3), ("first", 3), ("has_high", None)):
            parts = [f[f"{kind}_{name}"] for f in faces]
            head = np.zeros((1,) if width is None else (1, width), dtype=parts[0].dtype if parts else np.int64)
            node[name] = np.concatenate([head] + parts)
        remap, table = merge_components(n_nodes, np.concatenate(pairs), min_voxels=p["objects"][f"min_voxels_{kind}"], **node)
        out = _scratch(analysis) / "stitch"
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / f"{kind}_offsets.npy", _npy_bytes(offsets))
        atomic_write_bytes(out / f"{kind}_remap.npy", _npy_bytes(remap))
        _write_table(analysis.tables_dir / f"objects_{kind}.csv", table, voxel_nm3)
        counts[kind] = len(table["id"])
    return counts


def _write_table(path: Path, table: dict, voxel_nm3: float) -> None:
    import pandas as pd

    df = pd.DataFrame(table)
    df.insert(2, "volume_nm3", df["voxels"].astype(np.float64) * voxel_nm3)
    df = df[list(TABLE_COLUMNS)]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, df.to_csv(index=False))


# ---------------------------------------------------------------- pass 3: relabel

def relabel_task(analysis, task) -> dict:
    """Local labels of one task box → global ids, written to `layers/sj|vc|mi`."""
    index = task.index
    counts = {}
    for kind in ORGANELLES:
        stitch = _scratch(analysis) / "stitch"
        offsets = np.load(stitch / f"{kind}_offsets.npy")
        remap = np.load(stitch / f"{kind}_remap.npy", mmap_mode="r")  # only this task's slice is read
        lut = np.array(remap[offsets[index]: offsets[index + 1] + 1])
        lut[0] = 0  # local 0 (background) must stay 0, whatever the previous task's last label maps to
        local = read_box(open_layer(_local_layer(analysis, kind)), task.box)[..., 0]
        out = lut[local]
        write_box(open_layer(analysis.layer_path(kind)), task.box, out)
        counts[kind] = int(np.count_nonzero(lut))
    return counts


# ---------------------------------------------------------------- the stage

class ObjectsStage:
    """The `objects` stage for the driver (`syconn_ng.engine.run_stage`)."""

    name = "objects"

    def _input(self, analysis):
        path = analysis.input_layer("organelles")
        vol = analysis.open_input(path)
        return path, vol

    def upstream(self, analysis) -> list[str]:
        return [] if analysis.config.oracle.organelles else ["organelles"]

    def params(self, analysis) -> dict:
        cfg = analysis.config
        ch = cfg.chunking
        path, vol = self._input(analysis)
        bounds = layer_box(vol)
        return {
            "input": path,
            "input_bounds": [list(bounds.start), list(bounds.stop)],
            "objects": cfg.section_params("objects"),
            "chunk_size": list(ch.chunk_size),
            "task_size": list(ch.task_size),
            "missing_chunks": ch.missing_chunks,
            "voxel_size_nm": list(analysis.voxel_size_nm),
        }

    def prepare(self, analysis, *, fresh: bool) -> None:
        path, vol = self._input(analysis)
        if vol.dtype != np.uint8 or vol.num_channels != len(ORGANELLES):
            raise InputError(path, f"expected a uint8 layer with 3 channels (sj, vc, mi), got {vol.dtype} with {vol.num_channels} channel(s)", element="info")
        if not np.allclose(np.asarray(vol.resolution, dtype=float), analysis.voxel_size_nm):
            raise InputError(path, f"voxel size {list(vol.resolution)} nm differs from [dataset] voxel_size_nm {list(analysis.voxel_size_nm)}", element="info: resolution")
        bounds = layer_box(vol)
        outputs = [analysis.layer_path(k) for k in ORGANELLES] + [_local_layer(analysis, k) for k in ORGANELLES]
        if _scratch(analysis).is_dir():
            remove_temp_files(_scratch(analysis))
        if fresh:
            shutil.rmtree(_scratch(analysis), ignore_errors=True)
            for out in outputs:
                d = local_dir(out)
                if d is not None:
                    shutil.rmtree(d, ignore_errors=True)
        for out, dtype in zip(outputs, [np.uint64] * 3 + [np.uint32] * 3):
            d = local_dir(out)
            if d is not None and (d / "info").exists():
                remove_temp_files(d)  # left by a killed run; the driver holds the stage lock
                continue
            create_layer(out, layer_type="segmentation", dtype=dtype, voxel_size_nm=analysis.voxel_size_nm,
                         shape=bounds.shape, voxel_offset=bounds.start, chunk_size=analysis.config.chunking.chunk_size,
                         extra_info={"syconn_ng": {"stage": "objects", "what": out.rsplit("/", 1)[-1]}})

    def passes(self, analysis) -> list[Pass]:
        _, vol = self._input(analysis)
        boxes = task_boxes(layer_box(vol), analysis.config.chunking.task_size)
        return [
            Pass("label", label_task, boxes),
            Pass("stitch", stitch_task, [None], local=True),
            Pass("relabel", relabel_task, boxes),
        ]


STAGE = ObjectsStage()
