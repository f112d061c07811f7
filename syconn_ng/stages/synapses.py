"""The `synapses` stage: contact sites between cells, sj objects on them as candidate synapses, a forest's
synapse probability, direction, area and type; the synapse tables and an annotation layer.

Passes:
1. `box` (per task box, with a halo): contact voxels and their connected pieces per cell pair
   (`syconn_ng.synapses.contacts`), and per sj object the voxel sums of its features
   (`syconn_ng.synapses.features.sj_box_sums`) → `scratch/synapses/<box>.npz`.
2. `classify` (driver): pieces joined across boxes into `tables/contact_sites.csv`; one candidate
   per sj on a contact with its features, forest probability, direction, type (from the syntype layer
   where there is one, else the type forest) and area →
   `tables/synapse_candidates.csv`; those with probability ≥ `min_probability` →
   `tables/synapses.csv` and the annotation layer `layers/synapses`.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np

from syconn_ng.box import Box
from syconn_ng.engine.driver import Pass
from syconn_ng.errors import InputError
from syconn_ng.layers import atomic_write_bytes, atomic_write_text, layer_box, open_layer, read_box, remove_temp_files

SYNAPSE_COLUMNS = ("id", "pre_cell", "post_cell", "x", "y", "z", "x_nm", "y_nm", "z_nm", "area_um2", "probability", "type",
                   "pre_compartment", "post_compartment", "sj_id")
SITE_COLUMNS = ("id", "cell_a", "cell_b", "voxels", "x", "y", "z", "area_um2")
TYPES = ("asymmetric", "symmetric")


def _scratch(analysis) -> Path:
    return analysis.scratch_dir("synapses")


def halo_vx(params: dict, voxel_size_nm) -> np.ndarray:
    """Voxels read around a task box: the widest contact gap and the two feature bands beside an sj."""
    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    reach = max(params["contact_dist_nm"], 2 * params["band_nm"])
    return np.ceil(reach / vs).astype(np.int64) + 1


# ---------------------------------------------------------------- pass 1: per box

def box_task(analysis, task) -> dict:
    """Contact pieces and sj feature sums of one task box."""
    from syconn_ng.synapses.contacts import contact_pieces, contact_voxels
    from syconn_ng.synapses.features import sj_box_sums

    p = task.params
    s = p["synapses"]
    vs = np.asarray(p["voxel_size_nm"], dtype=np.float64)
    halo = halo_vx(s, vs)
    outer = task.box.grow(halo)
    inner = task.box.slices(relative_to=outer.start)
    cells = read_box(open_layer(analysis.layer_path("cells")), outer)[..., 0]
    cell_a, cell_b, area = contact_voxels(cells, voxel_size_nm=vs, contact_dist_nm=s["contact_dist_nm"])
    pieces = contact_pieces(cell_a[inner], cell_b[inner], area[inner], offset_vx=task.box.start)
    sj = read_box(open_layer(analysis.layer_path("sj")), outer)[..., 0]
    raw = read_box(analysis.open_input(analysis.raw_layer), outer)[..., 0]
    prob = read_box(analysis.open_input(p["organelles"]), outer)[..., 0].astype(np.float32) / 255.0
    syntype = read_box(analysis.open_input(p["syntype"]), outer)[..., 0].astype(np.float32) / 255.0 if p["syntype"] else None
    sums = sj_box_sums(sj, cells, raw, prob, cell_a, cell_b, inner=inner, voxel_size_nm=vs, band_nm=s["band_nm"], syntype=syntype)
    on = (sj[inner] > 0) & (pieces.labels > 0)
    keys = np.stack([sj[inner][on], pieces.labels[on].astype(np.uint64)], 1)
    sp, sp_n = (np.unique(keys, axis=0, return_counts=True) if len(keys) else (np.zeros((0, 2), np.uint64), np.zeros(0, np.int64)))
    buf = io.BytesIO()
    np.savez(buf, **sums, piece_a=pieces.cell_a, piece_b=pieces.cell_b, piece_voxels=pieces.voxels, piece_area_nm2=pieces.area_nm2,
             piece_coord_sum=pieces.coord_sum, face_vx=pieces.face_vx, face_piece=pieces.face_piece,
             sjp_sj=sp[:, 0].astype(np.uint64), sjp_piece=sp[:, 1].astype(np.int64) - 1, sjp_voxels=sp_n.astype(np.int64))
    out = _scratch(analysis) / f"{task.box.name()}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.getvalue())
    return {"pieces": len(pieces.voxels), "sj": len(sums["sj_id"])}


# ---------------------------------------------------------------- pass 2: sites, candidates, synapses

def _load_boxes(analysis, boxes: list[Box]):
    """Every box's arrays, with piece indices made global."""
    parts, pieces = [], {k: [] for k in ("piece_a", "piece_b", "piece_voxels", "piece_area_nm2", "piece_coord_sum", "face_vx", "face_piece",
                                         "sjp_sj", "sjp_piece", "sjp_voxels")}
    offset = 0
    for b in boxes:
        with np.load(_scratch(analysis) / f"{b.name()}.npz") as z:
            d = {k: z[k] for k in z.files}
        parts.append(d)
        for k in pieces:
            v = d[k]
            if k in ("face_piece", "sjp_piece"):
                v = v + offset
            pieces[k].append(v)
        offset += len(d["piece_a"])
    cat = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in pieces.items()}
    for k in ("piece_coord_sum", "face_vx"):
        cat[k] = cat[k].reshape(-1, 3)
    return parts, cat


def contact_site_table(cat: dict):
    """(sites DataFrame with `SITE_COLUMNS`, site id (1-based) of every global piece); ids ordered by pair and centroid."""
    import pandas as pd

    from syconn_ng.synapses.contacts import join_pieces

    site = join_pieces(cat["piece_a"], cat["piece_b"], cat["face_vx"].astype(np.int64), cat["face_piece"].astype(np.int64)) + 1
    n = int(site.max()) if len(site) else 0
    vox = np.bincount(site, weights=cat["piece_voxels"], minlength=n + 1)[1:]
    area = np.bincount(site, weights=cat["piece_area_nm2"], minlength=n + 1)[1:]
    pair = np.zeros((n, 2), np.uint64)
    pair[site - 1, 0], pair[site - 1, 1] = cat["piece_a"], cat["piece_b"]
    df = pd.DataFrame({"id": np.arange(1, n + 1, dtype=np.uint64), "cell_a": pair[:, 0], "cell_b": pair[:, 1],
                       "voxels": vox.astype(np.int64)})
    for i, ax in enumerate("xyz"):
        df[ax] = np.round(np.bincount(site, weights=cat["piece_coord_sum"][:, i], minlength=n + 1)[1:] / np.maximum(vox, 1), 2)
    df["area_um2"] = np.round(area / 1e6, 5)
    # ids in an order that does not depend on the task boxes: by pair, then position
    order = np.lexsort((df["z"], df["y"], df["x"], df["cell_b"], df["cell_a"]))
    new_id = np.zeros(n + 1, np.int64)
    new_id[order + 1] = np.arange(1, n + 1)
    df = df.iloc[order].reset_index(drop=True)
    df["id"] = np.arange(1, n + 1, dtype=np.uint64)
    return df[list(SITE_COLUMNS)], new_id[site]


def _sj_sites(cat: dict, site: np.ndarray) -> dict[int, int]:
    """The contact site each sj overlaps most."""
    import pandas as pd

    if len(cat["sjp_sj"]) == 0:
        return {}
    df = pd.DataFrame({"sj": cat["sjp_sj"].astype(np.uint64), "site": site[cat["sjp_piece"].astype(np.int64)], "n": cat["sjp_voxels"]})
    df = df.groupby(["sj", "site"], as_index=False)["n"].sum().sort_values(["sj", "n", "site"], ascending=[True, False, True])
    return {int(s): int(t) for s, t in df.drop_duplicates("sj")[["sj", "site"]].itertuples(index=False)}


def _read_tables(analysis) -> dict:
    import pandas as pd

    tables = {}
    for kind in ("sj", "vc", "mi"):
        for prefix in ("objects", "mapping"):
            path = analysis.tables_dir / f"{prefix}_{kind}.csv"
            try:
                tables[f"{prefix}_{kind}"] = pd.read_csv(path)
            except (FileNotFoundError, pd.errors.EmptyDataError) as err:
                raise InputError(path, f"missing or empty: run the '{prefix}' stage first") from err
    return tables


def _node_table(analysis):
    """`tables/nodes.csv` with the compartment columns of `tables/compartments.csv` when that exists."""
    import pandas as pd

    nodes = pd.read_csv(analysis.tables_dir / "nodes.csv")
    comp_path = analysis.tables_dir / "compartments.csv"
    if comp_path.exists():
        comp = pd.read_csv(comp_path, usecols=lambda c: c in ("cell", "node", "compartment", "p_axon"))
        nodes = nodes.merge(comp, on=["cell", "node"], how="left")
    return nodes


def classify_task(analysis, task) -> dict:
    """Contact sites, candidates with features and probability, the synapse table and annotation layer."""
    from syconn_ng.synapses.classify import classify_candidates
    from syconn_ng.synapses.features import candidate_table, choose_pairs, concat_sums

    p = task.params
    s = p["synapses"]
    vs = np.asarray(p["voxel_size_nm"], dtype=np.float64)
    boxes = [Box(*b) for b in p["boxes"]]
    parts, cat = _load_boxes(analysis, boxes)
    sites, site = contact_site_table(cat)
    atomic_write_text(analysis.tables_dir / "contact_sites.csv", sites.to_csv(index=False))
    tables = _read_tables(analysis)
    sums = concat_sums(parts)
    pairs = choose_pairs(sums["overlap"], tables["mapping_sj"])
    cand = candidate_table(sums, pairs, tables, voxel_size_nm=vs, vc_dist_nm=s["vc_dist_nm"], mi_dist_nm=s["mi_dist_nm"],
                           cleft_thickness_nm=s["cleft_thickness_nm"], sj_site=_sj_sites(cat, site),
                           site_area_um2=dict(zip(sites["id"].astype(int), sites["area_um2"].astype(float))))
    cand = classify_candidates(cand, _node_table(analysis), voxel_size_nm=vs, params=s, root=analysis.root)
    atomic_write_text(analysis.tables_dir / "synapse_candidates.csv", cand.to_csv(index=False, float_format="%.6g"))
    syn = synapse_table(cand, vs, s["min_probability"])
    atomic_write_text(analysis.tables_dir / "synapses.csv", syn.to_csv(index=False))
    write_layer(analysis, syn, vs, shard_over=p["shard_annotations_over"])
    return {"contact_sites": len(sites), "candidates": len(cand), "synapses": len(syn)}


def synapse_table(cand, voxel_size_nm, min_probability: float):
    """The rows of `tables/synapses.csv` (`SYNAPSE_COLUMNS`): candidates with probability ≥ `min_probability`."""
    import pandas as pd

    keep = cand[cand["probability"] >= min_probability] if len(cand) else cand
    df = pd.DataFrame({"id": keep["sj_id"].astype(np.uint64), "pre_cell": keep["pre_cell"].astype(np.uint64),
                       "post_cell": keep["post_cell"].astype(np.uint64)})
    for i, ax in enumerate("xyz"):
        df[ax] = np.round(keep[ax].astype(float), 2)
    for i, ax in enumerate("xyz"):
        df[f"{ax}_nm"] = np.round(keep[ax].astype(float) * voxel_size_nm[i], 1)
    df["area_um2"] = np.round(keep["area_um2"].astype(float), 5)
    df["probability"] = np.round(keep["probability"].astype(float), 4)
    df["type"] = keep["type"].astype(str)
    df["pre_compartment"] = keep["compartment_pre"].fillna("").astype(str)
    df["post_compartment"] = keep["compartment_post"].fillna("").astype(str)
    df["sj_id"] = keep["sj_id"].astype(np.uint64)
    return df[list(SYNAPSE_COLUMNS)].reset_index(drop=True)


def write_layer(analysis, syn, voxel_size_nm, *, shard_over: int) -> dict:
    """The annotation layer `layers/synapses` of the synapse table `syn` (sharded past `shard_over` synapses)."""
    from syconn_ng.layers import local_dir
    from syconn_ng.sharding import use_sharding

    return write_synapse_layer(local_dir(analysis.layer_path("synapses")), syn, voxel_size_nm,
                               sharded=use_sharding(len(syn), shard_over))


def write_synapse_layer(path, syn, voxel_size_nm, *, sharded: bool = False) -> dict:
    """A precomputed annotation layer at `path` of the synapse table `syn`: points with area, probability and
    type (uint8 enum) and the pre/post cell relationships (also what `syconn-ng export` writes); `sharded`:
    indices as shard files (`syconn_ng.sharding.use_sharding` decides by size)."""
    from syconn_ng.annotations import write_annotations

    return write_annotations(
        path, ids=syn["id"].to_numpy(np.uint64), points_vx=syn[["x", "y", "z"]].to_numpy(np.float64), voxel_size_nm=voxel_size_nm,
        properties={"area": syn["area_um2"].to_numpy(np.float32), "probability": syn["probability"].to_numpy(np.float32),
                    "type": (syn["type"] == "symmetric").to_numpy(np.uint8)},
        relationships={"pre_cell": syn["pre_cell"].to_numpy(np.uint64), "post_cell": syn["post_cell"].to_numpy(np.uint64)},
        enum_labels={"type": {0: "asymmetric", 1: "symmetric"}}, sharded=sharded)


def _model_digest(value: str, name: str, root) -> str:
    """sha256 of the model file a config value names (so a retrained model re-runs the stage); '' for a rule."""
    import hashlib

    from syconn_ng.compartments.forest import resolve_model

    if value.strip().lower() in ("none", "threshold"):
        return ""
    path = resolve_model(value, name, root)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"


def syntype_layer(analysis) -> str:
    """`layers/syntype` when the myelin_syntype stage wrote it, else '' (types then come from the type forest)."""
    from syconn_ng.layers import local_dir

    path = analysis.layer_path("syntype")
    d = local_dir(path)
    return path if d is None or (d / "info").is_file() else ""


def syntype_threshold(layer: str, configured: float) -> float:
    """The symmetric-fraction threshold of the fraction rule: `[synapses] symmetric_fraction` when set (> 0), else the
    one calibrated with the model that wrote the syntype layer (its info), else 0.5."""
    if configured > 0 or not layer:
        return configured if configured > 0 else 0.5
    from syconn_ng.layers import open_layer

    return float(open_layer(layer).info.get("syconn_ng", {}).get("symmetric_fraction", 0.5))


class SynapsesStage:
    """The `synapses` stage for the driver (`syconn_ng.engine.run_stage`)."""

    def model_files(self, analysis) -> list[Path]:
        """The synapse and type forests this stage uses ('none' / 'threshold' rules use none); checked before a
        run starts and recorded in its provenance."""
        from syconn_ng.compartments.forest import resolve_model

        s = analysis.config.synapses
        return [resolve_model(value, name, analysis.root) for value, name in ((s.model, "synapses"), (s.type_model, "synapse_types"))
                if value.strip().lower() not in ("none", "threshold")]

    name = "synapses"

    def _cells(self, analysis):
        path = analysis.layer_path("cells")
        try:
            return open_layer(path)
        except InputError as err:
            raise InputError(path, "no cells layer: run the 'hulls' stage first", element="info") from err

    def upstream(self, analysis) -> list[str]:
        return ["mapping", "compartments", "myelin_syntype"]

    def notes(self, analysis) -> dict[str, str]:
        if syntype_layer(analysis):
            return {}
        from syconn_ng.stages.cnn import NO_SYNTYPE

        return {"syntype": f"no syntype layer ({analysis.layer_path('syntype')}): {NO_SYNTYPE}"}

    def _boxes(self, analysis) -> list[Box]:
        return layer_box(self._cells(analysis)).chunks(analysis.config.chunking.task_size)

    def params(self, analysis) -> dict:
        s = analysis.config.section_params("synapses")
        s["symmetric_fraction"] = syntype_threshold(syntype_layer(analysis), s["symmetric_fraction"])
        return {
            "synapses": s,
            "voxel_size_nm": list(analysis.voxel_size_nm),
            "organelles": analysis.input_layer("organelles"),
            "syntype": syntype_layer(analysis),
            "models": {k: _model_digest(s[k], name, analysis.root) for k, name in (("model", "synapses"), ("type_model", "synapse_types"))},
            "boxes": [[list(b.start), list(b.stop)] for b in self._boxes(analysis)],
            "shard_annotations_over": analysis.config.chunking.shard_annotations_over,
        }

    def prepare(self, analysis, *, fresh: bool) -> None:
        bounds = layer_box(self._cells(analysis))
        for name in ("sj",):
            path = analysis.layer_path(name)
            try:
                vol = open_layer(path)
            except InputError as err:
                raise InputError(path, "no sj objects layer: run the 'objects' stage first", element="info") from err
            if layer_box(vol) != bounds:
                raise InputError(path, f"bounds {layer_box(vol)} differ from the cells layer's {bounds}", element="info")
        for path, what in ((analysis.input_layer("organelles"), "no organelle probability layer: run the 'organelles' stage or set [oracle] organelles"),
                           (analysis.raw_layer, "the raw EM layer cannot be opened")):
            try:
                vol = analysis.open_input(path)
            except InputError as err:
                raise InputError(path, what, element="info") from err
            if layer_box(vol) != bounds:
                raise InputError(path, f"bounds {layer_box(vol)} differ from the cells layer's {bounds}", element="info")
        _read_tables(analysis)
        from syconn_ng.synapses.classify import load_synapse_forest

        s = analysis.config.synapses
        load_synapse_forest(s.model, "synapses", analysis.root)  # a missing or foreign model fails here, before any work
        load_synapse_forest(s.type_model, "synapse_types", analysis.root, rule="threshold")
        if not (analysis.tables_dir / "nodes.csv").exists():
            raise InputError(analysis.tables_dir / "nodes.csv", "missing: run the 'hulls' stage first")
        if fresh:
            shutil.rmtree(_scratch(analysis), ignore_errors=True)
            for name in ("contact_sites", "synapse_candidates", "synapses"):
                (analysis.tables_dir / f"{name}.csv").unlink(missing_ok=True)
        if _scratch(analysis).is_dir():
            remove_temp_files(_scratch(analysis))

    def passes(self, analysis) -> list[Pass]:
        return [
            Pass("box", box_task, self._boxes(analysis)),
            Pass("classify", classify_task, [None], local=True),
        ]


STAGE = SynapsesStage()
