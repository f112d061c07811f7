"""Wiring matrices from a synapse table: filters, type-sorted cell order, pre → post sums, per-cell summaries.

Pure functions on pandas tables. A synapse table has at least `pre_cell, post_cell, area_um2` (and
`probability`, `type`, `pre_compartment`, `post_compartment` for the filters that use them); a cell table
has `id, type`. Matrices are DataFrames with rows = postsynaptic cells (index `post_cell`) and columns =
presynaptic cells, the same cells in the same order on both axes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SYNAPSE_TYPES = ("all", "asymmetric", "symmetric")
DENDRITIC = ("dendrite", "spine_head", "spine_neck")  # an axo-dendritic synapse's post side (SyConn2 axodend_only)
UNKNOWN_TYPE = ""  # a cell missing from the cell table
SUMMARY_COLUMNS = ("id", "type", "n_in", "n_out", "area_in_um2", "area_out_um2", "partners_in", "partners_out")


class MissingColumn(KeyError):
    """A filter needs a column the synapse table lacks."""


def filter_synapses(synapses: pd.DataFrame, *, min_probability: float = 0.0, axo_dendritic_only: bool = False,
                    synapse_type: str = "all") -> pd.DataFrame:
    """The synapses that pass the filters (rows unchanged, index reset).

    min_probability: keep `probability` >= this (a table without the column passes only at 0);
    axo_dendritic_only: keep `pre_compartment` axon onto `post_compartment` dendrite / spine head / neck;
    synapse_type: all | asymmetric | symmetric (column `type`).
    """
    if synapse_type not in SYNAPSE_TYPES:
        raise ValueError(f"synapse_type must be one of {SYNAPSE_TYPES}, got {synapse_type!r}")
    keep = np.ones(len(synapses), dtype=bool)
    needs = {"probability": min_probability > 0, "pre_compartment": axo_dendritic_only,
             "post_compartment": axo_dendritic_only, "type": synapse_type != "all"}
    for column, needed in needs.items():
        if needed and column not in synapses.columns:
            raise MissingColumn(column)
    if min_probability > 0:
        keep &= synapses["probability"].to_numpy(float) >= min_probability
    if axo_dendritic_only:
        keep &= (synapses["pre_compartment"] == "axon").to_numpy() & synapses["post_compartment"].isin(DENDRITIC).to_numpy()
    if synapse_type != "all":
        keep &= (synapses["type"] == synapse_type).to_numpy()
    return synapses[keep].reset_index(drop=True)


def cell_types(cells: pd.DataFrame, ids) -> pd.Series:
    """Type of each of `ids` (uint64) from the cell table; cells not in it get `UNKNOWN_TYPE`."""
    types = pd.Series(cells["type"].fillna(UNKNOWN_TYPE).astype(str).to_numpy(), index=cells["id"].to_numpy(np.uint64))
    ids = np.asarray(ids, dtype=np.uint64)
    return pd.Series([types.get(i, UNKNOWN_TYPE) for i in ids], index=ids, dtype=object)


def sort_cells(ids, types, type_order=()) -> np.ndarray:
    """`ids` (uint64) sorted by type, then id: types in `type_order` first in that order, other types
    alphabetically, cells without a type last."""
    ids = np.asarray(ids, dtype=np.uint64)
    types = np.asarray(types, dtype=object)
    rank = {t: i for i, t in enumerate(type_order)}
    others = sorted({t for t in types if t not in rank and t != UNKNOWN_TYPE})
    rank.update({t: len(type_order) + i for i, t in enumerate(others)})
    key = np.array([rank.get(t, len(rank)) for t in types], dtype=np.int64)
    return ids[np.lexsort((ids, key))]


def matrix_cells(synapses: pd.DataFrame, cells: pd.DataFrame, type_order=()) -> tuple[np.ndarray, np.ndarray]:
    """(ids, types): every cell with at least one synapse (pre or post), sorted by type then id."""
    ids = np.unique(np.concatenate([synapses["pre_cell"].to_numpy(np.uint64), synapses["post_cell"].to_numpy(np.uint64)]))
    types = cell_types(cells, ids)
    order = sort_cells(ids, types.to_numpy(), type_order)
    return order, types.loc[order].to_numpy()


def wiring_matrix(synapses: pd.DataFrame, order, *, value: str = "area_um2") -> pd.DataFrame:
    """Square matrix over the cells `order` (uint64): [post, pre] = summed `value` (area_um2) or, with
    value="count", the number of synapses. Rows are indexed `post_cell`; columns are the pre ids."""
    order = np.asarray(order, dtype=np.uint64)
    pos = pd.Series(np.arange(len(order)), index=order)
    n = len(order)
    out = np.zeros((n, n), dtype=np.int64 if value == "count" else np.float64)
    if len(synapses):
        rows = pos.loc[synapses["post_cell"].to_numpy(np.uint64)].to_numpy()
        cols = pos.loc[synapses["pre_cell"].to_numpy(np.uint64)].to_numpy()
        weights = 1 if value == "count" else synapses[value].to_numpy(np.float64)
        np.add.at(out, (rows, cols), weights)
    return pd.DataFrame(out, index=pd.Index(order, name="post_cell"), columns=pd.Index(order, name="pre_cell"))


def type_matrix(matrix: pd.DataFrame, types) -> pd.DataFrame:
    """Cell-type-level sums of a cell matrix ([post type, pre type]), types in matrix order (SyConn's cum_wiring)."""
    types = np.asarray(types, dtype=object)
    labels = list(dict.fromkeys(types))
    t = pd.Categorical(types, categories=labels)
    summed = matrix.groupby(t, observed=False).sum().T.groupby(t, observed=False).sum().T
    summed.index.name, summed.columns.name = "post_type", "pre_type"
    return summed


def cell_summary(synapses: pd.DataFrame, cells: pd.DataFrame, type_order=()) -> pd.DataFrame:
    """Per cell (every cell of the cell table, and any other cell with synapses): type, synapse counts and
    summed areas in and out, distinct partners in and out; sorted by type then id."""
    ids = np.unique(np.concatenate([cells["id"].to_numpy(np.uint64), synapses["pre_cell"].to_numpy(np.uint64),
                                    synapses["post_cell"].to_numpy(np.uint64)]))
    types = cell_types(cells, ids)
    order = sort_cells(ids, types.to_numpy(), type_order)
    out = pd.DataFrame({"id": order, "type": types.loc[order].to_numpy()})
    pre, post = synapses["pre_cell"].to_numpy(np.uint64), synapses["post_cell"].to_numpy(np.uint64)
    area = synapses["area_um2"].to_numpy(np.float64)
    for side, me, other in (("in", post, pre), ("out", pre, post)):
        frame = pd.DataFrame({"me": me, "other": other, "area": area})
        g = frame.groupby("me")
        out[f"n_{side}"] = g.size().reindex(order, fill_value=0).to_numpy(np.int64)
        out[f"area_{side}_um2"] = g["area"].sum().reindex(order, fill_value=0.0).to_numpy().round(5)
        out[f"partners_{side}"] = g["other"].nunique().reindex(order, fill_value=0).to_numpy(np.int64)
    return out[list(SUMMARY_COLUMNS)]


def matrix_to_csv(matrix: pd.DataFrame, decimals: int | None = 5) -> str:
    """CSV text: first column `post_cell`, header row the pre ids."""
    m = matrix.round(decimals) if decimals is not None else matrix
    return m.to_csv(index_label="post_cell")


def read_matrix_csv(path) -> pd.DataFrame:
    """A matrix written by `matrix_to_csv` (uint64 ids on both axes)."""
    df = pd.read_csv(path, index_col="post_cell", dtype={"post_cell": np.uint64})
    df.columns = pd.Index(np.asarray(df.columns, dtype=np.uint64), name="pre_cell")
    df.index = pd.Index(df.index.to_numpy(np.uint64), name="post_cell")
    return df


def pair_weights(synapses: pd.DataFrame, *, value: str = "area_um2") -> pd.Series:
    """Summed `value` per connected (pre_cell, post_cell) pair (a Series with a 2-level uint64 index)."""
    if not len(synapses):
        return pd.Series([], dtype=np.float64, index=pd.MultiIndex.from_arrays([np.zeros(0, np.uint64)] * 2, names=["pre_cell", "post_cell"]))
    frame = pd.DataFrame({"pre_cell": synapses["pre_cell"].to_numpy(np.uint64), "post_cell": synapses["post_cell"].to_numpy(np.uint64),
                          "w": synapses[value].to_numpy(np.float64)})
    return frame.groupby(["pre_cell", "post_cell"])["w"].sum()


def build_connectome(synapses: pd.DataFrame, cells: pd.DataFrame, *, min_probability: float = 0.0,
                     axo_dendritic_only: bool = False, synapse_type: str = "all", type_order=()) -> dict:
    """Everything the `connectome` stage writes, as tables: {"synapses": the filtered synapses,
    "area": summed-area matrix, "count": count matrix, "types": (n,) cell types in matrix order,
    "type_area", "type_count": type-level sums, "summary": per-cell summary}."""
    kept = filter_synapses(synapses, min_probability=min_probability, axo_dendritic_only=axo_dendritic_only,
                           synapse_type=synapse_type)
    order, types = matrix_cells(kept, cells, type_order)
    area = wiring_matrix(kept, order)
    count = wiring_matrix(kept, order, value="count")
    return {"synapses": kept, "area": area, "count": count, "types": types, "type_area": type_matrix(area, types),
            "type_count": type_matrix(count, types), "summary": cell_summary(kept, cells, type_order)}
