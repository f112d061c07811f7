"""The `compartments` stage: per skeleton node axon / dendrite / soma and, on dendrites, spine head /
neck, from two random forests on node features, smoothed along the skeleton.

Passes:
1. `predict` (per cell): the cell's hull nodes (`tables/hulls/<cell>.npz`, traced and interpolated)
   and mapped organelles → node features → forest 1 (axon / dendrite / soma) and forest 2 (shaft /
   spine_head / spine_neck, applied where forest 1 says dendrite); probabilities are averaged along
   the skeleton (`smooth_um`, `spine_smooth_um`). With a myelin layer, each node's myelin (the mean in a
   shell outside its hull, `syconn_ng.compartments.myelin`) and myelinated flag, and myelinated nodes are
   axon. Writes `tables/compartments/<cell>.npz` (every hull node, interpolated ones included: `node_id`,
   `proba` (N, 5), `code` uint8, `myelin`, `myelinated`), the cell's precomputed skeleton with
   `compartment` and `myelin` vertex attributes
   (`layers/cells/skeletons_compartments/<cell>`) and `skeletons/enriched/cell_<cell>.k.zip`.
2. `table` (driver): `tables/compartments.csv`, one row per row of `tables/nodes.csv`.
3. `skeleton_shards` (driver): past `[chunking] shard_skeletons_over` cells, the skeletons as shard files
   (`syconn_ng.sharding.shard_skeleton_source`).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np

from syconn_ng.compartments.features import CellGraph, nearest_nodes, node_features
from syconn_ng.compartments.forest import cached_forest, load_forest, resolve_model
from syconn_ng.compartments.labels import COMPARTMENTS, SPINE_CLASSES
from syconn_ng.compartments.outputs import UNKNOWN_CODE, enriched_skeleton, write_skeleton, write_skeleton_info
from syconn_ng.compartments.smoothing import smooth_probabilities
from syconn_ng.engine.driver import Pass
from syconn_ng.errors import InputError
from syconn_ng.layers import atomic_write_bytes, atomic_write_text, local_dir, remove_temp_files
from syconn_ng.sharding import shard_layer_skeletons

TABLE_COLUMNS = ("cell", "node", "compartment", "probability", *(f"p_{c}" for c in COMPARTMENTS), "myelin", "myelinated")
AXONESS_CLASSES = ("axon", "dendrite", "soma")
SKELETON_DIR = "skeletons_compartments"  # inside layers/cells: a second skeleton source beside the hulls stage's


# ---------------------------------------------------------------- inputs of one cell

def organelle_table(analysis) -> dict:
    """{kind: DataFrame cell, x_nm, y_nm, z_nm, volume_nm3, length_nm} of the objects mapped to cells (sj: every
    partner); length_nm is the diagonal of the object's bounding box (a mitochondrion's length)."""
    import pandas as pd

    vs = np.asarray(analysis.voxel_size_nm)
    out = {}
    for kind in ("mi", "vc", "sj"):
        mapping_path = analysis.tables_dir / f"mapping_{kind}.csv"
        objects_path = analysis.tables_dir / f"objects_{kind}.csv"
        for p in (mapping_path, objects_path):
            if not p.exists():
                raise InputError(p, "missing: run the 'objects' and 'mapping' stages first")
        m = pd.read_csv(mapping_path)
        o = pd.read_csv(objects_path, usecols=["id", "volume_nm3", "centroid_x", "centroid_y", "centroid_z",
                                               *(f"bbox_{a}{e}" for a in "xyz" for e in "01")])
        df = m.merge(o, left_on="object", right_on="id")
        out[kind] = pd.DataFrame({"cell": df["cell"].to_numpy(np.uint64),
                                  **{f"{a}_nm": df[f"centroid_{a}"].to_numpy(np.float64) * vs[i] for i, a in enumerate("xyz")},
                                  "volume_nm3": df["volume_nm3"].to_numpy(np.float64),
                                  "length_nm": np.linalg.norm(np.column_stack([(df[f"bbox_{a}1"] - df[f"bbox_{a}0"]).to_numpy(np.float64) * vs[i]
                                                                               for i, a in enumerate("xyz")]), axis=1)})
    return out


def cell_graph(analysis, cell_id: int, organelles: dict) -> tuple[CellGraph, np.ndarray]:
    """One cell's skeleton graph from its hull file and its organelles; also the node ids (N,) uint64 (0 = interpolated)."""
    from syconn_ng.stages.hulls import load_hull

    vs = np.asarray(analysis.voxel_size_nm)
    hull = load_hull(analysis, cell_id)
    pos = hull["node_vx"].astype(np.float64) * vs
    orgs = {}
    for kind, table in organelles.items():
        sel = table[table["cell"] == np.uint64(cell_id)]
        pts = sel[["x_nm", "y_nm", "z_nm"]].to_numpy()
        orgs[kind] = (nearest_nodes(pos, pts), sel["volume_nm3"].to_numpy())
    return CellGraph(pos, hull["edges"].astype(np.int64), hull["radius_nm"].astype(np.float64), orgs), hull["node_id"]


def features_of(graph: CellGraph, feature_params: dict):
    """The node features with the windows a model was trained with (`feature_params` from its metadata)."""
    return node_features(graph, window_um=feature_params["window_um"], small_window_um=feature_params["small_window_um"])


# ---------------------------------------------------------------- the science: forests → compartments

def predict_compartments(X: np.ndarray, names, graph: CellGraph, axoness, spiness, *, smooth_um: float,
                         spine_smooth_um: float, axon_nodes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per node probabilities (N, 5) in `COMPARTMENTS` order (summing to 1) and the compartment codes (N,) uint8.

    Forest 1 gives axon / dendrite / soma; nodes in `axon_nodes` (N,) bool (myelinated) are axon; then
    these are averaged along the skeleton over `smooth_um`. Nodes whose smoothed argmax is dendrite
    get forest 2's shaft / head / neck, averaged over `spine_smooth_um` among dendrite nodes.
    p_dendrite is the shaft's share, so the five add up to one.
    """
    n = len(X)
    p3 = np.zeros((n, 3))
    p3[:, [AXONESS_CLASSES.index(c) for c in axoness.classes]] = axoness.predict_proba(X, names)
    if axon_nodes is not None and axon_nodes.any():
        p3[axon_nodes] = np.eye(3)[AXONESS_CLASSES.index("axon")]
    p3 = smooth_probabilities(graph.positions_nm, graph.edges, p3, distance_nm=smooth_um * 1000.0)
    coarse = p3.argmax(axis=1)
    dend = coarse == AXONESS_CLASSES.index("dendrite")
    ps = np.zeros((n, 3))
    ps[:, 0] = 1.0
    if dend.any():
        ps[dend] = 0.0
        ps[np.ix_(dend, [SPINE_CLASSES.index(c) for c in spiness.classes])] = spiness.predict_proba(X[dend], names)
        ps = smooth_probabilities(graph.positions_nm, graph.edges, ps, distance_nm=spine_smooth_um * 1000.0, mask=dend)
    p5 = np.column_stack([p3[:, 0], p3[:, 1] * ps[:, 0], p3[:, 2], p3[:, 1] * ps[:, 1], p3[:, 1] * ps[:, 2]])
    code = coarse.astype(np.uint8)  # axon 0, dendrite 1, soma 2 = their COMPARTMENTS codes
    spine = ps.argmax(axis=1)
    code[dend & (spine == 1)] = COMPARTMENTS.index("spine_head")
    code[dend & (spine == 2)] = COMPARTMENTS.index("spine_neck")
    return p5, code


# ---------------------------------------------------------------- tasks

def _scratch(analysis) -> Path:
    return analysis.scratch_dir("compartments")


def result_path(analysis, cell_id: int) -> Path:
    """`tables/compartments/<cell>.npz`: node_id (N,) uint64 (0 = interpolated), proba (N, 5) float32, code (N,) uint8,
    myelin (N,) float32 (shell mean; NaN without a myelin layer), myelinated (N,) bool."""
    return analysis.tables_dir / "compartments" / f"{int(cell_id)}.npz"


def _models(params: dict):
    return tuple(cached_forest(params[k], params["model_digests"][params[k]]) for k in ("model", "spine_model"))


def predict_task(analysis, task) -> dict:
    """Features, forests and smoothing for one cell; writes its scratch result, skeleton and enriched k.zip."""
    p = task.params
    c = p["compartments"]
    axoness, spiness = _models(p)
    with np.load(_scratch(analysis) / "organelles.npz", allow_pickle=False) as z:
        organelles = unpack_organelles(z)
    graph, node_ids = cell_graph(analysis, task.cell_id, organelles)
    myelin, flags = cell_myelin(p, graph)
    X, names = features_of(graph, axoness.meta["feature_params"])
    proba, code = predict_compartments(X, names, graph, axoness, spiness, smooth_um=c["smooth_um"],
                                       spine_smooth_um=c["spine_smooth_um"], axon_nodes=flags if c["myelin_means_axon"] else None)
    buf = io.BytesIO()
    np.savez(buf, node_id=node_ids, proba=proba.astype(np.float32), code=code, myelin=myelin.astype(np.float32), myelinated=flags)
    atomic_write_bytes(result_path(analysis, task.cell_id), buf.getvalue())
    sk_dir = local_dir(analysis.layer_path("cells"))
    if sk_dir is not None:
        vs = np.asarray(analysis.voxel_size_nm)
        write_skeleton(sk_dir / SKELETON_DIR, task.cell_id, graph.positions_nm + 0.5 * vs, graph.edges,
                       np.nan_to_num(graph.radius_nm, nan=0.0), code, np.nan_to_num(myelin, nan=0.0))
    source = json.loads((_scratch(analysis) / "sources.json").read_text(encoding="utf-8")).get(str(task.cell_id))
    if source is not None:
        write_enriched(analysis, source, task.cell_id, node_ids, code, cell_type=None)
    return {"nodes": int((node_ids > 0).sum()), "dendrite": int((code == 1).sum()), "axon": int((code == 0).sum())}


def cell_myelin(p: dict, graph: CellGraph) -> tuple[np.ndarray, np.ndarray]:
    """(shell means (N,), myelinated (N,) bool) of a cell's nodes from the task's myelin layer; NaN and False without one."""
    from syconn_ng.box import Box
    from syconn_ng.compartments.myelin import node_myelin
    from syconn_ng.layers import open_layer, read_box

    n = len(graph.positions_nm)
    if not p["myelin_layer"]:
        return np.full(n, np.nan), np.zeros(n, dtype=bool)
    c = p["compartments"]
    vol = open_layer(p["myelin_layer"], fill_missing=p["missing_chunks"] == "zeros")
    vs = np.asarray(p["voxel_size_nm"], dtype=np.float64)
    return node_myelin(lambda box: read_box(vol, box)[..., 0], graph.positions_nm / vs, graph.edges, graph.radius_nm,
                       voxel_size_nm=vs, bounds=Box(*p["bounds"]), shell_nm=c["myelin_shell_nm"], threshold=c["myelin_threshold"],
                       vote_um=c["myelin_vote_um"], max_box_voxels=p["max_box_voxels"])


def write_enriched(analysis, source, cell_id: int, node_ids: np.ndarray, code: np.ndarray, cell_type: str | None) -> None:
    """`skeletons/enriched/cell_<id>.k.zip`: the cell's tree from `source` with predicted compartments (and type)."""
    from syconn_ng.io.annotation import read_annotation, write_annotation

    tree = read_annotation(source, voxel_size_nm=analysis.voxel_size_nm).tree(int(cell_id))
    names = {int(i): COMPARTMENTS[k] if k != UNKNOWN_CODE else "" for i, k in zip(node_ids, code) if i > 0}
    out = analysis.root / "skeletons" / "enriched" / f"cell_{int(cell_id)}.k.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_annotation(enriched_skeleton(tree, names, cell_type, voxel_size_nm=analysis.voxel_size_nm), out)


def unpack_organelles(z) -> dict:
    import pandas as pd

    return {kind: pd.DataFrame({"cell": z[f"{kind}_cell"], "x_nm": z[f"{kind}_pos"][:, 0], "y_nm": z[f"{kind}_pos"][:, 1],
                                "z_nm": z[f"{kind}_pos"][:, 2], "volume_nm3": z[f"{kind}_volume"], "length_nm": z[f"{kind}_length"]})
            for kind in ("mi", "vc", "sj")}


def table_task(analysis, task) -> dict:
    """`tables/compartments.csv`: the predictions of the traced nodes, in the order of `tables/nodes.csv`."""
    import pandas as pd

    nodes = pd.read_csv(analysis.tables_dir / "nodes.csv", usecols=["cell", "node"]).astype(np.uint64)
    parts = []
    for cell in np.unique(nodes["cell"].to_numpy()):
        with np.load(result_path(analysis, cell)) as z:
            keep = z["node_id"] > 0
            df = pd.DataFrame(z["proba"][keep].astype(np.float64), columns=[f"p_{c}" for c in COMPARTMENTS])
            df.insert(0, "node", z["node_id"][keep])
            df.insert(0, "cell", np.uint64(cell))
            df.insert(2, "compartment", np.asarray(COMPARTMENTS)[z["code"][keep]])
            df.insert(3, "probability", df[[f"p_{c}" for c in COMPARTMENTS]].to_numpy()[np.arange(len(df)), z["code"][keep]])
            df["myelin"] = z["myelin"][keep].astype(np.float64)
            df["myelinated"] = z["myelinated"][keep].astype(np.int64)
            parts.append(df)
    table = nodes.merge(pd.concat(parts), on=["cell", "node"], how="left", validate="one_to_one") if parts else \
        pd.DataFrame(columns=list(TABLE_COLUMNS))
    for col in [c for c in table.columns[3:] if c != "myelinated"]:
        table[col] = table[col].astype(float).round(4)
    table["myelinated"] = table["myelinated"].fillna(0).astype(np.int64)
    atomic_write_text(analysis.tables_dir / "compartments.csv", table[list(TABLE_COLUMNS)].to_csv(index=False))
    return {"nodes": len(table), **{c: int((table["compartment"] == c).sum()) for c in COMPARTMENTS}}


def skeleton_shards_task(analysis, task) -> dict:
    """The compartment skeletons as shard files past `shard_skeletons_over` cells (a pass of its own: a
    re-analysis runs `predict_task` and `table_task` for one cell and merges its skeleton when it commits)."""
    return shard_layer_skeletons(analysis.layer_path("cells"), SKELETON_DIR, over=task.params["shard_skeletons_over"])


# ---------------------------------------------------------------- the stage

class CompartmentsStage:
    """The `compartments` stage for the driver (`syconn_ng.engine.run_stage`)."""

    name = "compartments"

    def upstream(self, analysis) -> list[str]:
        return ["hulls", "mapping"] + ([] if analysis.config.oracle.myelin else ["myelin_syntype"])

    def _myelin_layer(self, analysis) -> str:
        """The myelin layer nodes are measured in ('' when there is none: no model channel, stage not run)."""
        path = analysis.input_layer("myelin")
        d = local_dir(path)
        return path if d is None or (d / "info").is_file() else ""

    def notes(self, analysis) -> dict[str, str]:
        from syconn_ng.stages.cnn import NO_MYELIN

        return {} if self._myelin_layer(analysis) else {"myelin": f"no myelin layer ({analysis.input_layer('myelin')}): {NO_MYELIN}"}

    def model_files(self, analysis) -> list[Path]:
        """The forests this stage uses (checked before a run starts; recorded in its provenance)."""
        return list(self._model_paths(analysis))

    def _model_paths(self, analysis) -> tuple[Path, Path]:
        c = analysis.config.compartments
        return (resolve_model(c.model, "compartments", analysis.root), resolve_model(c.spine_model, "spines", analysis.root))

    def params(self, analysis) -> dict:
        import hashlib

        model, spine = self._model_paths(analysis)
        digest = {str(p): hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.exists() else "missing" for p in (model, spine)}
        from syconn_ng.layers import layer_box, open_layer

        myelin = self._myelin_layer(analysis)
        bounds = layer_box(open_layer(myelin)) if myelin else None
        return {"compartments": analysis.config.section_params("compartments"), "model": str(model), "spine_model": str(spine),
                "model_digests": digest, "voxel_size_nm": list(analysis.voxel_size_nm),
                "shard_skeletons_over": analysis.config.chunking.shard_skeletons_over, "myelin_layer": myelin,
                "bounds": None if bounds is None else [list(bounds.start), list(bounds.stop)],
                "max_box_voxels": analysis.config.hulls.max_box_voxels, "missing_chunks": analysis.config.chunking.missing_chunks}

    def _cells(self, analysis) -> list[int]:
        return json.loads((analysis.scratch_dir("hulls") / "cells.json").read_text(encoding="utf-8"))

    def prepare(self, analysis, *, fresh: bool) -> None:
        if not (analysis.tables_dir / "nodes.csv").exists() or not (analysis.scratch_dir("hulls") / "cells.json").exists():
            raise InputError(analysis.tables_dir / "nodes.csv", "missing: run the 'hulls' stage first")
        model, spine = self._model_paths(analysis)
        axoness, spiness = load_forest(model), load_forest(spine)
        for forest, classes in ((axoness, AXONESS_CLASSES), (spiness, SPINE_CLASSES)):
            if not set(forest.classes) <= set(classes):
                raise InputError(forest.path, f"classes {forest.classes} are not among {list(classes)}", element="classes")
        names = features_of(CellGraph(np.zeros((2, 3)), np.array([[0, 1]]), np.ones(2), {}), axoness.meta["feature_params"])[1]
        axoness.check_features(names)
        spiness.check_features(names)
        organelles = organelle_table(analysis)
        sk_dir = local_dir(analysis.layer_path("cells"))
        if fresh:
            shutil.rmtree(_scratch(analysis), ignore_errors=True)
            shutil.rmtree(analysis.tables_dir / "compartments", ignore_errors=True)
            shutil.rmtree(analysis.root / "skeletons" / "enriched", ignore_errors=True)
            if sk_dir is not None:
                shutil.rmtree(sk_dir / SKELETON_DIR, ignore_errors=True)
        for d in (_scratch(analysis), analysis.tables_dir / "compartments"):
            d.mkdir(parents=True, exist_ok=True)
            remove_temp_files(d)
        write_task_inputs(analysis, _scratch(analysis), organelles)
        sk_info = None if sk_dir is None else sk_dir / SKELETON_DIR / "info"
        # a sharded source keeps its info (with `sharding`): cells a resumed run writes go beside the shards
        if sk_info is not None and (not sk_info.is_file() or "sharding" not in json.loads(sk_info.read_text())):
            write_skeleton_info(sk_dir / SKELETON_DIR)

    def passes(self, analysis) -> list[Pass]:
        return [Pass("predict", predict_task, self._cells(analysis)), Pass("table", table_task, [None], local=True),
                Pass("skeleton_shards", skeleton_shards_task, [None], local=True)]


def write_task_inputs(analysis, directory: Path, organelles: dict) -> None:
    """What every per-cell task reads, written once: `organelles.npz` (see `unpack_organelles`) and `sources.json`."""
    buf = io.BytesIO()
    np.savez(buf, **{f"{k}_{name}": arr for k, t in organelles.items() for name, arr in (
        ("cell", t["cell"].to_numpy(np.uint64)), ("pos", t[["x_nm", "y_nm", "z_nm"]].to_numpy()),
        ("volume", t["volume_nm3"].to_numpy()), ("length", t["length_nm"].to_numpy()))})
    atomic_write_bytes(directory / "organelles.npz", buf.getvalue())
    atomic_write_text(directory / "sources.json", json.dumps(tree_sources(analysis)))


def tree_sources(analysis) -> dict[str, str]:
    """{cell id: the skeleton file holding its tree} (for the enriched KNOSSOS files); a re-analysed cell's upload wins."""
    from syconn_ng.hulls.skeletons import input_skeleton_files, reanalysed_files
    from syconn_ng.io.annotation import read_annotation

    out = {}
    for f in input_skeleton_files(analysis.config.dataset.skeletons, analysis.root) + reanalysed_files(analysis.root):
        for tree in read_annotation(f).trees:
            out[str(tree.id)] = str(f)
    return out


STAGE = CompartmentsStage()
