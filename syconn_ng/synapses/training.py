"""Training the synapse and synapse-type forests from analyses whose candidates are labelled by a synapse table.

A candidate is a synapse if it matches a row of the labelled table (`pre_cell, post_cell, x, y, z`,
plus `type` for the type forest) within `MATCH_DIST_NM` and with the same unordered pair of
cells. Cross-validation folds never split an analysis (tissue).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from syconn_ng.errors import InputError
from syconn_ng.evaluation.synapses import MATCH_DIST_NM, match_synapses
from syconn_ng.synapses.features import SYNAPSE_FEATURES, TYPE_FEATURES


def label_candidates(cand: pd.DataFrame, true: pd.DataFrame, *, voxel_size_nm) -> pd.DataFrame:
    """`cand` with `label` ('synapse' / 'none') and `true_type`, `true_pre` ('' / 0 where unmatched)."""
    m = match_synapses(cand, true, voxel_size_nm=voxel_size_nm)
    out = cand.copy()
    out["label"] = "none"
    out["true_type"] = ""
    out["true_pre"] = np.zeros(len(out), np.uint64)
    if len(m):
        out.iloc[m[:, 0], out.columns.get_loc("label")] = "synapse"
        out.iloc[m[:, 0], out.columns.get_loc("true_type")] = true.iloc[m[:, 1]]["type"].astype(str).to_numpy()
        out.iloc[m[:, 0], out.columns.get_loc("true_pre")] = true.iloc[m[:, 1]]["pre_cell"].to_numpy(np.uint64)
    return out


def _truth_table(path) -> Path:
    """A labelled synapse table: the CSV itself, or a synthetic tissue folder's `truth/synapses.csv`."""
    p = Path(path)
    if p.is_dir():
        p = p / "truth" / "synapses.csv"
    if not p.is_file():
        raise InputError(p, "no labelled synapse table (a CSV with pre_cell, post_cell, x, y, z[, type], or a synthetic tissue folder)")
    return p


def training_table(analysis_dirs, truths) -> pd.DataFrame:
    """The labelled candidates of every analysis (its `tables/synapse_candidates.csv`), with a `tissue` column
    (the index of its truth: analyses of the same tissue, e.g. with oracle and CNN organelles, share it)."""
    from syconn_ng.config import load_config

    if len(analysis_dirs) != len(truths):
        raise InputError(Path(analysis_dirs[0]) if analysis_dirs else Path("."), f"{len(analysis_dirs)} analyses but {len(truths)} truth tables: give one per analysis")
    frames = []
    for i, (a, t) in enumerate(zip(analysis_dirs, truths)):
        path = Path(a) / "tables" / "synapse_candidates.csv"
        if not path.exists():
            raise InputError(path, "missing: run the 'synapses' stage on this analysis first (any model: the features do not depend on it)")
        cand = pd.read_csv(path)
        tpath = _truth_table(t)
        true = pd.read_csv(tpath)
        missing = [c for c in ("pre_cell", "post_cell", "x", "y", "z") if c not in true.columns]
        if missing:
            raise InputError(tpath, f"missing columns {missing}")
        df = label_candidates(cand, true, voxel_size_nm=load_config(a).dataset.voxel_size_nm)
        df["tissue"] = [str(Path(x).resolve()) for x in truths].index(str(Path(t).resolve()))
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def train_forests(table: pd.DataFrame, *, n_estimators: int = 100, seed: int = 0, data: dict | None = None):
    """(synapse forest, type forest or None) fitted on a `training_table`; CV grouped by tissue."""
    from syconn_ng.compartments.forest import fit_forest

    def fit(X, y, groups, features, classes):
        forest = fit_forest(X, y, groups, features, classes=classes, n_estimators=n_estimators, max_depth=0, min_samples_leaf=1,
                            cv_folds=5, seed=seed, data={**(data or {}), "match_dist_nm": MATCH_DIST_NM})
        if isinstance(forest.meta.get("cv"), dict) and "grouped_by" in forest.meta["cv"]:
            forest.meta["cv"]["grouped_by"] = "tissue"
        forest.meta["training"]["tissues"] = forest.meta["training"].pop("cells")
        return forest

    y = table["label"].to_numpy(str)
    if set(y) != {"synapse", "none"}:
        raise InputError(Path("."), f"the training candidates need both synapses and non-synapses, got {sorted(set(y))}")
    syn = fit(table[list(SYNAPSE_FEATURES)].to_numpy(np.float32), y, table["tissue"].to_numpy(), SYNAPSE_FEATURES, ["none", "synapse"])
    typed = table[(table["label"] == "synapse") & table["true_type"].isin(["asymmetric", "symmetric"])]
    types = None
    if typed["true_type"].nunique() == 2:
        types = fit(typed[list(TYPE_FEATURES)].to_numpy(np.float32), typed["true_type"].to_numpy(str), typed["tissue"].to_numpy(),
                    TYPE_FEATURES, ["asymmetric", "symmetric"])
    return syn, types


TRAINING_SEEDS = tuple(range(11, 20))  # never 1 (the test tissue) nor 2-5 (evaluation reports)
TRAINING_SHAPE = (192, 192, 96)
TRAINING_SYNAPSES_PER_UM3 = 3.0


def prepare_synthetic(workdir, *, seeds=TRAINING_SEEDS, progress=print) -> tuple[list[Path], list[Path]]:
    """The bundled forests' training data: per seed a synthetic tissue and two analyses up to the synapses stage
    (true barrier; true organelles, and the bundled organelle CNN's, so the forest sees CNN false positives).

    Reuses what `workdir` already holds (a `.complete` marker per folder). Returns (analysis dirs, tissue dirs).
    """
    import shutil

    from syconn_ng.analysis import Analysis
    from syconn_ng.config import write_config
    from syconn_ng.engine import LocalExecutor, run_stage
    from syconn_ng.stages import get_stage
    from syconn_ng.synth.generate import generate_tissue, oracle_config

    workdir = Path(workdir)
    analyses, tissues = [], []
    executor = LocalExecutor(1)
    try:
        for seed in seeds:
            tissue = workdir / f"tissue{seed}"
            if not (tissue / ".complete").exists():
                shutil.rmtree(tissue, ignore_errors=True)
                generate_tissue(tissue, shape=TRAINING_SHAPE, seed=seed, synapses_per_um3=TRAINING_SYNAPSES_PER_UM3)
                (tissue / ".complete").write_text("ok\n")
            for kind, stages in (("oracle", ("objects", "hulls", "mapping", "synapses")),
                                 ("cnn", ("organelles", "objects", "hulls", "mapping", "synapses"))):
                out = workdir / f"{kind}{seed}"
                if not (out / ".complete").exists():
                    shutil.rmtree(out, ignore_errors=True)
                    cfg = oracle_config(tissue, ("barrier", "organelles") if kind == "oracle" else ("barrier",))
                    cfg.synapses.model, cfg.synapses.type_model = "none", "threshold"  # features do not depend on the models
                    write_config(cfg, out)
                    for name in stages:
                        run_stage(get_stage(name), Analysis.open(out), executor=executor, progress=False)
                    (out / ".complete").write_text("ok\n")
                    progress(f"seed {seed}: {kind} analysis ready")
                analyses.append(out)
                tissues.append(tissue)
    finally:
        executor.close()
    return analyses, tissues
