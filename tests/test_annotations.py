"""The precomputed annotation writer, checked three ways: a decoder written here from the spec,
Neuroglancer's Python reader, and Neuroglancer's own client in headless Chromium."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from browser import chromium, neuroglancer_viewer, panel_centre, screenshot, serve_folder, wait_for_pixel  # noqa: F401  (chromium: the session's browser fixture)

from syconn_ng.annotations import VOXEL_CENTRE_OFFSET, encode_annotations, encode_by_id, encode_records, write_annotations
from syconn_ng.errors import InputError

VS = (10.0, 10.0, 20.0)
SIZES = {"float32": 4, "uint32": 4, "int32": 4, "uint16": 2, "int16": 2, "uint8": 1, "int8": 1}
FMT = {"float32": "<f", "uint32": "<I", "int32": "<i", "uint16": "<H", "int16": "<h", "uint8": "<B", "int8": "<b"}


# --- a decoder written straight from the spec (annotations.md), independent of the writer -------------

def _layout(info):
    """(geometry floats, [(property id, type, offset)], record size) per the spec's byte layout."""
    g = 3 if info["annotation_type"].upper() == "POINT" else 6
    pos, fields = 4 * g, []
    for size in (4, 2, 1):  # 32-bit types first, then 16-bit, then 8-bit, each in info order
        for p in info["properties"]:
            if SIZES[p["type"]] == size:
                fields.append((p["id"], p["type"], pos))
                pos += size
    return g, fields, pos + (-pos) % 4


def _record(buf, off, info):
    g, fields, size = _layout(info)
    geom = struct.unpack_from(f"<{g}f", buf, off)
    props = {name: struct.unpack_from(FMT[t], buf, off + o)[0] for name, t, o in fields}
    used = max([o + SIZES[t] for _, t, o in fields], default=4 * g)
    assert buf[off + used:off + size] == bytes(size - used), "padding bytes must be zero"
    return geom, props, size


def decode_single(buf, info):
    """by_id value → (geometry, properties, [related ids per relationship])."""
    geom, props, off = _record(buf, 0, info)
    rels = []
    for _ in info["relationships"]:
        (count,) = struct.unpack_from("<I", buf, off)
        rels.append(list(struct.unpack_from(f"<{count}Q", buf, off + 4)))
        off += 4 + 8 * count
    assert off == len(buf)
    return geom, props, rels


def decode_multiple(buf, info):
    """Spatial cell / related-id value → {id: (geometry, properties)} (order kept in a list too)."""
    (count,) = struct.unpack_from("<Q", buf, 0)
    _, _, size = _layout(info)
    recs = [_record(buf, 8 + i * size, info)[:2] for i in range(count)]
    ids = struct.unpack_from(f"<{count}Q", buf, 8 + count * size)
    assert 8 + count * size + 8 * count == len(buf)
    return list(zip(ids, recs))


def read_spatial(layer: Path, info):
    """[(level, cell, [ids])] for every spatial file."""
    out = []
    for level, spec in enumerate(info["spatial"]):
        for f in sorted((layer / spec["key"]).iterdir()):
            cell = tuple(int(c) for c in f.name.split("_"))
            out.append((level, cell, decode_multiple(f.read_bytes(), info)))
    return out


# --- test data ---------------------------------------------------------------------------------------

def _mixed(n, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.arange(1, 10 * n + 1, dtype=np.uint64), n, replace=False) + np.uint64(2**40)
    pts = rng.uniform([0, 0, 0], [300, 200, 100], (n, 3)).round(2)
    props = {  # declared in mixed order on purpose: the layout groups by size
        "flag": rng.integers(0, 256, n).astype(np.uint8),
        "area": rng.uniform(0, 2, n).astype(np.float32),
        "count": rng.integers(0, 65536, n).astype(np.uint16),
        "cell": rng.integers(2**31, 2**32, n, dtype=np.uint64).astype(np.uint32),
        "score": rng.integers(-128, 128, n).astype(np.int8),
        "delta": rng.integers(-30000, 30000, n).astype(np.int16),
        "signed": rng.integers(-2**31, 2**31, n).astype(np.int32),
    }
    rels = {"pre_cell": rng.integers(1, 2**60, 20, dtype=np.uint64)[rng.integers(0, 20, n)],
            "post_cell": rng.integers(1, 40, n).astype(np.uint64)}
    rels["post_cell"][::7] = 0  # no partner
    return ids, pts, props, rels


def test_record_layout_groups_properties_by_size_and_pads_to_four_bytes():
    types = {"flag": "uint8", "area": "float32", "count": "uint16", "cell": "uint32"}
    rec = encode_records(np.array([[1.0, 2.0, 3.0]]), {"flag": np.array([7], np.uint8), "area": np.array([1.5], np.float32),
                                                       "count": np.array([513], np.uint16),
                                                       "cell": np.array([0xDEADBEEF], np.uint32)}, types)
    expected = struct.pack("<3f", 1, 2, 3) + struct.pack("<f", 1.5) + struct.pack("<I", 0xDEADBEEF) + struct.pack("<H", 513) + b"\x07\x00"
    assert rec.tobytes() == expected
    assert encode_by_id(rec[0], [np.array([5, 2**63 + 1], np.uint64), np.zeros(0, np.uint64)]) == (
        expected + struct.pack("<I", 2) + struct.pack("<2Q", 5, 2**63 + 1) + struct.pack("<I", 0))
    assert encode_annotations(rec, np.array([9], np.uint64)) == struct.pack("<Q", 1) + expected + struct.pack("<Q", 9)


def test_points_with_mixed_property_types_decode_per_spec(tmp_path):
    ids, pts, props, rels = _mixed(300)
    summary = write_annotations(tmp_path / "syn", ids=ids, points_vx=pts, voxel_size_nm=VS, properties=props,
                                relationships=rels, enum_labels={"flag": {0: "zero", 7: "seven"}})
    layer = tmp_path / "syn"
    info = json.loads((layer / "info").read_text())
    assert info["@type"] == "neuroglancer_annotations_v1" and info["annotation_type"] == "POINT"
    assert info["dimensions"] == {"x": [1e-8, "m"], "y": [1e-8, "m"], "z": [2e-8, "m"]}
    assert {p["id"]: p["type"] for p in info["properties"]} == {k: v.dtype.name for k, v in props.items()}
    flag = next(p for p in info["properties"] if p["id"] == "flag")
    assert flag["enum_values"] == [0, 7] and flag["enum_labels"] == ["zero", "seven"]
    assert [r["id"] for r in info["relationships"]] == ["pre_cell", "post_cell"]
    assert len(list((layer / "by_id").iterdir())) == len(ids)
    for i in range(len(ids)):
        geom, p, (pre, post) = decode_single((layer / "by_id" / str(ids[i])).read_bytes(), info)
        np.testing.assert_allclose(geom, pts[i] + VOXEL_CENTRE_OFFSET, rtol=1e-6)
        for name, v in props.items():
            assert p[name] == v[i], name
        assert pre == [int(rels["pre_cell"][i])]
        assert post == ([int(rels["post_cell"][i])] if rels["post_cell"][i] else [])
    lo, hi = np.asarray(info["lower_bound"]), np.asarray(info["upper_bound"])
    assert np.all(pts + 0.5 >= lo) and np.all(pts + 0.5 < hi)
    assert summary["annotations"] == len(ids) and summary["files"] == sum(1 for f in layer.rglob("*") if f.is_file())


def test_relationship_index_lists_exactly_the_annotations_of_each_segment(tmp_path):
    ids, pts, props, rels = _mixed(200, seed=1)
    multi = [np.array([rels["post_cell"][i], 77, 0, 77], np.uint64) if i % 5 == 0 else rels["post_cell"][i]
             for i in range(len(ids))]  # several partners, a duplicate and a 0 (= none)
    write_annotations(tmp_path / "syn", ids=ids, points_vx=pts, voxel_size_nm=VS, properties=props,
                      relationships={"pre_cell": rels["pre_cell"], "partners": multi})
    layer = tmp_path / "syn"
    info = json.loads((layer / "info").read_text())
    expected = {"pre_cell": {}, "partners": {}}
    for i, a in enumerate(ids):
        expected["pre_cell"].setdefault(int(rels["pre_cell"][i]), set()).add(int(a))
        for s in set(np.atleast_1d(multi[i]).tolist()) - {0}:
            expected["partners"].setdefault(int(s), set()).add(int(a))
    for rel in info["relationships"]:
        found = {}
        for f in (layer / rel["key"]).iterdir():
            entries = decode_multiple(f.read_bytes(), info)
            found[int(f.name)] = {a for a, _ in entries}
            assert len(entries) == len(found[int(f.name)]), "an annotation listed twice"
            for a, (geom, p) in entries:
                i = int(np.flatnonzero(ids == a)[0])
                np.testing.assert_allclose(geom, pts[i] + 0.5, rtol=1e-6)
                assert p["cell"] == props["cell"][i] and p["area"] == props["area"][i]
        assert found == expected[rel["id"]]
    _, _, (pre, partners) = decode_single((layer / "by_id" / str(ids[0])).read_bytes(), info)
    assert sorted(partners) == sorted({int(rels["post_cell"][0]), 77} - {0})


def _check_spatial(layer: Path, info, n_expected, points):
    lower, upper = np.asarray(info["lower_bound"]), np.asarray(info["upper_bound"])
    seen = {}
    per_level = {}
    cells = read_spatial(layer, info)
    for level, spec in enumerate(info["spatial"]):
        np.testing.assert_allclose(np.asarray(spec["grid_shape"]) * np.asarray(spec["chunk_size"]), upper - lower)
        if level:
            prev = np.asarray(info["spatial"][level - 1]["chunk_size"])
            ratio = prev / np.asarray(spec["chunk_size"])
            assert set(ratio.tolist()) <= {1.0, 2.0}, "each level's cells halve (or keep) the coarser ones"
    assert info["spatial"][0]["grid_shape"] == [1, 1, 1]
    for level, cell, entries in cells:
        spec = info["spatial"][level]
        assert all(0 <= c < g for c, g in zip(cell, spec["grid_shape"]))
        assert 0 < len(entries) <= spec["limit"]
        per_level[level] = max(per_level.get(level, 0), len(entries))
        c_lo = lower + np.asarray(cell) * np.asarray(spec["chunk_size"])
        c_hi = c_lo + np.asarray(spec["chunk_size"])
        for a, (geom, _) in entries:
            seen.setdefault(a, []).append(level)
            if points:
                assert np.all(np.asarray(geom) >= c_lo - 1e-3) and np.all(np.asarray(geom) <= c_hi + 1e-3)
    assert per_level == {lv: s["limit"] for lv, s in enumerate(info["spatial"])}, "limit = the fullest cell"
    assert len(seen) == n_expected
    return seen


def test_spatial_index_has_several_levels_and_reaches_every_annotation_once(tmp_path):
    rng = np.random.default_rng(3)
    n = 6000
    pts = np.concatenate([rng.uniform(0, 400, (n - 1000, 3)), rng.normal(300, 5, (1000, 3))])  # a dense clump too
    ids = np.arange(1, n + 1, dtype=np.uint64)
    summary = write_annotations(tmp_path / "syn", ids=ids, points_vx=pts, voxel_size_nm=VS, max_per_cell=250,
                                properties={"area": rng.random(n).astype(np.float32)})
    info = json.loads((tmp_path / "syn" / "info").read_text())
    assert summary["levels"] == len(info["spatial"]) >= 3
    assert max(s["limit"] for s in info["spatial"]) <= 250
    seen = _check_spatial(tmp_path / "syn", info, n, points=True)
    assert all(len(v) == 1 for v in seen.values()), "a point is emitted at exactly one level, in one cell"


def test_spatial_sampling_keeps_the_same_fraction_in_dense_and_sparse_regions(tmp_path):
    rng = np.random.default_rng(4)
    dense = rng.uniform(0, 100, (4000, 3))
    sparse = rng.uniform(300, 400, (1000, 3))
    pts = np.concatenate([dense, sparse])
    ids = np.arange(1, len(pts) + 1, dtype=np.uint64)
    write_annotations(tmp_path / "syn", ids=ids, points_vx=pts, voxel_size_nm=(10, 10, 10), max_per_cell=500)
    info = json.loads((tmp_path / "syn" / "info").read_text())
    level0 = {a for lv, _, e in read_spatial(tmp_path / "syn", info) if lv == 0 for a, _ in e}
    frac_dense = np.mean([i in level0 for i in range(1, 4001)])
    frac_sparse = np.mean([i in level0 for i in range(4001, 5001)])
    assert len(level0) <= 500
    assert frac_dense == pytest.approx(500 / 5000, abs=0.025) and frac_sparse == pytest.approx(500 / 5000, abs=0.025)


def test_line_annotations_are_listed_in_every_cell_they_cross(tmp_path):
    rng = np.random.default_rng(5)
    n = 1500
    a = rng.uniform(0, 256, (n, 3))
    b = a + rng.uniform(-40, 40, (n, 3))  # endpoints in any order (pre → post)
    ids = np.arange(10, 10 + n, dtype=np.uint64)
    write_annotations(tmp_path / "lines", ids=ids, points_vx=a, points_b_vx=b, voxel_size_nm=VS, max_per_cell=100,
                      properties={"kind": (ids % 3).astype(np.uint8)}, relationships={"pre_cell": ids * 0 + 5})
    layer = tmp_path / "lines"
    info = json.loads((layer / "info").read_text())
    assert info["annotation_type"] == "LINE"
    lower = np.asarray(info["lower_bound"])
    assert np.all(np.minimum(a, b) + 0.5 >= lower) and np.all(np.maximum(a, b) + 0.5 < info["upper_bound"])
    seen = _check_spatial(layer, info, n, points=False)
    by_level = {}
    for level, cell, entries in read_spatial(layer, info):
        for aid, _ in entries:
            by_level.setdefault(aid, {}).setdefault(level, set()).add(cell)
    for i, aid in enumerate(ids):
        levels = by_level[int(aid)]
        assert len(set(seen[int(aid)])) == 1 == len(levels), "a line is emitted at exactly one level"
        (level, cells), = levels.items()
        size = np.asarray(info["spatial"][level]["chunk_size"])
        grid = np.asarray(info["spatial"][level]["grid_shape"])
        lo = np.clip(np.floor((np.minimum(a[i], b[i]) + 0.5 - lower) / size), 0, grid - 1).astype(int)
        hi = np.clip(np.floor((np.maximum(a[i], b[i]) + 0.5 - lower) / size), 0, grid - 1).astype(int)
        want = {(x, y, z) for x in range(lo[0], hi[0] + 1) for y in range(lo[1], hi[1] + 1) for z in range(lo[2], hi[2] + 1)}
        assert cells == want
        geom, _, _ = decode_single((layer / "by_id" / str(aid)).read_bytes(), info)
        np.testing.assert_allclose(geom, np.r_[a[i], b[i]] + 0.5, rtol=1e-6)


def test_empty_annotation_set_writes_a_valid_layer(tmp_path):
    s = write_annotations(tmp_path / "none", ids=np.zeros(0, np.uint64), points_vx=np.zeros((0, 3)), voxel_size_nm=VS,
                          properties={"area": np.zeros(0, np.float32)}, relationships={"pre_cell": np.zeros(0, np.uint64)})
    info = json.loads((tmp_path / "none" / "info").read_text())
    assert s["annotations"] == 0 and len(info["spatial"]) == 1 and info["spatial"][0]["limit"] == 0
    assert np.all(np.asarray(info["upper_bound"]) > np.asarray(info["lower_bound"]))


@pytest.mark.parametrize("bad, message", [
    (dict(ids=[1, 1]), "unique"),
    (dict(properties={"area": np.zeros(2, np.int64)}), "int64"),
    (dict(properties={"Area": np.zeros(2, np.float32)}), "must match"),
    (dict(points_vx=np.zeros((3, 3))), "shape"),
    (dict(relationships={"pre_cell": np.zeros(3, np.uint64)}), "3 values for 2"),
    (dict(enum_labels={"area": {0: "a"}}, properties={"area": np.zeros(2, np.float32)}), "not an integer"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, bad, message):
    args = dict(ids=[1, 2], points_vx=np.zeros((2, 3)), voxel_size_nm=VS) | bad
    with pytest.raises(InputError, match=message):
        write_annotations(tmp_path / "syn", **args)
    assert not (tmp_path / "syn").exists() and not list(tmp_path.iterdir())


_WRITER = """
import sys, numpy as np
from syconn_ng.annotations import write_annotations
n = int(sys.argv[2])
write_annotations(sys.argv[1], ids=np.arange(1, n + 1), points_vx=np.random.default_rng(0).uniform(0, 500, (n, 3)),
                  voxel_size_nm=(10, 10, 20), max_per_cell=100)
"""


def test_a_killed_writer_leaves_the_old_layer_and_a_rerun_replaces_it(tmp_path):
    layer = tmp_path / "syn"
    write_annotations(layer, ids=[7, 8], points_vx=[[1, 2, 3], [4, 5, 6]], voxel_size_nm=VS)
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(layer), "200000"])
    try:
        deadline = time.monotonic() + 60
        while not any((p / "by_id").exists() for p in tmp_path.glob(".syn.tmp-*")):  # the new layer is half written
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert sorted(p.name for p in (layer / "by_id").iterdir()) == ["7", "8"]
    assert json.loads((layer / "info").read_text())["spatial"][0]["limit"] == 2
    write_annotations(layer, ids=[9], points_vx=[[1, 1, 1]], voxel_size_nm=VS)
    assert [p.name for p in (layer / "by_id").iterdir()] == ["9"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"], "no temporary folders left behind"


# --- (b) Neuroglancer's Python reader --------------------------------------------------------------------

def _reader(layer):
    from neuroglancer.read_precomputed_annotations import AnnotationReader

    return AnnotationReader("file://" + str(layer))


@pytest.mark.parametrize("kinds", [("area", "signed", "count", "delta", "flag", "score"), ("cell", "flag")],
                         ids=["all-but-uint32", "uint32-first"])
def test_neuroglancer_python_reader_reads_ids_positions_relationships_and_properties(tmp_path, kinds):
    ids, pts, props, rels = _mixed(400, seed=7)
    mine = {k: props[k] for k in kinds}
    write_annotations(tmp_path / "syn", ids=ids, points_vx=pts, voxel_size_nm=VS, properties=mine, relationships=rels,
                      max_per_cell=60)
    reader = _reader(tmp_path / "syn")
    names = [p.id for p in reader.properties]
    for i in range(0, len(ids), 7):
        ann = reader.by_id[int(ids[i])]
        np.testing.assert_allclose(ann.point, pts[i] + 0.5, rtol=1e-6)
        assert [list(map(int, s)) for s in ann.segments] == [
            [int(rels["pre_cell"][i])], [int(rels["post_cell"][i])] if rels["post_cell"][i] else []]
        assert dict(zip(names, ann.props)) == {k: v[i] for k, v in mine.items()}
    seg = int(rels["pre_cell"][0])
    related = reader.relationships["pre_cell"][seg]
    assert sorted(int(a.id) for a in related) == sorted(int(a) for a in ids[rels["pre_cell"] == seg])
    everything = list(reader.get_within_spatial_bounds())
    assert len(reader.spatial) >= 2
    assert sorted(int(a.id) for a in everything) == sorted(int(a) for a in ids)


def test_released_python_reader_misplaces_a_uint32_after_a_float32(tmp_path):
    """Where the released reader disagrees with the spec (and with Neuroglancer's client): its dtype table
    gives uint32 an alignment of 3, so after a 4-byte property it inserts 2 padding bytes. Our layer keeps the
    spec's offsets (byte-exact test above); a reader with the fix (neuroglancer git, unreleased) reads it."""
    from neuroglancer import write_annotations as nwa

    ids, pts, props, rels = _mixed(50, seed=9)
    mine = {"area": props["area"], "cell": props["cell"]}
    write_annotations(tmp_path / "syn", ids=ids, points_vx=pts, voxel_size_nm=VS, properties=mine, relationships=rels)
    reader = _reader(tmp_path / "syn")
    dtype = np.dtype(nwa._get_dtype_for_geometry("point", 3) + nwa._get_dtype_for_properties(reader.properties))
    spec_offsets = {name: o for name, _, o in _layout(reader.metadata)[1]}
    assert spec_offsets == {"area": 12, "cell": 16}
    if dtype.fields["property1"][1] == spec_offsets["cell"]:  # a fixed reader
        assert reader.by_id[int(ids[0])].props[1] == props["cell"][0]
    else:
        assert dtype.fields["property1"][1] == 18
        with pytest.raises(ValueError):  # it then also misplaces the relationship counts
            reader.by_id[int(ids[0])]


# --- (c) Neuroglancer's own client in headless Chromium ----------------------------------------------------

SHADER = """
void main() {
  setColor(vec3(prop_cell() == 3000000000u ? 1.0 : 0.0, prop_area(), float(prop_flag()) / 255.0));
  setPointMarkerSize(24.0);
  setPointMarkerBorderWidth(0.0);
}
"""


def test_neuroglancer_client_colours_points_by_uint32_float32_and_uint8_properties(tmp_path, chromium):
    import neuroglancer

    pts = np.array([[40, 50, 10], [60, 50, 10], [50, 70, 10]], dtype=float)
    props = {"area": np.array([0.25, 1.0, 0.5], np.float32),
             "cell": np.array([3_000_000_000, 7, 3_000_000_000], np.uint32),  # > 2**31: all 32 bits must survive
             "flag": np.array([0, 128, 255], np.uint8)}
    expected = [(255, 64, 0), (0, 255, 128), (255, 128, 255)]
    write_annotations(tmp_path / "syn", ids=[11, 12, 13], points_vx=pts, voxel_size_nm=VS, properties=props,
                      relationships={"pre_cell": np.array([5, 6, 5], np.uint64)})
    data = serve_folder(tmp_path)
    viewer = neuroglancer_viewer()
    position, scale = np.array([50.5, 60.5, 10.5]), 0.25  # voxels; 0.25 voxels per screen pixel
    with viewer.txn() as s:
        s.dimensions = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=list(VS))
        s.position = position.tolist()
        s.cross_section_scale = scale
        s.layers["synapses"] = neuroglancer.AnnotationLayer(source=f"precomputed://{data}/syn", shader=SHADER)
        s.layout = "xy"
        s.show_axis_lines = False
        s.show_scale_bar = False
        s.show_default_annotations = False
    chromium.get(viewer.get_viewer_url())
    centre = np.array(panel_centre(chromium))
    for p, rgb in zip(pts, expected):
        x, y = centre + (p[:2] + 0.5 - position[:2]) / scale
        wait_for_pixel(chromium, int(round(x)), int(round(y)), rgb, timeout=120, radius=2)
    between = centre + (np.array([50.5, 50.5]) - position[:2]) / scale  # between the markers: background only
    img = wait_for_pixel(chromium, int(between[0]), int(between[1]), (128, 128, 128), timeout=5, tolerance=12)
    assert img is not None
    state = viewer.state
    assert state.layers["synapses"].source[0].url == f"precomputed://{data}/syn"
    assert state.layers["synapses"].shader == SHADER
    np.testing.assert_allclose(state.position, position)


ID_SHADER = """
void main() {
  uint c = prop_code();
  setColor(vec3(float(c & 255u), float((c >> 8u) & 255u), float((c >> 16u) & 255u)) / 255.0);
  setPointMarkerSize(14.0);
  setPointMarkerBorderWidth(0.0);
}
"""


def test_neuroglancer_client_draws_annotations_from_every_spatial_level(tmp_path, chromium):
    """A 4,000-point layer with several spatial levels: centred on a point of each level in turn, the client
    draws that point in its own colour (a uint32 code per point → RGB in the shader)."""
    import neuroglancer

    rng = np.random.default_rng(11)
    n = 4000
    pts = rng.uniform(0, 400, (n, 3))
    ids = np.arange(1, n + 1, dtype=np.uint64)
    rgb = rng.integers(40, 256, (n, 3))
    code = (rgb[:, 0] | rgb[:, 1] << 8 | rgb[:, 2] << 16).astype(np.uint32)
    write_annotations(tmp_path / "many", ids=ids, points_vx=pts, voxel_size_nm=VS, max_per_cell=150,
                      properties={"code": code})
    info = json.loads((tmp_path / "many" / "info").read_text())
    level_of = {a: lv for lv, _, entries in read_spatial(tmp_path / "many", info) for a, _ in entries}
    assert len(info["spatial"]) >= 3
    data = serve_folder(tmp_path)
    viewer = neuroglancer_viewer()
    with viewer.txn() as s:
        s.dimensions = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=list(VS))
        s.position = (pts[0] + 0.5).tolist()
        s.cross_section_scale = 0.5
        s.layers["many"] = neuroglancer.AnnotationLayer(source=f"precomputed://{data}/many", shader=ID_SHADER)
        s.layout = "xy"
        s.show_axis_lines = False
        s.show_scale_bar = False
        s.show_default_annotations = False
    chromium.get(viewer.get_viewer_url())
    cx, cy = (int(v) for v in panel_centre(chromium))
    for level in (0, len(info["spatial"]) // 2, len(info["spatial"]) - 1):
        i = next(int(a) - 1 for a, lv in sorted(level_of.items()) if lv == level)
        with viewer.txn() as s:
            s.position = (pts[i] + 0.5).tolist()
        wait_for_pixel(chromium, cx, cy, tuple(rgb[i]), timeout=120, radius=1)
        np.testing.assert_allclose(viewer.state.position, pts[i] + 0.5, rtol=1e-6)


def test_released_writer_uint32_after_float32_is_misread_by_the_client(tmp_path, chromium):
    """Confirms the defect that made us write our own: the same three points written by the released
    `neuroglancer.write_annotations.AnnotationWriter` (2.41.2) lose their uint32 in Neuroglancer's client
    (red channel 0 where ours is 255), while the float32 before it survives."""
    import neuroglancer
    from neuroglancer import write_annotations as nwa

    if nwa._PROPERTY_DTYPES["uint32"][1] == 4:
        pytest.skip("this neuroglancer release aligns uint32 correctly")
    writer = nwa.AnnotationWriter(neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=list(VS)), "point",
                                  properties=[neuroglancer.AnnotationPropertySpec(id="area", type="float32"),
                                              neuroglancer.AnnotationPropertySpec(id="cell", type="uint32"),
                                              neuroglancer.AnnotationPropertySpec(id="flag", type="uint8")])
    writer.add_point([40.5, 50.5, 10.5], id=11, area=0.25, cell=3_000_000_000, flag=0)
    writer.write(tmp_path / "theirs")
    data = serve_folder(tmp_path)
    viewer = neuroglancer_viewer()
    position, scale = np.array([50.5, 60.5, 10.5]), 0.25
    with viewer.txn() as s:
        s.dimensions = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=list(VS))
        s.position = position.tolist()
        s.cross_section_scale = scale
        s.layers["theirs"] = neuroglancer.AnnotationLayer(source=f"precomputed://{data}/theirs", shader=SHADER)
        s.layout = "xy"
        s.show_axis_lines = False
        s.show_scale_bar = False
        s.show_default_annotations = False
    chromium.get(viewer.get_viewer_url())
    x, y = np.array(panel_centre(chromium)) + (np.array([40.5, 50.5]) - position[:2]) / scale
    deadline = time.monotonic() + 60
    while True:  # until the marker is drawn (its green = the float32 area, read right)
        img = screenshot(chromium)
        px = img[int(round(y)), int(round(x))].astype(int)
        if abs(px[1] - 64) <= 6 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert abs(px[1] - 64) <= 6, f"marker not drawn: {px}"
    assert px[0] < 10, f"the uint32 survived ({px}): update docs/annotations.md, the release is fixed"
