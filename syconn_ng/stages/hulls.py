"""The `hulls` stage: skeletons + barrier → per-cell hulls and node radii, the `cells` layer, its meshes and skeletons.

Passes:
1. `hull` (per cell): rays from every node through the barrier (`syconn_ng.hulls.raycast`);
   writes `tables/hulls/<cell>.npz`.
2. `index` (driver): `tables/nodes.csv` (cell, node, x, y, z, radius_nm) and the region box
   of every cell, which the next pass uses to find the cells reaching a chunk.
3. `voxelize` (per task box): the cells' node regions, less the membranes, grown `grow_nm`
   into voxels off the barrier → `layers/cells` (uint64, id = cell id); a task reads a halo
   but writes only whole chunks of its own box, so no two tasks write the same chunk.
4. `fragments` (per task box): zmesh meshes of the cells in the box (scratch).
5. `publish` (per cell): the cell's fragments joined into one legacy precomputed mesh (`mesh/`), and its
   skeleton with node radii (precomputed skeleton, nm), so Neuroglancer shows bodies and skeletons.
6. `multires` (driver, once all cells are published): the cells' meshes, which `publish` also encoded as
   multi-resolution Draco meshes (scratch), as one sharded source `mesh_multires/` (`syconn_ng.multires_mesh`);
   the layer's `info["mesh"]` then points there.
   A cell published alone later (re-analysis) points it back to `mesh/`, which is always current.
7. `skeleton_shards` (driver): past `[chunking] shard_skeletons_over` cells, `skeletons/` as shard files
   (`syconn_ng.sharding.shard_skeleton_source`); a cell re-analysed later is merged into them.

The skeleton files are read when the stage starts (their contents are in the parameter hash; a tree a tracer
sent for re-analysis, `skeletons/reanalysed/`, replaces the tree of the same id);
each cell's arrays go to `scratch/hulls/skeletons/<cell>.npz` for the tasks.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np

from syconn_ng.box import Box
from syconn_ng.engine.driver import Pass
from syconn_ng.errors import InputError
from syconn_ng.hulls.raycast import BARRIER_FULL_SCALE, RayParams, barrier_lut, cell_hull, node_degrees
from syconn_ng.hulls.skeletons import files_digest, input_skeleton_files, load_skeletons, reanalysed_files
from syconn_ng.hulls.voxelize import grow_labels, node_planes, rasterize_stars, voxelize_nodes
from syconn_ng.layers import (atomic_write_bytes, atomic_write_text, create_layer, layer_box, local_dir, open_layer, read_box,
                             remove_temp_files, write_box)
from syconn_ng.multires_mesh import (LEGACY_MESH_DIR, MULTIRES_DIR, MultiresMesh, encode_multires, set_mesh_source,
                                     write_multires_source)


NODE_COLUMNS = ("cell", "node", "x", "y", "z", "radius_nm")
# radius only: CloudVolume's default adds uint8 `vertex_types`, and Neuroglancer draws no skeleton with an 8-bit attribute
SKELETON_ATTRIBUTES = [{"id": "radius", "data_type": "float32", "num_components": 1}]


# ---------------------------------------------------------------- paths

def hull_path(analysis, cell_id: int) -> Path:
    """`tables/hulls/<cell>.npz`: one cell's nodes, radii and hull points (see `CellHull`)."""
    return analysis.tables_dir / "hulls" / f"{int(cell_id)}.npz"


def _scratch(analysis) -> Path:
    return analysis.scratch_dir("hulls")


def _skeleton_path(analysis, cell_id: int) -> Path:
    return _scratch(analysis) / "skeletons" / f"{int(cell_id)}.npz"


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def load_hull(analysis, cell_id: int) -> dict[str, np.ndarray]:
    """The arrays of `tables/hulls/<cell>.npz`."""
    with np.load(hull_path(analysis, cell_id)) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------- pass 1: hull per cell

def hull_task(analysis, task) -> dict:
    """Cast the rays of one cell; write its nodes, radii, hull points and voxelisation nodes."""
    p = task.params
    params = RayParams.from_config(p["hulls"])
    vs = np.asarray(p["voxel_size_nm"], dtype=np.float64)
    with np.load(_skeleton_path(analysis, task.cell_id)) as z:
        node_ids, positions, edges = z["node_ids"], z["positions_vx"], z["edges"]
    vol = open_layer(p["barrier"], fill_missing=p["missing_chunks"] == "zeros")

    def read(box: Box) -> np.ndarray:  # outside the dataset counts as membrane: rays stop at its faces
        return read_box(vol, box, fill_value=BARRIER_FULL_SCALE)[..., 0]

    hull = cell_hull(read, positions, node_ids, edges, cell_id=task.cell_id, voxel_size_nm=vs,
                     bounds=Box(*p["bounds"]), params=params)
    vox = voxelize_nodes(hull.node_vx * vs, hull.radius_nm, node_degrees(len(hull.node_vx), hull.edges),
                         spacing=p["hulls"]["voxelize_spacing"])
    out = hull_path(analysis, task.cell_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, _npz_bytes(**hull.arrays(), voxelize=vox))
    return {"nodes": len(hull.node_vx), "points": len(hull.points_vx)}


# ---------------------------------------------------------------- pass 2: node table and cell index

def _node_rays(hull: dict, vs: np.ndarray, max_dist_mult: float):
    """The voxelisation nodes of a hull and their rays as the voxelisation sees them.

    A ray that ended at a dataset face is taken `max_dist_mult` node radii long at least: the face
    does not bound the cell, and the rasterisation stops at the dataset's bounds anyway. Returns
    (sel (K,) node indices, min_length_nm (P,) per hull point, reach_nm (K,) longest ray per node,
    reach_vx (K, 3)).
    """
    sel = np.flatnonzero(hull["voxelize"])
    length = np.linalg.norm((hull["points_vx"] - hull["node_vx"][hull["point_node"]]) * vs, axis=1)
    radius = np.nan_to_num(hull["radius_nm"][hull["point_node"]], nan=0.0)
    min_length = np.where(hull["point_at_face"], max_dist_mult * radius, 0.0)
    reach = np.zeros(len(hull["node_vx"]))
    np.maximum.at(reach, hull["point_node"], np.maximum(length, min_length))
    return sel, min_length, reach[sel], np.ceil(reach[sel, None] / vs).astype(np.int64) + 1


def index_task(analysis, task) -> dict:
    """Write `tables/nodes.csv` and the box each cell's hull reaches (for the voxelisation tasks)."""
    import pandas as pd

    vs = np.asarray(task.params["voxel_size_nm"], dtype=np.float64)
    rows, cells, lo, hi = [], [], [], []
    for cell in json.loads((_scratch(analysis) / "cells.json").read_text(encoding="utf-8")):
        hull = load_hull(analysis, cell)
        original = hull["node_id"] > 0
        df = pd.DataFrame({"cell": np.full(original.sum(), cell, dtype=np.uint64), "node": hull["node_id"][original]})
        for a, ax in enumerate("xyz"):
            df[ax] = hull["node_vx"][original, a]
        df["radius_nm"] = np.round(hull["radius_nm"][original], 2)
        rows.append(df)
        region = hull_region(hull, vs, task.params["hulls"]["max_dist_mult"])
        if region is not None:
            cells.append(cell)
            lo.append(region.start)
            hi.append(region.stop)
    table = pd.concat(rows) if rows else pd.DataFrame(columns=list(NODE_COLUMNS))
    atomic_write_text(analysis.tables_dir / "nodes.csv", table[list(NODE_COLUMNS)].to_csv(index=False))
    atomic_write_bytes(_scratch(analysis) / "index.npz", _npz_bytes(
        cell=np.asarray(cells, dtype=np.uint64), lo=np.asarray(lo, dtype=np.int64).reshape(-1, 3),
        hi=np.asarray(hi, dtype=np.int64).reshape(-1, 3)))
    return {"cells": len(cells), "nodes": int(sum(len(r) for r in rows))}


def hull_region(hull: dict, vs: np.ndarray, max_dist_mult: float) -> Box | None:
    """The box (voxels) a cell's voxelisation nodes reach with their longest rays; None if it has none."""
    sel, _, _, reach = _node_rays(hull, vs, max_dist_mult)
    if not len(sel):
        return None
    centre = np.rint(hull["node_vx"][sel]).astype(np.int64)
    return Box((centre - reach).min(axis=0), (centre + reach + 1).max(axis=0))


def _cell_boxes(analysis) -> dict[int, Box]:
    with np.load(_scratch(analysis) / "index.npz") as z:
        return {int(c): Box(a, b) for c, a, b in zip(z["cell"], z["lo"], z["hi"])}


# ---------------------------------------------------------------- pass 3: voxelise per task box

def voxelize_task(analysis, task) -> dict:
    """Rasterise the node regions of every cell reaching this task box, grow them up to the membranes, write `layers/cells`."""
    p = task.params
    vs = np.asarray(p["voxel_size_nm"], dtype=np.float64)
    box = task.box.grow(growth_steps(p))  # the growth's halo
    hulls = {cell: load_hull(analysis, cell) for cell, cell_box in _cell_boxes(analysis).items() if not cell_box.intersect(box).empty()}
    stars = region_stars(box, hulls, voxel_size_nm=vs, params=p["hulls"])
    if stars is not None:
        free = free_voxels(p, box)  # the membranes stay unlabelled
        out = grow_labels(stars, free, growth_steps(p))[task.box.slices(relative_to=box.start)]
    else:
        out = np.zeros(task.box.shape, dtype=np.uint64)
    write_box(open_layer(analysis.layer_path("cells")), task.box, np.ascontiguousarray(out))
    return {"cells": len(hulls), "voxels": int(np.count_nonzero(out))}


def growth_steps(p: dict) -> np.ndarray:
    """Voxels per axis the node regions grow towards the membranes (`grow_nm`); also the halo a box reads."""
    return np.rint(p["hulls"]["grow_nm"] / np.asarray(p["voxel_size_nm"], dtype=np.float64)).astype(np.int64)


def free_voxels(p: dict, box: Box) -> np.ndarray:
    """(X, Y, Z) bool of `box`: off the barrier (outside the dataset counts as membrane)."""
    barrier = read_box(open_layer(p["barrier"], fill_missing=p["missing_chunks"] == "zeros"), box, fill_value=BARRIER_FULL_SCALE)[..., 0]
    return barrier_lut(p["hulls"]["barrier_cutoff"])[barrier] == 0


def region_stars(box: Box, hulls: dict, *, voxel_size_nm, params: dict) -> np.ndarray | None:
    """(X, Y, Z) uint64 node regions of the cells `hulls` ({cell: hull arrays}) inside `box`, before growth;
    None if no voxelisation node of them reaches the box. `params`: the `[hulls]` section."""
    h = params
    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    nodes, planes, reach, labels = [], [], [], []
    for cell, hull in hulls.items():
        sel, min_length, reach_nm, reach_vx = _node_rays(hull, vs, h["max_dist_mult"])
        centre = np.rint(hull["node_vx"][sel]).astype(np.int64)
        near = np.all((centre + reach_vx >= box.start) & (centre - reach_vx < box.stop), axis=1)
        sel = sel[near]
        if not len(sel):
            continue
        points = np.isin(hull["point_node"], sel)
        remap = np.full(len(hull["node_vx"]), -1, dtype=np.int64)
        remap[sel] = np.arange(len(sel))
        nodes.append(hull["node_vx"][sel])
        planes.append(node_planes(hull["node_vx"][sel] * vs, hull["points_vx"][points] * vs, remap[hull["point_node"][points]],
                                  n_bins=h["direction_bins"], max_gap_deg=h["max_gap_deg"], min_length_nm=min_length[points]))
        reach.append(reach_nm[near])
        labels.append(np.full(len(sel), cell, dtype=np.uint64))
    if not nodes:
        return None
    return rasterize_stars(box, np.concatenate(nodes), np.concatenate(planes), np.concatenate(reach),
                           np.concatenate(labels), voxel_size_nm=vs, n_bins=h["direction_bins"])


# ---------------------------------------------------------------- passes 4 and 5: meshes and skeletons

def fragments_task(analysis, task) -> dict:
    """Mesh every cell in this task box (zmesh, one voxel of overlap with the next box so pieces meet).

    Writes `scratch/hulls/fragments/<cell>/<box>.npz` (vertices nm, faces). Vertices follow
    Neuroglancer's frame, voxel i spanning [i, i + 1) × voxel size, so meshes cover the voxels.
    """
    import zmesh

    p = task.params
    vs = np.asarray(p["voxel_size_nm"], dtype=np.float64)
    vol = open_layer(analysis.layer_path("cells"))
    bounds = layer_box(vol)
    box = Box(task.box.start, np.asarray(task.box.stop) + 1).intersect(bounds)
    labels = read_box(vol, box)[..., 0]
    # background beyond the dataset's faces, so surfaces close there (and only there)
    pad = [(int(a == b), int(c == d)) for a, b, c, d in zip(box.start, bounds.start, box.stop, bounds.stop)]
    labels = np.asfortranarray(np.pad(labels, pad))
    origin_nm = (np.asarray(box.start) - [lo for lo, _ in pad]) * vs
    mesher = zmesh.Mesher(tuple(vs))
    mesher.mesh(labels)
    reduction = p["hulls"]["mesh_reduction"]
    written = 0
    for cell in mesher.ids():
        m = mesher.get(cell, normals=False, reduction_factor=reduction if reduction > 1 else 0,
                       max_error=float(vs.max()), voxel_centered=True)
        if len(m.faces) == 0:
            continue
        out = _scratch(analysis) / "fragments" / str(int(cell)) / f"{task.box.name()}.npz"
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, _npz_bytes(vertices=(m.vertices + origin_nm).astype(np.float32), faces=m.faces.astype(np.uint32)))
        written += 1
    mesher.clear()
    return {"fragments": written}


def publish_task(analysis, task) -> dict:
    """One cell's mesh (its fragments joined; legacy precomputed mesh) and skeleton (nm, `radius`) in `layers/cells`."""
    from cloudvolume import Mesh, Skeleton

    vs = np.asarray(task.params["voxel_size_nm"], dtype=np.float64)
    cell = task.cell_id
    vol = open_layer(analysis.layer_path("cells"))
    if vol.info.get("mesh") != LEGACY_MESH_DIR:  # this cell alone changes: the multi-resolution source no longer matches
        set_mesh_source(analysis.layer_path("cells"), LEGACY_MESH_DIR)
        vol = open_layer(analysis.layer_path("cells"))
    parts = []
    for f in sorted((_scratch(analysis) / "fragments" / str(cell)).glob("*.npz")):
        with np.load(f) as z:
            parts.append(Mesh(z["vertices"], z["faces"], None, segid=cell))
    n_faces = 0
    if parts:
        mesh = Mesh.concatenate(*parts).consolidate()
        mesh.segid = cell
        vol.mesh.put(mesh, compress=False, skip_delete=True)  # always the same two files: nothing stale to delete
        n_faces = len(mesh.faces)
        # its multi-resolution form, encoded here (one cell per task) and sharded by the `multires` pass
        encoded = encode_multires(mesh.vertices, mesh.faces, source=f"{analysis.layer_path('cells')}/mesh/{cell}:0")
        _multires_path(analysis, cell).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(_multires_path(analysis, cell), _npz_bytes(**encoded.arrays()))
    hull = load_hull(analysis, cell)
    radius = np.nan_to_num(hull["radius_nm"], nan=0.0).astype(np.float32)
    vertices = ((hull["node_vx"] + 0.5) * vs).astype(np.float32)  # Neuroglancer's frame, like the meshes
    skeleton = Skeleton(vertices, hull["edges"].astype(np.uint32), radii=radius, segid=cell, space="physical",
                        extra_attributes=SKELETON_ATTRIBUTES)
    if vol.skeleton.meta.is_sharded():  # shards hold many cells: this cell's file goes beside them, merged by `skeleton_shards`
        atomic_write_bytes(local_dir(vol.cloudpath) / vol.skeleton.meta.skeleton_path / str(cell), skeleton.to_precomputed())
    else:
        vol.skeleton.upload(skeleton)
    return {"faces": n_faces, "skeleton_nodes": len(radius)}


def _multires_path(analysis, cell_id: int) -> Path:
    return _scratch(analysis) / "multires" / f"{int(cell_id)}.npz"


def multires_task(analysis, task) -> dict:
    """The cells' encoded multi-resolution meshes (from `publish`) as the sharded source `mesh_multires/`; then
    `info["mesh"]` points there. Needs a local `cells` layer (a cloud layer keeps its legacy meshes only)."""
    layer = local_dir(analysis.layer_path("cells"))
    if layer is None:
        return {"cells": 0, "note": "not a local layer: legacy meshes only"}
    meshes = {}
    for cell in json.loads((_scratch(analysis) / "cells.json").read_text(encoding="utf-8")):
        if _multires_path(analysis, cell).is_file():  # a cell without voxels has no mesh
            with np.load(_multires_path(analysis, cell)) as z:
                meshes[int(cell)] = MultiresMesh.from_arrays(z)
    summary = write_multires_source(layer / MULTIRES_DIR, meshes)
    set_mesh_source(analysis.layer_path("cells"), MULTIRES_DIR)
    return summary


def skeleton_shards_task(analysis, task) -> dict:
    """The published skeletons as shard files past `shard_skeletons_over` cells."""
    from syconn_ng.sharding import shard_layer_skeletons

    return shard_layer_skeletons(analysis.layer_path("cells"), "skeletons", over=task.params["shard_skeletons_over"])


# ---------------------------------------------------------------- the stage

class HullsStage:
    """The `hulls` stage for the driver (`syconn_ng.engine.run_stage`)."""

    name = "hulls"

    def _barrier(self, analysis):
        path = analysis.input_layer("barrier")
        return path, analysis.open_input(path)

    def _skeleton_files(self, analysis) -> list[Path]:
        return input_skeleton_files(analysis.config.dataset.skeletons, analysis.root)

    def upstream(self, analysis) -> list[str]:
        return [] if analysis.config.oracle.barrier else ["barrier"]

    def params(self, analysis) -> dict:
        cfg = analysis.config
        path, vol = self._barrier(analysis)
        bounds = layer_box(vol)
        return {
            "barrier": path,
            "bounds": [list(bounds.start), list(bounds.stop)],
            "hulls": cfg.section_params("hulls"),
            "skeletons": files_digest(self._skeleton_files(analysis) + reanalysed_files(analysis.root)),
            "voxel_size_nm": list(analysis.voxel_size_nm),
            "chunk_size": list(cfg.chunking.chunk_size),
            "task_size": list(cfg.chunking.task_size),
            "missing_chunks": cfg.chunking.missing_chunks,
            "shard_skeletons_over": cfg.chunking.shard_skeletons_over,
        }

    def prepare(self, analysis, *, fresh: bool) -> None:
        path, vol = self._barrier(analysis)
        if vol.dtype != np.uint8 or vol.num_channels != 1:
            raise InputError(path, f"expected a uint8 barrier layer with 1 channel, got {vol.dtype} with {vol.num_channels} channel(s)", element="info")
        if not np.allclose(np.asarray(vol.resolution, dtype=float), analysis.voxel_size_nm):
            raise InputError(path, f"voxel size {list(vol.resolution)} nm differs from [dataset] voxel_size_nm {list(analysis.voxel_size_nm)}", element="info: resolution")
        files = self._skeleton_files(analysis)
        if not files:
            raise InputError(analysis.root / "syconn.toml", f"no skeleton file matches {analysis.config.dataset.skeletons}", element="[dataset] skeletons")
        bounds = layer_box(vol)
        cells = load_skeletons(files, voxel_size_nm=analysis.voxel_size_nm, bounds=bounds, replacements=reanalysed_files(analysis.root))
        out_layer = local_dir(analysis.layer_path("cells"))
        if fresh:
            shutil.rmtree(_scratch(analysis), ignore_errors=True)
            shutil.rmtree(analysis.tables_dir / "hulls", ignore_errors=True)
            if out_layer is not None:
                shutil.rmtree(out_layer, ignore_errors=True)
        for d in (_scratch(analysis), analysis.tables_dir / "hulls", out_layer):
            if d is not None and d.is_dir():
                remove_temp_files(d)  # left by a killed run; the driver holds the stage lock
        (_scratch(analysis) / "skeletons").mkdir(parents=True, exist_ok=True)
        for c in cells:
            atomic_write_bytes(_skeleton_path(analysis, c.cell_id), _npz_bytes(
                node_ids=c.node_ids, positions_vx=c.positions_vx, edges=c.edges))
        atomic_write_text(_scratch(analysis) / "cells.json", json.dumps([c.cell_id for c in cells]))
        if out_layer is None or not (out_layer / "info").exists():
            cv = create_layer(analysis.layer_path("cells"), layer_type="segmentation", dtype=np.uint64,
                              voxel_size_nm=analysis.voxel_size_nm, shape=bounds.shape, voxel_offset=bounds.start,
                              chunk_size=analysis.config.chunking.chunk_size, mesh="mesh", skeletons="skeletons",
                              extra_info={"syconn_ng": {"stage": "hulls", "what": "cells: ray-cast hulls of the traced cells"}})
            cv.skeleton.meta.info["vertex_attributes"] = SKELETON_ATTRIBUTES
            cv.skeleton.meta.commit_info()
            from cloudfiles import CloudFiles

            CloudFiles(cv.cloudpath).put_json("mesh/info", {"@type": "neuroglancer_legacy_mesh"})

    def passes(self, analysis) -> list[Pass]:
        _, vol = self._barrier(analysis)
        cells = json.loads((_scratch(analysis) / "cells.json").read_text(encoding="utf-8"))
        boxes = layer_box(vol).chunks(analysis.config.chunking.task_size)
        return [
            Pass("hull", hull_task, cells),
            Pass("index", index_task, [None], local=True),
            Pass("voxelize", voxelize_task, boxes),
            Pass("fragments", fragments_task, boxes),
            Pass("publish", publish_task, cells),
            Pass("multires", multires_task, [None], local=True),
            Pass("skeleton_shards", skeleton_shards_task, [None], local=True),
        ]


STAGE = HullsStage()
