"""Precomputed segment properties of the cells layer (`neuroglancer_segment_properties`): cell type as a
label and a tag (Neuroglancer searches `#MSN`), the sign as a tag (`#inhibitory`), a description, and the per-cell statistics as numbers (so
a query like `n_in>2` or colouring by a number works). Everything is inline in one JSON `info`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from syconn_ng.layers import atomic_write_text

# cells.csv columns published as numbers, with the spec's data type (integers stay integers)
NUMBER_COLUMNS = {"type_probability": "float32", "nodes": "uint32", "path_length_um": "float32", "axon_um": "float32",
                  "dendrite_um": "float32", "soma_nodes": "uint32", "n_in": "uint32", "n_out": "uint32", "typeable": "uint8",
                  "symmetric_out_fraction": "float32"}
DIRECTORY = "segment_properties"


def _numbers(values: pd.Series, data_type: str) -> list:
    """JSON-safe numbers: NaN (not valid JSON) becomes 0; integer columns are ints."""
    v = pd.to_numeric(values, errors="coerce").fillna(0).to_numpy(np.float64)
    return [int(x) for x in np.round(v)] if data_type != "float32" else [round(float(x), 6) for x in v]


def segment_properties(cells: pd.DataFrame) -> dict:
    """The segment-properties `info` for a `cells.csv` table (`id,type,type_probability,p_<CLASS>...,nodes,...`).

    Ids are decimal strings (uint64-safe). Properties: `label` = type, `description` = type, probability,
    traced length and sign, `tags` = the type and the sign (one tag per value present), numbers for every
    statistic and class probability present in the table.
    """
    ids = [str(int(i)) for i in cells["id"]]
    types = cells["type"].fillna("").astype(str).tolist() if "type" in cells else [""] * len(ids)
    signs = cells["sign"].fillna("").astype(str).tolist() if "sign" in cells else [""] * len(ids)
    props: list[dict] = [{"id": "label", "type": "label", "values": types}]
    desc = []
    for i, t in enumerate(types):
        parts = [t or "untyped"]
        if "type_probability" in cells:
            parts.append(f"p = {float(np.nan_to_num(cells['type_probability'].iloc[i])):.2f}")
        if "path_length_um" in cells:
            parts.append(f"{float(np.nan_to_num(cells['path_length_um'].iloc[i])):.1f} µm traced")
        if "typeable" in cells and not cells["typeable"].iloc[i]:
            why = cells["untypeable_reason"].iloc[i] if "untypeable_reason" in cells else ""
            parts.append(f"untypeable ({why})" if isinstance(why, str) and why else "untypeable")
        if signs[i]:
            parts.append(signs[i])
        desc.append(", ".join(parts))
    props.append({"id": "description", "type": "description", "values": desc})
    type_tags, sign_tags = sorted({t for t in types if t}), sorted({g for g in signs if g})
    tags = type_tags + sign_tags  # Neuroglancer reads one tags property per layer
    if tags:
        index = {t: k for k, t in enumerate(tags)}
        props.append({"id": "type", "type": "tags", "tags": tags,
                      "tag_descriptions": [f"cell type {t}" for t in type_tags] + [f"sign {g} (outgoing synapse types)" for g in sign_tags],
                      "values": [[index[v] for v in (t, g) if v] for t, g in zip(types, signs)]})
    numbers = dict(NUMBER_COLUMNS)
    numbers.update({c: "float32" for c in cells.columns if c.startswith("p_")})
    for column, data_type in numbers.items():
        if column in cells:
            props.append({"id": column, "type": "number", "data_type": data_type, "values": _numbers(cells[column], data_type)})
    return {"@type": "neuroglancer_segment_properties", "inline": {"ids": ids, "properties": props}}


def write_segment_properties(directory, cells: pd.DataFrame) -> Path:
    """Write `directory/info` (the directory a volume's `segment_properties` key names); returns its path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "info", json.dumps(segment_properties(cells), indent=1) + "\n")
    return d / "info"
