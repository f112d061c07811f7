"""Compartments: node features along the skeleton, smoothing, labels, forests, the stage on the unseen
seed-1 tissue (true barrier and organelles as oracles), training from KNOSSOS labels, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compartments_data import compartments_analysis
from syconn_ng.compartments.features import CellGraph, adjacency, node_features, terminal_segments, window_sums
from syconn_ng.compartments.forest import fit_forest, load_forest, save_forest
from syconn_ng.compartments.labels import read_cell_labels, read_node_labels
from syconn_ng.compartments.smoothing import smooth_probabilities
from syconn_ng.errors import InputError
from syconn_ng.io.annotation import read_annotation, write_annotation
from syconn_ng.io.skeleton import Node, Parameters, Skeleton, Tree

# Measured on seed 1 with the bundled forests (docs/compartments.md); floors 0.05 below.
ACCURACY_FLOOR = 0.93
DENDRITE_F1_FLOOR = 0.91
SPINE_NECK_F1_FLOOR = 0.70


def chain(n: int, spacing_nm: float = 100.0, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    pos = np.zeros((n, 3))
    pos[:, axis] = np.arange(n) * spacing_nm
    return pos, np.column_stack([np.arange(n - 1), np.arange(1, n)])


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "syconn_ng", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def analysis(synth_tissue, tmp_path_factory):
    return compartments_analysis(synth_tissue, tmp_path_factory)


# ---------------------------------------------------------------- pure functions

def test_window_sums_count_the_nodes_within_path_distance():
    pos, edges = chain(11)
    s = window_sums(adjacency(pos, edges), np.ones((11, 1)), 250.0)[:, 0]
    assert s[5] == 5 and s[0] == 3 and s[1] == 4


def test_windows_follow_the_skeleton_not_the_straight_line():
    # a hairpin: the two arms are 50 nm apart in space but 2 µm apart along the skeleton
    arm = np.arange(10) * 100.0
    pos = np.concatenate([np.column_stack([arm, np.zeros(10), np.zeros(10)]),
                          np.column_stack([arm[::-1], np.full(10, 50.0), np.zeros(10)])])
    edges = np.column_stack([np.arange(19), np.arange(1, 20)])
    s = window_sums(adjacency(pos, edges), np.ones((20, 1)), 150.0)[:, 0]
    assert s[0] == 2  # node 0 sees node 1 only, not node 19 lying 50 nm away


def test_terminal_segment_lengths_find_a_side_branch():
    pos, edges = chain(21)  # shaft along x
    side = np.array([[1000.0, 100.0 * k, 0.0] for k in range(1, 6)])  # a 500 nm spine at node 10
    pos = np.concatenate([pos, side])
    edges = np.concatenate([edges, [[10, 21], [21, 22], [22, 23], [23, 24], [24, 25]]])
    degree = np.bincount(edges.ravel(), minlength=len(pos))
    length, base = terminal_segments(adjacency(pos, edges), degree, np.full(len(pos), 100.0))
    assert np.all(length[21:] == 500.0) and np.all(base[21:] == 10)
    assert length[10] == 0 and base[10] == -1  # the branch node itself is on no terminal segment


def test_node_features_match_a_per_node_loop():
    rng = np.random.default_rng(0)
    pos, edges = chain(40, spacing_nm=80.0)
    radius = rng.uniform(50, 400, 40)
    mi_nodes = np.array([3, 3, 20, 39])
    graph = CellGraph(pos, edges, radius, {"mi": (mi_nodes, np.full(4, 1e7))})
    X, names = node_features(graph, window_um=0.5, small_window_um=0.2)
    col = {n: X[:, i] for i, n in enumerate(names)}
    assert X.shape == (40, len(names)) and np.isfinite(X).all()
    w = np.full(40, 80.0)
    w[[0, -1]] = 40.0
    for i in range(40):
        near = [j for j in range(40) if abs(i - j) * 80.0 <= 500.0]
        assert col["wl_len_um"][i] == pytest.approx(w[near].sum() / 1000, rel=1e-5)
        assert col["wl_rad_mean"][i] == pytest.approx(np.average(radius[near], weights=w[near]), rel=1e-4)
        assert col["wl_mi_n"][i] == sum(1 for m in mi_nodes if m in near)
    assert col["dist_end_um"][0] == 0 and col["dist_end_um"][20] == pytest.approx(19 * 0.08, rel=1e-5)


def test_smoothing_removes_a_single_flipped_node():
    pos, edges = chain(30)
    p = np.tile([0.9, 0.1], (30, 1))
    p[15] = [0.2, 0.8]
    s = smooth_probabilities(pos, edges, p, distance_nm=500.0)
    assert s.argmax(axis=1).tolist() == [0] * 30
    assert np.allclose(s.sum(axis=1), 1.0)
    assert np.array_equal(smooth_probabilities(pos, edges, p, distance_nm=0), p)


# ---------------------------------------------------------------- labels

def _write_labels(path, comments, tree_comment="", cell=7):
    tree = Tree(id=cell, comment=tree_comment)
    for i, c in enumerate(comments, start=1):
        tree.nodes.append(Node(id=i, x=10.0 * i, y=5.0, z=3.0, comment=c))
        if i > 1:
            tree.edges.append((i - 1, i))
    write_annotation(Skeleton(trees=[tree], parameters=Parameters(scale_nm=(10.0, 10.0, 20.0))), path)
    return path


def test_node_labels_accept_case_spaces_and_synonyms(tmp_path):
    f = _write_labels(tmp_path / "a.k.zip", ["AXON", "Spine Head", "spine-neck", "", "bouton", "dendrite"])
    df = read_node_labels([f], synonyms={"bouton": "axon"})
    assert df["label"].tolist() == ["axon", "spine_head", "spine_neck", "axon", "dendrite"]
    assert df["node"].tolist() == [1, 2, 3, 5, 6] and set(df["cell"]) == {7}
    with pytest.raises(InputError, match="synonym 'bouton' maps to 'terminal'"):
        read_node_labels([f], synonyms={"bouton": "terminal"})
    with pytest.raises(InputError, match="must map to a name"):
        read_node_labels([f], synonyms={"bouton": 3})


def test_unknown_node_labels_are_listed_not_dropped(tmp_path):
    a = _write_labels(tmp_path / "a.nml", ["axon", "boutn", "boutn", "shaft"])
    b = _write_labels(tmp_path / "b.nml", ["dendrite", "glia"], cell=8)
    with pytest.raises(InputError) as err:
        read_node_labels([a, b])
    msg = str(err.value)
    for name in ("'boutn' (2×", "'shaft' (1×", "'glia' (1×", "a.nml", "b.nml", "synonyms"):
        assert name in msg


def test_cell_types_from_tree_comments_and_csv(tmp_path):
    f = _write_labels(tmp_path / "a.k.zip", ["axon"], tree_comment="MSN")
    csv = tmp_path / "types.csv"
    csv.write_text("cell,type\n8,GP\n9,\n")
    df = read_cell_labels([f, csv])
    assert dict(zip(df["cell"].astype(int), df["label"])) == {7: "MSN", 8: "GP"}
    bad = tmp_path / "bad.csv"
    bad.write_text("id,kind\n1,GP\n")
    with pytest.raises(InputError, match="expected columns cell,type"):
        read_cell_labels([bad])
    clash = tmp_path / "clash.csv"
    clash.write_text("cell,type\n7,GP\n")
    with pytest.raises(InputError, match="cell 7 is labelled"):
        read_cell_labels([f, clash])


# ---------------------------------------------------------------- forests

def _toy_forest():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 3)).astype(np.float32)
    y = np.where(X[:, 0] > 0, "axon", "dendrite")
    groups = np.repeat(np.arange(12), 10)
    return fit_forest(X, y, groups, ["a", "b", "c"], n_estimators=5, max_depth=4, min_samples_leaf=1, cv_folds=3, seed=0), X


def test_forest_round_trip_keeps_features_classes_and_grouped_cv(tmp_path):
    forest, X = _toy_forest()
    skops_path, meta_path = save_forest(forest, tmp_path / "m.skops")
    meta = json.loads(meta_path.read_text())
    assert meta["cv"]["grouped_by"] == "cell" and meta["cv"]["folds"] == 3 and meta["cv"]["accuracy"] > 0.7
    assert {"scikit-learn", "skops", "numpy"} <= set(meta["versions"]) and meta["training"]["cells"] == 12
    loaded = load_forest(skops_path)
    assert loaded.features == ["a", "b", "c"] and loaded.classes == ["axon", "dendrite"]
    assert np.allclose(loaded.predict_proba(X, ["a", "b", "c"]), forest.predict_proba(X, ["a", "b", "c"]))


def test_model_whose_features_do_not_match_is_refused_naming_them(tmp_path):
    forest, X = _toy_forest()
    path, _ = save_forest(forest, tmp_path / "m.skops")
    loaded = load_forest(path)
    with pytest.raises(InputError) as err:
        loaded.predict_proba(X, ["a", "b", "z"])
    assert "missing ['c']" in str(err.value) and "unexpected ['z']" in str(err.value) and "m.skops" in str(err.value)
    with pytest.raises(InputError, match="different order"):
        loaded.check_features(["c", "b", "a"])


def test_model_file_without_metadata_or_with_foreign_types_is_refused(tmp_path):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    forest, _ = _toy_forest()
    path, meta = save_forest(forest, tmp_path / "m.skops")
    meta.unlink()
    with pytest.raises(InputError, match="no metadata"):
        load_forest(path)
    evil = tmp_path / "evil.skops"
    (tmp_path / "evil.json").write_text(json.dumps({"features": ["a"], "classes": ["x"]}))
    evil.write_bytes(sio.dumps(FunctionTransformer(func=json.loads)))
    with pytest.raises(InputError, match=r"refusing to load .*json\.loads"):
        load_forest(evil)
    evil.write_bytes(sio.dumps(FunctionTransformer(func=np.exp)))
    with pytest.raises(InputError, match="holds a FunctionTransformer, not a RandomForestClassifier"):
        load_forest(evil)


# ---------------------------------------------------------------- the stage on unseen tissue

def test_compartments_table_has_one_row_per_traced_node(analysis):
    nodes = pd.read_csv(analysis.tables_dir / "nodes.csv")
    table = pd.read_csv(analysis.tables_dir / "compartments.csv")
    assert list(table.columns) == ["cell", "node", "compartment", "probability", "p_axon", "p_dendrite", "p_soma",
                                   "p_spine_head", "p_spine_neck", "myelin", "myelinated"]
    assert table[["cell", "node"]].equals(nodes[["cell", "node"]])
    p = table[[c for c in table.columns if c.startswith("p_")]].to_numpy()
    assert np.allclose(p.sum(axis=1), 1.0, atol=2e-3)
    assert set(table["compartment"]) <= {"axon", "dendrite", "soma", "spine_head", "spine_neck"}


def test_compartments_reach_the_accuracy_floor_on_unseen_tissue(analysis, synth_tissue):
    from syconn_ng.evaluation.compartments import evaluate

    r = evaluate(analysis.root, synth_tissue)
    assert r["accuracy"] >= ACCURACY_FLOOR
    assert r["accuracy"] >= r["majority_baseline"] + 0.15
    assert r["f1"]["dendrite"] >= DENDRITE_F1_FLOOR and r["f1"]["axon"] >= ACCURACY_FLOOR
    assert r["spines"]["f1"]["spine_neck"] >= SPINE_NECK_F1_FLOOR


def test_axon_does_not_flicker_along_the_skeleton(analysis, synth_tissue):
    """Compartment changes along traced edges: no more than the truth has, plus a few."""
    truth = pd.read_csv(Path(synth_tissue) / "truth" / "nodes.csv")
    pred = pd.read_csv(analysis.tables_dir / "compartments.csv")
    coarse = {"spine_head": "dendrite", "spine_neck": "dendrite"}
    changes = {"truth": 0, "pred": 0}
    for f in sorted((Path(synth_tissue) / "skeletons").glob("*.k.zip")):
        for tree in read_annotation(f).trees:
            for name, table in (("truth", truth), ("pred", pred)):
                lab = table[table["cell"] == tree.id].set_index("node")["compartment"].replace(coarse)
                changes[name] += sum(1 for a, b in tree.edges if a in lab.index and b in lab.index and lab[a] != lab[b])
    assert changes["pred"] <= changes["truth"] + 5


def test_compartment_skeletons_carry_a_compartment_vertex_attribute(analysis):
    from cloudvolume import Skeleton as CvSkeleton

    from syconn_ng.stages.hulls import load_hull

    d = Path(analysis.root) / "layers" / "cells" / "skeletons_compartments"
    info = json.loads((d / "info").read_text())
    assert [a["id"] for a in info["vertex_attributes"]] == ["radius", "compartment", "myelin"]
    assert {a["data_type"] for a in info["vertex_attributes"]} == {"float32"}  # Neuroglancer's renderer refuses 8-bit attributes
    table = pd.read_csv(analysis.tables_dir / "compartments.csv")
    cell = int(table.groupby("cell").size().idxmax())
    sk = CvSkeleton.from_precomputed((d / str(cell)).read_bytes(), segid=cell, vertex_attributes=info["vertex_attributes"])
    hull = load_hull(analysis, cell)
    assert len(sk.vertices) == len(hull["node_vx"])
    codes = {"axon": 0, "dendrite": 1, "soma": 2, "spine_head": 3, "spine_neck": 4}
    traced = hull["node_id"] > 0
    expected = table[table["cell"] == cell].set_index("node").loc[hull["node_id"][traced], "compartment"].map(codes).to_numpy()
    assert np.array_equal(sk.compartment.ravel()[traced], expected)


def test_enriched_kzip_has_compartment_node_comments(analysis):
    table = pd.read_csv(analysis.tables_dir / "compartments.csv")
    cell = int(table["cell"].iloc[0])
    skel = read_annotation(Path(analysis.root) / "skeletons" / "enriched" / f"cell_{cell}.k.zip")
    comments = {n.id: n.comment for n in skel.tree(cell).nodes}
    expected = table[table["cell"] == cell].set_index("node")["compartment"].to_dict()
    assert comments == expected


# ---------------------------------------------------------------- training and bad input

def _labelled(synth_tissue, tmp_path, drop=()):
    """The seed-1 labelled skeletons, with the node comments in `drop` blanked (fit-only, never a bundled model)."""
    out = tmp_path / "labels"
    out.mkdir()
    for f in sorted((Path(synth_tissue) / "skeletons_labelled").glob("*.k.zip")):
        skel = read_annotation(f)
        for n in skel.nodes():
            if n.comment in drop:
                n.comment = ""
        write_annotation(skel, out / f.name)
    return str(out / "*.k.zip")


def test_train_compartments_cli_writes_a_model_the_stage_accepts(analysis, synth_tissue, tmp_path):
    out = tmp_path / "c.skops"
    r = run_cli("train", "compartments", "--analysis", analysis.root, "--labels", str(Path(synth_tissue) / "skeletons_labelled" / "*.k.zip"),
                "--out", out, "--trees", 5, "--max-depth", 6)
    assert r.returncode == 0, r.stderr
    assert "cross-validation (5 folds by cell)" in r.stdout
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["classes"] == ["axon", "dendrite", "soma"] and meta["cv"]["grouped_by"] == "cell"
    assert meta["feature_params"] == {"window_um": analysis.config.compartments.window_um,
                                      "small_window_um": analysis.config.compartments.small_window_um}
    bundled = load_forest(Path(__file__).resolve().parent.parent / "syconn_ng" / "models" / "compartments.skops")
    assert load_forest(out).features == bundled.features


def test_skeletons_without_any_labels_are_an_error(analysis, synth_tissue, tmp_path):
    r = run_cli("train", "spines", "--analysis", analysis.root, "--labels", str(Path(synth_tissue) / "skeletons" / "*.k.zip"),
                "--out", tmp_path / "s.skops")
    assert r.returncode == 2 and "carries a compartment comment" in r.stderr and not (tmp_path / "s.skops").exists()


def test_a_class_with_no_examples_is_an_error(analysis, synth_tissue, tmp_path):
    labels = _labelled(synth_tissue, tmp_path, drop=("spine head", "spine_head"))
    r = run_cli("train", "spines", "--analysis", analysis.root, "--labels", labels, "--out", tmp_path / "s.skops")
    assert r.returncode == 2 and "no labelled example of class(es) ['spine_head']" in r.stderr
    r = run_cli("train", "spines", "--analysis", analysis.root, "--labels", labels, "--out", tmp_path / "s.skops",
                "--classes", "shaft,spine_neck", "--trees", 3)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "s.json").read_text())["classes"] == ["shaft", "spine_neck"]


def test_stage_refuses_a_model_whose_features_do_not_match(analysis, tmp_path):
    import shutil

    from syconn_ng.analysis import Analysis
    from syconn_ng.config import load_config, write_config
    from syconn_ng.stages.compartments import STAGE

    forest, _ = _toy_forest()
    forest.meta["feature_params"] = {"window_um": 3.0, "small_window_um": 0.5}
    model, _ = save_forest(forest, tmp_path / "other.skops")
    root = tmp_path / "ana"
    root.mkdir()
    shutil.copytree(analysis.root / "tables", root / "tables")
    shutil.copytree(analysis.root / "scratch" / "hulls", root / "scratch" / "hulls")
    cfg = load_config(analysis.root)
    cfg.compartments.model = str(model)
    write_config(cfg, root)
    with pytest.raises(InputError, match=r"model features do not match .*missing \["):
        STAGE.prepare(Analysis.open(root), fresh=True)


def test_train_needs_labels_or_the_synthetic_recipe(analysis, tmp_path):
    r = run_cli("train", "spines", "--analysis", analysis.root, "--out", tmp_path / "s.skops")
    assert r.returncode == 2 and "give --analysis and --labels, or --synthetic WORKDIR" in r.stderr
    r = run_cli("train", "spines", "--analysis", analysis.root, "--labels", "x/*.k.zip", "--synthetic", tmp_path, "--out", tmp_path / "s.skops")
    assert r.returncode == 2 and "--synthetic replaces --analysis and --labels" in r.stderr
