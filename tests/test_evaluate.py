"""`syconn-ng evaluate` and the scoring modules of the organelle and hull stages: pure scores on small arrays,
and the table / JSON on the end-to-end analysis of `tests/pipeline_data.py`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline_data import analysis, cli, tissue
from syconn_ng.errors import InputError
from syconn_ng.evaluation import evaluate_analysis, format_table, rounded, truth_root
from syconn_ng.evaluation.hulls import cell_ious, object_owners
from syconn_ng.evaluation.organelles import score_objects
from syconn_ng.stages import STAGES

pytestmark = pytest.mark.xdist_group("pipeline")


def test_objects_are_matched_one_to_one_at_iou_one_half():
    truth = np.zeros((20, 20, 4), np.uint64)
    truth[0:5, 0:5] = 1     # found exactly
    truth[10:20, 0:5] = 2   # found only in part (IoU 0.3): a miss and a false object
    truth[0:1, 15:17] = 3   # 8 voxels: below the stage's size filter, left out
    pred = np.zeros_like(truth)
    pred[0:5, 0:5] = 7
    pred[10:13, 0:5] = 8
    s = score_objects(pred, truth, min_truth_voxels=10)
    assert (s["n_true"], s["n_pred"]) == (2, 2)
    assert s["precision"] == 0.5 and s["recall"] == 0.5 and s["f1"] == 0.5


def test_cell_iou_counts_only_the_same_id():
    truth = np.zeros((10, 10, 2), np.uint64)
    truth[:5] = 4
    truth[5:] = 9
    pred = np.zeros_like(truth)
    pred[:4] = 4      # 80 % of cell 4, nothing else
    pred[4:] = 9      # cell 9 plus one row of cell 4
    s = cell_ious(pred, truth, [4, 9, 12]).set_index("cell")
    assert s.loc[4, "iou"] == pytest.approx(0.8) and s.loc[4, "precision"] == 1.0
    assert s.loc[9, "iou"] == pytest.approx(50 / 60) and s.loc[9, "precision"] == pytest.approx(50 / 60)
    assert s.loc[12, "iou"] == 0.0  # traced but absent from both


def test_organelle_owner_is_the_cell_of_the_true_object_it_overlaps_most():
    truth = np.zeros((6, 1, 1), np.uint64)
    truth[:2], truth[2:6] = 1, 2
    pred = np.full_like(truth, 5)
    owners = object_owners(pred, truth, pd.Series({1: 100, 2: 200}))
    assert owners.to_dict("records") == [{"object": 5, "true_id": 2, "cell": 200}]


def test_scores_are_rounded_json_and_a_table():
    scores = rounded({"organelles": {"mi": {"f1": np.float64(0.123456), "n": np.int64(3)}, "x": float("nan")},
                      "synapses": {"skipped": "no tables/synapses.csv"}})
    assert scores == {"organelles": {"mi": {"f1": 0.1235, "n": 3}, "x": None}, "synapses": {"skipped": "no tables/synapses.csv"}}
    json.dumps(scores)
    table = format_table(scores)
    assert "mi.f1" in table and "0.1235" in table and "skipped" in table


def test_truth_folder_is_the_synthetic_tissue_or_its_truth_subfolder(tmp_path, tmp_path_factory):
    t = tissue(tmp_path_factory)
    assert truth_root(t) == t.resolve() and truth_root(t / "truth") == t.resolve()
    with pytest.raises(InputError, match="not a synthetic ground-truth folder"):
        truth_root(tmp_path)


def test_evaluate_json_has_the_keys_others_rely_on(tmp_path_factory):
    ana = analysis(tmp_path_factory, "cnn")
    scores = json.loads(cli("evaluate", ana, "--truth", ana / "truth", "--json").stdout)
    for kind in ("mi", "vc", "sj"):
        assert 0 <= scores["organelles"][kind]["f1"] <= 1
    assert 0 <= scores["hulls"]["median_iou"] <= 1
    required = {"synapses": ["precision", "recall", "f1"], "compartments": ["accuracy"], "celltypes": ["accuracy"]}
    for stage, keys in required.items():
        if stage in STAGES:
            assert all(isinstance(scores[stage][k], float) for k in keys), scores[stage]
        else:
            assert "skipped" in scores[stage]
    table = cli("evaluate", ana, "--truth", ana).stdout
    assert "organelles" in table and "median_iou" in table


def test_evaluate_skips_stages_that_have_not_run(tmp_path, tmp_path_factory):
    t = tissue(tmp_path_factory)
    (tmp_path / "syconn.toml").write_text((t / "syconn.toml").read_text())
    scores = evaluate_analysis(tmp_path, t)
    assert all("skipped" in v for v in scores.values()), scores
