""".k.zip files: members kept and never executed, safety limits, missing annotation.xml."""

import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syconn_ng.errors import InputError, SyconnError
from syconn_ng.io import kzip
from syconn_ng.io.annotation import read_annotation, write_annotation

FIXTURES = Path(__file__).parent / "fixtures" / "knossos"
MERGELIST = b"7404800 0 0 7404800 30529290\n3035 10170 1049 \n\n\n"


def make_zip(path, members, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_kzip_with_mergelist_and_other_members_keeps_them_and_runs_nothing(tmp_path):
    marker = tmp_path / "plugin_ran"
    plugin = f"open({str(marker)!r}, 'w').write('ran')\n".encode()
    members = {"annotation.xml": (FIXTURES / "knossos_current.nml").read_bytes(), "mergelist.txt": MERGELIST,
               "plugin.py": plugin, "17.ply": b"ply\nformat ascii 1.0\nend_header\n",
               "AreaX14_mag1x41y40z22.seg.sz": bytes(range(256))}
    src = make_zip(tmp_path / "a.k.zip", members)
    skel = read_annotation(src)
    assert skel.dialect == "knossos" and [t.id for t in skel.trees] == [17, 5]
    assert skel.members == {k: v for k, v in members.items() if k != "annotation.xml"}
    out = tmp_path / "b.k.zip"
    write_annotation(skel, out)
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist()[0] == "annotation.xml"
        assert {n: zf.read(n) for n in zf.namelist()[1:]} == skel.members
    assert not marker.exists()


def test_kzip_annotation_is_the_nml_byte_for_byte(tmp_path):
    skel = read_annotation(FIXTURES / "knossos_current.nml")
    write_annotation(skel, tmp_path / "a.nml")
    write_annotation(skel, tmp_path / "a.k.zip")
    with zipfile.ZipFile(tmp_path / "a.k.zip") as zf:
        assert zf.read("annotation.xml") == (tmp_path / "a.nml").read_bytes()


def test_kzip_without_annotation_xml_is_a_clear_error_or_the_mergelist_alone(tmp_path):
    src = make_zip(tmp_path / "render.k.zip", {"mergelist.txt": MERGELIST, "skeleton.pkl": b"\x80\x04N."})
    with pytest.raises(InputError, match="no annotation.xml member") as info:
        read_annotation(src)
    assert info.value.element == "annotation.xml"
    skel = read_annotation(src, allow_mergelist_only=True)
    assert skel.dialect == "kzip_mergelist" and skel.trees == []
    assert skel.members["mergelist.txt"] == MERGELIST
    only_pickle = make_zip(tmp_path / "p.k.zip", {"skeleton.pkl": b"\x80\x04N."})
    with pytest.raises(InputError, match="no annotation.xml"):
        read_annotation(only_pickle, allow_mergelist_only=True)


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/etc/evil", "C:\\evil", "..\\evil"])
def test_member_names_escaping_the_folder_are_refused(tmp_path, name):
    src = make_zip(tmp_path / "x.k.zip", {"annotation.xml": b"<things/>", name: b"x"})
    with pytest.raises(InputError, match="'..' member name") as info:
        read_annotation(src)
    assert name in info.value.element


def test_zip_bomb_by_compression_ratio_is_refused(tmp_path):
    src = make_zip(tmp_path / "bomb.k.zip", {"annotation.xml": b"<things/>", "zeros.bin": bytes(8 << 20)})
    with pytest.raises(InputError, match="compression ratio above 200") as info:
        read_annotation(src)
    assert "zeros.bin" in info.value.element


def test_total_uncompressed_size_limit_is_enforced(tmp_path, monkeypatch):
    src = make_zip(tmp_path / "big.k.zip", {"annotation.xml": b"<things/>", "a.bin": b"x" * 5000},
                   compression=zipfile.ZIP_STORED)
    assert read_annotation(src).members["a.bin"] == b"x" * 5000
    monkeypatch.setattr(kzip, "MAX_TOTAL_BYTES", 4096)  # the limit is a module constant
    with pytest.raises(InputError, match="exceed 4096 bytes"):
        read_annotation(src)


def test_truncated_and_corrupt_zips_are_input_errors(tmp_path):
    good = tmp_path / "good.k.zip"
    write_annotation(read_annotation(FIXTURES / "knossos_current.nml"), good)
    data = good.read_bytes()
    (tmp_path / "cut.k.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable zip"):
        read_annotation(tmp_path / "cut.k.zip")
    corrupt = bytearray(data)
    start = data.index(b"annotation.xml") + len("annotation.xml")  # inside the deflated stream
    corrupt[start + 40:start + 60] = bytes(20)
    (tmp_path / "corrupt.k.zip").write_bytes(bytes(corrupt))
    with pytest.raises(InputError):
        read_annotation(tmp_path / "corrupt.k.zip")


def test_errors_inside_annotation_xml_name_the_member_and_line(tmp_path):
    src = make_zip(tmp_path / "x.k.zip", {"annotation.xml": (FIXTURES / "bad_edge_to_missing_node.nml").read_bytes()})
    with pytest.raises(InputError) as info:
        read_annotation(src)
    assert info.value.path == f"{src}[annotation.xml]" and info.value.line == 8


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.none() | st.floats(0, 1))
def test_mutated_and_truncated_kzips_raise_only_syconn_errors(tmp_path, flips, cut):
    good = tmp_path / "good.k.zip"
    if not good.exists():
        skel = read_annotation(FIXTURES / "webknossos.nml")
        skel.members = {"mergelist.txt": MERGELIST}
        write_annotation(skel, good)
    data = bytearray(good.read_bytes())
    for pos, value in flips:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    bad = tmp_path / "bad.k.zip"
    bad.write_bytes(bytes(data))
    try:
        read_annotation(bad)
    except SyconnError:
        pass
