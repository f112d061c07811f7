"""Analyses for the review-server tests and benchmark: a writable copy of the shared end-to-end analysis,
and synthetic cell / synapse tables of any size (uint64 ids beyond 2**53 included) with a default config."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

TYPES = ("EA", "MSN", "GP", "INT")


def copy_analysis(source: Path, out: Path) -> Path:
    """A writable copy of a finished analysis (layers, tables, raw, config; not scratch/state)."""
    out.mkdir(parents=True)
    for name in ("layers", "tables", "raw", "syconn.toml"):
        src = Path(source) / name
        if src.is_dir():
            shutil.copytree(src, out / name)
        elif src.exists():
            shutil.copy2(src, out / name)
    return out


def synthetic_analysis(out: Path, *, n_cells: int, n_synapses: int, seed: int = 0, big_ids: bool = False) -> Path:
    """An analysis folder holding only syconn.toml, tables/cells.csv and tables/synapses.csv: random cells of the
    four types and random synapses between them (positions in a 1000 x 1000 x 500 voxel volume)."""
    from syconn_ng.config import Config, write_config

    rng = np.random.default_rng(seed)
    base = np.uint64(2 ** 63) if big_ids else np.uint64(1000)
    ids = base + np.sort(rng.choice(10 * n_cells, n_cells, replace=False)).astype(np.uint64)
    types = rng.choice(TYPES, n_cells)
    p = rng.dirichlet(np.ones(len(TYPES)), n_cells)
    cells = pd.DataFrame({"id": ids, "type": types, "type_probability": p.max(1).round(4),
                          **{f"p_{t}": p[:, k].round(4) for k, t in enumerate(TYPES)},
                          "nodes": rng.integers(10, 500, n_cells), "n_in": 0, "n_out": 0})
    pre = rng.integers(0, n_cells, n_synapses)
    post = (pre + rng.integers(1, n_cells, n_synapses)) % n_cells  # never onto itself
    xyz = rng.uniform([0, 0, 0], [1000, 1000, 500], (n_synapses, 3)).round(2)
    synapses = pd.DataFrame({"id": base + np.arange(1, n_synapses + 1, dtype=np.uint64), "pre_cell": ids[pre], "post_cell": ids[post],
                             "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                             "x_nm": xyz[:, 0] * 10, "y_nm": xyz[:, 1] * 10, "z_nm": xyz[:, 2] * 20,
                             "area_um2": rng.uniform(0.01, 0.5, n_synapses).round(5),
                             "probability": rng.uniform(0.5, 1.0, n_synapses).round(3),
                             "type": rng.choice(["asymmetric", "symmetric"], n_synapses),
                             "pre_compartment": "axon", "post_compartment": rng.choice(["dendrite", "spine_head", "soma"], n_synapses),
                             "sj_id": np.arange(1, n_synapses + 1)})
    (out / "tables").mkdir(parents=True)
    write_config(Config(), out)
    cells.to_csv(out / "tables" / "cells.csv", index=False)
    synapses.to_csv(out / "tables" / "synapses.csv", index=False)
    return out
