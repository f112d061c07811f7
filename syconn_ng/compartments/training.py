"""Training tables for the forests: node features of labelled nodes (compartments, spines) and cell
features of labelled cells, gathered from finished analyses and their KNOSSOS labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from syconn_ng.compartments.labels import COMPARTMENTS, SPINE_CLASSES, expand_files, read_node_labels
from syconn_ng.errors import InputError

AXONESS_OF = {"axon": "axon", "dendrite": "dendrite", "soma": "soma", "spine_head": "dendrite", "spine_neck": "dendrite"}
SPINE_OF = {"dendrite": "shaft", "spine_head": "spine_head", "spine_neck": "spine_neck"}


def pair_labels(analyses, labels) -> list[tuple[Path, list[str]]]:
    """Analysis directories paired with their label patterns: one pattern for all, or one per analysis."""
    analyses, labels = list(analyses), list(labels)
    if not analyses or not labels:
        raise InputError("--labels", "give at least one --analysis and one --labels pattern")
    if len(labels) not in (1, len(analyses)):
        raise InputError("--labels", f"give one --labels pattern for all analyses or one per analysis ({len(analyses)}), got {len(labels)}")
    return [(Path(a), [labels[0] if len(labels) == 1 else labels[i]]) for i, a in enumerate(analyses)]


def node_training_table(pairs, *, feature_params: dict, synonyms: dict):
    """Features of every labelled traced node: X (N, F) float32, names, labels (N,) str, groups (N,) str, files.

    groups name the cell ("<analysis>:<cell>") so cross-validation never splits one. A label file
    with no comment at all, or labels that match no traced node of the analysis, is an InputError.
    """
    from syconn_ng.analysis import Analysis
    from syconn_ng.stages.compartments import cell_graph, features_of, organelle_table
    from syconn_ng.stages.hulls import hull_path

    Xs, ys, gs, all_files, names = [], [], [], [], None
    for root, patterns in pairs:
        analysis = Analysis.open(root)
        files = expand_files(patterns)
        all_files += [str(f) for f in files]
        labels = read_node_labels(files, synonyms=synonyms, vocabulary=COMPARTMENTS)
        if labels.empty:
            raise InputError(files[0], f"no node of {len(files)} file(s) carries a compartment comment ({', '.join(COMPARTMENTS)})")
        organelles = organelle_table(analysis)
        matched = 0
        for cell, lab in labels.groupby("cell"):
            if not hull_path(analysis, int(cell)).exists():
                continue
            graph, node_ids = cell_graph(analysis, int(cell), organelles)
            X, names = features_of(graph, feature_params)
            where = {int(n): i for i, n in enumerate(node_ids) if n > 0}
            rows = [(where[int(n)], lbl) for n, lbl in zip(lab["node"], lab["label"]) if int(n) in where]
            if not rows:
                continue
            idx, lbl = zip(*rows)
            Xs.append(X[list(idx)])
            ys += list(lbl)
            gs += [f"{root}:{int(cell)}"] * len(idx)
            matched += len(idx)
        if matched == 0:
            raise InputError(files[0], f"none of the {len(labels)} labelled nodes is a traced node of the analysis {root} "
                                       "(tree id = cell id, node ids as in the analysis's skeletons)")
    return np.concatenate(Xs), names, np.asarray(ys), np.asarray(gs), all_files


def select_task(y: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Rows and targets of one forest: 'compartments' (every node → axon / dendrite / soma) or 'spines' (dendrite nodes)."""
    if task == "compartments":
        return np.ones(len(y), dtype=bool), np.array([AXONESS_OF[v] for v in y]), ("axon", "dendrite", "soma")
    keep = np.isin(y, list(SPINE_OF))
    return keep, np.array([SPINE_OF[v] for v in y[keep]]), SPINE_CLASSES


def check_classes(targets: np.ndarray, classes, files) -> None:
    """A class with no example is an InputError naming it (train without it by leaving it out of --classes)."""
    counts = {c: int(np.sum(targets == c)) for c in classes}
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise InputError(files[0], f"no labelled example of class(es) {empty} in {len(files)} label file(s) "
                                   f"(counts: {counts}); label some, or pass --classes without them")


def cell_training_table(pairs, *, synonyms: dict):
    """Features of every labelled cell: X (N, F) float32, names, labels (N,) str, groups (N,) str, files.

    Labels are tree comments of KNOSSOS files or `cell,type` CSV rows; the analyses must have run
    `compartments` and `synapses`. Labelled cells the analysis did not trace are skipped.
    """
    from syconn_ng.analysis import Analysis
    from syconn_ng.compartments.labels import read_cell_labels
    from syconn_ng.stages.celltypes import features_of_cell, read_synapses
    from syconn_ng.stages.compartments import organelle_table
    from syconn_ng.stages.hulls import hull_path

    rows, ys, gs, all_files = [], [], [], []
    for root, patterns in pairs:
        analysis = Analysis.open(root)
        files = expand_files(patterns)
        all_files += [str(f) for f in files]
        labels = read_cell_labels(files, synonyms=synonyms)
        if labels.empty:
            raise InputError(files[0], f"no cell type in {len(files)} file(s) (tree comments, or CSV rows cell,type)")
        organelles, synapses = organelle_table(analysis), read_synapses(analysis)
        found = 0
        for cell, label in zip(labels["cell"], labels["label"]):
            if not hull_path(analysis, int(cell)).exists():
                continue
            rows.append(features_of_cell(analysis, int(cell), organelles, synapses))
            ys.append(label)
            gs.append(f"{root}:{int(cell)}")
            found += 1
        if found == 0:
            raise InputError(files[0], f"none of the {len(labels)} labelled cells is traced in the analysis {root}")
    names = list(rows[0])
    return np.array([[r[k] for k in names] for r in rows], dtype=np.float32), names, np.asarray(ys, dtype=str), np.asarray(gs), all_files
