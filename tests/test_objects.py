"""The `objects` stage: thresholded organelle probabilities → objects with one global id across tasks.

Every test runs the real stage (real precomputed layers on disk, a real process pool) and reads
the results back through CloudVolume; references are whole-volume `cc3d` labellings.
"""

from __future__ import annotations

import json
import tempfile

import cc3d
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from organelle_data import VOXEL_SIZE_NM, assert_same_partition, make_analysis, random_probabilities, read_layer, write_organelles
from syconn_ng.box import Box
from syconn_ng.engine import LocalExecutor, run_stage
from syconn_ng.errors import InputError, StageError
from syconn_ng.stages.objects import ORGANELLES, STAGE, TABLE_COLUMNS, threshold_u8

pytestmark = pytest.mark.xdist_group("objects")

NO_FILTER = {"min_voxels_sj": 0, "min_voxels_vc": 0, "min_voxels_mi": 0}


@pytest.fixture(scope="module")
def executor():
    ex = LocalExecutor(1)
    yield ex
    ex.close()


def reference(prob_c: np.ndarray, fraction: float, connectivity: int, min_voxels: int = 0) -> np.ndarray:
    """Whole-volume labelling of one channel, small objects removed."""
    ref = cc3d.connected_components(prob_c > threshold_u8(fraction), connectivity=connectivity)
    if min_voxels:
        ref = cc3d.dust(ref, threshold=min_voxels, connectivity=connectivity, in_place=False)
    return ref


def run(analysis, executor, **kw):
    return run_stage(STAGE, analysis, executor=executor, progress=False, **kw)


@pytest.mark.parametrize(
    "connectivity, chunk, task, density, seed",
    [
        (26, 32, 32, 0.06, 1),
        (26, 16, 48, 0.07, 2),  # task of 3 chunks; 96 = 2 tasks
        (26, 32, 64, 0.06, 3),  # partial tasks at the far end
        (18, 16, 32, 0.12, 4),
        (6, 32, 32, 0.25, 5),
        (6, 16, 16, 0.22, 6),
    ],
)
def test_stitched_objects_equal_whole_volume_labelling(tmp_path, executor, connectivity, chunk, task, density, seed):
    prob = random_probabilities((96, 96, 96), seed=seed, density=density)
    a = make_analysis(tmp_path, prob, chunk=(chunk,) * 3, task=(task,) * 3, objects={"connectivity": connectivity, **NO_FILTER})
    run(a, executor)
    for c, kind in enumerate(ORGANELLES):
        got = read_layer(a.layer_path(kind))
        want = reference(prob[..., c], getattr(a.config.objects, f"threshold_{kind}"), connectivity)
        assert got.dtype == np.uint64
        assert_same_partition(got, want)
        assert got.max() == len(np.unique(want)) - 1  # ids are 1..n, no gaps


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.tuples(*[st.integers(9, 48)] * 3),
    chunk=st.sampled_from([8, 16]),
    task_chunks=st.tuples(*[st.integers(1, 3)] * 3),
    connectivity=st.sampled_from([6, 18, 26]),
    seed=st.integers(0, 2**16),
)
def test_stitching_equals_whole_volume_labelling_for_any_grid(executor, shape, chunk, task_chunks, connectivity, seed):
    density = {6: 0.25, 18: 0.12, 26: 0.06}[connectivity]
    prob = random_probabilities(shape, seed=seed, density=density, balls=2)
    with tempfile.TemporaryDirectory() as tmp:
        a = make_analysis(tmp, prob, chunk=(chunk,) * 3, task=tuple(chunk * t for t in task_chunks),
                          objects={"connectivity": connectivity, **NO_FILTER})
        run(a, executor)
        for c, kind in enumerate(ORGANELLES):
            want = reference(prob[..., c], getattr(a.config.objects, f"threshold_{kind}"), connectivity)
            assert_same_partition(read_layer(a.layer_path(kind)), want)


def test_volume_not_a_multiple_of_the_task_size_is_labelled_whole(tmp_path, executor):
    prob = random_probabilities((70, 50, 45), seed=7, density=0.06)
    a = make_analysis(tmp_path, prob, chunk=(16, 16, 16), task=(32, 32, 16), objects=NO_FILTER)
    run(a, executor)
    for c, kind in enumerate(ORGANELLES):
        assert_same_partition(read_layer(a.layer_path(kind)), reference(prob[..., c], getattr(a.config.objects, f"threshold_{kind}"), 26))


def test_object_spanning_three_tasks_gets_one_id(tmp_path, executor):
    prob = np.zeros((96, 32, 32, 3), dtype=np.uint8)
    prob[5:90, 10, 10, 2] = 255  # a thin mitochondrion through all three tasks along x
    prob[40, 3:30, 10, 2] = 255  # a branch crossing it inside the middle task
    a = make_analysis(tmp_path, prob, task=(32, 32, 32), objects=NO_FILTER)
    run(a, executor)
    mi = read_layer(a.layer_path("mi"))
    assert set(np.unique(mi)) == {0, 1}
    assert (mi[5:90, 10, 10] == 1).all()
    table = pd.read_csv(a.tables_dir / "objects_mi.csv")
    assert list(table["voxels"]) == [85 + 27 - 1]


@pytest.mark.parametrize("connectivity, corner_merged, edge_merged", [(26, True, True), (18, False, True), (6, False, False)])
def test_objects_touching_across_task_corners_and_edges_follow_the_connectivity(tmp_path, executor, connectivity, corner_merged, edge_merged):
    prob = np.zeros((64, 64, 64, 3), dtype=np.uint8)
    # sj: two voxels meeting only at the corner shared by 8 tasks (32³ tasks)
    prob[31, 31, 31, 0] = prob[32, 32, 32, 0] = 255
    # vc: two voxels meeting only along the edge between 4 tasks
    prob[31, 31, 10, 1] = prob[32, 32, 10, 1] = 255
    # mi: a staircase zig-zagging over the corner: (31,32,31) low-x task, (32,31,32) another
    prob[31, 32, 31, 2] = prob[32, 31, 32, 2] = 255
    a = make_analysis(tmp_path, prob, objects={"connectivity": connectivity, **NO_FILTER})
    run(a, executor)
    n_sj = read_layer(a.layer_path("sj")).max()
    n_vc = read_layer(a.layer_path("vc")).max()
    n_mi = read_layer(a.layer_path("mi")).max()
    assert n_sj == (1 if corner_merged else 2)
    assert n_vc == (1 if edge_merged else 2)
    assert n_mi == (1 if corner_merged else 2)


def test_global_ids_follow_task_order_then_first_voxel(tmp_path, executor):
    prob = random_probabilities((64, 64, 64), seed=11, density=0.06)
    a = make_analysis(tmp_path, prob, chunk=(16, 16, 16), task=(32, 32, 32), objects=NO_FILTER)
    run(a, executor)
    for c, kind in enumerate(ORGANELLES):
        want = reference(prob[..., c], getattr(a.config.objects, f"threshold_{kind}"), 26)
        order = []  # reference labels in order of first appearance: tasks by z, y, x; x-fastest scan inside
        seen = set()
        for box in sorted(Box.from_shape(want.shape).chunks((32, 32, 32)), key=lambda b: b.start[::-1]):
            sub = want[box.slices()].ravel(order="F")
            for label in pd.unique(sub[sub > 0]):
                if label not in seen:
                    seen.add(label)
                    order.append(label)
        lut = np.zeros(want.max() + 1, dtype=np.uint64)
        lut[order] = np.arange(1, len(order) + 1)
        np.testing.assert_array_equal(read_layer(a.layer_path(kind)), lut[want])


def test_size_filter_applies_to_the_whole_object_not_its_parts(tmp_path, executor):
    prob = np.zeros((64, 32, 32, 3), dtype=np.uint8)
    prob[28:36, 5, 5, 2] = 255  # 8 voxels, 4 on each side of a task border: kept with min 8
    prob[29:35, 20, 20, 2] = 255  # 6 voxels across the border: dropped
    prob[3:12, 25, 25, 2] = 255  # 9 voxels inside one task: kept
    a = make_analysis(tmp_path, prob, objects={**NO_FILTER, "min_voxels_mi": 8})
    run(a, executor)
    mi = read_layer(a.layer_path("mi"))
    assert mi[28:36, 5, 5].min() > 0 and len(np.unique(mi[28:36, 5, 5])) == 1
    assert (mi[29:35, 20, 20] == 0).all()
    assert mi[3:12, 25, 25].min() > 0
    assert mi.max() == 2
    assert sorted(pd.read_csv(a.tables_dir / "objects_mi.csv")["voxels"]) == [8, 9]


def test_hysteresis_grows_objects_from_seeds_in_other_tasks(tmp_path, executor):
    thr = threshold_u8(9 / 21)
    prob = np.zeros((96, 32, 32, 3), dtype=np.uint8)
    prob[2:94, 8, 8, 2] = thr // 2 + 5  # weak voxels through all tasks ...
    prob[80, 8, 8, 2] = 255  # ... seeded only in the last task
    prob[2:94, 20, 20, 2] = thr // 2 + 5  # weak everywhere, no seed: dropped
    a = make_analysis(tmp_path, prob, objects={**NO_FILTER, "hysteresis_ratio": 0.5})
    run(a, executor)
    mi = read_layer(a.layer_path("mi"))
    assert (mi[2:94, 8, 8] == 1).all()
    assert (mi[:, 20, 20] == 0).all()
    assert mi.max() == 1


def test_object_tables_describe_the_objects_in_the_layer(tmp_path, executor):
    prob = random_probabilities((64, 64, 64), seed=12, density=0.05)
    a = make_analysis(tmp_path, prob, objects={"min_voxels_sj": 3, "min_voxels_vc": 3, "min_voxels_mi": 5})
    run(a, executor)
    for kind in ORGANELLES:
        seg = read_layer(a.layer_path(kind))
        table = pd.read_csv(a.tables_dir / f"objects_{kind}.csv")
        assert tuple(table.columns) == TABLE_COLUMNS
        assert list(table["id"]) == list(range(1, seg.max() + 1))
        assert (table["voxels"] >= getattr(a.config.objects, f"min_voxels_{kind}")).all()
        for row in table.sample(n=min(25, len(table)), random_state=0).itertuples():
            xyz = np.argwhere(seg == row.id)
            assert row.voxels == len(xyz)
            assert row.volume_nm3 == pytest.approx(len(xyz) * np.prod(VOXEL_SIZE_NM))
            assert [row.bbox_x0, row.bbox_y0, row.bbox_z0] == list(xyz.min(0))
            assert [row.bbox_x1, row.bbox_y1, row.bbox_z1] == list(xyz.max(0) + 1)
            np.testing.assert_allclose([row.centroid_x, row.centroid_y, row.centroid_z], xyz.mean(0))
            assert seg[row.rep_x, row.rep_y, row.rep_z] == row.id


def test_empty_volume_gives_zero_layers_and_header_only_tables(tmp_path, executor):
    a = make_analysis(tmp_path, np.zeros((64, 64, 32, 3), dtype=np.uint8))
    run(a, executor)
    for kind in ORGANELLES:
        seg = read_layer(a.layer_path(kind))
        assert seg.shape == (64, 64, 32) and not seg.any()
        text = (a.tables_dir / f"objects_{kind}.csv").read_text()
        assert text.strip() == ",".join(TABLE_COLUMNS)


def test_missing_input_chunk_is_reported_with_layer_and_chunk(tmp_path, executor):
    prob = random_probabilities((64, 64, 64), seed=3, density=0.05)
    a = make_analysis(tmp_path, prob)
    (tmp_path / "layers/organelles/10_10_20/32-64_0-32_0-32").unlink()
    with pytest.raises(StageError) as err:
        run(a, executor)
    msg = str(err.value)
    assert "1 of 8 tasks of pass 'label' failed" in msg
    assert "layers/organelles" in msg and "32-64_0-32_0-32" in msg and "InputError" in msg
    done = {p.name for p in (tmp_path / "state/objects").glob("label_*.json")}
    assert len(done) == 7 and "label_32-64_0-32_0-32.json" not in done  # the other tasks finished


def test_missing_input_chunk_reads_as_zeros_when_configured(tmp_path, executor):
    prob = random_probabilities((64, 64, 64), seed=3, density=0.05)
    a = make_analysis(tmp_path, prob, chunking={"missing_chunks": "zeros"}, objects=NO_FILTER)
    (tmp_path / "layers/organelles/10_10_20/32-64_0-32_0-32").unlink()
    run(a, executor)
    prob[32:64, 0:32, 0:32] = 0
    assert_same_partition(read_layer(a.layer_path("mi")), reference(prob[..., 2], 9 / 21, 26))


@pytest.mark.parametrize("dtype, channels, expected", [(np.float32, 3, "float32 with 3"), (np.uint8, 1, "uint8 with 1")])
def test_input_of_wrong_dtype_or_channel_count_is_rejected_before_work(tmp_path, executor, dtype, channels, expected):
    write_organelles(tmp_path / "layers/organelles", np.zeros((32, 32, 32, channels), dtype=dtype))
    a = make_analysis(tmp_path, None)
    with pytest.raises(InputError) as err:
        run(a, executor)
    assert "layers/organelles" in str(err.value) and expected in str(err.value) and "3 channels" in str(err.value)
    assert not (tmp_path / "state/objects").exists() and not (tmp_path / "layers/mi").exists()


def test_oracle_layer_replaces_the_organelle_stage_output(tmp_path, executor):
    prob = random_probabilities((64, 32, 32), seed=21, density=0.05)
    write_organelles(tmp_path / "truth/organelles", prob)
    a = make_analysis(tmp_path / "analysis", None, oracle=str(tmp_path / "truth/organelles"), objects=NO_FILTER)
    run(a, executor)
    assert not (tmp_path / "analysis/layers/organelles").exists()
    assert_same_partition(read_layer(a.layer_path("vc")), reference(prob[..., 1], 6 / 21, 26))
    params = json.loads((tmp_path / "analysis/state/objects/_params.json").read_text())
    assert params["params"]["input"].endswith("truth/organelles")


def match_by_overlap(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, int, int]:
    """Object-level (precision, recall, n_pred, n_truth): objects match when their IoU exceeds 0.5."""
    fg = (pred > 0) & (truth > 0)
    pairs, overlap = np.unique(np.stack([pred[fg], truth[fg]]), axis=1, return_counts=True)
    p_ids, p_size = np.unique(pred[pred > 0], return_counts=True)
    t_ids, t_size = np.unique(truth[truth > 0], return_counts=True)
    p_vox = dict(zip(p_ids, p_size))
    t_vox = dict(zip(t_ids, t_size))
    iou = overlap / (np.array([p_vox[p] + t_vox[t] for p, t in pairs.T]) - overlap)
    good = pairs[:, iou > 0.5]
    precision = len(set(good[0])) / max(len(p_ids), 1)
    recall = len(set(good[1])) / max(len(t_ids), 1)
    return precision, recall, len(p_ids), len(t_ids)


def touching_truth_ids(truth: np.ndarray, connectivity: int) -> np.ndarray:
    """Ids of true objects that touch another true object under `connectivity` (no thresholding can split them)."""
    comp = cc3d.connected_components(truth > 0, connectivity=connectivity)
    pairs = np.unique(np.stack([comp[truth > 0], truth[truth > 0]]), axis=1)
    shared, n = np.unique(pairs[0], return_counts=True)
    return pairs[1][np.isin(pairs[0], shared[n > 1])]


@pytest.mark.parametrize("connectivity", [6, 26])
def test_objects_from_true_organelles_match_the_true_objects(synth_tissue, tmp_path, executor, connectivity):
    from syconn_ng.analysis import Analysis
    from syconn_ng.config import load_config, write_config

    cfg = load_config(synth_tissue)  # the tissue's own config, in a separate analysis dir (the tissue is shared)
    cfg.dataset.raw = str(synth_tissue / "raw")
    cfg.oracle.organelles = str(synth_tissue / "truth/organelles")
    cfg.objects.connectivity = connectivity
    write_config(cfg, tmp_path)
    a = Analysis.open(tmp_path)
    run(a, executor)
    for kind in ORGANELLES:
        truth = read_layer(synth_tissue / "truth" / kind)
        ids, sizes = np.unique(truth[truth > 0], return_counts=True)
        assert len(ids) > 0
        small = ids[sizes < getattr(cfg.objects, f"min_voxels_{kind}")]  # below the size filter by design
        touching = touching_truth_ids(truth, connectivity)  # true objects in contact form one object
        assert len(touching) <= 0.05 * len(ids)
        truth[np.isin(truth, np.concatenate([small, touching]))] = 0
        pred = read_layer(a.layer_path(kind))
        pred[np.isin(pred, np.unique(pred[np.isin(read_layer(synth_tissue / "truth" / kind), touching)]))] = 0
        precision, recall, n_pred, n_truth = match_by_overlap(pred, truth)
        assert precision >= 0.99 and recall >= 0.99, (kind, precision, recall, n_pred, n_truth)
