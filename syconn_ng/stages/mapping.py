"""The `mapping` stage: each mi, vc and sj object → the cell(s) whose hull contains it.

Passes:
1. `count` (per task box): per object type, voxels of each object in each cell of `layers/cells`
   (sj: cells within `[mapping] sj_dilation_vx` of each voxel, the cleft being unlabelled);
   partial counts go to `scratch/mapping/<box>.npz`.
2. `assign` (driver): counts summed over boxes, divided by the object sizes of
   `tables/objects_<type>.csv`; writes `tables/mapping_<type>.csv` (object, cell, fraction):
   mi and vc the best cell above `min_fraction_<type>`, sj every cell above `min_fraction_sj`.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np

from syconn_ng.box import Box
from syconn_ng.engine.driver import Pass
from syconn_ng.errors import InputError
from syconn_ng.hulls.mapping import assign_objects, neighbourhood_counts, overlap_counts, sum_counts
from syconn_ng.layers import atomic_write_bytes, atomic_write_text, layer_box, open_layer, read_box, remove_temp_files

KINDS = ("mi", "vc", "sj")
MAPPING_COLUMNS = ("object", "cell", "fraction")


def _scratch(analysis) -> Path:
    return analysis.scratch_dir("mapping")


def count_task(analysis, task) -> dict:
    """Object-cell voxel counts of one task box, for mi, vc and sj."""
    box = task.box
    cells_vol = open_layer(analysis.layer_path("cells"))
    cells = read_box(cells_vol, box)[..., 0]
    arrays, counts = {}, {}
    for kind in KINDS:
        objects = read_box(open_layer(analysis.layer_path(kind)), box)[..., 0]
        if kind == "sj":
            r = np.asarray(task.params["mapping"]["sj_dilation_vx"], dtype=np.int64)
            obj, cell, vox = neighbourhood_counts(objects, read_box(cells_vol, box.grow(r))[..., 0], r)
        else:
            obj, cell, vox = overlap_counts(objects, cells)
        arrays.update({f"{kind}_object": obj, f"{kind}_cell": cell, f"{kind}_voxels": vox})
        counts[kind] = len(obj)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    out = _scratch(analysis) / f"{box.name()}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.getvalue())
    return counts


def assign_task(analysis, task) -> dict:
    """Sum the counts of every box and write `tables/mapping_<type>.csv`."""
    import pandas as pd

    p = task.params
    boxes = [Box(*b) for b in p["boxes"]]
    result = {}
    for kind in KINDS:
        parts = {"object": [], "cell": [], "voxels": []}
        for b in boxes:
            with np.load(_scratch(analysis) / f"{b.name()}.npz") as z:
                for name in parts:
                    parts[name].append(z[f"{kind}_{name}"])
        obj, cell, vox = sum_counts(*(np.concatenate(parts[n]) for n in ("object", "cell", "voxels")))
        table = pd.read_csv(analysis.tables_dir / f"objects_{kind}.csv", usecols=["id", "voxels"])
        obj, cell, fraction = assign_objects(obj, cell, vox, table["id"].to_numpy(np.uint64), table["voxels"].to_numpy(),
                                             min_fraction=p["mapping"][f"min_fraction_{kind}"], best_only=kind != "sj")
        df = pd.DataFrame({"object": obj, "cell": cell, "fraction": np.round(fraction, 4)})
        atomic_write_text(analysis.tables_dir / f"mapping_{kind}.csv", df[list(MAPPING_COLUMNS)].to_csv(index=False))
        result[kind] = len(df)
    return result


class MappingStage:
    """The `mapping` stage for the driver (`syconn_ng.engine.run_stage`)."""

    name = "mapping"

    def _cells(self, analysis):
        path = analysis.layer_path("cells")
        try:
            return open_layer(path)
        except InputError as err:
            raise InputError(path, "no cells layer: run the 'hulls' stage first", element="info") from err

    def upstream(self, analysis) -> list[str]:
        return ["objects", "hulls"]

    def params(self, analysis) -> dict:
        bounds = layer_box(self._cells(analysis))
        return {
            "mapping": analysis.config.section_params("mapping"),
            "bounds": [list(bounds.start), list(bounds.stop)],
            "task_size": list(analysis.config.chunking.task_size),
            "boxes": [[list(b.start), list(b.stop)] for b in self._boxes(analysis)],
        }

    def _boxes(self, analysis) -> list[Box]:
        return layer_box(self._cells(analysis)).chunks(analysis.config.chunking.task_size)

    def prepare(self, analysis, *, fresh: bool) -> None:
        bounds = layer_box(self._cells(analysis))
        for kind in KINDS:
            path = analysis.layer_path(kind)
            try:
                vol = open_layer(path)
            except InputError as err:
                raise InputError(path, f"no {kind} objects layer: run the 'objects' stage first", element="info") from err
            if layer_box(vol) != bounds:
                raise InputError(path, f"bounds {layer_box(vol)} differ from the cells layer's {bounds}", element="info")
            table = analysis.tables_dir / f"objects_{kind}.csv"
            if not table.exists():
                raise InputError(table, "no object table: run the 'objects' stage first")
        if fresh:
            shutil.rmtree(_scratch(analysis), ignore_errors=True)
            for kind in KINDS:
                (analysis.tables_dir / f"mapping_{kind}.csv").unlink(missing_ok=True)
        if _scratch(analysis).is_dir():
            remove_temp_files(_scratch(analysis))

    def passes(self, analysis) -> list[Pass]:
        return [
            Pass("count", count_task, self._boxes(analysis)),
            Pass("assign", assign_task, [None], local=True),
        ]


STAGE = MappingStage()
