"""The `synapses` stage: contact sites, candidates, direction, probability, area and type.

Pure functions on small hand-made arrays and tables; the stage on the session's synthetic tissues
(seed 1 and the dense seed 6; true barrier and organelles as oracles, objects → hulls → mapping →
synapses with the bundled forests) scored against their ground truth; empty and contact-free
volumes; the training command in a real subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hulls_data import synth_analysis, tube_analysis
from syconn_ng.analysis import Analysis
from syconn_ng.box import Box
from syconn_ng.engine import LocalExecutor, run_stage
from syconn_ng.errors import InputError
from syconn_ng.evaluation.synapses import evaluate, match_synapses, pooled, score_synapses
from syconn_ng.stages.synapses import SITE_COLUMNS, STAGE, SYNAPSE_COLUMNS
from syconn_ng.synapses.contacts import contact_pieces, contact_voxels, join_pieces
from syconn_ng.synapses.direction import orient
from syconn_ng.synapses.features import choose_pairs

pytestmark = pytest.mark.xdist_group("hulls")

VS = (10.0, 10.0, 20.0)

# measured on the session tissues (seeds 1 and 6 pooled, 18 synapses between traced cells, oracle organelles,
# bundled forests): F1, direction, type accuracy and area r all 1.0; floors are 0.05 below
FLOORS = {"f1": 0.95, "direction_accuracy": 0.95, "type_accuracy": 0.95, "area_r": 0.95}


# ---------------------------------------------------------------- contact sites (pure)

def two_slabs(gap_vx: int) -> np.ndarray:
    """Cells 5 (x < 8) and 9 (x ≥ 8 + gap) in a 20 × 10 × 6 box, an unlabelled gap between."""
    cells = np.zeros((20, 10, 6), np.uint64)
    cells[:8], cells[8 + gap_vx:] = 5, 9
    return cells


def test_contact_voxels_mark_the_gap_between_two_cells_with_their_pair_and_area():
    a, b, area = contact_voxels(two_slabs(3), voxel_size_nm=VS, contact_dist_nm=60)
    contact = b > 0
    xs = np.unique(np.argwhere(contact)[:, 0])
    assert xs.tolist() == [7, 8, 9, 10, 11]  # the gap and the voxel of each cell bounding it
    assert set(a[contact].tolist()) == {5} and set(b[contact].tolist()) == {9}
    assert area.sum() == pytest.approx(10 * 6 * VS[1] * VS[2])  # the face across x: 10 × 6 voxels of 10 × 20 nm


def test_cells_farther_apart_than_contact_dist_have_no_contact():
    _, b, _ = contact_voxels(two_slabs(7), voxel_size_nm=VS, contact_dist_nm=60)  # 70 nm gap
    assert not (b > 0).any()
    _, b, _ = contact_voxels(two_slabs(0), voxel_size_nm=VS, contact_dist_nm=60)  # face to face
    assert np.unique(np.argwhere(b > 0)[:, 0]).tolist() == [7, 8]


def test_contact_sites_split_per_pair_and_join_across_boxes():
    cells = np.zeros((40, 10, 6), np.uint64)
    cells[:8], cells[10:20], cells[22:30], cells[32:] = 1, 2, 1, 3  # contacts 1-2 (twice) and 1-3
    a, b, area = contact_voxels(cells, voxel_size_nm=VS, contact_dist_nm=60)
    whole = contact_pieces(a, b, area)
    assert sorted(zip(whole.cell_a.tolist(), whole.cell_b.tolist())) == [(1, 2), (1, 2), (1, 3)]
    # the same volume cut into two boxes along y: every site is split, then joined again
    parts = [contact_pieces(a[:, s], b[:, s], area[:, s], offset_vx=(0, s.start, 0)) for s in (slice(0, 4), slice(4, 10))]
    offsets = np.cumsum([0] + [len(p.voxels) for p in parts])
    site = join_pieces(np.concatenate([p.cell_a for p in parts]), np.concatenate([p.cell_b for p in parts]),
                       np.concatenate([p.face_vx for p in parts]), np.concatenate([p.face_piece + o for p, o in zip(parts, offsets)]))
    assert len(site) == 6 and site.max() + 1 == 3
    voxels = np.bincount(site, weights=np.concatenate([p.voxels for p in parts]))
    assert sorted(voxels.tolist()) == sorted(whole.voxels.tolist())


# ---------------------------------------------------------------- candidates and direction (pure)

def test_sj_touching_three_cells_takes_the_pair_with_the_largest_overlap():
    overlap = pd.DataFrame({"ov_sj": np.array([7, 7, 7], np.uint64), "ov_a": np.array([1, 1, 2], np.uint64),
                            "ov_b": np.array([2, 3, 3], np.uint64), "ov_voxels": [40.0, 90.0, 15.0]})
    mapping = pd.DataFrame({"object": [7, 7, 7, 8, 8, 9], "cell": [1, 2, 3, 4, 6, 4], "fraction": [0.9, 0.3, 0.6, 0.5, 0.7, 1.0]})
    pairs = choose_pairs(overlap, mapping).set_index("sj_id")
    assert (pairs.loc[7, "cell_a"], pairs.loc[7, "cell_b"]) == (1, 3) and pairs.loc[7, "on_contact"]
    assert (pairs.loc[8, "cell_a"], pairs.loc[8, "cell_b"]) == (4, 6) and not pairs.loc[8, "on_contact"]  # on no contact
    assert 9 not in pairs.index  # one cell only: no pair


def test_direction_pre_is_the_vesicle_side_and_ties_go_to_axon_then_density_then_id():
    df = pd.DataFrame({"cell_a": np.array([1, 1, 1, 1], np.uint64), "cell_b": np.array([2, 2, 2, 2], np.uint64),
                       "vc_voxels_a": [0.0, 300.0, 0.0, 0.0], "vc_voxels_b": [500.0, 100.0, 0.0, 0.0],
                       "p_axon_a": [np.nan, np.nan, 0.1, np.nan], "p_axon_b": [np.nan, np.nan, 0.9, np.nan],
                       "band_raw_a": [100.0, 100.0, 100.0, 90.0], "band_raw_b": [100.0, 100.0, 100.0, 90.0]})
    out = orient(df)
    assert out["pre_cell"].tolist() == [2, 1, 2, 1]
    assert out["direction_rule"].tolist() == ["vc", "vc", "axon", "id"]
    assert out["direction_confidence"].tolist() == [1.0, 0.75, 0.5, 0.5]
    df.loc[3, "band_raw_b"] = 130.0  # b's band brighter: a holds the dark postsynaptic density
    assert orient(df)["pre_cell"].tolist()[3] == 2


def test_with_clouds_on_both_sides_the_nearer_cloud_marks_the_presynaptic_side():
    # b holds more vesicles, but 350 nm away (the cloud of another of its boutons); a's abuts the cleft
    df = pd.DataFrame({"cell_a": np.array([1, 1], np.uint64), "cell_b": np.array([2, 2], np.uint64),
                       "vc_voxels_a": [1500.0, 1500.0], "vc_voxels_b": [1700.0, 0.0],
                       "vc_dist_a_nm": [120.0, 120.0], "vc_dist_b_nm": [360.0, 500.0]})
    out = orient(df)
    assert out["pre_cell"].tolist() == [1, 1]
    assert out["direction_rule"].tolist() == ["vc_nearest", "vc"]
    assert out["direction_confidence"].tolist() == [0.75, 1.0]


def test_matching_needs_the_same_unordered_pair_within_the_distance():
    true = pd.DataFrame({"pre_cell": [1, 3], "post_cell": [2, 4], "x": [10.0, 50.0], "y": [10.0, 50.0], "z": [5.0, 5.0],
                         "type": ["asymmetric", "symmetric"], "area_um2": [0.1, 0.2]})
    pred = pd.DataFrame({"pre_cell": [2, 3, 1], "post_cell": [1, 5, 2], "x": [12.0, 50.0, 60.0], "y": [10.0, 50.0, 60.0],
                         "z": [5.0, 5.0, 5.0], "type": ["asymmetric", "symmetric", "symmetric"], "area_um2": [0.1, 0.2, 0.3]})
    assert match_synapses(pred, true, voxel_size_nm=VS).tolist() == [[0, 0]]  # reversed pair matches; wrong partner or too far not
    s = score_synapses(pred, true, voxel_size_nm=VS)
    assert (s["precision"], s["recall"], s["direction_accuracy"], s["type_accuracy"]) == (round(1 / 3, 4), 0.5, 0.0, 1.0)


# ---------------------------------------------------------------- the stage

def synapses_analysis(synth_dir, tmp_path_factory) -> Analysis:
    """A copy of a session tissue's oracle analysis (objects → hulls → mapping) with the synapses stage run; shared, read-only."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = root / f"synapses_on_{Path(synth_dir).name}"
    done = out / ".complete"
    with FileLock(str(root / f"synapses_on_{Path(synth_dir).name}.lock")):
        if not done.exists():
            src = synth_analysis(synth_dir, tmp_path_factory)
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(src.root, out, ignore=shutil.ignore_patterns(".complete"))
            executor = LocalExecutor(1)
            try:
                run_stage(STAGE, Analysis.open(out), executor=executor, progress=False)
            finally:
                executor.close()
            done.write_text("ok\n")
    return Analysis.open(out)


@pytest.fixture(scope="module")
def runs(synth_tissue, dense_tissue, tmp_path_factory):
    return [(synapses_analysis(t, tmp_path_factory), t) for t in (synth_tissue, dense_tissue)]


def test_synapse_table_has_the_interface_columns_and_valid_values(runs):
    for analysis, _ in runs:
        syn = pd.read_csv(analysis.tables_dir / "synapses.csv")
        assert tuple(syn.columns) == SYNAPSE_COLUMNS
        assert len(syn) > 0 and syn["id"].is_unique
        assert (syn["probability"] >= analysis.config.synapses.min_probability).all()
        assert set(syn["type"]) <= {"asymmetric", "symmetric"} and (syn["pre_cell"] != syn["post_cell"]).all()
        np.testing.assert_allclose(syn["x_nm"], syn["x"] * VS[0], atol=0.1)
        cand = pd.read_csv(analysis.tables_dir / "synapse_candidates.csv")
        assert len(cand) >= len(syn) and set(syn["sj_id"]) <= set(cand["sj_id"])
        sites = pd.read_csv(analysis.tables_dir / "contact_sites.csv")
        assert tuple(sites.columns) == SITE_COLUMNS and (sites["cell_a"] < sites["cell_b"]).all() and (sites["area_um2"] > 0).all()
        traced = set(pd.read_csv(analysis.tables_dir / "nodes.csv")["cell"])
        assert set(sites["cell_a"]) | set(sites["cell_b"]) <= traced


def test_synapses_match_the_truth_above_the_floors_and_the_baselines(runs):
    from syconn_ng.synth.baselines import trivial_baselines

    scores = [evaluate(a.root, Path(t)) for a, t in runs]
    pooled_scores = pooled(scores)
    n_true = pooled_scores["n_true"]
    assert n_true >= 15, scores
    for key, floor in FLOORS.items():
        assert pooled_scores[key] >= floor, (key, pooled_scores, scores)
    base = [trivial_baselines(t) for _, t in runs]
    assert pooled_scores["f1"] > max(b["every_contact_is_synapse"]["f1"] for b in base) + 0.4
    assert pooled_scores["direction_accuracy"] > max(b["random_direction"]["direction_accuracy"] for b in base) + 0.2


def test_annotation_layer_holds_every_synapse_with_its_partners(runs):
    analysis, _ = runs[1]
    syn = pd.read_csv(analysis.tables_dir / "synapses.csv")
    root = analysis.root / "layers" / "synapses"
    info = json.loads((root / "info").read_text())
    assert info["@type"] == "neuroglancer_annotations_v1" and info["annotation_type"] == "POINT"
    assert [p["id"] for p in info["properties"]] == ["area", "probability", "type"]
    assert {r["id"] for r in info["relationships"]} == {"pre_cell", "post_cell"}
    by_id = root / info["by_id"]["key"]
    assert sorted(int(p.name) for p in by_id.iterdir()) == sorted(syn["id"].tolist())
    # each pre cell's file lists exactly that cell's outgoing synapses
    rel = next(r for r in info["relationships"] if r["id"] == "pre_cell")
    pre = syn["pre_cell"].iloc[0]
    data = (root / rel["key"] / str(pre)).read_bytes()
    n = int(np.frombuffer(data[:8], "<u8")[0])
    assert n == int((syn["pre_cell"] == pre).sum())


def test_rerun_is_skipped_and_a_changed_threshold_reruns(runs, tmp_path):
    from syconn_ng.config import load_config, write_config

    src, _ = runs[0]
    root = tmp_path / "a"
    shutil.copytree(src.root, root, ignore=shutil.ignore_patterns(".complete"))
    executor = LocalExecutor(1)
    try:
        assert run_stage(STAGE, Analysis.open(root), executor=executor, progress=False).ran == 0
        cfg = load_config(root)
        cfg.synapses.min_probability = 1.01  # nothing passes: valid, empty synapse outputs
        write_config(cfg, root)
        assert run_stage(STAGE, Analysis.open(root), executor=executor, progress=False).ran > 0
    finally:
        executor.close()
    syn = pd.read_csv(root / "tables" / "synapses.csv")
    assert len(syn) == 0 and tuple(syn.columns) == SYNAPSE_COLUMNS
    assert json.loads((root / "layers" / "synapses" / "info").read_text())["annotation_type"] == "POINT"


def test_results_do_not_depend_on_the_task_boxes(runs, tmp_path):
    from syconn_ng.config import load_config, write_config

    src, _ = runs[1]
    root = tmp_path / "a"
    shutil.copytree(src.root, root, ignore=shutil.ignore_patterns(".complete"))
    cfg = load_config(root)
    cfg.chunking.task_size = [128, 128, 64]  # 8 boxes instead of 1: sites and sj cross box faces
    write_config(cfg, root)
    executor = LocalExecutor(1)
    try:
        assert run_stage(STAGE, Analysis.open(root), executor=executor, progress=False).ran == 9
    finally:
        executor.close()
    for name in ("contact_sites", "synapse_candidates", "synapses"):
        pd.testing.assert_frame_equal(pd.read_csv(root / "tables" / f"{name}.csv"), pd.read_csv(src.tables_dir / f"{name}.csv"))


def test_volume_without_sj_or_contacts_gives_valid_empty_outputs(tmp_path):
    """Two tubes far apart (no contact) and no organelles at all."""
    from syconn_ng.config import load_config, write_config
    from syconn_ng.layers import create_layer, write_box
    from syconn_ng.stages import get_stage

    analysis = tube_analysis(tmp_path)
    shape = (96, 96, 48)
    vol = create_layer(tmp_path / "organelles", layer_type="image", dtype=np.uint8, voxel_size_nm=VS, shape=shape,
                       chunk_size=(32, 32, 32), num_channels=3)
    write_box(vol, Box.from_shape(shape), np.zeros(shape + (3,), np.uint8))
    cfg = load_config(tmp_path)
    cfg.oracle.organelles = "organelles"
    write_config(cfg, tmp_path)
    analysis = Analysis.open(tmp_path)
    executor = LocalExecutor(1)
    try:
        for name in ("objects", "hulls", "mapping", "synapses"):
            run_stage(get_stage(name), analysis, executor=executor, progress=False)
    finally:
        executor.close()
    for name, columns in (("synapses", SYNAPSE_COLUMNS), ("contact_sites", SITE_COLUMNS)):
        df = pd.read_csv(tmp_path / "tables" / f"{name}.csv")
        assert len(df) == 0 and tuple(df.columns) == columns
    assert len(pd.read_csv(tmp_path / "tables" / "synapse_candidates.csv")) == 0


def test_stage_without_mapping_tables_is_an_input_error(tmp_path):
    analysis = tube_analysis(tmp_path)
    with pytest.raises(InputError, match="hulls"):
        STAGE.prepare(analysis, fresh=False)


# ---------------------------------------------------------------- training

def test_train_synapses_command_writes_loadable_forests(runs, tmp_path):
    from syconn_ng.compartments.forest import load_forest

    args = []
    for analysis, tissue in runs:
        args += ["--analysis", str(analysis.root), "--truth", str(tissue)]
    out = tmp_path / "syn.skops"
    r = subprocess.run([sys.executable, "-m", "syconn_ng", "train", "synapses", *args, "--out", str(out), "--trees", "5"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    forest = load_forest(out)
    assert forest.classes == ["none", "synapse"] and forest.meta["training"]["tissues"] == 2
    assert load_forest(tmp_path / "syn_types.skops").classes == ["asymmetric", "symmetric"]
    bad = subprocess.run([sys.executable, "-m", "syconn_ng", "train", "synapses", "--analysis", str(runs[0][0].root),
                          "--truth", str(tmp_path), "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "no labelled synapse table" in bad.stderr
