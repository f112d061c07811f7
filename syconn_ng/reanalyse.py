"""Re-analysis of one cell from a skeleton a tracer sends (`POST /api/v1/cells/{id}/reanalyse`, the KNOSSOS plugin).

The per-cell work runs through the engine (`run_stage`) as one stage, `reanalyse`, whose passes call the pipeline
stages' own task functions for this one cell: hull → voxelise (this cell only) → mesh and skeleton → mapping (the
objects near the cell) → compartments → synapses (the task boxes near the cell) → cell types (the cell and its
partners) → connectome.

Nothing of the analysis is written while the job runs. The passes work on a `StagedAnalysis`: a view whose
`tables/`, `scratch/`, `state/` and `cells` / `synapses` layers live in `scratch/reanalyse/<job>/`, where `tables/`
and the `cells` layer's chunks are symbolic links to the analysis' files. Every write is atomic (temporary file +
rename), so it replaces a link by a new file and never touches the linked original. `commit` then moves the new
files into the analysis (the replaced ones kept aside and put back if a move fails), stores the uploaded skeleton
as `skeletons/reanalysed/cell_<id>.nml|.k.zip` (the previous upload moved to `skeletons/reanalysed/previous/`) and
writes the cell's enriched KNOSSOS file. Other cells keep their rows (nodes, compartments, mapping, synapses not
involving the cell, cell types of cells without a synapse with it) byte for byte, and their voxels, meshes and
skeletons.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from syconn_ng.analysis import Analysis
from syconn_ng.box import Box
from syconn_ng.engine.driver import Pass
from syconn_ng.engine.tasks import Task
from syconn_ng.errors import InputError
from syconn_ng.layers import atomic_write_bytes, atomic_write_text, layer_box, open_layer, read_box, to_cloudpath, write_box

STAGE_NAME = "reanalyse"
STAGES = ("hulls", "mapping", "compartments", "synapses", "celltypes", "connectome")
STAGED_LAYERS = ("cells", "synapses")
KZIP_MAGIC = b"PK\x03\x04"


# ---------------------------------------------------------------- the upload

class SkeletonContentError(InputError):
    """A readable skeleton file that cannot be re-analysed: no tree for the cell, no nodes, nodes outside the volume."""


@dataclass
class Upload:
    """A checked skeleton upload: the cell, its tree as arrays (0-based voxels), the file bytes and their format."""

    cell_id: int
    skeleton: object  # syconn_ng.hulls.skeletons.CellSkeleton
    data: bytes
    suffix: str  # ".nml" or ".k.zip"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:16]


def read_upload(data: bytes, cell_id: int, *, voxel_size_nm, bounds: Box) -> Upload:
    """Parse uploaded NML or k.zip bytes (1-based in the file, as KNOSSOS writes them) into the tree of `cell_id`.

    InputError (naming the upload) for an empty body or a malformed file; SkeletonContentError for no tree with
    the cell's id, a tree without nodes, a node outside the volume `bounds` (which node, where, and the bounds).
    """
    from syconn_ng.hulls.skeletons import tree_arrays
    from syconn_ng.io.annotation import read_annotation

    name = f"uploaded skeleton of cell {cell_id}"
    if not data:
        raise InputError(name, "empty request body: expected the bytes of an NML or k.zip file")
    suffix = ".k.zip" if data[:4] == KZIP_MAGIC else ".nml"
    name += f" ({suffix[1:]})"
    with tempfile.TemporaryDirectory(prefix="syconn-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            skel = read_annotation(path, voxel_size_nm=voxel_size_nm)
        except InputError as err:  # the reader names the temporary file: name the upload instead
            raise InputError(name, err.reason, element=err.element, line=err.line) from None
    trees = {int(t.id): t for t in skel.trees}
    if not trees or all(not t.nodes for t in trees.values()):
        raise SkeletonContentError(name, "empty skeleton: the file has no nodes")
    if int(cell_id) not in trees:
        raise SkeletonContentError(name, f"no tree with id {cell_id} (the file has tree(s) {', '.join(map(str, sorted(trees)))}); "
                               "tree id = cell id")
    tree = trees[int(cell_id)]
    if not tree.nodes:
        raise SkeletonContentError(name, f"empty skeleton: tree {cell_id} has no nodes", element=f'<thing id="{cell_id}">')
    pos = tree.positions()
    inside = bounds.contains(np.rint(pos))
    if not inside.all():
        k = int(np.flatnonzero(~inside)[0])
        vx = np.rint(pos[k]).astype(np.int64)
        lo, hi = np.asarray(bounds.start), np.asarray(bounds.stop) - 1
        raise SkeletonContentError(name, f"node {int(tree.node_ids()[k])} at x={vx[0] + 1}, y={vx[1] + 1}, z={vx[2] + 1} (1-based, as in the "
                               f"file) lies outside the volume x {lo[0] + 1}..{hi[0] + 1}, y {lo[1] + 1}..{hi[1] + 1}, "
                               f"z {lo[2] + 1}..{hi[2] + 1} ({int((~inside).sum())} node(s) outside)",
                         element=f'<node id="{int(tree.node_ids()[k])}">')
    return Upload(int(cell_id), tree_arrays(tree, path=name, bounds=bounds), bytes(data), suffix)


# ---------------------------------------------------------------- the staged view

@dataclass(frozen=True)
class StagedAnalysis(Analysis):
    """The analysis seen through a staging folder: tables, scratch, state and the `cells` / `synapses` layers are
    read and written there; inputs (raw, barrier, organelles, objects layers, models, skeletons) are the analysis'."""

    stage_root: Path | None = None

    def layer_path(self, name: str) -> str:
        if name in STAGED_LAYERS:
            return to_cloudpath(self.stage_root / "layers" / name)
        return super().layer_path(name)

    @property
    def tables_dir(self) -> Path:
        return self.stage_root / "tables"

    @property
    def state_dir(self) -> Path:
        return self.stage_root / "state"

    def scratch_dir(self, stage: str) -> Path:
        return self.stage_root / "scratch" / stage

    @property
    def base(self) -> Analysis:
        return Analysis(self.root, self.config)


def _link_tree(src: Path, dst: Path, *, skip=()) -> None:
    """Mirror the files under `src` as symbolic links under `dst` (folders made; names in `skip` left out)."""
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if rel.parts and rel.parts[0] in skip:
            continue
        if path.is_dir():
            (dst / rel).mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path.resolve(), dst / rel)


def stage_analysis(analysis: Analysis, upload: Upload, stage_root: Path) -> StagedAnalysis:
    """Build the staging folder of one job and return the view on it.

    Links: every table, the `cells` layer's chunks; copies: the layers' `info` files (small), so meshes,
    skeletons and the annotation layer are written fresh in the staging folder.
    """
    from syconn_ng.layers import local_dir
    from syconn_ng.stages.compartments import SKELETON_DIR
    from syconn_ng.stages.hulls import _npz_bytes

    cells_dir = local_dir(analysis.layer_path("cells"))
    if cells_dir is None or not (cells_dir / "info").is_file():
        raise InputError(analysis.layer_path("cells"), "no local cells layer: run the pipeline (hulls) first")
    shutil.rmtree(stage_root, ignore_errors=True)
    view = StagedAnalysis(analysis.root, analysis.config, stage_root=Path(stage_root))
    _link_tree(analysis.tables_dir, view.tables_dir)
    staged_cells = stage_root / "layers" / "cells"
    staged_cells.mkdir(parents=True)
    for sub in cells_dir.iterdir():
        if sub.is_file():
            shutil.copy2(sub, staged_cells / sub.name)
        elif (sub / "info").is_file():  # mesh/, skeletons/, skeletons_compartments/: their info only
            (staged_cells / sub.name).mkdir()
            shutil.copy2(sub / "info", staged_cells / sub.name / "info")
        else:  # a scale folder of chunks
            _link_tree(sub, staged_cells / sub.name)
    if not (staged_cells / SKELETON_DIR / "info").is_file():
        from syconn_ng.compartments.outputs import write_skeleton_info

        write_skeleton_info(staged_cells / SKELETON_DIR)
    hulls = sorted(int(p.stem) for p in (analysis.tables_dir / "hulls").glob("*.npz"))
    scratch = view.scratch_dir("hulls")
    (scratch / "skeletons").mkdir(parents=True)
    atomic_write_text(scratch / "cells.json", json.dumps(hulls))
    sk = upload.skeleton
    atomic_write_bytes(scratch / "skeletons" / f"{upload.cell_id}.npz",
                       _npz_bytes(node_ids=sk.node_ids, positions_vx=sk.positions_vx, edges=sk.edges))
    upload_dir = stage_root / "upload"
    upload_dir.mkdir()
    atomic_write_bytes(upload_dir / f"cell_{upload.cell_id}{upload.suffix}", upload.data)
    return view


# ---------------------------------------------------------------- the passes (each `func(view, task)`)

def _sub(task: Task, stage: str, **changes) -> Task:
    """The task with the parameters of one pipeline stage (what that stage's task functions read)."""
    return dataclasses.replace(task, params=task.params["stages"][stage], **changes)


def _task_boxes(view: StagedAnalysis) -> list[Box]:
    return layer_box(open_layer(view.layer_path("cells"))).chunks(view.config.chunking.task_size)


def _regions(view: StagedAnalysis) -> dict:
    return json.loads((view.scratch_dir(STAGE_NAME) / "regions.json").read_text(encoding="utf-8"))


def hull_pass(view: StagedAnalysis, task: Task) -> dict:
    """Rays from the uploaded skeleton's nodes (`hull_task`), then `tables/nodes.csv` again (`index_task`)."""
    from syconn_ng.stages.hulls import hull_task, index_task

    hull_task(view, _sub(task, "hulls", cell_id=task.params["cell"]))
    return index_task(view, _sub(task, "hulls"))


def voxelize_pass(view: StagedAnalysis, task: Task) -> dict:
    """The cell's new hull in the `cells` layer: its old voxels cleared, its new region grown up to the
    membranes over voxels no other cell holds, in every task box the old or the new region reaches."""
    from syconn_ng.stages.hulls import free_voxels, growth_steps, hull_region, load_hull, region_stars

    p = task.params["stages"]["hulls"]
    cell = task.params["cell"]
    vs = np.asarray(p["voxel_size_nm"], dtype=np.float64)
    steps = growth_steps(p)
    new = load_hull(view, cell)
    regions = [r for r in (hull_region(load_hull(view.base, cell), vs, p["hulls"]["max_dist_mult"]),
                           hull_region(new, vs, p["hulls"]["max_dist_mult"])) if r is not None]
    vol = open_layer(view.layer_path("cells"))
    touched = [b for b in _task_boxes(view) if any(not r.grow(steps).intersect(b).empty() for r in regions)]
    lo, hi, changed = None, None, 0
    for box in touched:
        halo = box.grow(steps)
        existing = read_box(vol, halo)[..., 0]
        stars = region_stars(halo, {cell: new}, voxel_size_nm=vs, params=p["hulls"])
        inner = box.slices(relative_to=halo.start)
        out = existing[inner].copy()
        out[out == cell] = 0
        if stars is not None:
            from syconn_ng.hulls.voxelize import grow_labels

            free = free_voxels(p, halo) & ((existing == 0) | (existing == cell))  # other cells keep every voxel
            out[grow_labels(stars, free, steps)[inner] == cell] = cell
        diff = np.argwhere(out != existing[inner])
        if len(diff):
            changed += len(diff)
            a, b = diff.min(axis=0) + box.start, diff.max(axis=0) + 1 + np.asarray(box.start)
            lo = a if lo is None else np.minimum(lo, a)
            hi = b if hi is None else np.maximum(hi, b)
            write_box(vol, box, np.ascontiguousarray(out))
    out_dir = view.scratch_dir(STAGE_NAME)
    out_dir.mkdir(parents=True, exist_ok=True)
    cell_box = Box(np.min([r.start for r in regions], axis=0), np.max([r.stop for r in regions], axis=0)) if regions else None
    atomic_write_text(out_dir / "regions.json", json.dumps({
        "touched": [[list(b.start), list(b.stop)] for b in touched],
        "changed": None if lo is None else [[int(v) for v in lo], [int(v) for v in hi]],
        "cell": None if cell_box is None else [list(cell_box.start), list(cell_box.stop)]}))
    return {"boxes": len(touched), "changed_voxels": changed}


def mesh_pass(view: StagedAnalysis, task: Task) -> dict:
    """The cell's mesh and skeleton in the staged `cells` layer (`fragments_task`, `publish_task`)."""
    from syconn_ng.stages.hulls import fragments_task, publish_task

    for start, stop in _regions(view)["touched"]:
        box = Box(start, stop)
        fragments_task(view, _sub(task, "hulls", box=box, key=f"fragments_{box.name()}"))
    return publish_task(view, _sub(task, "hulls", cell_id=task.params["cell"]))


def mapping_pass(view: StagedAnalysis, task: Task) -> dict:
    """`tables/mapping_<type>.csv` again for the objects near the voxels that changed: counted over each object's
    bounding box in the new `cells` layer and assigned like the `mapping` stage; other objects' rows kept."""
    import pandas as pd

    from syconn_ng.hulls.mapping import assign_objects, neighbourhood_counts, overlap_counts, sum_counts
    from syconn_ng.stages.mapping import KINDS, MAPPING_COLUMNS

    p = task.params["stages"]["mapping"]["mapping"]
    changed = _regions(view)["changed"]
    if changed is None:
        return {"objects": 0}
    changed = Box(*changed)
    cells_vol = open_layer(view.layer_path("cells"))
    bounds = layer_box(cells_vol)
    done = {}
    for kind in KINDS:
        r = np.asarray(p["sj_dilation_vx"], dtype=np.int64) if kind == "sj" else np.zeros(3, np.int64)
        objects = pd.read_csv(view.tables_dir / f"objects_{kind}.csv")
        lo = objects[[f"bbox_{a}0" for a in "xyz"]].to_numpy(np.int64)
        hi = objects[[f"bbox_{a}1" for a in "xyz"]].to_numpy(np.int64) + 1  # inclusive or not: one voxel more is harmless
        near = changed.grow(r)
        hit = np.all((lo < near.stop) & (hi > near.start), axis=1)
        ids = objects["id"].to_numpy(np.uint64)[hit]
        if not len(ids):
            done[kind] = 0
            continue
        box = Box(lo[hit].min(axis=0), hi[hit].max(axis=0)).intersect(bounds)
        labels = read_box(open_layer(view.layer_path(kind)), box)[..., 0]
        labels = np.where(np.isin(labels, ids), labels, np.uint64(0))
        if kind == "sj":
            obj, cell, vox = neighbourhood_counts(labels, read_box(cells_vol, box.grow(r))[..., 0], r)
        else:
            obj, cell, vox = overlap_counts(labels, read_box(cells_vol, box)[..., 0])
        obj, cell, vox = sum_counts(obj, cell, vox)
        obj, cell, fraction = assign_objects(obj, cell, vox, objects["id"].to_numpy(np.uint64), objects["voxels"].to_numpy(),
                                             min_fraction=p[f"min_fraction_{kind}"], best_only=kind != "sj")
        path = view.tables_dir / f"mapping_{kind}.csv"
        old = pd.read_csv(path)
        old = old[~old["object"].astype(np.uint64).isin(ids)]
        new = pd.DataFrame({"object": obj, "cell": cell, "fraction": np.round(fraction, 4)})
        table = pd.concat([old.astype({"object": np.uint64, "cell": np.uint64}), new], ignore_index=True)
        table = table.sort_values(["object", "cell"], kind="mergesort")
        atomic_write_text(path, table[list(MAPPING_COLUMNS)].to_csv(index=False))
        done[kind] = len(ids)
    return {"objects": done}


def compartments_pass(view: StagedAnalysis, task: Task) -> dict:
    """The cell's compartments (`predict_task`) and `tables/compartments.csv` (`table_task`)."""
    from syconn_ng.stages.compartments import organelle_table, predict_task, table_task, write_task_inputs

    scratch = view.scratch_dir("compartments")
    scratch.mkdir(parents=True, exist_ok=True)
    write_task_inputs(view, scratch, organelle_table(view))
    atomic_write_text(scratch / "sources.json", "{}")  # the enriched KNOSSOS file is written by `commit`
    predict_task(view, _sub(task, "compartments", cell_id=task.params["cell"]))
    return table_task(view, _sub(task, "compartments"))


def _involving(df, cell: int, columns=("pre_cell", "post_cell")):
    c = np.uint64(cell)
    return np.logical_or.reduce([df[k].astype(np.uint64).to_numpy() == c for k in columns])


def synapses_pass(view: StagedAnalysis, task: Task) -> dict:
    """Contact sites and synapses of the cell: `box_task` on the task boxes near the cell and its sj objects,
    `classify_task` on them; the cell's rows replace its old ones in the synapse, candidate and contact-site tables."""
    import pandas as pd

    from syconn_ng.sharding import use_sharding
    from syconn_ng.stages.synapses import box_task, classify_task, halo_vx, write_synapse_layer

    cell = task.params["cell"]
    p = dict(task.params["stages"]["synapses"])
    halo = halo_vx(p["synapses"], p["voxel_size_nm"])
    near = [Box(*_regions(view)["cell"]).grow(halo)] if _regions(view)["cell"] else []
    mapped = pd.read_csv(view.tables_dir / "mapping_sj.csv")
    sj_ids = mapped.loc[mapped["cell"].astype(np.uint64) == np.uint64(cell), "object"].astype(np.uint64)
    objects = pd.read_csv(view.tables_dir / "objects_sj.csv")
    for row in objects[objects["id"].astype(np.uint64).isin(sj_ids)].itertuples():
        near.append(Box((row.bbox_x0, row.bbox_y0, row.bbox_z0), (row.bbox_x1 + 1, row.bbox_y1 + 1, row.bbox_z1 + 1)).grow(halo))
    boxes = [b for b in _task_boxes(view) if any(not n.intersect(b).empty() for n in near)]
    for box in boxes:
        box_task(view, dataclasses.replace(task, params=p, box=box, key=f"box_{box.name()}"))
    p["boxes"] = [[list(b.start), list(b.stop)] for b in boxes]
    classify_task(view, dataclasses.replace(task, params=p))
    tables = view.tables_dir
    base = view.base.tables_dir
    merged = {}
    for name, columns, order in (("synapses", ("pre_cell", "post_cell"), "id"),
                                 ("synapse_candidates", ("pre_cell", "post_cell"), "sj_id"),
                                 ("contact_sites", ("cell_a", "cell_b"), None)):
        old, new = pd.read_csv(base / f"{name}.csv"), pd.read_csv(tables / f"{name}.csv")
        keep, mine = old[~_involving(old, cell, columns)], new[_involving(new, cell, columns)]
        if name == "contact_sites":  # new sites numbered after the kept ones
            mine = mine.assign(id=np.arange(len(mine), dtype=np.int64) + (int(keep["id"].max()) + 1 if len(keep) else 1))
        elif name == "synapses":  # an sj stays with the synapse of another pair it already forms
            mine = mine[~mine["id"].isin(keep["id"])]
        table = pd.concat([keep, mine], ignore_index=True)
        if order:
            table = table.sort_values(order, kind="mergesort")
        merged[name] = table
        fmt = {"float_format": "%.6g"} if name == "synapse_candidates" else {}
        atomic_write_text(tables / f"{name}.csv", table.to_csv(index=False, **fmt))
    layer = Path(view.stage_root) / "layers" / "synapses"
    shutil.rmtree(layer, ignore_errors=True)
    syn = merged["synapses"].astype({"id": np.uint64, "pre_cell": np.uint64, "post_cell": np.uint64})
    write_synapse_layer(layer, syn, np.asarray(p["voxel_size_nm"], dtype=np.float64),
                        sharded=use_sharding(len(syn), p["shard_annotations_over"]))
    return {"boxes": len(boxes), "synapses": int(_involving(syn, cell).sum())}


def partners(synapses, cell: int) -> set[int]:
    """The cells sharing a synapse with `cell` in a synapse table."""
    rows = synapses[_involving(synapses, cell)]
    return {int(c) for c in np.concatenate([rows["pre_cell"].to_numpy(np.uint64), rows["post_cell"].to_numpy(np.uint64)])} - {int(cell)}


def celltypes_pass(view: StagedAnalysis, task: Task) -> dict:
    """Features and cell type of the cell and of every cell it had or has a synapse with (`features_task`,
    `classify_task`); the other cells' rows of `tables/cells.csv` and `tables/cell_features.csv` are kept."""
    import pandas as pd

    from syconn_ng.stages.celltypes import classify_task, features_task
    from syconn_ng.stages.compartments import organelle_table, write_task_inputs

    cell = task.params["cell"]
    base = view.base.tables_dir
    old_syn, new_syn = pd.read_csv(base / "synapses.csv"), pd.read_csv(view.tables_dir / "synapses.csv")
    old_cells = pd.read_csv(base / "cells.csv")
    old_feats = pd.read_csv(base / "cell_features.csv")
    ids = old_cells["id"].astype(np.uint64).tolist()
    redo = ({int(cell)} | partners(old_syn, cell) | partners(new_syn, cell)) & {int(i) for i in ids}
    scratch = view.scratch_dir("celltypes")
    scratch.mkdir(parents=True, exist_ok=True)
    write_task_inputs(view, scratch, organelle_table(view))
    p = dict(task.params["stages"]["celltypes"], cells=[int(i) for i in ids])
    feats = old_feats.set_index(old_feats["id"].astype(np.uint64)).drop(columns="id")
    for c in ids:
        if int(c) in redo:
            features_task(view, dataclasses.replace(task, params=p, cell_id=int(c)))
        else:
            atomic_write_text(scratch / f"{int(c)}.json", json.dumps({k: float(v) for k, v in feats.loc[np.uint64(c)].items()}))
    classify_task(view, dataclasses.replace(task, params=p))
    for name, index in (("cells.csv", "id"), ("cell_features.csv", "id")):
        old, new = pd.read_csv(base / name), pd.read_csv(view.tables_dir / name)
        take = new[index].astype(np.uint64).isin([np.uint64(c) for c in redo]).to_numpy()
        same = list(old.columns) == list(new.columns) and list(old[index]) == list(new[index])
        out = pd.concat([old[~take], new[take]]).sort_index(kind="mergesort") if same else new  # else: made by another version
        atomic_write_text(view.tables_dir / name, out.to_csv(index=False))
    return {"cells": len(redo)}


def connectome_pass(view: StagedAnalysis, task: Task) -> dict:
    """The wiring matrix and its files again (`matrix_task`)."""
    from syconn_ng.stages.connectome import matrix_task

    return matrix_task(view, _sub(task, "connectome"))


PASSES = (("hull", hull_pass), ("voxelize", voxelize_pass), ("mesh", mesh_pass), ("mapping", mapping_pass),
          ("compartments", compartments_pass), ("synapses", synapses_pass), ("celltypes", celltypes_pass),
          ("connectome", connectome_pass))


class CellReanalysis:
    """The `reanalyse` stage for the driver: one cell, every pass local (the job runs in the server's worker thread)."""

    name = STAGE_NAME

    def __init__(self, upload: Upload):
        self.upload = upload

    def params(self, view) -> dict:
        from syconn_ng.stages import get_stage

        return {"cell": self.upload.cell_id, "upload": self.upload.digest,
                "stages": {name: get_stage(name).params(view) for name in STAGES}}

    def prepare(self, view, *, fresh: bool) -> None:
        """Inputs are checked by the passes themselves (each raises InputError naming the missing table)."""

    def passes(self, view) -> list[Pass]:
        return [Pass(name, func, [None], local=True) for name, func in PASSES]


# ---------------------------------------------------------------- commit

def _files(root: Path) -> list[Path]:
    """Regular files (not links) under `root`, relative to it."""
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def commit(view: StagedAnalysis, upload: Upload) -> dict:
    """Move the job's new files into the analysis: tables, the `cells` layer's changed chunks and the cell's mesh
    and skeletons, the `synapses` annotation layer, the uploaded skeleton. If any move fails, every file moved so
    far is put back and the error is raised. Returns {"files": moved}."""
    root, stage = Path(view.root), Path(view.stage_root)
    backup = stage / "backup"
    moves = []  # (staged, target)
    for sub in ("tables", "layers/cells"):
        for rel in _files(stage / sub):
            src, dst = stage / sub / rel, root / sub / rel
            if rel.name.startswith(".") or (dst.is_file() and dst.read_bytes() == src.read_bytes()):
                continue
            moves.append((src, dst))
    reanalysed = root / "skeletons" / "reanalysed"
    previous = [p for p in reanalysed.glob(f"cell_{upload.cell_id}.*") if p.is_file()]
    done: list[tuple[Path, Path | None]] = []  # (target, its backup or None if new)
    synapses_layer = root / "layers" / "synapses"
    old_layer = stage / "backup-synapses"
    try:
        for src, dst in moves:
            keep = None
            if dst.exists():
                keep = backup / dst.relative_to(root)
                keep.parent.mkdir(parents=True, exist_ok=True)
                os.link(dst, keep)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            done.append((dst, keep))
        if synapses_layer.exists():
            os.replace(synapses_layer, old_layer)
        os.replace(stage / "layers" / "synapses", synapses_layer)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        for p in previous:  # the previous upload of this cell is kept, never overwritten
            dst = reanalysed / "previous" / f"{p.name.split('.')[0]}-{stamp}{''.join(p.suffixes)}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, dst)
            done.append((p, dst))
        reanalysed.mkdir(parents=True, exist_ok=True)
        target = reanalysed / f"cell_{upload.cell_id}{upload.suffix}"
        os.replace(stage / "upload" / target.name, target)
        done.append((target, None))
        _merge_sharded_skeletons(root / "layers" / "cells")  # last: on failure the moves above are undone
    except BaseException:
        for dst, keep in reversed(done):
            if keep is None:
                dst.unlink(missing_ok=True)
            else:
                os.replace(keep, dst)
        if old_layer.exists():
            shutil.rmtree(synapses_layer, ignore_errors=True)
            os.replace(old_layer, synapses_layer)
        raise
    shutil.rmtree(old_layer, ignore_errors=True)
    _write_enriched(view.base, upload, target)
    return {"files": len(moves) + 2}


def _merge_sharded_skeletons(cells_layer: Path) -> None:
    """The cell's new skeleton files, moved beside the shards of a sharded skeleton source, merged into the shards."""
    from syconn_ng.sharding import shard_skeleton_source

    for d in sorted(cells_layer.iterdir()):
        info = json.loads((d / "info").read_text()) if (d / "info").is_file() else {}
        if info.get("@type") == "neuroglancer_skeletons" and "sharding" in info:
            shard_skeleton_source(d, over=-1)


def _write_enriched(analysis: Analysis, upload: Upload, source: Path) -> None:
    """`skeletons/enriched/cell_<id>.k.zip` from the uploaded tree, with the new compartments and cell type."""
    import pandas as pd

    from syconn_ng.stages.compartments import result_path, write_enriched

    cells = pd.read_csv(analysis.tables_dir / "cells.csv", usecols=["id", "type"])
    cell_type = cells.loc[cells["id"].astype(np.uint64) == np.uint64(upload.cell_id), "type"]
    with np.load(result_path(analysis, upload.cell_id)) as z:
        write_enriched(analysis, source, upload.cell_id, z["node_id"], z["code"],
                       cell_type=str(cell_type.iloc[0]) if len(cell_type) else None)


def reanalyse_cell(analysis: Analysis, upload: Upload, *, work_dir: Path | None = None, callback=None) -> dict:
    """Run the per-cell stages for `upload` and commit them; the staging folder is removed either way.

    work_dir: the staging folder (default `scratch/reanalyse/cell_<id>`). callback: the engine's Progress callback.
    Raises StageError / InputError with the analysis untouched if a pass fails.
    """
    from syconn_ng.engine import run_stage
    from syconn_ng.engine.state import analysis_lock

    stage_root = Path(work_dir or analysis.scratch_dir(STAGE_NAME) / f"cell_{upload.cell_id}")
    t0 = time.perf_counter()
    with analysis_lock(analysis.state_dir, f"the re-analysis of cell {upload.cell_id}"):
        try:
            view = stage_analysis(analysis, upload, stage_root)
            report = run_stage(CellReanalysis(upload), view, progress=False, callback=callback)
            summary = commit(view, upload)
        finally:
            shutil.rmtree(stage_root, ignore_errors=True)
            if stage_root.parent.is_dir() and not any(stage_root.parent.iterdir()):
                stage_root.parent.rmdir()
    return {"cell": str(upload.cell_id), "tasks": report.ran, "seconds": round(time.perf_counter() - t0, 2), **summary}
