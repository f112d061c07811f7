"""The `connectome` stage: wiring matrices from synapse tables, filters, type-sorted order, CSV / HDF5 / PNG
outputs, per-cell summaries, and the evaluation against the synthetic truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from syconn_ng.analysis import Analysis
from syconn_ng.config import Config, write_config
from syconn_ng.connectome.matrix import build_connectome, cell_summary, filter_synapses, read_matrix_csv, sort_cells
from syconn_ng.engine.driver import run_stage
from syconn_ng.errors import InputError
from syconn_ng.evaluation.connectome import evaluate, score_pairs
from syconn_ng.stages import get_stage
from syconn_ng.stages.connectome import load_connectome

TYPES = ["EA", "MSN", "GP", "INT"]


def random_tables(n_cells=14, n_syn=120, seed=0):
    """A cell table (ids in random order, types) and a synapse table with every column the stage reads."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.arange(10, 10_000, dtype=np.uint64), n_cells, replace=False) + np.uint64(2**40)
    cells = pd.DataFrame({"id": ids, "type": rng.choice(TYPES, n_cells), "type_probability": rng.uniform(0.4, 1, n_cells).round(3)})
    pre, post = rng.choice(ids, n_syn), rng.choice(ids, n_syn)
    post = np.where(pre == post, np.roll(post, 1), post)
    syn = pd.DataFrame({"id": np.arange(1, n_syn + 1), "pre_cell": pre, "post_cell": post,
                        "x": rng.uniform(0, 100, n_syn).round(2), "y": rng.uniform(0, 100, n_syn).round(2),
                        "z": rng.uniform(0, 50, n_syn).round(2), "area_um2": rng.uniform(0.01, 0.5, n_syn).round(5),
                        "probability": rng.uniform(0.5, 1, n_syn).round(4), "type": rng.choice(["asymmetric", "symmetric"], n_syn),
                        "pre_compartment": rng.choice(["axon", "axon", "axon", "dendrite"], n_syn),
                        "post_compartment": rng.choice(["dendrite", "spine_head", "spine_neck", "soma", "axon"], n_syn)})
    return syn, cells


def make_analysis(root, syn: pd.DataFrame | None, cells: pd.DataFrame | None, **connectome) -> Analysis:
    cfg = Config()
    for k, v in connectome.items():
        setattr(cfg.connectome, k, v)
    write_config(cfg, root)
    (root / "tables").mkdir(parents=True, exist_ok=True)
    if syn is not None:
        syn.to_csv(root / "tables" / "synapses.csv", index=False)
    if cells is not None:
        cells.to_csv(root / "tables" / "cells.csv", index=False)
    return Analysis.open(root)


def run_connectome(analysis):
    return run_stage(get_stage("connectome"), analysis, progress=False)


# --- pure functions -------------------------------------------------------------------------------------

def test_matrix_sums_area_pre_to_post_with_cells_sorted_by_type_then_id():
    cells = pd.DataFrame({"id": [9, 3, 7, 5, 4], "type": ["INT", "MSN", "EA", "MSN", "OTHER"]})
    syn = pd.DataFrame({"pre_cell": [7, 7, 3, 9, 5, 8], "post_cell": [3, 3, 9, 5, 7, 7],
                        "area_um2": [0.1, 0.2, 0.05, 0.3, 0.4, 1.0]})
    r = build_connectome(syn, cells, type_order=TYPES)
    order = [7, 3, 5, 9, 8]  # EA, MSN (3 < 5), INT, then cell 8, absent from the cell table, last; 4 has no synapse
    assert r["area"].index.tolist() == order and r["area"].columns.tolist() == order
    assert list(r["types"]) == ["EA", "MSN", "MSN", "INT", ""]
    assert r["area"].loc[3, 7] == pytest.approx(0.3)  # [post, pre]: two synapses 7 → 3
    assert r["count"].loc[3, 7] == 2 and r["count"].loc[7, 8] == 1 and r["count"].to_numpy().sum() == 6
    assert r["area"].loc[9, 3] == pytest.approx(0.05) and r["area"].loc[3, 9] == 0
    assert r["type_area"].loc["MSN", "EA"] == pytest.approx(0.3) and r["type_area"].to_numpy().sum() == pytest.approx(2.05)
    assert sort_cells([5, 4, 2], ["B", "A", ""], ()).tolist() == [4, 5, 2]


def test_filters_probability_axo_dendritic_and_synapse_type():
    syn, _ = random_tables()
    kept = filter_synapses(syn, min_probability=0.8, axo_dendritic_only=True, synapse_type="symmetric")
    want = syn[(syn.probability >= 0.8) & (syn.pre_compartment == "axon") & syn.post_compartment.isin(["dendrite", "spine_head", "spine_neck"])
               & (syn.type == "symmetric")]
    assert 0 < len(kept) < len(syn)
    assert kept["id"].tolist() == want["id"].tolist()
    with pytest.raises(ValueError):
        filter_synapses(syn, synapse_type="excitatory")


def test_cell_summary_counts_inputs_outputs_areas_and_distinct_partners():
    cells = pd.DataFrame({"id": [1, 2, 3, 4], "type": ["EA", "MSN", "MSN", "GP"]})
    syn = pd.DataFrame({"pre_cell": [1, 1, 1, 2], "post_cell": [2, 2, 3, 3], "area_um2": [0.1, 0.2, 0.3, 0.4]})
    s = cell_summary(syn, cells, TYPES).set_index("id")
    assert list(s.columns) == ["type", "n_in", "n_out", "area_in_um2", "area_out_um2", "partners_in", "partners_out"]
    assert s.loc[1, ["n_out", "partners_out", "n_in"]].tolist() == [3, 2, 0]
    assert s.loc[1, "area_out_um2"] == pytest.approx(0.6)
    assert s.loc[3, ["n_in", "partners_in"]].tolist() == [2, 2] and s.loc[3, "area_in_um2"] == pytest.approx(0.7)
    assert s.loc[4, ["n_in", "n_out"]].tolist() == [0, 0]  # a cell without synapses is listed too
    assert s.index.tolist() == [1, 2, 3, 4]


def test_pair_scores_weight_r_and_pair_precision_recall():
    idx = pd.MultiIndex.from_tuples([(1, 2), (1, 3), (2, 3)], names=["pre_cell", "post_cell"])
    true = pd.Series([1.0, 2.0, 3.0], index=idx)
    pred = pd.concat([pd.Series([1.0, 2.5], index=idx[:2]), pd.Series([0.5], index=pd.MultiIndex.from_tuples([(3, 1)]))])
    s = score_pairs(pred, true)
    assert s["pair_precision"] == pytest.approx(2 / 3) and s["pair_recall"] == pytest.approx(2 / 3)
    assert s["pair_f1"] == pytest.approx(2 / 3)
    # union (1,2) (1,3) (2,3) (3,1): pred 1, 2.5, 0, 0.5; true 1, 2, 3, 0
    assert s["weight_r"] == pytest.approx(np.corrcoef([1, 2.5, 0, 0.5], [1, 2, 3, 0])[0, 1])


# --- the stage ------------------------------------------------------------------------------------------

def test_connectome_stage_writes_matrix_csv_counts_h5_png_and_cell_summary(tmp_path):
    import h5py
    from PIL import Image

    syn, cells = random_tables()
    analysis = make_analysis(tmp_path / "ana", syn, cells)
    report = run_connectome(analysis)
    assert report.ran == 1
    t = analysis.tables_dir
    area = read_matrix_csv(t / "matrix.csv")
    pivot = syn.pivot_table(index="post_cell", columns="pre_cell", values="area_um2", aggfunc="sum", fill_value=0.0)
    ids = area.index.to_numpy(np.uint64)
    expect = pivot.reindex(index=ids, columns=ids, fill_value=0.0)
    np.testing.assert_allclose(area.to_numpy(), expect.to_numpy(), atol=1e-5)
    assert (t / "matrix.csv").read_text().splitlines()[0].startswith("post_cell,")
    types = cells.set_index("id").loc[ids, "type"].tolist()
    assert [TYPES.index(x) for x in types] == sorted(TYPES.index(x) for x in types)  # grouped by type in type_order
    counts = read_matrix_csv(t / "matrix_counts.csv")
    assert counts.to_numpy().sum() == len(syn) and counts.index.equals(area.index)
    with h5py.File(t / "matrix.h5") as f:
        np.testing.assert_allclose(f["area_um2"][:], area.to_numpy(), atol=1e-5)
        assert f["post_ids"][:].tolist() == ids.tolist() and f["count"][:].sum() == len(syn)
        assert [x.decode() for x in f["types"][:]] == types
        assert f["type_area_um2"][:].sum() == pytest.approx(syn["area_um2"].sum())
    img = np.asarray(Image.open(t / "matrix.png").convert("RGB")).astype(int)
    assert img.shape[0] > 300 and img.shape[1] > 300
    crimson = np.all(np.abs(img - [220, 20, 60]) < 30, axis=2)
    assert crimson.sum() > 100, "type boundaries are drawn"
    summary = pd.read_csv(t / "cell_summary.csv")
    assert len(summary) == len(cells) and summary["n_in"].sum() == summary["n_out"].sum() == len(syn)
    got = load_connectome(analysis.root)
    assert got["area"].equals(area) and list(got["types"]) == types
    assert run_connectome(analysis).ran == 0  # done: a re-run skips


def test_config_filters_reach_the_outputs(tmp_path):
    syn, cells = random_tables(seed=2)
    analysis = make_analysis(tmp_path / "ana", syn, cells, synapse_type="asymmetric", axo_dendritic_only=True, min_probability=0.7)
    run_connectome(analysis)
    counts = read_matrix_csv(analysis.tables_dir / "matrix_counts.csv")
    assert counts.to_numpy().sum() == len(filter_synapses(syn, min_probability=0.7, axo_dendritic_only=True, synapse_type="asymmetric"))
    cfg = analysis.root / "syconn.toml"
    cfg.write_text(cfg.read_text().replace('synapse_type = "asymmetric"', 'synapse_type = "all"'))
    run_connectome(Analysis.open(analysis.root))  # changed parameters: the stage runs again
    counts = read_matrix_csv(analysis.tables_dir / "matrix_counts.csv")
    assert counts.to_numpy().sum() == len(filter_synapses(syn, min_probability=0.7, axo_dendritic_only=True))


def test_empty_synapse_table_gives_valid_empty_outputs(tmp_path):
    import h5py
    from PIL import Image

    syn, cells = random_tables()
    analysis = make_analysis(tmp_path / "ana", syn.iloc[:0], cells)
    run_connectome(analysis)
    t = analysis.tables_dir
    assert (t / "matrix.csv").read_text().strip() == "post_cell"
    assert read_matrix_csv(t / "matrix_counts.csv").shape == (0, 0)
    with h5py.File(t / "matrix.h5") as f:
        assert f["area_um2"].shape == (0, 0)
    Image.open(t / "matrix.png").verify()
    summary = pd.read_csv(t / "cell_summary.csv")
    assert len(summary) == len(cells) and summary[["n_in", "n_out"]].to_numpy().sum() == 0


@pytest.mark.parametrize("case, message", [
    ("no_synapses", "run the 'synapses' stage first"),
    ("no_cells", "run the 'celltypes' stage first"),
    ("no_area", "missing column(s) area_um2"),
    ("bad_id", "must hold cell ids"),
    ("filter_column", "need column pre_compartment"),
    ("duplicate_cell", "is listed twice"),
])
def test_bad_input_names_the_file_and_the_problem(tmp_path, case, message):
    syn, cells = random_tables()
    extra = {}
    if case == "no_synapses":
        syn = None
    elif case == "no_cells":
        cells = None
    elif case == "no_area":
        syn = syn.drop(columns="area_um2")
    elif case == "bad_id":
        syn = syn.astype({"pre_cell": object})
        syn.loc[3, "pre_cell"] = "cell_7"
    elif case == "duplicate_cell":
        cells = pd.concat([cells, cells.iloc[[2]]])
    elif case == "filter_column":
        syn = syn.drop(columns="pre_compartment")
        extra["axo_dendritic_only"] = True
    analysis = make_analysis(tmp_path / "ana", syn, cells, **extra)
    with pytest.raises(InputError) as err:
        run_connectome(analysis)
    assert message in str(err.value)
    assert ("cells.csv" if case in ("no_cells", "duplicate_cell") else "synapses.csv") in str(err.value)
    assert not (analysis.tables_dir / "matrix.csv").exists()


# --- against the truth ----------------------------------------------------------------------------------

def truth_tables(tissue):
    """Synapse and cell tables in the pipeline's format made from the tissue's truth (a perfect prediction)."""
    syn = pd.read_csv(tissue / "truth" / "synapses.csv", dtype={"pre_cell": np.uint64, "post_cell": np.uint64})
    cells = pd.read_csv(tissue / "truth" / "cells.csv", dtype={"id": np.uint64})
    traced = cells[cells.traced == 1]
    syn = syn[syn.pre_cell.isin(traced.id) & syn.post_cell.isin(traced.id)].reset_index(drop=True)
    syn = syn.assign(probability=1.0, pre_compartment="axon")
    return syn, traced[["id", "type"]].assign(type_probability=1.0)


def test_truth_derived_tables_score_perfectly_and_a_dropped_synapse_costs_exactly_its_pair(tmp_path, synth_tissue):
    syn, cells = truth_tables(synth_tissue)
    assert len(syn) >= 3
    analysis = make_analysis(tmp_path / "perfect", syn, cells)
    run_connectome(analysis)
    s = evaluate(analysis.root, synth_tissue)
    assert s["weight_r"] == 1.0 and s["pair_precision"] == s["pair_recall"] == s["pair_f1"] == 1.0
    pairs = syn.groupby(["pre_cell", "post_cell"]).size()
    lone = pairs[pairs == 1].index[0]  # a pair joined by one synapse: dropping it loses the pair
    drop = syn[(syn.pre_cell == lone[0]) & (syn.post_cell == lone[1])].index
    analysis = make_analysis(tmp_path / "dropped", syn.drop(index=drop), cells)
    run_connectome(analysis)
    s = evaluate(analysis.root, synth_tissue)
    n = len(pairs)
    assert s["pair_precision"] == 1.0 and s["pair_recall"] == round((n - 1) / n, 4)
    assert s["pair_f1"] == round(2 * (n - 1) / (2 * n - 1), 4)
    true_w = syn.groupby(["pre_cell", "post_cell"])["area_um2"].sum()
    pred_w = true_w.copy()
    pred_w[lone] = 0.0
    assert s["weight_r"] == round(float(np.corrcoef(pred_w.to_numpy(), true_w.to_numpy())[0, 1]), 4)
    assert evaluate(tmp_path / "dropped", synth_tissue).keys() >= {"weight_r", "pair_precision", "pair_recall", "pair_f1"}


def test_evaluation_is_skipped_without_the_stage_outputs(tmp_path, synth_tissue):
    make_analysis(tmp_path / "ana", None, None)
    assert "skipped" in evaluate(tmp_path / "ana", synth_tissue)


def test_connectome_of_the_end_to_end_pipeline_matches_the_truth(tmp_path_factory):
    """The oracle analysis of `tests/pipeline_data.py` (shared with the pipeline tests): the matrix holds every
    synapse of `tables/synapses.csv`, and its pairs match the truth (measured: 4 of 5 true pairs found, none
    wrong: pair precision 1.0, recall 0.8, F1 0.889, weight r 0.86; the missed synapse's partner hull does
    not reach the cleft at the volume's face)."""
    from pipeline_data import analysis, tissue

    ana = analysis(tmp_path_factory, "oracle")
    syn = pd.read_csv(ana / "tables" / "synapses.csv")
    counts = read_matrix_csv(ana / "tables" / "matrix_counts.csv")
    assert len(syn) > 0 and counts.to_numpy().sum() == len(syn)
    cells = pd.read_csv(ana / "tables" / "cells.csv")
    summary = pd.read_csv(ana / "tables" / "cell_summary.csv")
    assert set(cells["id"]) <= set(summary["id"]) and summary["n_out"].sum() == len(syn)
    s = evaluate(ana, tissue(tmp_path_factory))
    assert s["pair_precision"] >= 0.95 and s["pair_f1"] >= 0.83 and s["weight_r"] >= 0.81, s


@pytest.mark.parametrize("line, element", [('synapse_type = "all"', 'synapse_type = "inhibitory"'),
                                            ("axo_dendritic_only = false", 'axo_dendritic_only = "yes"'),
                                            ("min_probability = 0.0", "min_probability = 1.5")])
def test_bad_connectome_config_values_are_refused(tmp_path, line, element):
    from syconn_ng.errors import ConfigError

    syn, cells = random_tables()
    analysis = make_analysis(tmp_path / "ana", syn, cells)
    cfg = analysis.root / "syconn.toml"
    assert line in cfg.read_text()
    cfg.write_text(cfg.read_text().replace(line, element))
    with pytest.raises(ConfigError, match=r"\[connectome\]"):
        run_connectome(Analysis.open(analysis.root))
