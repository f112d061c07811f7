"""Trivial baselines on a synthetic tissue's truth tables: what guessing scores, so the pipeline's
targets (synapse F1 0.85, direction 0.95, node accuracy 0.90, cell type 0.90) mean something."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PIPELINE_TARGETS = {"synapse_f1": 0.85, "direction_accuracy": 0.95, "node_accuracy": 0.90, "cell_type_accuracy": 0.90}


def trivial_baselines(out_dir, *, seed: int = 0) -> dict:
    """Scores of four guesses on the tables under ``out_dir/truth``.

    * every sj on a contact is a synapse, direction at random: direction accuracy;
    * every close contact (synaptic or not) is a synapse: precision, recall, F1;
    * every skeleton node has the majority compartment: accuracy;
    * every cell has the majority type: accuracy.
    """
    truth = Path(out_dir) / "truth"
    syn = pd.read_csv(truth / "synapses.csv")
    contacts = pd.read_csv(truth / "contacts.csv")
    nodes = pd.read_csv(truth / "nodes.csv")
    cells = pd.read_csv(truth / "cells.csv")
    rng = np.random.default_rng(seed)

    flips = rng.random(len(syn)) < 0.5  # guess "pre = post_cell" half the time
    direction = float(np.mean(~flips)) if len(syn) else float("nan")

    n_syn, n_contact = len(syn), len(contacts)
    precision = n_syn / (n_syn + n_contact) if n_syn + n_contact else float("nan")
    recall = 1.0
    f1 = 2 * precision * recall / (precision + recall) if n_syn else 0.0

    comp = nodes["compartment"]
    node_acc = float((comp == comp.mode().iloc[0]).mean()) if len(comp) else float("nan")
    ctype = cells["type"]
    type_acc = float((ctype == ctype.mode().iloc[0]).mean()) if len(ctype) else float("nan")
    return {
        "random_direction": {"direction_accuracy": direction, "synapses": n_syn},
        "every_contact_is_synapse": {"precision": precision, "recall": recall, "f1": f1,
                                     "synapses": n_syn, "close_contacts": n_contact},
        "majority_compartment": {"node_accuracy": node_acc, "majority": str(comp.mode().iloc[0]) if len(comp) else ""},
        "majority_cell_type": {"cell_type_accuracy": type_acc, "majority": str(ctype.mode().iloc[0]) if len(ctype) else ""},
        "pipeline_targets": dict(PIPELINE_TARGETS),
    }
