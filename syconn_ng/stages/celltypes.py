"""The `celltypes` stage: per-cell features (compartments, organelles, synapses) → cell type with
probabilities (a random forest; the classes are the model's, EA / MSN / GP / INT by default).

Passes:
1. `features` (per cell): the cell's hull nodes with their compartments (`tables/compartments/<cell>.npz`),
   its mapped organelles and its synapses (`tables/synapses.csv`) → `scratch/celltypes/<cell>.json`.
2. `classify` (driver): the forest on every cell → `tables/cells.csv` and `tables/cell_features.csv`;
   every cell gets a type, and `typeable` / `untypeable_reason` say whether it shows enough to judge one;
   `symmetric_out_fraction` and `sign` (excitatory / inhibitory) come from its outgoing synapses' types.
3. `enrich` (per cell): `skeletons/enriched/cell_<id>.k.zip` again, now with the cell type as tree
   comment and tree colour.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from syconn_ng.compartments.celltype_features import cell_features, cell_signs, typeability
from syconn_ng.compartments.forest import cached_forest, load_forest, resolve_model
from syconn_ng.engine.driver import Pass
from syconn_ng.errors import InputError
from syconn_ng.layers import atomic_write_text, remove_temp_files

CELL_COLUMNS = ("id", "type", "type_probability")  # then p_<CLASS>..., then SUMMARY_COLUMNS
SUMMARY_COLUMNS = ("nodes", "path_length_um", "axon_um", "dendrite_um", "soma_nodes", "n_in", "n_out", "typeable", "untypeable_reason",
                   "symmetric_out_fraction", "sign")


def _scratch(analysis) -> Path:
    return analysis.scratch_dir("celltypes")


def synapse_sides(synapses, cell_id: int) -> tuple[dict, dict]:
    """The synapses where `cell_id` is pre- and postsynaptic, as `cell_features` takes them."""
    def side(rows):
        return {"area_um2": rows["area_um2"].to_numpy(np.float64), "asymmetric": (rows["type"] == "asymmetric").to_numpy(),
                "spine": rows["post_compartment"].isin(["spine_head", "spine_neck"]).to_numpy()}

    cell = np.uint64(cell_id)
    return side(synapses[synapses["pre_cell"] == cell]), side(synapses[synapses["post_cell"] == cell])


def read_synapses(analysis):
    """`tables/synapses.csv` (the synapses stage's output) with the columns the features use."""
    import pandas as pd

    path = analysis.tables_dir / "synapses.csv"
    if not path.exists():
        raise InputError(path, "missing: run the 'synapses' stage first")
    df = pd.read_csv(path, usecols=["pre_cell", "post_cell", "area_um2", "type", "post_compartment"])
    return df.astype({"pre_cell": np.uint64, "post_cell": np.uint64})


def features_of_cell(analysis, cell_id: int, organelles, synapses) -> dict[str, float]:
    """The cell-type features of one cell of a finished analysis (compartments and synapses run)."""
    from syconn_ng.stages.compartments import cell_graph, result_path

    graph, _ = cell_graph(analysis, cell_id, organelles)
    path = result_path(analysis, cell_id)
    if not path.exists():
        raise InputError(path, "missing: run the 'compartments' stage first")
    with np.load(path) as z:
        code = z["code"]
    out, inc = synapse_sides(synapses, cell_id)
    mi = organelles["mi"]
    return cell_features(graph, code, out, inc, mi_length_nm=mi.loc[mi["cell"] == np.uint64(cell_id), "length_nm"].to_numpy())


def features_task(analysis, task) -> dict:
    """One cell's features → `scratch/celltypes/<cell>.json`."""
    from syconn_ng.stages.compartments import unpack_organelles

    with np.load(_scratch(analysis) / "organelles.npz") as z:
        organelles = unpack_organelles(z)
    f = features_of_cell(analysis, task.cell_id, organelles, read_synapses(analysis))
    atomic_write_text(_scratch(analysis) / f"{task.cell_id}.json", json.dumps(f))
    return {"path_um": round(f["path_um"], 2)}


def classify_cells(features, forest) -> tuple[np.ndarray, np.ndarray]:
    """(types (N,) str, probabilities (N, C)) for a features DataFrame (one row per cell, the forest's columns)."""
    missing = [f for f in forest.features if f not in features.columns]
    if missing:
        forest.check_features(list(features.columns))
    proba = forest.predict_proba(features[forest.features].to_numpy(np.float32), forest.features)
    return np.asarray(forest.classes)[proba.argmax(axis=1)] if len(proba) else np.zeros(0, str), proba


def classify_task(analysis, task) -> dict:
    """The forest on every cell's features → `tables/cells.csv` (and `tables/cell_features.csv`)."""
    import pandas as pd

    forest = cached_forest(task.params["model"], task.params["model_digest"])
    cells = task.params["cells"]
    feats = pd.DataFrame([json.loads((_scratch(analysis) / f"{c}.json").read_text(encoding="utf-8")) for c in cells],
                         index=pd.Index(np.asarray(cells, dtype=np.uint64), name="id"))
    types, proba = classify_cells(feats, forest)
    nodes = pd.read_csv(analysis.tables_dir / "nodes.csv", usecols=["cell"])["cell"].value_counts()
    out = pd.DataFrame({"id": feats.index.to_numpy(), "type": types, "type_probability": np.round(proba.max(axis=1), 4) if len(proba) else []})
    for i, c in enumerate(forest.classes):
        out[f"p_{c}"] = np.round(proba[:, i], 4)
    out["nodes"] = [int(nodes.get(c, 0)) for c in feats.index]
    out["path_length_um"] = np.round(feats["path_um"].to_numpy(), 3)
    out["axon_um"] = np.round(feats["axon_um"].to_numpy(), 3)
    out["dendrite_um"] = np.round(feats["dendrite_um"].to_numpy(), 3)
    out["soma_nodes"] = feats["soma_nodes"].astype(int).to_numpy()
    out["n_in"] = feats["n_in"].astype(int).to_numpy()
    out["n_out"] = feats["n_out"].astype(int).to_numpy()
    params = task.params["celltypes"]
    ok, reason = typeability(feats, min_typeable_um=params["min_typeable_um"], bare_axons_typeable=params["bare_axons_typeable"])
    out["typeable"] = ok.astype(int)
    out["untypeable_reason"] = reason
    share, out["sign"] = cell_signs(read_synapses(analysis), feats.index.to_numpy(), inhibitory_fraction=params["inhibitory_fraction"])
    out["symmetric_out_fraction"] = np.round(share, 4)
    columns = [*CELL_COLUMNS, *(f"p_{c}" for c in forest.classes), *SUMMARY_COLUMNS]
    atomic_write_text(analysis.tables_dir / "cells.csv", out[columns].to_csv(index=False))
    atomic_write_text(analysis.tables_dir / "cell_features.csv", feats.round(6).to_csv())
    return {t: int((types == t).sum()) for t in forest.classes}


def enrich_task(analysis, task) -> dict:
    """`skeletons/enriched/cell_<id>.k.zip` with compartments, the cell type as tree comment and colour."""
    import pandas as pd

    from syconn_ng.stages.compartments import result_path, write_enriched

    source = json.loads((_scratch(analysis) / "sources.json").read_text(encoding="utf-8")).get(str(task.cell_id))
    if source is None:
        return {"written": 0}
    cells = pd.read_csv(analysis.tables_dir / "cells.csv", usecols=["id", "type"]).astype({"id": np.uint64})
    cell_type = cells.loc[cells["id"] == np.uint64(task.cell_id), "type"]
    with np.load(result_path(analysis, task.cell_id)) as z:
        write_enriched(analysis, source, task.cell_id, z["node_id"], z["code"], cell_type=str(cell_type.iloc[0]) if len(cell_type) else None)
    return {"written": 1}


class CelltypesStage:
    """The `celltypes` stage for the driver (`syconn_ng.engine.run_stage`)."""

    name = "celltypes"

    def upstream(self, analysis) -> list[str]:
        return ["compartments", "synapses"]

    def model_files(self, analysis) -> list[Path]:
        """The forest this stage uses (checked before a run starts; recorded in its provenance)."""
        return [self._model(analysis)]

    def _model(self, analysis) -> Path:
        return resolve_model(analysis.config.celltypes.model, "celltypes", analysis.root)

    def _cells(self, analysis) -> list[int]:
        return json.loads((analysis.scratch_dir("hulls") / "cells.json").read_text(encoding="utf-8"))

    def params(self, analysis) -> dict:
        import hashlib

        model = self._model(analysis)
        return {"celltypes": analysis.config.section_params("celltypes"), "model": str(model),
                "model_digest": hashlib.sha256(model.read_bytes()).hexdigest()[:16] if model.exists() else "missing",
                "cells": self._cells(analysis)}

    def prepare(self, analysis, *, fresh: bool) -> None:
        table = analysis.tables_dir / "compartments.csv"
        if not table.exists():
            raise InputError(table, "missing: run the 'compartments' stage first")
        read_synapses(analysis)
        forest = load_forest(self._model(analysis))
        from syconn_ng.compartments.features import CellGraph

        names = list(cell_features(CellGraph(np.zeros((2, 3)), np.array([[0, 1]]), np.ones(2), {}), np.zeros(2, np.uint8), {}, {}))
        forest.check_features(names)
        if fresh:
            shutil.rmtree(_scratch(analysis), ignore_errors=True)
        _scratch(analysis).mkdir(parents=True, exist_ok=True)
        remove_temp_files(_scratch(analysis))
        from syconn_ng.stages.compartments import organelle_table, write_task_inputs

        write_task_inputs(analysis, _scratch(analysis), organelle_table(analysis))

    def passes(self, analysis) -> list[Pass]:
        cells = self._cells(analysis)
        return [Pass("features", features_task, cells), Pass("classify", classify_task, [None], local=True),
                Pass("enrich", enrich_task, cells)]


STAGE = CelltypesStage()
