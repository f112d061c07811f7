"""`syconn-ng export`: an analysis as a self-contained folder (or bucket) of precomputed layers, tables,
a Neuroglancer `state.json` and a README, servable by any static web server.

Layout (others rely on it): `state.json`, `cells/` (segmentation + `mesh/` + `skeletons/` with the
`compartment` vertex attribute + `segment_properties/`; sharded exports add `mesh_multires/`), `synapses/` (annotations), `mi/ vc/ sj/`,
optionally `raw/`, `cells.csv synapses.csv matrix.csv matrix_counts.csv`, `provenance/<stage>.json`,
`export.json` (what was exported and what was missing) and `README.md`.

Everything is built in a local staging folder first; a local DEST then takes its place with one rename
(a killed export leaves DEST as it was), a remote DEST (`gs://`, `s3://`, `mem://`, ...) receives the
files through cloud-files. No file is written with a `.gz` name: on object stores small files can be
gzip'd with Content-Encoding metadata (`compress=True`), never shard files (Range requests).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from syconn_ng.errors import InputError
from syconn_ng.layers import local_dir, to_cloudpath
from syconn_ng.sharding import skeleton_source
from syconn_ng.multires_mesh import MULTIRES_DIR, build_from_legacy
from syconn_ng.stages.synapses import write_synapse_layer

LAYERS = ("raw", "barrier", "organelles", "myelin", "syntype", "mi", "vc", "sj", "cells", "synapses")
DEFAULT_LAYERS = ("raw", "myelin", "mi", "vc", "sj", "cells", "synapses")
TABLES = ("cells.csv", "synapses.csv", "matrix.csv", "matrix_counts.csv")
RAW_MODES = ("auto", "copy", "reference", "none")
STAGE_OF = {"barrier": "barrier", "organelles": "organelles", "myelin": "myelin_syntype", "syntype": "myelin_syntype", "mi": "objects", "vc": "objects", "sj": "objects",
            "cells": "hulls", "synapses": "synapses", "cells.csv": "celltypes", "synapses.csv": "synapses",
            "matrix.csv": "connectome", "matrix_counts.csv": "connectome"}
COMPARTMENT_SKELETONS = "skeletons_compartments"
SELECT_ALL_UP_TO = 500  # state.json shows every exported cell's mesh when there are at most this many
LOCAL_URL_PREFIX = "http://127.0.0.1:8000"  # state.json of a local export without --url-prefix: `serve DEST on port 8000`
CITATION = ("Dorkenwald S, Schubert PJ, Killinger MF, Urban G, Mikula S, Svara F, Kornfeld J (2017). Automated synaptic "
            "connectivity inference for volume electron microscopy. Nature Methods 14:435-442. doi:10.1038/nmeth.4206")


@dataclass
class ExportSummary:
    """What an export wrote: per layer {files, bytes, ...}, tables, cells and synapses exported, what was missing."""

    dest: str
    layers: dict = field(default_factory=dict)
    tables: list = field(default_factory=list)
    cells: int = 0
    synapses: int = 0
    missing: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# ---------------------------------------------------------------- choosing what to export

def _is_remote(dest: str) -> bool:
    return "://" in dest and not dest.startswith("file://")


def _read_table(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def select_cells(cells: pd.DataFrame | None, traced_ids: np.ndarray, *, ids=(), types=(), source: Path) -> np.ndarray | None:
    """The cell ids to export: `ids` ∪ cells whose type is in `types`; None = every cell (no filter given).

    An id that is not a traced cell, or a type no cell has, is an InputError naming `source`.
    """
    ids, types = [int(i) for i in ids], [str(t) for t in types]
    if not ids and not types:
        return None
    known = set(int(i) for i in traced_ids)
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise InputError(source, f"cell {unknown[0]} is not among the {len(known)} traced cells"
                                 + (f" (and {len(unknown) - 1} more unknown ids)" if len(unknown) > 1 else ""), element="--cells")
    chosen = set(ids)
    if types:
        if cells is None or "type" not in cells:
            raise InputError(source, "cell types were asked for but there is no cell type table (run the 'celltypes' stage)", element="--types")
        have = set(cells["type"].dropna().astype(str))
        for t in types:
            if t not in have:
                raise InputError(source, f"no cell has type {t!r} (types present: {', '.join(sorted(have)) or 'none'})", element="--types")
        chosen |= set(int(i) for i in cells.loc[cells["type"].astype(str).isin(types), "id"])
    return np.array(sorted(chosen), dtype=np.uint64)


def filter_synapse_table(syn: pd.DataFrame, *, cells: np.ndarray | None, min_probability: float | None) -> pd.DataFrame:
    """Synapses with probability ≥ `min_probability` (None: all rows) that touch a selected cell (pre or post;
    `cells` None = every cell)."""
    keep = np.ones(len(syn), dtype=bool)
    if min_probability is not None:
        keep &= syn["probability"].to_numpy(float) >= float(min_probability)
    if cells is not None:
        keep &= syn["pre_cell"].isin(cells.astype(np.int64)).to_numpy() | syn["post_cell"].isin(cells.astype(np.int64)).to_numpy()
    return syn[keep].reset_index(drop=True)


def reviewed_tables(analysis) -> tuple[pd.DataFrame | None, pd.DataFrame | None, str]:
    """(the synapses a reviewer accepted, flips applied; the cell table with reviewed types) from `review.sqlite`,
    or (None, None, why) without reviews."""
    path = analysis.root / "review.sqlite"
    if not path.is_file():
        return None, None, f"{path.name} does not exist: no synapse has been reviewed, --reviewed-only ignored"
    from syconn_ng.serve.review import ReviewedAnalysis

    reviewed = ReviewedAnalysis(analysis, store_path=path)
    try:
        syn = reviewed.reviewed_synapses()
        return syn[syn["status"] == "accepted"].reset_index(drop=True), reviewed.reviewed_cells(), ""
    finally:
        reviewed.store.close()


# ---------------------------------------------------------------- writing the pieces (into the staging folder)

def copy_meshes(src: Path, dst: Path, ids: np.ndarray | None) -> int:
    """Legacy meshes (`<id>:0` manifest + fragments) of `ids` (None = all) and the mesh `info`; returns the count."""
    dst.mkdir(parents=True, exist_ok=True)
    info = src / "info"
    dst_info = json.loads(info.read_text()) if info.is_file() else {"@type": "neuroglancer_legacy_mesh"}
    (dst / "info").write_text(json.dumps(dst_info) + "\n")
    wanted = None if ids is None else {str(int(i)) for i in ids}
    n = 0
    for manifest in sorted(src.glob("*:0")):
        cell = manifest.name.split(":")[0]
        if wanted is not None and cell not in wanted:
            continue
        shutil.copy2(manifest, dst / manifest.name)
        for fragment in json.loads(manifest.read_text())["fragments"]:
            shutil.copy2(src / fragment, dst / fragment)
        n += 1
    return n


def float32_attributes(data: bytes, attributes: list[dict]) -> bytes:
    """A precomputed skeleton (spec layout) with every vertex attribute re-encoded as float32.

    Neuroglancer's client refuses 8- and 16-bit skeleton attributes ("Data type not supported by WebGL:
    UINT8") and then drops the layer's skeletons; float32 holds the small codes exactly.
    """
    n, m = (int(v) for v in np.frombuffer(data[:8], "<u4"))
    out, pos = [data[:8 + 12 * n + 8 * m]], 8 + 12 * n + 8 * m
    for a in attributes:
        dt = np.dtype(a["data_type"]).newbyteorder("<")
        count = n * int(a.get("num_components", 1))
        values = np.frombuffer(data, dt, count, pos)
        pos += count * dt.itemsize
        out.append(values.astype("<f4").tobytes())
    return b"".join(out)


def copy_skeletons(cells_layer: Path, dst: Path, ids: np.ndarray | None) -> tuple[int, str]:
    """Skeletons of `ids` (None = all): the compartments stage's (with the `compartment` vertex attribute) when
    present, else the hulls stage's; vertex attributes as float32 (`float32_attributes`). Returns (count, which source)."""
    src = cells_layer / COMPARTMENT_SKELETONS
    which = "compartments"
    if not (src / "info").is_file():
        src, which = cells_layer / "skeletons", "hulls (no compartment attribute: the compartments stage has not run)"
    dst.mkdir(parents=True, exist_ok=True)
    info = json.loads((src / "info").read_text())
    if info.get("spatial_index", 0) is None:
        info.pop("spatial_index")
    info.pop("sharding", None)  # written one file per cell here; `--sharded` shards the copy
    attributes = info.get("vertex_attributes", [])
    info["vertex_attributes"] = [{**a, "data_type": "float32"} for a in attributes]
    (dst / "info").write_text(json.dumps(info, indent=1) + "\n")
    wanted = None if ids is None else {int(i) for i in ids}
    n = 0
    for cell, data in sorted(skeleton_source(src).items()):  # a sharded source's truncated shard fails here, named
        if wanted is None or cell in wanted:
            (dst / str(cell)).write_bytes(float32_attributes(data, attributes))
            n += 1
    return n, which


def mapped_objects(mapping_csv: Path, cells: np.ndarray) -> np.ndarray:
    """Ids of the organelles `mapping_<kind>.csv` (`object,cell,fraction`) assigns to one of `cells`."""
    m = pd.read_csv(mapping_csv)
    return np.unique(m.loc[m["cell"].isin(cells.astype(np.int64)), "object"].to_numpy(np.uint64))


def _dir_stats(path: Path) -> dict:
    files = [p for p in path.rglob("*") if p.is_file()]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def _url_of(cloudpath: str) -> str:
    """A Neuroglancer source URL for a CloudVolume path (gs://, s3://, http(s):// work in the browser)."""
    return "precomputed://" + cloudpath


# ---------------------------------------------------------------- the export

def export_analysis(analysis_dir, dest, *, layers=None, cells=(), types=(), min_probability: float | None = None,
                    reviewed_only: bool = False, sharded: bool = False, raw: str = "auto", url_prefix: str | None = None,
                    overwrite: bool = False, compress: bool = False, echo=None) -> ExportSummary:
    """Export `analysis_dir` to `dest` (a local folder or any cloud-files path); see the module docstring.

    layers: names from `LAYERS` (default `DEFAULT_LAYERS`, those that exist); cells / types: restrict to
    these cell ids / cell types (the segmentation keeps only their voxels, meshes, skeletons, properties;
    synapses touching one of them; organelles mapped to one of them); min_probability: drop weaker synapses;
    reviewed_only: only synapses a reviewer accepted (`review.sqlite`); sharded: volumes, skeletons and
    annotation indices as shard files (synapses and skeletons are sharded anyway past `[chunking]
    shard_annotations_over` synapses / `shard_skeletons_over` cells); raw: auto (copy a local raw layer, reference a remote one) | copy |
    reference | none; url_prefix: where DEST will be served (sources in state.json); overwrite: replace a
    non-empty DEST; compress: gzip small files with Content-Encoding (object stores only).
    """
    from syconn_ng.analysis import Analysis

    t0 = time.perf_counter()
    say = echo or (lambda _msg: None)
    analysis = Analysis.open(analysis_dir)
    dest_s = os.fspath(dest)
    remote = _is_remote(dest_s)
    if raw not in RAW_MODES:
        raise InputError(dest_s, f"--raw must be one of {', '.join(RAW_MODES)}, got {raw!r}", element="--raw")
    wanted = list(DEFAULT_LAYERS if layers is None else layers)
    for name in wanted:
        if name not in LAYERS:
            raise InputError(analysis.root, f"unknown layer {name!r} (one of {', '.join(LAYERS)})", element="--layers")
    _check_dest(dest_s, remote, overwrite)
    summary = ExportSummary(dest=dest_s)

    tables = analysis.tables_dir
    cells_table = _read_table(tables / "cells.csv")
    syn_all = _read_table(tables / "synapses.csv")
    base = syn_all
    if reviewed_only and syn_all is not None:
        reviewed, reviewed_cells, why = reviewed_tables(analysis)
        if reviewed is None:
            summary.notes.append(why)
        else:
            base = reviewed[list(syn_all.columns)]
            if cells_table is not None:
                cells_table = reviewed_cells[list(cells_table.columns)]  # the reviewers' cell types
    nodes = _read_table(tables / "nodes.csv")
    traced = np.unique(np.concatenate([
        cells_table["id"].to_numpy(np.uint64) if cells_table is not None else np.zeros(0, np.uint64),
        nodes["cell"].to_numpy(np.uint64) if nodes is not None else np.zeros(0, np.uint64)]))
    selected = select_cells(cells_table, traced, ids=cells, types=types, source=tables / ("cells.csv" if cells_table is not None else "nodes.csv"))
    exported_cells = traced if selected is None else selected
    summary.cells = int(len(exported_cells))
    syn = None if base is None else filter_synapse_table(base, cells=selected, min_probability=min_probability)
    summary.synapses = 0 if syn is None else len(syn)
    unchanged_synapses = syn is not None and syn.equals(syn_all)
    unchanged_cells = selected is None and cells_table is not None and cells_table.equals(_read_table(tables / "cells.csv"))

    local = None if remote else local_dir(to_cloudpath(dest_s)).resolve()
    # staged beside a local DEST (the final rename stays on one file system), in the temp folder for a remote one
    staging_parent = local.parent if local is not None else Path(tempfile.gettempdir())
    staging_parent.mkdir(parents=True, exist_ok=True)
    if local is not None:
        for leftover in staging_parent.glob(f".{local.name}.tmp-*"):  # from a killed export to the same DEST
            shutil.rmtree(leftover, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{local.name if local else 'export'}.tmp-", dir=staging_parent))
    try:
        vs = analysis.voxel_size_nm
        raw_url = _export_layers(analysis, stage, wanted, selected, syn, cells_table, sharded, raw, summary, say)
        _export_tables(analysis, stage, selected, syn, unchanged_cells, unchanged_synapses, cells_table, summary)
        _export_provenance(analysis, stage)
        prefix = (url_prefix or (dest_s if remote else LOCAL_URL_PREFIX)).rstrip("/")
        _write_state(stage, prefix, raw_url, exported_cells, vs, analysis)
        (stage / "README.md").write_text(readme_text(analysis, summary, prefix=prefix, sharded=sharded, options={
            "layers": wanted, "cells": [int(c) for c in cells], "types": list(types), "min_probability": min_probability,
            "reviewed_only": reviewed_only, "sharded": sharded, "raw": raw}))
        summary.seconds = round(time.perf_counter() - t0, 3)
        stats = _dir_stats(stage)
        summary.files, summary.bytes = stats["files"] + 1, stats["bytes"]
        (stage / "export.json").write_text(json.dumps(summary.as_dict(), indent=1, default=str) + "\n")
        if remote:
            _upload(stage, dest_s, overwrite=overwrite, compress=compress)
            shutil.rmtree(stage)
        else:
            _swap_in(stage, local)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary


def _check_dest(dest: str, remote: bool, overwrite: bool) -> None:
    """Refuse a DEST that holds anything unless `overwrite`."""
    if remote:
        from cloudfiles import CloudFiles

        first = next(iter(CloudFiles(dest).list()), None)
        if first is not None and not overwrite:
            raise InputError(dest, f"is not empty (it holds {first!r}, ...): pass --overwrite to replace it")
        return
    path = Path(local_dir(to_cloudpath(dest)))
    if path.exists() and not path.is_dir():
        raise InputError(path, "exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise InputError(path, "is not empty: pass --overwrite to replace it")


def _export_layers(analysis, stage: Path, wanted, selected, syn, cells_table, sharded, raw, summary, say) -> str | None:
    """Write every wanted layer that exists into `stage`; returns the raw EM's source URL for the state, if any."""
    from syconn_ng.sharding import shard_skeleton_source, use_sharding
    from syconn_ng.export.volumes import copy_volume
    from syconn_ng.segment_properties import DIRECTORY, write_segment_properties

    raw_url = None
    for name in wanted:
        if name == "raw":
            raw_url = _export_raw(analysis, stage, raw, sharded, summary, say)
            continue
        src = local_dir(analysis.layer_path(name))
        if name == "synapses":
            if syn is None:
                summary.missing.append(f"synapses: tables/synapses.csv missing (run the '{STAGE_OF[name]}' stage)")
                continue
            say(f"synapses: {len(syn)} annotations")
            write_synapse_layer(stage / "synapses", syn, analysis.voxel_size_nm,
                                sharded=sharded or use_sharding(len(syn), analysis.config.chunking.shard_annotations_over))
            summary.layers[name] = {**_dir_stats(stage / "synapses"), "annotations": len(syn)}
            continue
        if not (src / "info").is_file():
            summary.missing.append(f"{name}: layers/{name} missing (run the '{STAGE_OF[name]}' stage)")
            continue
        keep = None
        if selected is not None and name == "cells":
            keep = selected
        elif selected is not None and name in ("mi", "vc", "sj"):
            mapping = analysis.tables_dir / f"mapping_{name}.csv"
            if mapping.is_file():
                keep = mapped_objects(mapping, selected)
            else:
                summary.notes.append(f"{name}: no tables/mapping_{name}.csv, so every object is exported")
        say(f"{name}: copying" + (f" ({len(keep)} ids kept)" if keep is not None else "") + (" sharded" if sharded else ""))
        copy_volume(to_cloudpath(src), stage / name, keep_ids=keep, sharded=sharded)
        entry: dict = {}
        if name == "cells":
            info = json.loads((stage / "cells" / "info").read_text())
            ids = None if selected is None else selected
            if (src / "mesh").is_dir():
                entry["meshes"] = copy_meshes(src / "mesh", stage / "cells" / "mesh", ids)
                info["mesh"] = "mesh"
                if sharded:  # the exported cells' meshes again as one sharded multi-resolution source, which the state uses
                    built = build_from_legacy(stage / "cells" / "mesh", stage / "cells" / MULTIRES_DIR)
                    entry["multires_meshes"] = built["cells"]
                    info["mesh"] = MULTIRES_DIR
            if (src / COMPARTMENT_SKELETONS / "info").is_file() or (src / "skeletons" / "info").is_file():
                entry["skeletons"], which = copy_skeletons(src, stage / "cells" / "skeletons", ids)
                if not which.startswith("compartments"):
                    summary.notes.append(f"cells: skeletons from {which}")
                shard_skeleton_source(stage / "cells" / "skeletons",
                                      over=0 if sharded else analysis.config.chunking.shard_skeletons_over)
                info["skeletons"] = "skeletons"
            if cells_table is not None:
                rows = cells_table if selected is None else cells_table[cells_table["id"].isin(selected.astype(np.int64))]
                write_segment_properties(stage / "cells" / DIRECTORY, rows)
                info["segment_properties"] = DIRECTORY
                entry["segment_properties"] = len(rows)
            else:
                summary.missing.append("cells: segment properties need tables/cells.csv (run the 'celltypes' stage)")
            (stage / "cells" / "info").write_text(json.dumps(info, indent=1) + "\n")
        summary.layers[name] = {**_dir_stats(stage / name), **entry}
    return raw_url


def _export_raw(analysis, stage: Path, mode: str, sharded: bool, summary, say) -> str | None:
    from syconn_ng.export.volumes import copy_volume

    path = analysis.raw_layer
    src = local_dir(path)
    if mode == "none":
        return None
    if src is not None and not (src / "info").is_file():
        summary.missing.append(f"raw: {path} has no info (the [dataset] raw layer is not there)")
        return None
    if mode == "auto":
        mode = "copy" if src is not None else "reference"
    if mode == "reference":
        if src is not None:
            summary.notes.append(f"raw: referenced at {path}, which a browser elsewhere cannot read (use --raw copy to share it)")
        summary.layers["raw"] = {"reference": path}
        return _url_of(path)
    say("raw: copying" + (" sharded" if sharded else ""))
    copy_volume(path, stage / "raw", sharded=sharded)
    summary.layers["raw"] = _dir_stats(stage / "raw")
    return "raw"


def _export_tables(analysis, stage: Path, selected, syn, unchanged_cells, unchanged_synapses, cells_table, summary) -> None:
    """cells.csv (the exported cells), synapses.csv (the exported synapses) and the matrices — copied when the
    synapse set is the analysis', else recomputed from the exported synapses with the `[connectome]` filters."""
    from syconn_ng.connectome.matrix import build_connectome, matrix_to_csv

    tables = analysis.tables_dir
    if cells_table is not None:
        rows = cells_table if selected is None else cells_table[cells_table["id"].isin(selected.astype(np.int64))]
        if unchanged_cells:
            shutil.copy2(tables / "cells.csv", stage / "cells.csv")
        else:
            rows.to_csv(stage / "cells.csv", index=False)
        summary.tables.append("cells.csv")
    else:
        summary.missing.append("cells.csv: tables/cells.csv missing (run the 'celltypes' stage)")
    if syn is None:
        summary.missing.append("synapses.csv: tables/synapses.csv missing (run the 'synapses' stage)")
        return
    if unchanged_synapses:
        shutil.copy2(tables / "synapses.csv", stage / "synapses.csv")
    else:
        syn.to_csv(stage / "synapses.csv", index=False)
    summary.tables.append("synapses.csv")
    if unchanged_synapses and (tables / "matrix.csv").is_file():
        for name in ("matrix.csv", "matrix_counts.csv"):
            if (tables / name).is_file():
                shutil.copy2(tables / name, stage / name)
                summary.tables.append(name)
        return
    if cells_table is None:
        summary.missing.append("matrix.csv: needs tables/cells.csv for the cell types (run the 'celltypes' stage)")
        return
    cfg = analysis.config.connectome
    result = build_connectome(syn, cells_table, min_probability=cfg.min_probability, axo_dendritic_only=cfg.axo_dendritic_only,
                              synapse_type=cfg.synapse_type, type_order=cfg.type_order)
    (stage / "matrix.csv").write_text(matrix_to_csv(result["area"]))
    (stage / "matrix_counts.csv").write_text(matrix_to_csv(result["count"], decimals=None))
    summary.tables += ["matrix.csv", "matrix_counts.csv"]
    if not (tables / "matrix.csv").is_file():
        summary.notes.append("matrix.csv: computed by the export (the 'connectome' stage has not run)")


def _export_provenance(analysis, stage: Path) -> None:
    out = stage / "provenance"
    for f in sorted(analysis.state_dir.glob("*/provenance.json")):
        out.mkdir(exist_ok=True)
        shutil.copy2(f, out / f"{f.parent.name}.json")


def _write_state(stage: Path, prefix: str, raw_url: str | None, cells: np.ndarray, voxel_size_nm, analysis) -> None:
    from syconn_ng.viewer_state import layer_specs, viewer_state

    def source_url(name: str) -> str:
        if name == "raw" and raw_url is not None and raw_url != "raw":
            return raw_url
        return f"precomputed://{prefix}/{name}"

    names = [n for n in LAYERS if (stage / n / "info").is_file() or (n == "raw" and raw_url is not None)]
    layers = layer_specs(stage, source_url, names=names)
    centre, size = _extent_vx(stage, analysis)
    selected = cells if len(cells) <= SELECT_ALL_UP_TO else ()
    # 2D panels fit the volume's x-y extent into ~400 pixels; the 3D panel shows the whole volume
    state = viewer_state(layers, position_vx=centre, voxel_size_nm=voxel_size_nm, selected=selected,
                         cross_section_scale=max(max(size[:2]) / 400.0, 0.05), projection_scale=2.0 * max(size))
    (stage / "state.json").write_text(json.dumps(state, indent=1) + "\n")


def _extent_vx(stage: Path, analysis) -> tuple[list[float], list[int]]:
    """Middle (0-based voxels) and size of the exported volume (the first exported volume layer, else the raw EM)."""
    for name in ("cells", "raw", "mi", "vc", "sj"):
        if (stage / name / "info").is_file():
            scale = json.loads((stage / name / "info").read_text())["scales"][0]
            offset, size = scale.get("voxel_offset", (0, 0, 0)), scale["size"]
            return [float(o + s // 2) for o, s in zip(offset, size)], [int(s) for s in size]
    from syconn_ng.layers import layer_box, open_layer

    box = layer_box(open_layer(analysis.raw_layer))
    return [float((a + b) // 2) for a, b in zip(box.start, box.stop)], list(box.shape)


def _swap_in(stage: Path, dest: Path) -> None:
    """Replace `dest` by the finished `stage` folder: one rename, the old contents removed afterwards."""
    dest = dest.resolve()
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        os.replace(dest, old)
    os.replace(stage, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _upload(stage: Path, dest: str, *, overwrite: bool, compress: bool) -> None:
    """Upload the staging folder to a cloud-files path; stale objects of an overwritten DEST are deleted."""
    from cloudfiles import CloudFiles

    cf = CloudFiles(dest)
    stale = set(cf.list()) if overwrite else set()
    gzip_ok = compress and dest.startswith(("gs://", "s3://"))
    files = [p for p in stage.rglob("*") if p.is_file()]
    for p in files:
        rel = p.relative_to(stage).as_posix()
        stale.discard(rel)
        small = not p.name.endswith(".shard")
        cf.put(rel, p.read_bytes(), compress="gzip" if gzip_ok and small else None,
               content_type="application/json" if p.name in ("info", "state.json", "export.json") else None)
    if stale:
        cf.delete(sorted(stale))


def readme_text(analysis, summary: ExportSummary, *, prefix: str, sharded: bool, options: dict) -> str:
    """README.md of an export: what it holds, how to open it, provenance, citation."""
    from syconn_ng.provenance import code_version

    version = code_version()
    lines = [
        "# SyConn-ng export", "",
        f"Exported {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from `{analysis.root}` by syconn-ng "
        f"{version['package']}" + (f" ({version['git']})" if version.get("git") else "") + ".", "",
        f"{summary.cells} cells, {summary.synapses} synapses; voxel size {list(analysis.voxel_size_nm)} nm.", "",
        "## Open it", "",
        f"The sources in `state.json` point at `{prefix}`. Serve this folder there with CORS and HTTP Range "
        "(any static server that honours both), open Neuroglancer and load the state "
        f"(`#!{prefix}/state.json` after the client's URL, or paste the JSON). To serve it somewhere else, run "
        "`syconn-ng export` again with `--url-prefix URL`. Offline, the `neuroglancer` Python package's viewer "
        "is a client:", "",
        "```python", "import json, neuroglancer", "viewer = neuroglancer.Viewer()",
        "viewer.set_state(neuroglancer.ViewerState(json.load(open('state.json'))))",
        "print(viewer)  # open this URL in a browser", "```", "",
        "## Contents", "",
        "| path | what |", "|---|---|",
    ]
    what = {"raw": "raw EM (precomputed image)", "barrier": "membrane-barrier probability (image)",
            "organelles": "organelle probabilities sj, vc, mi (3-channel image)",
            "myelin": "myelin probability (image)", "syntype": "probability that a junction voxel is symmetric (image; read it on sj voxels)",
            "mi": "mitochondria (segmentation)", "vc": "vesicle clouds (segmentation)", "sj": "synaptic junctions (segmentation)",
            "cells": "cells (segmentation; `mesh/`, `skeletons/` with a `compartment` vertex attribute 0 axon, 1 dendrite, "
                     "2 soma, 3 spine head, 4 spine neck and a `myelin` attribute 0-1; `segment_properties/` with cell type, "
                     "sign and statistics)",
            "synapses": "synapses (precomputed annotations: area, probability, type; pre_cell / post_cell relationships; "
                        "multi-level spatial index)"}
    for name, stats in summary.layers.items():
        where = f"`{name}/`" if "reference" not in stats else f"referenced: `{stats['reference']}`"
        size = f", {stats['files']} files, {stats['bytes'] / 1e6:.2f} MB" if "files" in stats else ""
        lines.append(f"| {where} | {what.get(name, name)}{size} |")
    for t in summary.tables:
        lines.append(f"| `{t}` | the analysis table `tables/{t}` (same columns){' for the exported cells/synapses' if options['cells'] or options['types'] or options['min_probability'] is not None or options['reviewed_only'] else ''} |")
    lines += ["| `state.json` | Neuroglancer state opening all of the above |",
              "| `provenance/<stage>.json` | config, models and code version of each pipeline stage |",
              "| `export.json` | the export's options, counts and what was missing |", ""]
    lines += ["## Export options", "", "```json", json.dumps(options, indent=1), "```", ""]
    if sharded:
        lines += ["Volumes, skeletons and annotation indices are sharded (`neuroglancer_uint64_sharded_v1`); "
                  "meshes are a sharded multi-resolution source (`cells/mesh_multires/`, `neuroglancer_multilod_draco`, "
                  "what `cells/info` points to), the legacy single-resolution meshes stay in `cells/mesh/`.", ""]
    if summary.missing or summary.notes:
        lines += ["## Missing or partial", ""] + [f"* {m}" for m in summary.missing + summary.notes] + [""]
    lines += ["## Provenance", ""]
    for f in sorted(analysis.state_dir.glob("*/provenance.json")):
        p = json.loads(f.read_text())
        models = ", ".join(f"{Path(m['path']).name} (sha256 {m.get('sha256', '?')[:12]})" if isinstance(m, dict) and "path" in m
                           else str(m) for m in p.get("models", [])) or "none"
        lines.append(f"* `{p.get('stage', f.parent.name)}`: written {p.get('written', '?')}, parameters {p.get('params_hash', '?')}, models: {models}")
    lines += ["", "## Citation", "", "If you use these data, please cite the method:", "", f"> {CITATION}", ""]
    return "\n".join(lines)
