"""The `connectome` stage: `tables/synapses.csv` + `tables/cells.csv` → the wiring diagram.

One local pass (`matrix`): filters from `[connectome]`, then `tables/matrix.csv` (summed synaptic area
µm², rows post cells, columns pre cells, sorted by cell type then id), `tables/matrix_counts.csv`,
`tables/matrix.h5` (both matrices, ids, types, type-level sums, the filters), `tables/matrix.png`
(heat map) and `tables/cell_summary.csv`. `load_connectome(dir)` reads them back as DataFrames.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from syconn_ng.engine.driver import Pass
from syconn_ng.errors import ConfigError, InputError
from syconn_ng.layers import atomic_write_bytes, atomic_write_text

SYNAPSE_NEEDS = ("pre_cell", "post_cell", "area_um2")
CELL_NEEDS = ("id", "type")
OUTPUTS = ("matrix.csv", "matrix_counts.csv", "matrix.h5", "matrix.png", "cell_summary.csv")


def read_table(path: Path, needs, what: str, stage: str):
    """A CSV table with at least the columns `needs`; a clear InputError if it is missing or lacks one."""
    import pandas as pd

    if not path.exists():
        raise InputError(path, f"no {what} table: run the '{stage}' stage first")
    try:
        df = pd.read_csv(path, dtype={c: str for c in ("type", "pre_compartment", "post_compartment")}, keep_default_na=False,
                         na_values={"probability": [""], "area_um2": [""]})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a readable CSV table ({err})") from err
    missing = [c for c in needs if c not in df.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)} (has {', '.join(df.columns)})", element="header")
    for c in ("pre_cell", "post_cell", "id"):
        if c in needs:
            v = pd.to_numeric(df[c], errors="coerce")
            f = v.to_numpy(float)
            bad = np.flatnonzero(v.isna().to_numpy() | (f < 0) | (f % 1 != 0))
            if len(bad):
                raise InputError(path, f"column {c} must hold cell ids (integers >= 0), got {df[c].iloc[bad[0]]!r}", line=int(bad[0]) + 2)
            df[c] = df[c].astype(np.uint64)
    if "id" in needs and df["id"].duplicated().any():
        dup = np.flatnonzero(df["id"].duplicated().to_numpy())[0]
        raise InputError(path, f"cell id {df['id'].iloc[dup]} is listed twice", line=int(dup) + 2)
    if "area_um2" in needs:
        a = pd.to_numeric(df["area_um2"], errors="coerce")
        bad = np.flatnonzero(a.isna().to_numpy() | (a.to_numpy(float) < 0))
        if len(bad):
            raise InputError(path, f"column area_um2 must hold areas >= 0, got {df['area_um2'].iloc[bad[0]]!r}", line=int(bad[0]) + 2)
        df["area_um2"] = a.astype(np.float64)
    return df


def _params(analysis) -> dict:
    p = analysis.config.section_params("connectome")
    where = analysis.root / "syconn.toml"
    if p["synapse_type"] not in ("all", "asymmetric", "symmetric"):
        raise ConfigError(where, f"expected all | asymmetric | symmetric, got {p['synapse_type']!r}", element="[connectome] synapse_type")
    if not isinstance(p["axo_dendritic_only"], bool):
        raise ConfigError(where, f"expected true or false, got {p['axo_dendritic_only']!r}", element="[connectome] axo_dendritic_only")
    if not 0 <= p["min_probability"] <= 1:
        raise ConfigError(where, "expected a probability in [0, 1]", element="[connectome] min_probability")
    return p


def _h5_bytes(result: dict, params: dict) -> bytes:
    """matrix.h5: area_um2 and count [post, pre], post_ids = pre_ids (uint64), types, type-level sums, filters."""
    import h5py

    fd, tmp = tempfile.mkstemp(suffix=".h5")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            ids = result["area"].index.to_numpy(np.uint64)
            f.create_dataset("area_um2", data=result["area"].to_numpy(np.float64), compression="gzip")
            f.create_dataset("count", data=result["count"].to_numpy(np.int64), compression="gzip")
            f.create_dataset("post_ids", data=ids)
            f.create_dataset("pre_ids", data=ids)
            f.create_dataset("types", data=np.asarray(result["types"], dtype=object), dtype=h5py.string_dtype())
            labels = [str(t) for t in result["type_area"].index]
            f.create_dataset("type_labels", data=np.asarray(labels, dtype=object), dtype=h5py.string_dtype())
            f.create_dataset("type_area_um2", data=result["type_area"].to_numpy(np.float64))
            f.create_dataset("type_count", data=result["type_count"].to_numpy(np.int64))
            f.attrs["axes"] = "rows = postsynaptic cells (post_ids), columns = presynaptic cells (pre_ids)"
            f.attrs["filters"] = json.dumps(params)
            f.attrs["synapses"] = len(result["synapses"])
        return Path(tmp).read_bytes()
    finally:
        os.unlink(tmp)


def matrix_task(analysis, task) -> dict:
    """Read the synapse and cell tables, build the matrices and write every output."""
    from syconn_ng.connectome.matrix import MissingColumn, build_connectome, matrix_to_csv
    from syconn_ng.connectome.plot import matrix_png

    p = task.params["connectome"]
    tables = analysis.tables_dir
    syn = read_table(tables / "synapses.csv", SYNAPSE_NEEDS, "synapse", "synapses")
    cells = read_table(tables / "cells.csv", CELL_NEEDS, "cell", "celltypes")
    try:
        result = build_connectome(syn, cells, min_probability=p["min_probability"], axo_dendritic_only=p["axo_dendritic_only"],
                                  synapse_type=p["synapse_type"], type_order=p["type_order"])
    except MissingColumn as err:
        raise InputError(tables / "synapses.csv", f"the [connectome] filters need column {err.args[0]}", element="header") from err
    atomic_write_text(tables / "matrix.csv", matrix_to_csv(result["area"]))
    atomic_write_text(tables / "matrix_counts.csv", matrix_to_csv(result["count"], decimals=None))
    atomic_write_bytes(tables / "matrix.h5", _h5_bytes(result, p))
    n = len(result["types"])
    title = f"{len(result['synapses'])} synapses between {n} cells" + ("" if p["synapse_type"] == "all" else f" ({p['synapse_type']})")
    atomic_write_bytes(tables / "matrix.png", matrix_png(result["area"].to_numpy(), result["types"], title=title))
    atomic_write_text(tables / "cell_summary.csv", result["summary"].to_csv(index=False))
    return {"synapses": len(result["synapses"]), "cells": n, "pairs": int((result["count"].to_numpy() > 0).sum())}


def load_connectome(analysis_dir) -> dict:
    """The stage's outputs as DataFrames: {"area", "count" (post × pre), "summary", "types" (Series by id)}."""
    import pandas as pd

    from syconn_ng.connectome.matrix import read_matrix_csv

    tables = Path(analysis_dir) / "tables"
    for name in OUTPUTS:
        if not (tables / name).exists():
            raise InputError(tables / name, "missing: run the 'connectome' stage first")
    summary = pd.read_csv(tables / "cell_summary.csv", dtype={"id": np.uint64, "type": str}, keep_default_na=False)
    area = read_matrix_csv(tables / "matrix.csv")
    types = summary.set_index("id")["type"].reindex(area.index.to_numpy(np.uint64))
    return {"area": area, "count": read_matrix_csv(tables / "matrix_counts.csv"), "summary": summary, "types": types}


class ConnectomeStage:
    """The `connectome` stage for the driver (`syconn_ng.engine.run_stage`)."""

    name = "connectome"

    def upstream(self, analysis) -> list[str]:
        return ["synapses", "celltypes"]

    def params(self, analysis) -> dict:
        return {"connectome": _params(analysis)}

    def prepare(self, analysis, *, fresh: bool) -> None:
        from syconn_ng.connectome.matrix import MissingColumn, filter_synapses

        p = _params(analysis)
        path = analysis.tables_dir / "synapses.csv"
        syn = read_table(path, SYNAPSE_NEEDS, "synapse", "synapses")
        try:  # the columns the filters need, checked before any work
            filter_synapses(syn.iloc[:0], min_probability=p["min_probability"], axo_dendritic_only=p["axo_dendritic_only"],
                            synapse_type=p["synapse_type"])
        except MissingColumn as err:
            raise InputError(path, f"the [connectome] filters need column {err.args[0]}", element="header") from err
        read_table(analysis.tables_dir / "cells.csv", CELL_NEEDS, "cell", "celltypes")
        if fresh:
            for name in OUTPUTS:
                (analysis.tables_dir / name).unlink(missing_ok=True)

    def passes(self, analysis) -> list[Pass]:
        return [Pass("matrix", matrix_task, [None], local=True)]


STAGE = ConnectomeStage()
