"""Multi-resolution sharded Draco meshes (`syconn_ng.multires_mesh`): written from legacy meshes, read back by CloudVolume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hulls_data import synth_analysis

from syconn_ng.errors import InputError
from syconn_ng.layers import create_layer
from syconn_ng.multires_mesh import (MULTIRES_DIR, VERTEX_QUANTIZATION_BITS, build_from_legacy, encode_multires, legacy_ids,
                                     morton_order, read_legacy_mesh, split_on_grid)

VS = np.array([10.0, 10.0, 20.0])


def _area(vertices, faces) -> float:
    t = np.asarray(vertices, dtype=np.float64)[np.asarray(faces, dtype=np.int64)]
    return float(0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum())


def _cv(path, **kwargs):
    from cloudvolume import CloudVolume

    return CloudVolume(f"file://{path}", progress=False, **kwargs)


@pytest.fixture(scope="module")
def layer(tmp_path_factory) -> Path:
    """A segmentation layer with legacy meshes (zmesh, voxel-centred like the hulls stage) of a long wavy tube (7),
    a small blob (9) and a cell without voxels (11: listed, no mesh), and the multires source built from them."""
    import zmesh
    from cloudvolume import Mesh

    root = tmp_path_factory.mktemp("multires") / "cells"
    labels = np.zeros((240, 64, 40), dtype=np.uint64, order="F")
    x, y, z = np.mgrid[:240, :64, :40]
    labels[((y - 32 - 8 * np.sin(x / 20)) ** 2 + ((z - 20) * 2) ** 2 < (9 + 5 * np.sin(x / 13)) ** 2) & (x > 4) & (x < 235)] = 7
    labels[(x - 20) ** 2 + (y - 8) ** 2 + ((z - 30) * 2) ** 2 < 25] = 9
    vol = create_layer(f"file://{root}", layer_type="segmentation", dtype=np.uint64, voxel_size_nm=VS, shape=labels.shape,
                       voxel_offset=(0, 0, 0), chunk_size=(64, 64, 40), mesh="mesh")
    (root / "mesh").mkdir()
    (root / "mesh" / "info").write_text(json.dumps({"@type": "neuroglancer_legacy_mesh"}))
    mesher = zmesh.Mesher(tuple(VS))
    mesher.mesh(labels)
    for cell in (7, 9):
        m = mesher.get(cell, normals=False, voxel_centered=True)
        vol.mesh.put(Mesh(m.vertices, m.faces, None, segid=cell), compress=False)
    summary = build_from_legacy(root / "mesh", root / MULTIRES_DIR, ids=[7, 9, 11])
    assert (summary["cells"], summary["skipped"]) == (2, 1)
    info = json.loads((root / "info").read_text())
    info["mesh"] = MULTIRES_DIR
    (root / "info").write_text(json.dumps(info))
    return root


def _manifest(layer: Path, cell: int):
    return _cv(layer).mesh.get_manifest(cell)


def test_cloudvolume_reads_lod0_as_the_legacy_mesh(layer):
    multires, legacy = _cv(layer).mesh, _cv(layer, mesh_dir="mesh").mesh
    assert multires.meta.info["@type"] == "neuroglancer_multilod_draco" and multires.meta.is_sharded()
    assert [p.name for p in sorted((layer / MULTIRES_DIR).iterdir())] == ["0.shard", "info"]
    for cell in (7, 9):
        a, b = multires.get(cell, lod=0)[cell], legacy.get(cell)
        step = float(_manifest(layer, cell).chunk_shape.max()) / (2 ** VERTEX_QUANTIZATION_BITS - 1)
        np.testing.assert_allclose(a.vertices.min(0), b.vertices.min(0), atol=step)
        np.testing.assert_allclose(a.vertices.max(0), b.vertices.max(0), atol=step)
        # every legacy vertex is still a vertex (the cuts only add points on edges), up to the quantization step
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(a.vertices).query(b.vertices)
        assert dist.max() <= step
        assert _area(a.vertices, a.faces) == pytest.approx(_area(b.vertices, b.faces), rel=0.01)


def test_each_level_of_detail_has_fewer_faces_and_a_coarser_scale(layer):
    vol = _cv(layer)
    m = _manifest(layer, 7)
    assert m.num_lods >= 3
    faces = [len(vol.mesh.get(7, lod=lod)[7].faces) for lod in range(m.num_lods)]
    assert all(b < a for a, b in zip(faces, faces[1:])), faces
    assert faces[1] < 0.4 * faces[0]  # ~4x per level
    assert np.all(np.diff(m.lod_scales) > 0)
    assert m.num_fragments_per_lod[-1] == 1  # the top level is one octree cell
    legacy = _cv(layer, mesh_dir="mesh").mesh.get(7)
    coarse = vol.mesh.get(7, lod=m.num_lods - 1)[7]  # what a zoomed-out view fetches: still the whole cell
    np.testing.assert_allclose(coarse.vertices.min(0), legacy.vertices.min(0), atol=4 * VS.max())
    np.testing.assert_allclose(coarse.vertices.max(0), legacy.vertices.max(0), atol=4 * VS.max())


def test_fragments_lie_in_their_octree_cell_in_z_order_and_split_on_the_child_grid(layer):
    import DracoPy

    m = _manifest(layer, 7)
    top = 2 ** VERTEX_QUANTIZATION_BITS - 1
    shard = (layer / MULTIRES_DIR / m.path.split("/")[-1]).read_bytes()
    start = m.shard_offset - sum(int(np.sum(o)) for o in m.fragment_offsets)
    for lod in range(m.num_lods):
        positions = m.fragment_positions[lod]
        np.testing.assert_array_equal(morton_order(positions), np.arange(len(positions)))
        if lod:  # each finer fragment has its parent
            parents = {tuple(p) for p in positions}
            assert {tuple(p >> 1) for p in m.fragment_positions[lod - 1]} <= parents
        for size in m.fragment_offsets[lod]:
            frag, start = shard[start:start + int(size)], start + int(size)
            if not frag:
                continue
            d = DracoPy.decode(frag)
            stored = np.asarray(d.points, dtype=np.float64)
            np.testing.assert_array_equal(stored, np.rint(stored))  # integer positions, inside the fragment's box
            assert stored.min() >= 0 and stored.max() <= top
            if lod:  # no triangle crosses a mid-plane: the client splits a coarse fragment into its 8 octants
                tri = stored[np.asarray(d.faces, dtype=np.int64)]
                half = top / 2
                lo_side, hi_side = (tri < half - 1).any(axis=1), (tri > half + 1).any(axis=1)
                assert not (lo_side & hi_side).any()


def test_split_on_grid_keeps_every_piece_inside_its_cell_and_the_surface(layer):
    vertices, faces = read_legacy_mesh(layer / "mesh", 7)
    cell, origin = np.array([300.0, 250.0, 170.0]), vertices.min(0) - 3.0
    pieces = split_on_grid(vertices, faces, cell, origin)
    assert len(pieces) > 8
    for key, (v, f) in pieces.items():
        lo = origin + np.asarray(key) * cell
        assert np.all(v >= lo) and np.all(v <= lo + cell), key
    assert sum(_area(v, f) for v, f in pieces.values()) == pytest.approx(_area(vertices, faces), rel=1e-3)


def test_encoding_is_deterministic_so_pipeline_outputs_are_reproducible(layer):
    vertices, faces = read_legacy_mesh(layer / "mesh", 9)
    a, b = encode_multires(vertices, faces), encode_multires(vertices, faces)
    assert a.manifest == b.manifest and a.fragments == b.fragments


def test_a_cell_without_voxels_has_no_multires_mesh_and_an_empty_mesh_is_an_input_error(layer):
    from cloudvolume.exceptions import MeshMissingError

    assert legacy_ids(layer / "mesh") == [7, 9]
    with pytest.raises(MeshMissingError):
        _cv(layer).mesh.get(11)
    with pytest.raises(InputError, match=r"cell_11.*no faces"):
        encode_multires(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.uint32), source="cell_11")
    with pytest.raises(InputError, match="malformed"):
        encode_multires(np.zeros((3, 3)), np.array([[0, 1, 5]]), source="cell_12")


def test_a_truncated_legacy_fragment_names_the_file(layer, tmp_path):
    import shutil

    shutil.copytree(layer / "mesh", tmp_path / "mesh")
    frag = tmp_path / "mesh" / "9:0:1"
    frag.write_bytes(frag.read_bytes()[:-7])
    with pytest.raises(InputError, match="9:0:1"):
        build_from_legacy(tmp_path / "mesh", tmp_path / MULTIRES_DIR)
    assert not (tmp_path / MULTIRES_DIR).exists()  # nothing half-written


def test_rebuilding_replaces_the_source_whole(layer, tmp_path):
    import shutil

    shutil.copytree(layer / "mesh", tmp_path / "mesh")
    build_from_legacy(tmp_path / "mesh", tmp_path / MULTIRES_DIR)
    build_from_legacy(tmp_path / "mesh", tmp_path / MULTIRES_DIR, ids=[9])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh", MULTIRES_DIR]  # no temporary or old folder left
    info = json.loads((tmp_path / MULTIRES_DIR / "info").read_text())
    assert info["sharding"]["data_encoding"] == "raw"  # the index points into the middle of a value: no compression
    shard = next((tmp_path / MULTIRES_DIR).glob("*.shard")).read_bytes()
    (tmp_path / "info").write_text((layer / "info").read_text())
    vol = _cv(tmp_path)
    assert vol.mesh.get(9)[9].faces.size and vol.mesh.get_manifest(7) is None
    assert len(shard) < (layer / MULTIRES_DIR / "0.shard").stat().st_size


# ---------------------------------------------------------------- the hulls stage on synthetic tissue

@pytest.fixture(scope="module")
def synth(synth_tissue, tmp_path_factory):
    return synth_analysis(synth_tissue, tmp_path_factory)


def test_hulls_stage_points_the_cells_layer_at_multires_meshes_matching_the_legacy_ones(synth):
    layer = Path(synth.layer_path("cells")[len("file://"):])
    assert json.loads((layer / "info").read_text())["mesh"] == MULTIRES_DIR
    ids = legacy_ids(layer / "mesh")
    assert ids
    multires, legacy = _cv(layer).mesh, _cv(layer, mesh_dir="mesh").mesh
    for cell in ids:
        a, b = multires.get(cell)[cell], legacy.get(cell)
        np.testing.assert_allclose(a.vertices.min(0), b.vertices.min(0), atol=0.5)
        np.testing.assert_allclose(a.vertices.max(0), b.vertices.max(0), atol=0.5)
        assert _area(a.vertices, a.faces) == pytest.approx(_area(b.vertices, b.faces), rel=0.01)


def test_publishing_one_cell_again_points_the_layer_back_at_the_current_legacy_meshes(synth, tmp_path):
    """A re-analysis re-publishes one cell: the multires source is then stale, so Neuroglancer must use `mesh/`."""
    import shutil

    from syconn_ng.engine.tasks import Task
    from syconn_ng.stages.hulls import STAGE, publish_task

    copy = tmp_path / "analysis"
    shutil.copytree(synth.root, copy, symlinks=True)
    from syconn_ng.analysis import Analysis

    a = Analysis.open(copy)
    cell = legacy_ids(copy / "layers" / "cells" / "mesh")[0]
    params = STAGE.params(a)
    publish_task(a, Task("hulls", f"publish_{cell}", cell_id=cell, index=0, params=params, params_hash="x"))
    info = json.loads((copy / "layers" / "cells" / "info").read_text())
    assert info["mesh"] == "mesh"
    assert len(_cv(copy / "layers" / "cells").mesh.get(cell).faces) > 0


def test_triangles_that_quantization_collapses_are_dropped_and_a_fragment_of_only_those_is_empty():
    """A cut on the octree grid can leave a fragment of slivers thinner than one quantization step (seen on a
    cell of `make example`); Draco refuses a fragment whose every triangle is degenerate."""
    import DracoPy

    from syconn_ng.multires_mesh import encode_fragment

    stored = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 1], [5, 5, 5], [6, 5, 5], [5, 6, 5]], dtype=np.uint32)
    assert encode_fragment(stored, np.array([[0, 1, 2]]), 10) == b""
    mesh = DracoPy.decode(encode_fragment(stored, np.array([[0, 1, 2], [3, 4, 5]]), 10))
    assert len(mesh.faces) == 1 and sorted(map(tuple, np.asarray(mesh.points)[mesh.faces[0]].astype(int))) == [
        (5, 5, 5), (5, 6, 5), (6, 5, 5)]
