"""Training labels from annotations: compartment names in KNOSSOS node comments, cell types in tree
comments or a CSV (`cell,type`). Names are matched case-insensitively with a space for the
underscore, through configurable synonyms; a name that matches nothing is an error that lists it."""

from __future__ import annotations

import glob
from collections import defaultdict
from pathlib import Path

import numpy as np

from syconn_ng.errors import InputError

COMPARTMENTS = ("axon", "dendrite", "soma", "spine_head", "spine_neck")
SPINE_CLASSES = ("shaft", "spine_head", "spine_neck")  # spine forest classes on dendrite nodes


def normalise(text: str) -> str:
    """A label as compared: stripped, lower case, spaces and hyphens as underscores."""
    return "_".join(text.strip().lower().replace("-", " ").split())


def label_lookup(vocabulary, synonyms: dict[str, str]) -> dict[str, str]:
    """{normalised name or synonym: vocabulary name}; a synonym naming no vocabulary entry is an error."""
    lut = {normalise(v): v for v in vocabulary}
    for alias, target in synonyms.items():
        if not isinstance(target, str):
            raise InputError("syconn.toml", f"synonym {alias!r} must map to a name, got {target!r}", element="synonyms")
        key = normalise(target)
        if key not in lut:
            raise InputError("syconn.toml", f"synonym {alias!r} maps to {target!r}, which is not one of {list(vocabulary)}",
                             element="synonyms")
        lut[normalise(alias)] = lut[key]
    return lut


def expand_files(patterns) -> list[Path]:
    """The files matching glob `patterns` (sorted, duplicates removed); a pattern matching nothing is an error."""
    out: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(str(pat), recursive=True))
        if not hits:
            raise InputError(pat, "no file matches this label pattern")
        out.extend(Path(h) for h in hits)
    return sorted(set(out))


def _unknown_error(unknown: dict, lut: dict, what: str) -> InputError:
    """One error naming every unknown label, how often and where it was seen."""
    parts = []
    for name, where in sorted(unknown.items()):
        files = sorted({str(f) for f, _ in where})
        parts.append(f"{name!r} ({len(where)}× in {', '.join(files[:3])}{' ...' if len(files) > 3 else ''})")
    first_file = sorted({str(f) for w in unknown.values() for f, _ in w})[0]
    known = sorted(set(lut.values()))
    return InputError(first_file, f"unknown {what} label(s): {'; '.join(parts)}. Known: {', '.join(known)} "
                                  f"(case-insensitive, space or underscore); map other names with `synonyms` in the config")


def read_node_labels(files, *, synonyms: dict[str, str] | None = None, vocabulary=COMPARTMENTS):
    """Compartment labels from the node comments of KNOSSOS files (.nml, .k.zip).

    One tree = one cell (tree id = cell id). Returns a DataFrame `cell, node, label, file` of the
    nodes whose comment names a compartment; nodes without a comment are unlabelled. Any other
    comment raises InputError listing every unknown name with counts and files.
    """
    import pandas as pd

    from syconn_ng.io.annotation import read_annotation

    lut = label_lookup(vocabulary, synonyms or {})
    rows, unknown = [], defaultdict(list)
    for f in files:
        skel = read_annotation(f)
        for tree in skel.trees:
            for node in tree.nodes:
                if not node.comment.strip():
                    continue
                label = lut.get(normalise(node.comment))
                if label is None:
                    unknown[node.comment.strip()].append((f, node.id))
                else:
                    rows.append((tree.id, node.id, label, str(f)))
    if unknown:
        raise _unknown_error(unknown, lut, "compartment")
    return pd.DataFrame(rows, columns=["cell", "node", "label", "file"]).astype({"cell": np.uint64, "node": np.uint64})


def read_cell_labels(files, *, synonyms: dict[str, str] | None = None, vocabulary=None):
    """Cell-type labels: tree comments of KNOSSOS files, or rows of CSV files with columns `cell,type`.

    vocabulary None = any non-empty name is a class (the classes come from the labels); else names
    are matched to it like compartments. Returns a DataFrame `cell, label, file`; a cell labelled
    twice with different types is an error.
    """
    import pandas as pd

    from syconn_ng.io.annotation import read_annotation

    lut = label_lookup(vocabulary, synonyms or {}) if vocabulary else None
    rows, unknown = [], defaultdict(list)

    def add(cell, name, f, where):
        name = name.strip()
        if not name:
            return
        if lut is not None:
            label = lut.get(normalise(name))
            if label is None:
                unknown[name].append((f, where))
                return
            name = label
        else:
            name = (synonyms or {}).get(name, name)
        rows.append((int(cell), name, str(f)))

    for f in files:
        if str(f).lower().endswith(".csv"):
            try:
                df = pd.read_csv(f, dtype=str, keep_default_na=False)
            except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
                raise InputError(f, f"not a readable CSV: {err}") from None
            if not {"cell", "type"} <= set(df.columns):
                raise InputError(f, f"expected columns cell,type; found {','.join(df.columns)}", line=1)
            for i, (cell, name) in enumerate(zip(df["cell"], df["type"])):
                if not cell.strip().isdigit():
                    raise InputError(f, f"cell id {cell!r} is not a non-negative integer", line=i + 2)
                add(cell, name, f, f"line {i + 2}")
        else:
            for tree in read_annotation(f).trees:
                add(tree.id, tree.comment, f, f"tree {tree.id}")
    if unknown:
        raise _unknown_error(unknown, lut, "cell-type")
    df = pd.DataFrame(rows, columns=["cell", "label", "file"]).astype({"cell": np.uint64})
    clash = df.groupby("cell")["label"].nunique()
    if (clash > 1).any():
        cell = int(clash[clash > 1].index[0])
        where = df[df["cell"] == cell]
        raise InputError(where["file"].iloc[0], f"cell {cell} is labelled {sorted(set(where['label']))} in {sorted(set(where['file']))}")
    return df.drop_duplicates("cell").reset_index(drop=True)
