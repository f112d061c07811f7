"""The `hulls` stage: rays from skeleton nodes through the barrier → node radii, hulls, the `cells` layer.

Pure functions are tested on hand-made membrane tubes; the stage on real precomputed layers
(hand-made tubes, and the session's synthetic tissue with its true barrier as the oracle), read
back through CloudVolume and scored against the tissue's ground truth.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hulls_data import VOXEL_SIZE_NM, chain_skeleton, read_layer, reader, synth_analysis, tube_analysis, tube_barrier
from syconn_ng.box import Box
from syconn_ng.engine import LocalExecutor, run_stage
from syconn_ng.errors import InputError
from syconn_ng.hulls.raycast import RayParams, cast_rays, cell_hull, interpolate_skeleton, median_per_group
from syconn_ng.hulls.skeletons import load_skeletons
from syconn_ng.hulls.voxelize import bin_centres, bin_index, grow_labels, node_planes, rasterize_stars
from syconn_ng.io.annotation import write_annotation
from syconn_ng.io.skeleton import Parameters, Skeleton
from syconn_ng.layers import open_layer
from syconn_ng.stages.hulls import STAGE, hull_path

pytestmark = pytest.mark.xdist_group("hulls")

VS = np.asarray(VOXEL_SIZE_NM)
SHAPE = (96, 96, 48)


def tube_hull(barrier, centre_xy=(48, 48), params=RayParams(), axis=2, **kw):
    """The hull of a straight skeleton along `axis` through `centre_xy`, in `barrier`."""
    n = barrier.shape[axis]
    pos = np.zeros((len(range(4, n - 4, 8)), 3))
    pos[:, axis] = list(range(4, n - 4, 8))
    others = [a for a in range(3) if a != axis]
    pos[:, others[0]], pos[:, others[1]] = centre_xy
    edges = np.stack([np.arange(len(pos) - 1), np.arange(1, len(pos))], axis=1)
    return cell_hull(reader(barrier), pos, np.arange(1, len(pos) + 1, dtype=np.uint64), edges, cell_id=kw.pop("cell_id", 7),
                     voxel_size_nm=VS, bounds=Box.from_shape(barrier.shape), params=params, **kw)


def radial_nm(points_vx, centre_xy, axis=2):
    others = [a for a in range(3) if a != axis]
    return np.hypot(*[(points_vx[:, a] - c) * VS[a] for a, c in zip(others, centre_xy)])


# ---------------------------------------------------------------- pure ray casting

def test_rays_stop_where_they_enter_the_membrane():
    barrier = np.zeros((64, 1, 1), dtype=np.uint8)
    barrier[40:43] = 255  # membrane from 395 nm (voxel 40 starts at 39.5 voxels)
    barrier[20] = 200  # weak barrier: 0.78 < threshold, the ray goes on, but the sum keeps it (as SyConn's)
    origins = np.zeros((1, 3))
    entry, stop, _ = cast_rays(barrier, origins, np.array([[1.0, 0, 0]]), voxel_size_nm=VS, step_vx=0.25, cutoff=0.4,
                            threshold=2.2, max_length_nm=600)
    assert 395 <= entry[0] <= 398
    assert 405 <= stop[0] <= 408  # 0.78 + two voxels of membrane ≥ 2.2
    entry, stop, _ = cast_rays(barrier, origins, np.array([[1.0, 0, 0]]), voxel_size_nm=VS, step_vx=0.25, cutoff=0.4,
                            threshold=2.2, max_length_nm=300)
    assert np.isnan(entry[0]) and np.isnan(stop[0])  # not stopped within the maximum length: discarded
    entry, _, left = cast_rays(barrier, np.zeros((2, 3)), np.array([[-1.0, 0, 0], [1.0, 0, 0]]), voxel_size_nm=VS, step_vx=0.25,
                               cutoff=0.4, threshold=2.2, max_length_nm=600)
    assert left.tolist() == [True, False] and np.isnan(entry[0])  # left the array: to be cast again in a larger box


def test_node_radius_is_the_tube_radius_in_nm_whatever_the_axis():
    for axis, shape in ((2, SHAPE), (0, (48, 96, 48))):
        barrier = np.zeros(shape, dtype=np.uint8)
        centre = (48, 24) if axis == 0 else (48, 48)
        ctr = [0, 0, 0]
        others = [a for a in range(3) if a != axis]
        ctr[others[0]], ctr[others[1]] = centre
        tube_barrier(shape, centre_vx=ctr, radius_nm=150, axis=axis, barrier=barrier)
        hull = tube_hull(barrier, centre, axis=axis)
        inner = hull.node_id > 0
        # membrane entry: the first voxel centred at >= 150 nm starts half a voxel (5 or 10 nm) earlier
        assert np.all(np.abs(hull.radius_nm[inner] - 150) < 12), (axis, hull.radius_nm)
        assert np.percentile(radial_nm(hull.points_vx, centre, axis), 50) == pytest.approx(150, abs=10)


def test_moving_the_membrane_moves_the_hull():
    narrow = tube_barrier(SHAPE, centre_vx=(48, 48, 0), radius_nm=120)
    wide = tube_barrier(SHAPE, centre_vx=(48, 48, 0), radius_nm=220)
    shifted = tube_barrier(SHAPE, centre_vx=(56, 48, 0), radius_nm=150)
    r_narrow = np.nanmedian(tube_hull(narrow).radius_nm)
    r_wide = np.nanmedian(tube_hull(wide).radius_nm)
    assert r_narrow == pytest.approx(120, abs=12) and r_wide == pytest.approx(220, abs=12)
    hull = tube_hull(shifted, params=RayParams(max_dist_mult=3.0))  # off centre: the far wall is 1.5 radii away
    side = np.abs(hull.points_vx[:, 1] - 48) < 0.5  # points along x through the skeleton
    plus = hull.points_vx[side & (hull.points_vx[:, 0] > 50), 0]
    minus = hull.points_vx[side & (hull.points_vx[:, 0] < 46), 0]
    assert np.median(plus) == pytest.approx(56 + 14.5, abs=1)  # the membrane moved 8 voxels to +x
    assert np.median(minus) == pytest.approx(56 - 14.5, abs=1)


def test_removing_a_membrane_lets_the_hull_reach_the_next_one():
    barrier = tube_barrier(SHAPE, centre_vx=(48, 48, 0), radius_nm=150)
    barrier[48:, 40:57] = 0  # a window in the +x wall
    barrier[90:93] = 255  # the next membrane out, at x = 90 (three voxels: 3 ≥ 2.2 stops a ray)
    hull = tube_hull(barrier, params=RayParams(max_dist_mult=10.0, outlier_neighbors=0))
    through = np.abs(hull.points_vx[:, 1] - 48) < 0.5
    beyond = hull.points_vx[through & (hull.points_vx[:, 0] > 48), 0]
    assert beyond.max() == pytest.approx(89.5, abs=0.6)


def test_hull_points_beyond_the_radius_limit_and_outliers_are_dropped():
    barrier = tube_barrier(SHAPE, centre_vx=(48, 48, 0), radius_nm=150)
    barrier[48:, 47:50, 20:28] = 0  # a narrow gap: a few rays leak out to the volume's face
    kept = tube_hull(barrier)
    r = radial_nm(kept.points_vx, (48, 48))
    assert r.max() <= 1.4 * np.nanmax(kept.radius_nm) + 1
    loose = tube_hull(barrier, params=RayParams(max_dist_mult=100.0, outlier_neighbors=0))
    assert radial_nm(loose.points_vx, (48, 48)).max() > 400


def test_hull_is_reproducible_and_independent_of_node_batching():
    barrier = tube_barrier(SHAPE, centre_vx=(48, 48, 0), radius_nm=150)
    one_box = tube_hull(barrier)
    many_boxes = tube_hull(barrier, params=RayParams(max_box_voxels=1000))  # one node per box
    again = tube_hull(barrier)
    other_cell = tube_hull(barrier, cell_id=8)
    for name, a in one_box.arrays().items():
        np.testing.assert_array_equal(a, many_boxes.arrays()[name], err_msg=name)
        np.testing.assert_array_equal(a, again.arrays()[name], err_msg=name)
    assert not np.array_equal(one_box.points_vx, other_cell.points_vx)  # tilts are seeded per cell


def test_long_edges_are_interpolated_to_the_node_spacing():
    pos = np.array([[0, 0, 0], [20, 0, 0], [20, 0, 10]], dtype=float)
    new, edges, original = interpolate_skeleton(pos, np.array([[0, 1], [1, 2]]), voxel_size_nm=VS, spacing_nm=50)
    assert list(original[:3]) == [0, 1, 2] and (original[3:] == -1).all()
    lengths = np.linalg.norm((new[edges[:, 0]] - new[edges[:, 1]]) * VS, axis=1)
    assert lengths.max() <= 50 + 1e-9
    assert lengths.sum() == pytest.approx(200 + 200)
    assert len(edges) == len(new) - 1  # still a tree


def test_median_per_group_ignores_missing_values():
    values = np.array([1, 3, np.nan, 2, 10, 20, np.nan], dtype=np.float32)
    group = np.array([0, 0, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(median_per_group(values, group, 4), [2, 15, np.nan, np.nan])


# ---------------------------------------------------------------- pure voxelisation

def test_bin_index_inverts_bin_centres():
    for n in (1, 5, 12):
        centres = bin_centres(n)
        np.testing.assert_array_equal(bin_index(centres, n), np.arange(6 * n * n))


def test_voxelised_tube_matches_the_interior():
    barrier = tube_barrier(SHAPE, centre_vx=(48, 48, 0), radius_nm=150)
    hull = tube_hull(barrier)
    nodes = np.flatnonzero(hull.node_id > 0)
    pts = np.isin(hull.point_node, nodes)
    remap = np.full(len(hull.node_vx), -1)
    remap[nodes] = np.arange(len(nodes))
    planes = node_planes(hull.node_vx[nodes] * VS, hull.points_vx[pts] * VS, remap[hull.point_node[pts]], n_bins=12, max_gap_deg=35)
    reach = np.full(len(nodes), 600.0)
    labels = rasterize_stars(Box.from_shape(SHAPE), hull.node_vx[nodes], planes, reach, np.full(len(nodes), 7, np.uint64),
                             voxel_size_nm=VS, n_bins=12)
    grid = np.indices(SHAPE)
    interior = np.hypot((grid[0] - 48) * 10, (grid[1] - 48) * 10) < 150
    core = interior & (grid[2] >= 8) & (grid[2] < 36)  # between the end nodes
    iou = (labels[core] == 7).sum() / (core.sum() + ((labels == 7) & ~interior).sum())
    assert iou > 0.9
    assert ((labels == 7) & (barrier > 0)).sum() < 0.05 * (labels == 7).sum()


def test_voxel_claimed_by_two_cells_goes_to_the_nearer_node():
    box = Box.from_shape((40, 10, 10))
    planes = np.zeros((2, 6 * 4 * 4, 4), dtype=np.float32)
    planes[:, :, 0] = 1.0  # plane x ≤ c in every direction bin: a huge region ...
    planes[:, :, 3] = 1e6
    planes[1, :, 0] = -1.0  # ... reaching +x for node 0 and −x for node 1
    labels = rasterize_stars(box, np.array([[10, 5, 5], [30, 5, 5]], float), planes, np.array([400.0, 400.0]),
                             np.array([3, 4], dtype=np.uint64), voxel_size_nm=VS, n_bins=4)
    assert (labels[:20] == 3).all() and (labels[21:] == 4).all() and labels[20, 5, 5] in (3, 4)


def test_growth_fills_up_to_the_membrane_and_not_across():
    labels = np.zeros((20, 5, 5), dtype=np.uint64)
    labels[2:5] = 1
    free = np.ones(labels.shape, dtype=bool)
    free[10] = False  # a membrane plane at x = 10
    grown = grow_labels(labels, free, (4, 0, 0))
    assert (grown[0:9] == 1).all() and (grown[9:] == 0).all()
    assert (grow_labels(labels, free, (0, 0, 0)) == labels).all()


# ---------------------------------------------------------------- skeleton files

def _write(path, trees):
    write_annotation(Skeleton(trees=trees, parameters=Parameters(scale_nm=VOXEL_SIZE_NM)), path)


def test_nodes_outside_the_dataset_are_skipped_with_one_warning(tmp_path, caplog):
    tree = chain_skeleton(12, [(5, 5, 5), (6, 5, 5), (500, 5, 5), (7, 5, -3)])
    _write(tmp_path / "a.nml", [tree])
    with caplog.at_level(logging.WARNING, logger="syconn_ng.hulls"):
        (cell,) = load_skeletons([tmp_path / "a.nml"], voxel_size_nm=VOXEL_SIZE_NM, bounds=Box.from_shape(SHAPE))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "a.nml" in lines[0] and "tree 12" in lines[0] and "2 node(s)" in lines[0]
    assert list(cell.node_ids) == [1, 2] and cell.edges.tolist() == [[0, 1]]


def test_a_tree_id_used_twice_is_an_input_error(tmp_path):
    _write(tmp_path / "a.nml", [chain_skeleton(3, [(5, 5, 5)])])
    _write(tmp_path / "b.nml", [chain_skeleton(3, [(6, 6, 6)], first_node_id=10)])
    with pytest.raises(InputError, match=r"b\.nml.*tree id 3 is also used in .*a\.nml"):
        load_skeletons([tmp_path / "a.nml", tmp_path / "b.nml"], voxel_size_nm=VOXEL_SIZE_NM, bounds=Box.from_shape(SHAPE))


# ---------------------------------------------------------------- the stage on hand-made tubes

@pytest.fixture(scope="module")
def executor():
    ex = LocalExecutor(1)
    yield ex
    ex.close()


def test_cells_layer_is_independent_of_task_size_and_box_batching(tmp_path, executor):
    small = tube_analysis(tmp_path / "a", task=(32, 32, 32), hulls={"max_ray_length_nm": 500.0})
    large = tube_analysis(tmp_path / "b", task=(64, 64, 64), hulls={"max_ray_length_nm": 500.0, "max_box_voxels": 50_000})
    for a in (small, large):
        run_stage(STAGE, a, executor=executor, progress=False)
    cells_a, cells_b = read_layer(small.layer_path("cells")), read_layer(large.layer_path("cells"))
    np.testing.assert_array_equal(cells_a, cells_b)
    assert set(np.unique(cells_a)) == {0, 5, 9}
    for cell in (5, 9):
        with np.load(hull_path(small, cell)) as x, np.load(hull_path(large, cell)) as y:
            for k in x.files:
                np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    # the voxels of each tube's interior between its end nodes are its cell
    grid = np.indices(SHAPE)
    inside5 = (np.hypot((grid[0] - 30) * 10, (grid[1] - 40) * 10) < 140) & (grid[2] > 5) & (grid[2] < 42)
    assert (cells_a[inside5] == 5).mean() > 0.97
    nodes = pd.read_csv(small.tables_dir / "nodes.csv")
    assert list(nodes.columns) == ["cell", "node", "x", "y", "z", "radius_nm"]
    assert sorted(nodes.groupby("cell").radius_nm.median().round(-1)) == [110, 150]


def test_rerun_skips_finished_tasks_and_changed_parameters_redo_them(tmp_path, executor):
    a = tube_analysis(tmp_path, hulls={"max_ray_length_nm": 500.0})
    first = run_stage(STAGE, a, executor=executor, progress=False)
    again = run_stage(STAGE, a, executor=executor, progress=False)
    assert first.ran > 0 and again.ran == 0
    cfg_text = (tmp_path / "syconn.toml").read_text().replace("outlier_neighbors = 20", "outlier_neighbors = 5")
    (tmp_path / "syconn.toml").write_text(cfg_text)
    from syconn_ng.analysis import Analysis

    redo = run_stage(STAGE, Analysis.open(tmp_path), executor=executor, progress=False)
    assert redo.ran == first.ran


def test_missing_skeletons_and_bad_barrier_are_input_errors(tmp_path, executor):
    a = tube_analysis(tmp_path)
    for f in (tmp_path / "skeletons").iterdir():
        f.unlink()
    with pytest.raises(InputError, match=r"\[dataset\] skeletons"):
        run_stage(STAGE, a, executor=executor, progress=False)
    b = tube_analysis(tmp_path / "b")
    import json

    info = json.loads((tmp_path / "b" / "barrier" / "info").read_text())
    info["data_type"] = "uint16"
    (tmp_path / "b" / "barrier" / "info").write_text(json.dumps(info))
    with pytest.raises(InputError, match="expected a uint8 barrier layer"):
        run_stage(STAGE, b, executor=executor, progress=False)


# ---------------------------------------------------------------- the stage on synthetic tissue

@pytest.fixture(scope="module")
def synth(synth_tissue, tmp_path_factory):
    return synth_analysis(synth_tissue, tmp_path_factory)


def per_cell_scores(analysis, synth_tissue) -> pd.DataFrame:
    got = read_layer(analysis.layer_path("cells"))
    truth = read_layer(Path(synth_tissue) / "truth" / "cells")
    nodes = pd.read_csv(Path(synth_tissue) / "truth" / "nodes.csv")
    kind = nodes.groupby("cell").compartment.agg(lambda c: "soma" if (c == "soma").any() else ("axon" if (c == "axon").mean() > 0.5 else "dendrite"))
    rows = []
    for cell in nodes.cell.unique():
        g, t = got == cell, truth == cell
        rows.append((cell, kind[cell], (g & t).sum() / max((g | t).sum(), 1), (g & t).sum() / max(g.sum(), 1)))
    return pd.DataFrame(rows, columns=["cell", "kind", "iou", "precision"])


def test_cells_layer_matches_the_true_cells_of_synthetic_tissue(synth, synth_tissue):
    scores = per_cell_scores(synth, synth_tissue)
    summary = scores.groupby("kind").iou.describe()[["count", "25%", "50%", "75%"]].round(3)
    assert scores.iou.median() >= 0.8, f"per-cell IoU:\n{summary}"
    assert scores.precision.median() >= 0.9
    assert scores.groupby("kind").iou.median().min() >= 0.6, f"per-cell IoU:\n{summary}"


def test_node_radii_follow_the_true_radii(synth, synth_tissue):
    got = pd.read_csv(synth.tables_dir / "nodes.csv")
    truth = pd.read_csv(Path(synth_tissue) / "truth" / "nodes.csv")
    m = got.merge(truth, on=["cell", "node"])
    assert len(m) == len(truth)  # every traced node has its row
    assert m.radius_nm.notna().mean() > 0.95
    neurites = m[m.compartment.isin(["axon", "dendrite"])].dropna()
    # truth radii are capsule + fill (45 nm) at the cell boundary; hulls end where the membrane begins
    rho = neurites[["radius_nm", "radius_vx"]].corr(method="spearman").iloc[0, 1]
    assert rho > 0.5
    assert (neurites.groupby("compartment").radius_nm.median().to_dict()["dendrite"]
            > 1.5 * neurites.groupby("compartment").radius_nm.median().to_dict()["axon"])


def test_meshes_and_skeletons_load_in_cloudvolume(synth):
    vol = open_layer(synth.layer_path("cells"))
    cells = pd.read_csv(synth.tables_dir / "nodes.csv").cell.unique()[:5]
    layer_dir = Path(synth.layer_path("cells")[len("file://"):])
    assert not list(layer_dir.rglob("*.gz"))  # a static server can serve every file
    # Neuroglancer's skeleton renderer refuses 8-bit vertex attributes (CloudVolume's default `vertex_types`)
    assert vol.skeleton.meta.info["vertex_attributes"] == [{"id": "radius", "data_type": "float32", "num_components": 1}]
    assert vol.info["mesh"] == "mesh_multires" and vol.mesh.meta.is_sharded()  # what Neuroglancer loads
    for cell in cells:
        cell = int(cell)
        mesh = vol.mesh.get(cell)[cell]
        voxels = np.argwhere(read_layer(synth.layer_path("cells")) == cell)
        lo, hi = voxels.min(0) * VS, (voxels.max(0) + 1) * VS
        assert len(mesh.faces) > 0
        assert np.all(mesh.vertices >= lo - VS) and np.all(mesh.vertices <= hi + VS)
        skel = vol.skeleton.get(cell)
        with np.load(hull_path(synth, cell)) as h:
            np.testing.assert_allclose(skel.vertices, (h["node_vx"] + 0.5) * VS, rtol=1e-6)
            np.testing.assert_allclose(skel.radius, np.nan_to_num(h["radius_nm"]), rtol=1e-6)
        n, m = len(skel.vertices), len(skel.edges)
        assert len((layer_dir / "skeletons" / str(cell)).read_bytes()) == 8 + 12 * n + 8 * m + 4 * n  # radius only
