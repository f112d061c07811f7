"""Sharded annotation layers: the size rule, Neuroglancer's own reader on the sharded synapse layer, the spatial
index limits of a dense layer, and a truncated shard file named in one clear error (`syconn-ng info`)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from syconn_ng.errors import ConfigError, InputError
from syconn_ng.sharding import check_shards, read_shards, use_sharding
from syconn_ng.stages.synapses import write_synapse_layer

VS = (10.0, 10.0, 20.0)


def synapse_table(n: int, seed: int = 0, *, dense_fraction: float = 0.0) -> pd.DataFrame:
    """`n` synapses between 60 cells in a 1000 x 800 x 300 voxel volume; `dense_fraction` of them in one 20³ corner."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, [1000, 800, 300], (n, 3))
    k = int(n * dense_fraction)
    pos[:k] = rng.uniform(0, 20, (k, 3))
    return pd.DataFrame({"id": np.arange(1, n + 1, dtype=np.uint64) * 3, "pre_cell": rng.integers(1, 61, n).astype(np.uint64),
                         "post_cell": rng.integers(1, 61, n).astype(np.uint64), "x": pos[:, 0].round(2), "y": pos[:, 1].round(2),
                         "z": pos[:, 2].round(2), "area_um2": rng.uniform(0.01, 0.5, n).round(5),
                         "probability": rng.uniform(0.5, 1, n).round(4), "type": np.where(rng.random(n) < 0.3, "symmetric", "asymmetric")})


def _files(layer) -> list:
    return [p for p in layer.rglob("*") if p.is_file()]


@pytest.mark.parametrize("n, over, sharded", [(100, 0, True), (100, -1, False), (100, 100, False), (101, 100, True),
                                              (5000, 20000, False)])
def test_the_writer_shards_past_the_configured_size(n, over, sharded):
    assert use_sharding(n, over) is sharded


def test_the_default_and_a_bad_shard_size_in_the_config():
    from syconn_ng.config import Config, config_from_dict

    assert Config().chunking.shard_annotations_over == 20000
    with pytest.raises(ConfigError, match=r"\[chunking\] shard_annotations_over"):
        config_from_dict({"chunking": {"shard_annotations_over": -2}})


def test_neuroglancers_reader_reads_the_sharded_synapse_layer_by_id_relationship_and_space(tmp_path):
    from neuroglancer.read_precomputed_annotations import AnnotationReader

    syn = synapse_table(4000)
    summary = write_synapse_layer(tmp_path / "syn", syn, VS, sharded=True)
    info = json.loads((tmp_path / "syn" / "info").read_text())
    for index in [info["by_id"]] + info["relationships"] + info["spatial"]:
        assert index["sharding"]["@type"] == "neuroglancer_uint64_sharded_v1", index["key"]
    assert {s["sharding"]["hash"] for s in info["spatial"]} == {"identity"}
    assert summary["sharded"] and summary["files"] == len(_files(tmp_path / "syn")) < 4000 / 100
    reader = AnnotationReader("file://" + str(tmp_path / "syn"))
    for row in syn.iloc[::397].itertuples():
        ann = reader.by_id[int(row.id)]
        np.testing.assert_allclose(ann.point, [row.x + 0.5, row.y + 0.5, row.z + 0.5], rtol=1e-6)
        assert [list(map(int, s)) for s in ann.segments] == [[row.pre_cell], [row.post_cell]]
    for cell in (1, 33, 60):
        related = reader.relationships["post_cell"][cell]
        assert sorted(int(a.id) for a in related) == sorted(syn.loc[syn["post_cell"] == cell, "id"].astype(int))
    lo, hi = np.array([100, 100, 50]), np.array([400, 300, 150])
    inside = syn[np.all((syn[["x", "y", "z"]].to_numpy() + 0.5 >= lo) & (syn[["x", "y", "z"]].to_numpy() + 0.5 < hi), axis=1)]
    got = {int(a.id) for a in reader.get_within_spatial_bounds(lower_bound=lo, upper_bound=hi)}
    assert got == set(inside["id"].astype(int)) and len(got) > 50


def test_no_spatial_cell_of_a_dense_layer_holds_more_than_its_levels_limit(tmp_path):
    from neuroglancer.read_precomputed_annotations import AnnotationReader

    from syconn_ng.annotations import write_annotations

    syn = synapse_table(20000, seed=1, dense_fraction=0.4)  # 8,000 synapses in 0.001 % of the volume
    max_per_cell = 300
    write_annotations(tmp_path / "syn", ids=syn["id"].to_numpy(np.uint64), points_vx=syn[["x", "y", "z"]].to_numpy(),
                      voxel_size_nm=VS, max_per_cell=max_per_cell, sharded=True)
    info = json.loads((tmp_path / "syn" / "info").read_text())
    assert len(info["spatial"]) >= 4
    listed = set()
    for li, level in enumerate(info["spatial"]):
        cells = read_shards(tmp_path / "syn" / level["key"], level["sharding"])
        counts = [int(np.frombuffer(payload[:8], "<u8")[0]) for payload in cells.values()]
        assert max(counts) <= level["limit"], f"level {li}: a cell holds {max(counts)} > limit {level['limit']}"
        assert max(counts) == level["limit"]  # the limit is tight: what the fullest cell holds
        if li < len(info["spatial"]) - 1:
            assert level["limit"] <= max_per_cell, f"level {li}"
        for payload in cells.values():
            n = int(np.frombuffer(payload[:8], "<u8")[0])
            listed.update(np.frombuffer(payload[len(payload) - 8 * n:], "<u8").tolist())
    assert listed == set(syn["id"].astype(int)), "every synapse is in the spatial index"
    fullest = max(read_shards(tmp_path / "syn" / "spatial0", info["spatial"][0]["sharding"]).values(), key=len)
    reader = AnnotationReader("file://" + str(tmp_path / "syn"))
    assert len(reader.spatial[0][(0, 0, 0)]) == int(np.frombuffer(fullest[:8], "<u8")[0])  # Neuroglancer reads the same cell


def _info_cli(layer):
    return subprocess.run([sys.executable, "-m", "syconn_ng", "info", "--json", str(layer)], capture_output=True, text=True, timeout=120)


def test_info_checks_every_shard_of_a_sharded_layer(tmp_path):
    syn = synapse_table(3000)
    write_synapse_layer(tmp_path / "syn", syn, VS, sharded=True)
    proc = _info_cli(tmp_path / "syn")
    assert proc.returncode == 0, proc.stderr
    shards = json.loads(proc.stdout)["shards"]
    assert shards["by_id"]["keys"] == 3000
    assert shards["rel_pre_cell"]["keys"] == syn["pre_cell"].nunique()
    assert sum(v["keys"] for k, v in shards.items() if k.startswith("spatial")) >= 1
    assert sum(v["files"] for v in shards.values()) == len(list((tmp_path / "syn").rglob("*.shard")))


@pytest.mark.parametrize("cut", ["data", "index"])
def test_a_truncated_shard_file_gives_one_error_naming_the_shard(tmp_path, cut):
    syn = synapse_table(3000)
    write_synapse_layer(tmp_path / "syn", syn, VS, sharded=True)
    spec = json.loads((tmp_path / "syn" / "info").read_text())["by_id"]["sharding"]
    shard = max((tmp_path / "syn" / "by_id").glob("*.shard"), key=lambda p: p.stat().st_size)
    payload = shard.read_bytes()
    shard.write_bytes(payload[:len(payload) // 2] if cut == "data" else payload[:100])  # a copy that stopped early
    with pytest.raises(InputError, match="truncated shard file") as err:
        check_shards(shard.parent, spec)
    assert err.value.path == str(shard)
    proc = _info_cli(tmp_path / "syn")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(shard) in lines[0] and "truncated shard file" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_corrupt_minishard_index_is_named_too(tmp_path):
    syn = synapse_table(500)
    write_synapse_layer(tmp_path / "syn", syn, VS, sharded=True)
    spec = json.loads((tmp_path / "syn" / "info").read_text())["by_id"]["sharding"]
    shard = next((tmp_path / "syn" / "by_id").glob("*.shard"))
    payload = bytearray(shard.read_bytes())
    index_bytes = 16 << spec["minishard_bits"]
    start, end = np.frombuffer(bytes(payload[:16]), "<u8")
    payload[index_bytes + int(start):index_bytes + int(end)] = b"\xff" * int(end - start)  # not gzip any more
    shard.write_bytes(bytes(payload))
    with pytest.raises(InputError, match="corrupt shard file: minishard 0 index does not decompress") as err:
        check_shards(shard.parent, spec)
    assert err.value.path == str(shard)


def test_small_synapse_layers_stay_one_file_per_key(tmp_path):
    syn = synapse_table(200)
    write_synapse_layer(tmp_path / "syn", syn, VS, sharded=use_sharding(len(syn), 20000))
    info = json.loads((tmp_path / "syn" / "info").read_text())
    assert "sharding" not in info["by_id"]
    assert sorted(int(p.name) for p in (tmp_path / "syn" / "by_id").iterdir()) == sorted(syn["id"].astype(int))


def test_the_review_server_serves_a_sharded_synapse_layer_to_neuroglancers_reader(tmp_path):
    """The reader fetches shard files through the server with HTTP Range requests (tornado's static handler)."""
    from neuroglancer.read_precomputed_annotations import AnnotationReader
    from serve_data import synthetic_analysis

    from syconn_ng.serve.app import ReviewServer

    root = synthetic_analysis(tmp_path / "ana", n_cells=30, n_synapses=2500, seed=4)
    syn = pd.read_csv(root / "tables" / "synapses.csv", dtype={"id": np.uint64, "pre_cell": np.uint64, "post_cell": np.uint64})
    write_synapse_layer(root / "layers" / "synapses", syn, VS, sharded=True)
    srv = ReviewServer(root, port=0).start()
    try:
        reader = AnnotationReader(f"{srv.url}/layers/synapses/")
        for row in syn.iloc[::499].itertuples():
            np.testing.assert_allclose(reader.by_id[int(row.id)].point, [row.x + 0.5, row.y + 0.5, row.z + 0.5], rtol=1e-6)
        cell = int(syn["pre_cell"].iloc[0])
        assert sorted(int(a.id) for a in reader.relationships["pre_cell"][cell]) == sorted(syn.loc[syn["pre_cell"] == cell, "id"].astype(int))
        assert len(list(reader.get_within_spatial_bounds())) == len(syn)
    finally:
        srv.stop()


# ---------------------------------------------------------------- skeleton sources (hulls stage, export, re-analysis merge)

@pytest.fixture(scope="module")
def sharded_tubes(tmp_path_factory):
    """The hulls stage on two hand-made tubes with `[chunking] shard_skeletons_over = 0` (always sharded)."""
    from hulls_data import tube_analysis

    from syconn_ng.analysis import Analysis
    from syconn_ng.config import write_config
    from syconn_ng.engine import LocalExecutor, run_stage
    from syconn_ng.stages.hulls import STAGE

    root = tmp_path_factory.mktemp("tubes")
    a = tube_analysis(root, hulls={"max_ray_length_nm": 500.0})
    a.config.chunking.shard_skeletons_over = 0
    write_config(a.config, root)
    ex = LocalExecutor(1)
    try:
        run_stage(STAGE, Analysis.open(root), executor=ex, progress=False)
    finally:
        ex.close()
    return Analysis.open(root)


def _expected_skeleton(analysis, cell):
    from syconn_ng.stages.hulls import load_hull

    hull = load_hull(analysis, cell)
    return (hull["node_vx"] + 0.5) * np.asarray(VS), hull["edges"]


def test_the_hulls_stage_shards_its_skeletons_past_the_size_and_cloudvolume_reads_them(sharded_tubes):
    from cloudvolume import CloudVolume

    layer = sharded_tubes.root / "layers" / "cells"
    info = json.loads((layer / "skeletons" / "info").read_text())
    assert info["sharding"]["@type"] == "neuroglancer_uint64_sharded_v1"
    assert sorted(p.name for p in (layer / "skeletons").iterdir() if p.name != "info") == ["0.shard"]
    cv = CloudVolume("file://" + str(layer))
    assert cv.skeleton.meta.is_sharded()
    for cell in (5, 9):
        sk = cv.skeleton.get(cell)
        vertices, edges = _expected_skeleton(sharded_tubes, cell)
        np.testing.assert_allclose(sk.vertices, vertices, rtol=1e-6)
        assert sorted(map(tuple, np.sort(sk.edges, axis=1))) == sorted(map(tuple, np.sort(edges, axis=1)))
    proc = _info_cli(layer)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["shards"]["skeletons"]["keys"] == 2


def test_a_cell_republished_into_a_sharded_source_is_merged_and_the_export_copies_it(sharded_tubes, tmp_path):
    import shutil

    from cloudvolume import CloudVolume, Skeleton

    from syconn_ng.export import copy_skeletons, float32_attributes
    from syconn_ng.sharding import shard_skeleton_source, skeleton_source

    root = tmp_path / "copy"
    shutil.copytree(sharded_tubes.root, root)
    skeletons = root / "layers" / "cells" / "skeletons"
    before = skeleton_source(skeletons)
    # what the publish pass does for one cell of a sharded source (a re-analysis): a file beside the shards
    new = Skeleton(np.array([[0, 0, 0], [100, 0, 0], [200, 50, 0]], np.float32), np.array([[0, 1], [1, 2]], np.uint32),
                   radii=np.ones(3, np.float32), segid=5, space="physical",
                   extra_attributes=[{"id": "radius", "data_type": "float32", "num_components": 1}])
    (skeletons / "5").write_bytes(new.to_precomputed())
    assert skeleton_source(skeletons)[5] == new.to_precomputed()  # the newer file wins before the merge
    assert shard_skeleton_source(skeletons, over=-1)["rewritten"]  # sharded already: merged whatever the size rule
    assert sorted(p.name for p in skeletons.iterdir()) == ["0.shard", "info"]
    cv = CloudVolume("file://" + str(root / "layers" / "cells"))
    np.testing.assert_allclose(cv.skeleton.get(5).vertices, new.vertices)
    assert skeleton_source(skeletons)[9] == before[9]
    assert sorted(p.name for p in (root / "layers" / "cells").iterdir() if p.name.startswith(".")) == [], "no temporary folders left"
    n, which = copy_skeletons(root / "layers" / "cells", tmp_path / "out", None)
    assert n == 2 and which.startswith("hulls")
    attrs = json.loads((skeletons / "info").read_text())["vertex_attributes"]
    assert (tmp_path / "out" / "9").read_bytes() == float32_attributes(before[9], attrs)
    assert "sharding" not in json.loads((tmp_path / "out" / "info").read_text())


def test_a_truncated_skeleton_shard_stops_the_export_copy_naming_the_shard(sharded_tubes, tmp_path):
    import shutil

    from syconn_ng.export import copy_skeletons

    layer = tmp_path / "cells"
    shutil.copytree(sharded_tubes.root / "layers" / "cells", layer)
    shard = layer / "skeletons" / "0.shard"
    shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.raises(InputError, match="truncated shard file") as err:
        copy_skeletons(layer, tmp_path / "out", None)
    assert err.value.path == str(shard)


def test_below_the_size_skeletons_stay_one_file_per_cell(sharded_tubes, tmp_path):
    from syconn_ng.sharding import shard_skeleton_source

    skeletons = tmp_path / "skeletons"
    skeletons.mkdir()
    info = json.loads((sharded_tubes.root / "layers" / "cells" / "skeletons" / "info").read_text())
    info.pop("sharding")
    (skeletons / "info").write_text(json.dumps(info))
    for cell, data in read_shards(sharded_tubes.root / "layers" / "cells" / "skeletons",
                                  json.loads((sharded_tubes.root / "layers" / "cells" / "skeletons" / "info").read_text())["sharding"]).items():
        (skeletons / str(cell)).write_bytes(data)
    assert not shard_skeleton_source(skeletons, over=2)["rewritten"]
    assert sorted(p.name for p in skeletons.iterdir()) == ["5", "9", "info"]
    assert shard_skeleton_source(skeletons, over=1)["rewritten"]
    assert sorted(p.name for p in skeletons.iterdir()) == ["0.shard", "info"]


def test_a_reanalysis_merges_the_cell_into_sharded_skeleton_sources(tmp_path_factory, tmp_path):
    """The review server's single-cell re-analysis on an analysis whose two skeleton sources are sharded: the
    cell's new skeletons are merged into the shards and no other cell's skeleton is lost or changed."""
    import shutil

    import pipeline_data
    from cloudvolume import CloudVolume
    from serve_data import copy_analysis

    from syconn_ng.analysis import Analysis
    from syconn_ng.layers import layer_box, open_layer
    from syconn_ng.reanalyse import read_upload, reanalyse_cell
    from syconn_ng.sharding import shard_skeleton_source, skeleton_source

    src = pipeline_data.analysis(tmp_path_factory, "oracle")
    root = copy_analysis(src, tmp_path / "ana")
    shutil.copytree(src / "skeletons", root / "skeletons", ignore=shutil.ignore_patterns("enriched"))
    cells = root / "layers" / "cells"
    sources = ("skeletons", "skeletons_compartments")
    for name in sources:
        assert shard_skeleton_source(cells / name, over=0)["rewritten"]
    before = {name: skeleton_source(cells / name) for name in sources}
    cid = int(pd.read_csv(root / "tables" / "nodes.csv").cell.iloc[0])
    a = Analysis.open(root)
    upload = read_upload((root / "skeletons" / f"cell_{cid}.k.zip").read_bytes(), cid, voxel_size_nm=a.voxel_size_nm,
                         bounds=layer_box(open_layer(a.layer_path("cells"))))
    reanalyse_cell(a, upload)
    for name in sources:
        assert "sharding" in json.loads((cells / name / "info").read_text()), name
        assert [p.name for p in (cells / name).iterdir() if p.suffix != ".shard"] == ["info"], name
        after = skeleton_source(cells / name)
        assert set(after) == set(before[name]) and cid in after, name
        assert all(after[k] == v for k, v in before[name].items() if k != cid), f"{name}: another cell changed"
    assert len(CloudVolume("file://" + str(cells)).skeleton.get(cid).vertices) > 1
