"""`syconn-ng info` and `syconn-ng convert`, run as the installed command."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from syconn_ng.io.annotation import read_annotation, write_annotation
from syconn_ng.layers import create_layer

FIXTURES = Path(__file__).parent / "fixtures" / "knossos"
EXE = str(Path(sys.executable).parent / "syconn-ng")


def run(*args, ok=True):
    proc = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert (proc.returncode == 0) == ok, proc.stderr
    return proc


def info_json(*args):
    return json.loads(run("info", *args, "--json").stdout)


def test_info_json_counts_what_the_file_holds():
    out = info_json(FIXTURES / "knossos_current.nml")
    assert out["dialect"] == "knossos"
    assert (out["trees"], out["nodes"], out["edges"], out["comments"], out["branchpoints"]) == (2, 6, 5, 3, 2)
    assert out["bbox"] == [[100, 200, 50], [310, 304, 100]]
    assert out["voxel_size_nm"] == [10, 10, 25]
    skel = read_annotation(FIXTURES / "knossos_current.nml")
    pos = {n.id: np.array([n.x, n.y, n.z]) * (10, 10, 25) for n in skel.nodes()}
    expected = sum(np.linalg.norm(pos[a] - pos[b]) for t in skel.trees for a, b in t.edges) / 1000
    assert out["path_length_um"] == pytest.approx(expected)


def test_info_counts_duplicate_edges_twice_and_comments_once_per_node(tmp_path):
    f = tmp_path / "d.nml"
    f.write_text('<things><parameters><scale x="1" y="1" z="1"/></parameters>'
                 '<thing id="1"><nodes><node id="1" x="1" y="1" z="1" comment="a"/>'
                 '<node id="2" x="4" y="5" z="1" comment="b"/></nodes>'
                 '<edges><edge source="1" target="2"/><edge source="1" target="2"/></edges></thing>'
                 '<comments><comment node="1" content="a"/></comments></things>')
    out = info_json(f)
    assert (out["edges"], out["comments"]) == (2, 2)
    assert out["path_length_um"] == pytest.approx(2 * 5 / 1000)


def test_info_path_length_uses_voxel_size_option_when_the_file_has_no_scale():
    assert info_json(FIXTURES / "minimal.nml")["path_length_um"] is None
    out = info_json(FIXTURES / "minimal.nml", "--voxel-size", "10,10,10")
    assert out["path_length_um"] == pytest.approx(np.linalg.norm([20, 30, 40]) / 1000)


def test_info_reports_webknossos_dialect_groups_and_kept_volume():
    out = info_json(FIXTURES / "webknossos.nml")
    assert (out["dialect"], out["groups"], out["kept_elements"]) == ("webknossos", 1, ["meta", "volume"])


def test_info_plain_text_output():
    text = run("info", FIXTURES / "knossos_utils.nml").stdout
    assert "dialect: knossos_utils" in text and "nodes: 3" in text


def test_info_on_a_precomputed_layer(tmp_path):
    create_layer(tmp_path / "seg", layer_type="segmentation", dtype=np.uint64, voxel_size_nm=(8, 8, 40),
                 shape=(256, 192, 64), chunk_size=(64, 64, 32), voxel_offset=(10, 20, 0), mesh="mesh")
    out = info_json(tmp_path / "seg")
    assert (out["kind"], out["type"], out["data_type"], out["num_channels"]) == ("layer", "segmentation", "uint64", 1)
    assert out["voxel_size_nm"] == [8, 8, 40]
    assert out["bounds"] == [[10, 20, 0], [266, 212, 64]]
    assert out["chunk_size"] == [64, 64, 32]
    assert out["encoding"] == "compressed_segmentation"
    assert out["mesh"] == "mesh"
    assert len(out["scales"]) == 1
    assert info_json(f"file://{tmp_path / 'seg'}")["bounds"] == out["bounds"]


def test_info_on_a_kzip_lists_its_members(tmp_path):
    skel = read_annotation(FIXTURES / "knossos_3.nml")
    skel.members = {"mergelist.txt": b"1 0 0 1\n0 0 0\n\n\n", "plugin.py": b"print('never run')\n"}
    write_annotation(skel, tmp_path / "a.k.zip")
    out = info_json(tmp_path / "a.k.zip")
    assert (out["dialect"], out["nodes"], out["members"]) == ("syconn_ng", 2, ["mergelist.txt", "plugin.py"])


def test_info_on_bad_input_prints_one_error_line_and_exits_2(tmp_path):
    proc = run("info", FIXTURES / "bad_edge_to_missing_node.nml", ok=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {FIXTURES / 'bad_edge_to_missing_node.nml'}:8: "
                                   '<edge source="1" target="42">: edge to missing node 42')
    assert run("info", tmp_path / "nothing", ok=False).returncode == 2


@pytest.mark.parametrize("target", ["out.nml", "out.k.zip"])
def test_convert_between_nml_and_kzip_is_lossless(tmp_path, target):
    run("convert", FIXTURES / "webknossos.nml", tmp_path / target)
    back = read_annotation(tmp_path / target)
    src = read_annotation(FIXTURES / "webknossos.nml")
    back.dialect = src.dialect
    assert back == src


def test_convert_to_and_from_swc_needs_and_uses_the_voxel_size(tmp_path):
    run("convert", FIXTURES / "knossos_current.nml", tmp_path / "a.swc")  # the file's <scale>
    first = [line.split() for line in (tmp_path / "a.swc").read_text().splitlines() if line[0] != "#"][0]
    assert first[1:6] == ["1", "1000", "2000", "1250", "15"]
    proc = run("convert", tmp_path / "a.swc", tmp_path / "b.nml", ok=False)
    assert "voxel" in proc.stderr and not (tmp_path / "b.nml").exists()
    run("convert", tmp_path / "a.swc", tmp_path / "b.nml", "--voxel-size", "10,10,25")
    back = read_annotation(tmp_path / "b.nml")
    assert back.num_nodes() == 6 and back.parameters.scale_nm == (10, 10, 25)
    assert sorted((n.x, n.y, n.z) for n in back.nodes())[0] == (100, 200, 50)


def test_convert_rescales_to_another_voxel_size(tmp_path):
    run("convert", FIXTURES / "knossos_current.nml", tmp_path / "fine.nml", "--voxel-size", "5,5,25")
    fine = read_annotation(tmp_path / "fine.nml")
    assert fine.parameters.scale_nm == (5, 5, 25)
    n1 = next(n for n in fine.nodes() if n.id == 1)
    assert (n1.x, n1.y, n1.z) == (201, 401, 50)


def test_convert_refuses_unknown_types_and_bad_voxel_sizes(tmp_path):
    assert run("convert", FIXTURES / "minimal.nml", tmp_path / "x.txt", ok=False).returncode == 2
    proc = run("convert", FIXTURES / "minimal.nml", tmp_path / "x.swc", "--voxel-size", "1,2", ok=False)
    assert "three positive numbers" in proc.stderr
