"""`syconn_ng.viewer_state` and `syconn-ng export`: Neuroglancer states, exported layers read back with
CloudVolume and a spec decoder, bad input, a non-local backend, and Neuroglancer's own client on a plain
static server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from browser import chromium  # noqa: F401  (the session's browser fixture)

from syconn_ng.compartments.outputs import skeleton_shader
from syconn_ng.viewer_state import LAYER_NAMES, existing_layers, layer_specs, type_colours, viewer_state

VS = (10.0, 10.0, 20.0)


# ---------------------------------------------------------------- viewer_state: the JSON it builds

def _fake_folder(root: Path, names, *, layout: str) -> Path:
    """Layers with only an `info` (all `layer_specs` looks at) in an analysis (`layers/`) or export layout."""
    base = root / "layers" if layout == "analysis" else root
    for n in names:
        (base / n).mkdir(parents=True)
        (base / n / "info").write_text(json.dumps({"type": "segmentation", "skeletons": "skeletons"}))
    if "cells" in names:
        tables = root / "tables" if layout == "analysis" else root
        tables.mkdir(exist_ok=True)
        (tables / "cells.csv").write_text("id,type,type_probability\n5,MSN,0.9\n18446744073709551615,EA,0.8\n7,ZZ,0.5\n")
    return root


def test_layer_specs_list_existing_layers_in_drawing_order_with_their_urls(tmp_path):
    root = _fake_folder(tmp_path, ["synapses", "cells", "raw", "sj"], layout="export")
    specs = layer_specs(root, lambda n: f"precomputed://http://127.0.0.1:9/{n}")
    assert [s["name"] for s in specs] == ["raw", "sj", "cells", "synapses"] == existing_layers(root)
    by = {s["name"]: s for s in specs}
    assert by["raw"] == {"type": "image", "name": "raw", "source": "precomputed://http://127.0.0.1:9/raw", "visible": True}
    assert by["sj"]["type"] == "segmentation" and by["sj"]["visible"] is False
    assert by["cells"]["source"] == ["precomputed://http://127.0.0.1:9/cells"]
    assert by["cells"]["skeletonRendering"]["shader"] == skeleton_shader(myelin=False)  # its skeletons have no myelin
    assert by["synapses"]["type"] == "annotation"
    assert by["synapses"]["linkedSegmentationLayer"] == {"pre_cell": "cells", "post_cell": "cells"}
    assert "prop_type()" in by["synapses"]["shader"]
    # names= picks a subset, still in drawing order; an unknown name is an error
    assert [s["name"] for s in layer_specs(root, str, names=["synapses", "raw"])] == ["raw", "synapses"]


def test_compartment_shader_colours_every_compartment_of_the_vocabulary_distinctly():
    from syconn_ng.synth.geometry import COMPARTMENTS

    for shader in (skeleton_shader(myelin=False), skeleton_shader(myelin=True)):
        colours = [line.split("vec3(")[1] for line in shader.splitlines() if "if (c ==" in line]
        assert len(colours) == len(COMPARTMENTS) == len(set(colours))
    assert "color_by_myelin" in skeleton_shader(myelin=True) and "myelin" not in skeleton_shader(myelin=False)


def test_cells_are_coloured_by_type_with_uint64_ids_as_strings(tmp_path):
    root = _fake_folder(tmp_path, ["cells"], layout="export")
    colours = type_colours(root / "cells.csv")
    assert set(colours) == {"5", "18446744073709551615"}  # type ZZ has no colour: Neuroglancer's own
    assert colours["5"] == "#d93333"  # MSN (0.85, 0.2, 0.2)
    assert layer_specs(root, str)[0]["segmentColors"] == colours


def test_analysis_layout_shows_the_compartment_skeletons_not_the_hull_skeletons(tmp_path):
    root = _fake_folder(tmp_path, ["cells", "mi"], layout="analysis")
    (root / "layers" / "cells" / "skeletons_compartments").mkdir()
    (root / "layers" / "cells" / "skeletons_compartments" / "info").write_text(
        json.dumps({"vertex_attributes": [{"id": "compartment"}, {"id": "myelin"}]}))
    cells = layer_specs(root, lambda n: f"precomputed://http://h/layers/{n}")[1]
    assert cells["skeletonRendering"]["shader"] == skeleton_shader(myelin=True)
    plain, skeletons = cells["source"]
    assert plain["url"] == "precomputed://http://h/layers/cells"
    assert plain["subsources"]["skeletons"] is False and plain["subsources"]["mesh"] is True
    assert skeletons == "precomputed://http://h/layers/cells/skeletons_compartments"
    assert set(type_colours(root / "tables" / "cells.csv")) == set(cells["segmentColors"])


def test_viewer_state_is_a_complete_state_neuroglancer_parses(tmp_path):
    import neuroglancer

    root = _fake_folder(tmp_path, ["raw", "cells", "synapses"], layout="export")
    layers = layer_specs(root, lambda n: f"precomputed://http://127.0.0.1:9/{n}")
    state = viewer_state(layers, position_vx=(10, 20, 30), voxel_size_nm=VS, selected=[5, 2**64 - 1])
    assert state["dimensions"] == {"x": [1e-08, "m"], "y": [1e-08, "m"], "z": [2e-08, "m"]}
    assert state["position"] == [10.5, 20.5, 30.5]  # the voxel's centre
    assert state["layers"][1]["segments"] == ["5", "18446744073709551615"]
    assert "segments" not in layers[1]  # the input is not modified
    json.dumps(state)  # plain JSON
    parsed = neuroglancer.ViewerState(state)
    assert [l.name for l in parsed.layers] == ["raw", "cells", "synapses"]
    assert [int(s) for s in parsed.layers["cells"].segments] == [5, 2**64 - 1]
    assert parsed.layers["cells"].skeleton_shader == skeleton_shader(myelin=False)
    assert dict(parsed.layers["synapses"].linked_segmentation_layer) == {"pre_cell": "cells", "post_cell": "cells"}
    assert parsed.layout.type == "4panel"
    assert set(LAYER_NAMES) >= {l["name"] for l in layers}


# ---------------------------------------------------------------- export: fixtures

PREFIX = "http://example.org/share"


@pytest.fixture(scope="session")
def oracle_analysis(tmp_path_factory) -> Path:
    from pipeline_data import analysis

    return analysis(tmp_path_factory, "oracle")


@pytest.fixture(scope="session")
def exported(oracle_analysis, tmp_path_factory) -> Path:
    """The whole analysis exported with default options (through the CLI), once per worker."""
    from pipeline_data import cli

    dest = tmp_path_factory.mktemp("export") / "share"
    cli("export", oracle_analysis, dest, "--url-prefix", PREFIX, "--quiet")
    return dest


@pytest.fixture(scope="session")
def exported_sharded(oracle_analysis, tmp_path_factory) -> Path:
    from syconn_ng.export import export_analysis

    dest = tmp_path_factory.mktemp("export_sharded") / "share"
    export_analysis(oracle_analysis, dest, sharded=True, url_prefix=PREFIX)
    return dest


def _vol(path, **kwargs):
    from cloudvolume import CloudVolume

    return CloudVolume(str(path) if "://" in str(path) else "file://" + str(path), progress=False, **kwargs)


def _synapses(analysis: Path):
    import pandas as pd

    return pd.read_csv(analysis / "tables" / "synapses.csv")


def _skeleton_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices nm, compartment codes) of a precomputed skeleton file (spec layout; attribute types from the
    source's `info`, whatever the compartments stage chose)."""
    raw = path.read_bytes()
    attributes = json.loads((path.parent / "info").read_text())["vertex_attributes"]
    n, m = (int(v) for v in np.frombuffer(raw[:8], "<u4"))
    pos, values = 8 + 12 * n + 8 * m, {}
    for a in attributes:
        dt = np.dtype(a["data_type"]).newbyteorder("<")
        count = n * a.get("num_components", 1)
        values[a["id"]] = np.frombuffer(raw, dt, count, pos)
        pos += count * dt.itemsize
    assert pos == len(raw)
    return np.frombuffer(raw[8:8 + 12 * n], "<f4").reshape(n, 3), values["compartment"]


def _annotation_source(path):
    from cloudvolume.datasource.precomputed.annotation import PrecomputedAnnotationSource

    return PrecomputedAnnotationSource(str(path) if "://" in str(path) else "file://" + str(path))


# ---------------------------------------------------------------- export: read back identical

def test_export_writes_the_layout_others_rely_on(exported):
    for rel in ("state.json", "README.md", "cells.csv", "synapses.csv", "matrix.csv", "cells/info", "cells/mesh/info",
                "cells/skeletons/info", "cells/segment_properties/info", "synapses/info", "mi/info", "vc/info", "sj/info",
                "raw/info", "export.json", "provenance/synapses.json"):
        assert (exported / rel).is_file(), rel
    names = [p.name for p in exported.rglob("*")]
    assert not [n for n in names if n.endswith((".gz", ".br", ".zstd"))], "no compressed-suffix names a static server cannot serve"
    info = json.loads((exported / "cells" / "info").read_text())
    assert (info["mesh"], info["skeletons"], info["segment_properties"]) == ("mesh", "skeletons", "segment_properties")
    readme = (exported / "README.md").read_text()
    assert "Nature Methods" in readme and "## Provenance" in readme and "`synapses`" in readme


def test_exported_volumes_meshes_and_tables_are_identical_to_the_analysis(oracle_analysis, exported):
    for name in ("cells", "mi", "vc", "sj"):
        np.testing.assert_array_equal(_vol(exported / name)[:], _vol(oracle_analysis / "layers" / name)[:], err_msg=name)
    np.testing.assert_array_equal(_vol(exported / "raw")[:], _vol(oracle_analysis / "raw")[:])
    src, dst = _vol(oracle_analysis / "layers" / "cells", mesh_dir="mesh"), _vol(exported / "cells")  # the legacy meshes
    ids = sorted(int(p.name.split(":")[0]) for p in (oracle_analysis / "layers" / "cells" / "mesh").glob("*:0"))
    assert ids
    for cell in ids[:5]:
        a, b = src.mesh.get(cell), dst.mesh.get(cell)
        np.testing.assert_array_equal(a.vertices, b.vertices)
        np.testing.assert_array_equal(a.faces, b.faces)
    for table in ("cells.csv", "synapses.csv", "matrix.csv"):
        assert (exported / table).read_bytes() == (oracle_analysis / "tables" / table).read_bytes(), table


def test_exported_skeletons_carry_the_compartment_of_every_node(oracle_analysis, exported):
    from syconn_ng.compartments.outputs import COMPARTMENT_CODES

    skel_dir = oracle_analysis / "layers" / "cells" / "skeletons_compartments"
    ids = sorted(int(p.name) for p in skel_dir.iterdir() if p.name.isdigit())
    cv = _vol(exported / "cells")
    attributes = cv.skeleton.meta.info["vertex_attributes"]
    assert [a["id"] for a in attributes] == ["radius", "compartment", "myelin"]
    assert {a["data_type"] for a in attributes} == {"float32"}, "the client refuses 8-bit skeleton attributes"
    seen = set()
    for cell in ids:
        sk = cv.skeleton.get(cell)
        vertices, compartment = _skeleton_file(skel_dir / str(cell))
        np.testing.assert_array_equal(sk.vertices, vertices)
        np.testing.assert_array_equal(sk.compartment, compartment)
        seen |= set(compartment.tolist())
    assert seen <= set(range(len(COMPARTMENT_CODES))) | {255} and len(seen) >= 2


def test_segment_properties_hold_type_tags_and_statistics_of_every_cell(oracle_analysis, exported):
    import pandas as pd

    cells = pd.read_csv(oracle_analysis / "tables" / "cells.csv")
    info = json.loads((exported / "cells" / "segment_properties" / "info").read_text())
    assert info["@type"] == "neuroglancer_segment_properties"
    inline = info["inline"]
    assert inline["ids"] == [str(i) for i in cells["id"]]
    props = {p["id"]: p for p in inline["properties"]}
    assert props["label"]["values"] == cells["type"].tolist()
    tags = props["type"]
    assert [tags["tags"][v[0]] for v in tags["values"]] == cells["type"].tolist()
    assert props["n_in"]["data_type"] == "uint32" and props["n_in"]["values"] == cells["n_in"].tolist()
    np.testing.assert_allclose(props["path_length_um"]["values"], cells["path_length_um"], rtol=1e-6)
    assert all(p["type"] in ("label", "description", "tags", "number") for p in inline["properties"])


def test_exported_synapses_read_back_with_the_spec_decoder_and_cloudvolume(oracle_analysis, exported):
    from cloudvolume import Bbox
    from test_annotations import decode_multiple, decode_single, read_spatial

    syn = _synapses(oracle_analysis)
    assert len(syn) >= 2
    layer = exported / "synapses"
    info = json.loads((layer / "info").read_text())
    assert [r["id"] for r in info["relationships"]] == ["pre_cell", "post_cell"]
    for row in syn.itertuples():
        geom, props, rels = decode_single((layer / "by_id" / str(row.id)).read_bytes(), info)
        np.testing.assert_allclose(geom, [row.x + 0.5, row.y + 0.5, row.z + 0.5], rtol=1e-6)
        assert props["type"] == int(row.type == "symmetric")
        np.testing.assert_allclose([props["area"], props["probability"]], [row.area_um2, row.probability], rtol=1e-6)
        assert rels == [[row.pre_cell], [row.post_cell]]
    listed = sorted(a for _, _, entries in read_spatial(layer, info) for a, _ in entries)
    assert listed == sorted(syn["id"].tolist())
    pre = int(syn["pre_cell"].iloc[0])
    related = decode_multiple((layer / "rel_pre_cell" / str(pre)).read_bytes(), info)
    assert sorted(a for a, _ in related) == sorted(syn.loc[syn.pre_cell == pre, "id"])
    # the same through CloudVolume's reader, with a spatial query around the first synapse
    reader = _annotation_source(layer).reader
    p = syn[["x", "y", "z"]].to_numpy()[0]
    hit = reader.get_by_bbox(Bbox(np.floor(p) - 1, np.floor(p) + 2))
    assert int(syn["id"].iloc[0]) in hit.ids.tolist()


def test_sharded_export_reads_back_identically(oracle_analysis, exported_sharded):
    from cloudvolume import Bbox

    for name in ("cells", "mi", "raw"):
        assert json.loads((exported_sharded / name / "info").read_text())["scales"][0]["sharding"]["@type"] == \
            "neuroglancer_uint64_sharded_v1"
        src = oracle_analysis / ("raw" if name == "raw" else f"layers/{name}")
        np.testing.assert_array_equal(_vol(exported_sharded / name)[:], _vol(src)[:], err_msg=name)
    assert [p.suffix for p in (exported_sharded / "cells" / "10_10_20").iterdir()] == [".shard"]
    skel = _vol(exported_sharded / "cells").skeleton
    assert skel.meta.is_sharded()
    # meshes: the state's source is the sharded multi-resolution one, its LOD 0 on the legacy mesh's bounds
    meshes, legacy = _vol(exported_sharded / "cells").mesh, _vol(exported_sharded / "cells", mesh_dir="mesh").mesh
    assert meshes.meta.info["@type"] == "neuroglancer_multilod_draco" and meshes.meta.is_sharded()
    for cell in sorted(int(p.name[:-2]) for p in (exported_sharded / "cells" / "mesh").glob("*:0"))[:3]:
        a, b = meshes.get(cell)[cell], legacy.get(cell)
        np.testing.assert_allclose(a.vertices.min(0), b.vertices.min(0), atol=0.5)
        np.testing.assert_allclose(a.vertices.max(0), b.vertices.max(0), atol=0.5)
    skel_dir = oracle_analysis / "layers" / "cells" / "skeletons_compartments"
    for f in (p for p in skel_dir.iterdir() if p.name.isdigit()):
        vertices, compartment = _skeleton_file(f)
        sk = skel.get(int(f.name))
        np.testing.assert_array_equal(sk.vertices, vertices)
        np.testing.assert_array_equal(sk.compartment, compartment)
    syn = _synapses(oracle_analysis)
    reader = _annotation_source(exported_sharded / "synapses").reader
    for row in syn.itertuples():
        a = reader.get_by_id(int(row.id))
        np.testing.assert_allclose(a.geometry[0], [row.x + 0.5, row.y + 0.5, row.z + 0.5], rtol=1e-6)
        assert a.relationships["rel_pre_cell"].tolist() == [row.pre_cell]
    pre = int(syn["pre_cell"].iloc[0])
    assert sorted(reader.get_by_relationship("pre_cell", pre).ids.tolist()) == sorted(syn.loc[syn.pre_cell == pre, "id"])
    everything = reader.get_by_bbox(Bbox((0, 0, 0), _vol(exported_sharded / "cells").shape[:3]))
    assert sorted(everything.ids.tolist()) == sorted(syn["id"])


# ---------------------------------------------------------------- export: choices and bad input

def test_a_cell_filter_keeps_only_those_cells_voxels_meshes_skeletons_and_their_synapses(oracle_analysis, tmp_path):
    from syconn_ng.export import export_analysis

    syn = _synapses(oracle_analysis)
    cell = int(syn["pre_cell"].iloc[0])
    summary = export_analysis(oracle_analysis, tmp_path / "one", cells=[cell])
    out = tmp_path / "one"
    labels = _vol(out / "cells")[:]
    original = _vol(oracle_analysis / "layers" / "cells")[:]
    assert set(np.unique(labels).tolist()) == {0, cell}
    np.testing.assert_array_equal(labels == cell, original == cell)
    assert sorted(p.name for p in (out / "cells" / "mesh").iterdir()) == sorted([f"{cell}:0", f"{cell}:0:1", "info"])
    assert sorted(p.name for p in (out / "cells" / "skeletons").iterdir()) == sorted([str(cell), "info"])
    assert json.loads((out / "cells" / "segment_properties" / "info").read_text())["inline"]["ids"] == [str(cell)]
    import pandas as pd

    kept = pd.read_csv(out / "synapses.csv")
    expected = syn[(syn.pre_cell == cell) | (syn.post_cell == cell)]
    assert kept["id"].tolist() == expected["id"].tolist() and summary.synapses == len(expected)
    assert sorted(p.name for p in (out / "synapses" / "by_id").iterdir()) == sorted(str(i) for i in expected["id"])
    mi = pd.read_csv(oracle_analysis / "tables" / "mapping_mi.csv")
    assert set(np.unique(_vol(out / "mi")[:]).tolist()) - {0} == set(mi.loc[mi.cell == cell, "object"].tolist())
    state = json.loads((out / "state.json").read_text())
    assert next(l for l in state["layers"] if l["name"] == "cells")["segments"] == [str(cell)]


def test_min_probability_drops_weaker_synapses_and_the_matrix_follows(oracle_analysis, tmp_path):
    import pandas as pd

    from syconn_ng.export import export_analysis

    syn = _synapses(oracle_analysis)
    values = np.unique(syn["probability"])
    assert len(values) >= 2
    cut = float(values[:2].mean())  # the least likely synapses go
    export_analysis(oracle_analysis, tmp_path / "x", min_probability=cut)
    kept = pd.read_csv(tmp_path / "x" / "synapses.csv")
    assert kept["id"].tolist() == syn.loc[syn.probability >= cut, "id"].tolist() and 0 < len(kept) < len(syn)
    matrix = pd.read_csv(tmp_path / "x" / "matrix.csv", index_col=0)
    assert matrix.to_numpy().sum() == pytest.approx(kept["area_um2"].sum(), abs=1e-4)


def test_reviewed_only_exports_the_accepted_synapses_in_their_reviewed_direction(oracle_analysis, tmp_path):
    import pandas as pd

    from syconn_ng.analysis import Analysis
    from syconn_ng.export import export_analysis
    from syconn_ng.serve.review import ReviewedAnalysis

    syn = _synapses(oracle_analysis)
    no_review = export_analysis(oracle_analysis, tmp_path / "plain", reviewed_only=True)
    assert any("review.sqlite" in n for n in no_review.notes) and no_review.synapses == len(syn)
    store = tmp_path / "review.sqlite"
    reviewed = ReviewedAnalysis(Analysis.open(oracle_analysis), store_path=store)
    first, second = int(syn["id"].iloc[0]), int(syn["id"].iloc[1])
    reviewed.decide_synapse(first, "accept", "tester")
    reviewed.decide_synapse(second, "flip", "tester")
    cell = int(syn["post_cell"].iloc[0])
    new_type = "GP" if reviewed.cell_types[cell] != "GP" else "INT"
    reviewed.decide_cell(cell, new_type, "tester")
    reviewed.store.close()
    copy = tmp_path / "ana"
    import shutil

    shutil.copytree(oracle_analysis, copy, ignore=shutil.ignore_patterns("scratch", "raw"))
    (copy / "raw").symlink_to(oracle_analysis / "raw")
    shutil.copy2(store, copy / "review.sqlite")
    export_analysis(copy, tmp_path / "rev", reviewed_only=True)
    out = pd.read_csv(tmp_path / "rev" / "synapses.csv")
    assert out["id"].tolist() == [first, second]
    flipped = out.set_index("id").loc[second]
    original = syn.set_index("id").loc[second]
    assert (flipped.pre_cell, flipped.post_cell) == (original.post_cell, original.pre_cell)
    assert list(out.columns) == list(syn.columns)
    cells = pd.read_csv(tmp_path / "rev" / "cells.csv").set_index("id")
    assert cells.loc[cell, "type"] == new_type, "the reviewer's cell type is exported"
    props = json.loads((tmp_path / "rev" / "cells" / "segment_properties" / "info").read_text())["inline"]
    assert props["properties"][0]["values"][props["ids"].index(str(cell))] == new_type


def test_a_non_empty_dest_is_refused_unless_overwrite(oracle_analysis, tmp_path):
    from pipeline_data import cli

    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    proc = cli("export", oracle_analysis, dest, "--layers", "synapses", check=False)
    assert proc.returncode == 2 and "is not empty" in proc.stderr and "--overwrite" in proc.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]
    cli("export", oracle_analysis, dest, "--layers", "synapses", "--overwrite", "--quiet")
    assert not (dest / "keep.txt").exists() and (dest / "synapses" / "info").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folders left behind"


def test_an_unknown_cell_id_or_type_is_refused_before_anything_is_written(oracle_analysis, tmp_path):
    from pipeline_data import cli

    proc = cli("export", oracle_analysis, tmp_path / "d", "--cells", "999999999", check=False)
    assert proc.returncode == 2 and "cell 999999999 is not among the" in proc.stderr and "cells.csv" in proc.stderr
    proc = cli("export", oracle_analysis, tmp_path / "d", "--types", "NOPE", check=False)
    assert proc.returncode == 2 and "no cell has type 'NOPE'" in proc.stderr
    assert not (tmp_path / "d").exists() and list(tmp_path.iterdir()) == []


def test_an_analysis_with_missing_stages_exports_what_exists_and_says_what_is_missing(oracle_analysis, tmp_path):
    import shutil

    from pipeline_data import cli

    part = tmp_path / "partial"
    shutil.copytree(oracle_analysis, part, ignore=shutil.ignore_patterns("scratch", "synapses", "synapses.csv", "cells.csv",
                                                                         "matrix*", "raw"))
    (part / "raw").symlink_to(oracle_analysis / "raw")
    proc = cli("export", part, tmp_path / "out", "--quiet")
    assert "missing: synapses: tables/synapses.csv missing (run the 'synapses' stage)" in proc.stdout
    assert "missing: cells: segment properties need tables/cells.csv" in proc.stdout
    out = tmp_path / "out"
    assert (out / "cells" / "info").is_file() and not (out / "synapses").exists() and not (out / "synapses.csv").exists()
    state = json.loads((out / "state.json").read_text())
    assert [l["name"] for l in state["layers"]] == ["raw", "myelin", "mi", "vc", "sj", "cells"]
    assert "tables/synapses.csv missing" in (out / "README.md").read_text()
    assert json.loads((out / "export.json").read_text())["missing"]


def test_export_to_an_in_memory_cloud_backend_reads_back(oracle_analysis):
    """cloud-files' `mem://` backend stands in for gs:// / s3:// (no object store is reachable here)."""
    from cloudfiles import CloudFiles

    from syconn_ng.export import export_analysis

    dest = "mem://syconn-test/share"
    summary = export_analysis(oracle_analysis, dest, layers=["cells", "synapses"], sharded=True)
    files = list(CloudFiles(dest).list())
    assert "state.json" in files and "cells/info" in files and any(f.startswith("synapses/by_id/") for f in files)
    assert not [f for f in files if f.endswith(".gz")]
    np.testing.assert_array_equal(_vol(dest + "/cells")[:], _vol(oracle_analysis / "layers" / "cells")[:])
    state = json.loads(CloudFiles(dest).get("state.json"))
    assert state["layers"][0]["source"] == [f"precomputed://{dest}/cells"]
    syn = _synapses(oracle_analysis)
    assert _annotation_source(dest + "/synapses").reader.get_by_id(int(syn["id"].iloc[0])).id == int(syn["id"].iloc[0])
    with pytest.raises(Exception, match="is not empty"):
        export_analysis(oracle_analysis, dest, layers=["synapses"])
    export_analysis(oracle_analysis, dest, layers=["synapses"], overwrite=True)
    assert not [f for f in CloudFiles(dest).list() if f.startswith("cells/")], "stale objects of the old export removed"
    assert summary.cells > 0


# ---------------------------------------------------------------- export: Neuroglancer's own client on a static server

def load_exported_state(exported: Path, viewer) -> dict:
    """state.json of an export with its sources pointed at a static server for the folder, set on `viewer`."""
    import neuroglancer
    from browser import serve_folder

    state = json.loads((exported / "state.json").read_text().replace(PREFIX, serve_folder(exported)))
    viewer.set_state(neuroglancer.ViewerState(state))
    return state


@pytest.mark.parametrize("form", ["unsharded", "sharded"])
def test_neuroglancer_client_draws_the_exported_synapses_and_cell_meshes_from_a_static_server(oracle_analysis, form, request, chromium):
    import pandas as pd
    from browser import neuroglancer_viewer, panel_centre, wait_for_chroma, wait_for_pixel, wait_for_text

    from syconn_ng.compartments.outputs import TYPE_RGBA
    from syconn_ng.viewer_state import SYNAPSE_RGB

    exported = request.getfixturevalue("exported" if form == "unsharded" else "exported_sharded")
    viewer = neuroglancer_viewer()
    state = load_exported_state(exported, viewer)
    assert {l["name"] for l in state["layers"]} == {"raw", "myelin", "mi", "vc", "sj", "cells", "synapses"}
    chromium.get(viewer.get_viewer_url())
    # synapses: each at its expected screen position (off the panel centre), in its type's colour
    scale = 0.25  # voxels per screen pixel
    with viewer.txn() as s:
        s.layout = "xy"
        s.cross_section_scale = scale
        s.show_axis_lines = False
    cx, cy = panel_centre(chromium)
    for row in _synapses(oracle_analysis).itertuples():
        p = np.array([row.x, row.y, row.z]) + 0.5
        view = p + [6.0, -4.0, 0.0]
        with viewer.txn() as s:
            s.position = view.tolist()
        x, y = np.array([cx, cy]) + (p[:2] - view[:2]) / scale
        rgb = tuple(round(255 * c) for c in SYNAPSE_RGB[row.type])
        wait_for_pixel(chromium, int(round(x)), int(round(y)), rgb, timeout=120, radius=2, tolerance=10)
    # meshes: one selected cell in the 3D panel shows its type colour; another cell of another type replaces it
    cells = pd.read_csv(exported / "cells.csv")
    first = cells.iloc[0]
    second = cells[cells.type != first.type].iloc[0]
    with viewer.txn() as s:
        s.layout = "3d"
        s.show_slices = False
        s.layers["synapses"].visible = False
        s.layers["cells"].segments = [int(first.id)]
    wait_for_chroma(chromium, TYPE_RGBA[first.type][:3], at_least=100, absent=TYPE_RGBA[second.type][:3])
    with viewer.txn() as s:
        s.layers["cells"].segments = [int(second.id)]
    wait_for_chroma(chromium, TYPE_RGBA[second.type][:3], at_least=100, absent=TYPE_RGBA[first.type][:3])
    # segment properties: the client lists the cells of a type for the query "#TYPE"
    n_type = int((cells.type == first.type).sum())
    with viewer.txn() as s:
        s.selected_layer.layer = "cells"
        s.selected_layer.visible = True
        s.layers["cells"].tab = "segments"
        s.layers["cells"].segment_query = f"#{first.type}"
    wait_for_text(chromium, f"{n_type} match /{len(cells)} total ids")
    # every sub-source loads (8-bit skeleton attributes would show "Data type not supported by WebGL" here)
    with viewer.txn() as s:
        s.layers["cells"].tab = "source"
    wait_for_text(chromium, "skeletons")
    wait_for_text(chromium, "segment property map")
    assert "not supported" not in chromium.execute_script("return document.body.innerText")
    if form == "unsharded" and os.environ.get("SYCONN_DOCS_IMG"):  # docs/export.md's picture: the state as exported, at a synapse
        _docs_screenshot(viewer, state, _synapses(oracle_analysis).iloc[0], chromium, Path(os.environ["SYCONN_DOCS_IMG"]))


def _docs_screenshot(viewer, state, synapse, driver, out_dir: Path) -> None:
    import neuroglancer
    from browser import panel_centre, wait_for_pixel
    from PIL import Image

    from syconn_ng.viewer_state import SYNAPSE_RGB

    state = dict(state, position=[synapse.x + 0.5, synapse.y + 0.5, synapse.z + 0.5], crossSectionScale=0.3)
    viewer.set_state(neuroglancer.ViewerState(state))
    cx, cy = panel_centre(driver)
    img = wait_for_pixel(driver, int(cx), int(cy), tuple(round(255 * c) for c in SYNAPSE_RGB[synapse.type]), timeout=120, radius=2,
                         tolerance=10)
    out_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(out_dir / "export_neuroglancer.png")


def test_raw_can_be_copied_referenced_or_left_out(oracle_analysis, tmp_path):
    from syconn_ng.export import export_analysis

    def raw_source(dest):
        state = json.loads((dest / "state.json").read_text())
        return next((l["source"] for l in state["layers"] if l["name"] == "raw"), None)

    export_analysis(oracle_analysis, tmp_path / "copy", layers=["raw", "cells"], raw="copy")
    assert raw_source(tmp_path / "copy") == "precomputed://http://127.0.0.1:8000/raw"  # the default prefix of a local DEST
    np.testing.assert_array_equal(_vol(tmp_path / "copy" / "raw")[:], _vol(oracle_analysis / "raw")[:])
    ref = export_analysis(oracle_analysis, tmp_path / "ref", layers=["raw", "cells"], raw="reference")
    assert not (tmp_path / "ref" / "raw").exists()
    assert raw_source(tmp_path / "ref") == "precomputed://file://" + str((oracle_analysis / "raw").resolve())
    assert any("cannot read" in n for n in ref.notes), "a local path is not shareable: the export says so"
    export_analysis(oracle_analysis, tmp_path / "none", layers=["raw", "cells"], raw="none")
    assert raw_source(tmp_path / "none") is None and not (tmp_path / "none" / "raw").exists()


def test_a_killed_exports_staging_folder_is_removed_by_the_next_export(oracle_analysis, tmp_path):
    from syconn_ng.export import export_analysis

    leftover = tmp_path / ".share.tmp-killed"
    (leftover / "cells").mkdir(parents=True)
    export_analysis(oracle_analysis, tmp_path / "share", layers=["synapses"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["share"]


def test_sharded_annotation_indices_hold_every_level_and_id_of_the_unsharded_layer(tmp_path):
    from cloudvolume import Bbox
    from cloudvolume.datasource.precomputed.common import compressed_morton_code
    from test_annotations import read_spatial

    from syconn_ng.annotations import write_annotations
    from syconn_ng.sharding import compressed_morton

    rng = np.random.default_rng(3)
    for grid in ([1, 1, 1], [4, 2, 1], [8, 8, 4], [5, 3, 7]):
        cells = rng.integers(0, grid, (20, 3))
        assert [compressed_morton(c, grid) for c in cells] == compressed_morton_code(cells, grid).tolist()
    n = 3000
    pts = rng.uniform(0, [400, 300, 100], (n, 3))
    ids = np.arange(1, n + 1, dtype=np.uint64) * 7
    pre = rng.integers(1, 50, n).astype(np.uint64)
    area = rng.random(n).astype(np.float32)
    for form in ("plain", "sharded"):
        write_annotations(tmp_path / form, ids=ids, points_vx=pts, voxel_size_nm=VS, max_per_cell=100, sharded=form == "sharded",
                          properties={"area": area}, relationships={"pre_cell": pre})
    info = json.loads((tmp_path / "plain" / "info").read_text())
    assert len(info["spatial"]) >= 3
    reader = _annotation_source(tmp_path / "sharded").reader
    bounds = Bbox(info["lower_bound"], info["upper_bound"])
    by_level = {}
    for level, _, entries in read_spatial(tmp_path / "plain", info):
        by_level.setdefault(level, []).extend(a for a, _ in entries)
    for level, listed in by_level.items():
        got = reader.get_by_bbox(bounds, mip=level).ids.tolist()
        assert sorted(set(got)) == sorted(set(listed)), f"level {level}"
    for i in (0, n // 2, n - 1):
        np.testing.assert_allclose(reader.get_by_id(int(ids[i])).geometry[0], pts[i] + 0.5, rtol=1e-6)
    assert sorted(reader.get_by_relationship("pre_cell", 7).ids.tolist()) == sorted(ids[pre == 7].tolist())
    assert sum(1 for _ in (tmp_path / "sharded").rglob("*.shard")) < sum(1 for _ in (tmp_path / "plain").rglob("*")) / 50


def test_skeleton_attributes_of_any_type_are_re_encoded_as_float32():
    from syconn_ng.export import float32_attributes

    vertices = np.arange(12, dtype="<f4").reshape(4, 3)
    edges = np.array([[0, 1], [1, 2], [2, 3]], dtype="<u4")
    radius, kind, pair = np.array([1.5, 2, 3, 4], "<f4"), np.array([0, 4, 255, 1], "u1"), np.array([[1, -2], [3, -4], [5, 6], [7, 8]], "<i2")
    raw = np.array([4, 3], "<u4").tobytes() + vertices.tobytes() + edges.tobytes() + radius.tobytes() + kind.tobytes() + pair.tobytes()
    attributes = [{"id": "radius", "data_type": "float32", "num_components": 1}, {"id": "kind", "data_type": "uint8", "num_components": 1},
                  {"id": "pair", "data_type": "int16", "num_components": 2}]
    out = float32_attributes(raw, attributes)
    head = 8 + 48 + 24
    assert out[:head] == raw[:head]
    values = np.frombuffer(out[head:], "<f4")
    np.testing.assert_array_equal(values, np.concatenate([radius, kind, pair.ravel()]).astype(np.float32))
