"""Bad NML input: one clear InputError naming the file, the element and the line; nothing else escapes."""

import io
from dataclasses import replace
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syconn_ng.errors import InputError, SyconnError
from syconn_ng.io.annotation import read_annotation
from syconn_ng.io.nml import read_nml, write_nml

FIXTURES = Path(__file__).parent / "fixtures" / "knossos"


@pytest.mark.parametrize("name, element, line, reason", [
    ("bad_malformed.nml", None, 7, "malformed XML"),
    ("bad_truncated.nml", None, 8, "malformed XML"),
    ("bad_node_without_coordinates.nml", '<node id="2" x="4" z="6">', 6, "attribute 'y' missing"),
    ("bad_edge_to_missing_node.nml", '<edge source="1" target="42">', 8, "edge to missing node 42"),
    ("bad_duplicate_node_ids.nml", '<node id="1" x="4" y="5">', 10, "duplicate node id 1"),
    ("bad_entities.nml", "<!DOCTYPE>", None, "entity"),
    ("bad_root.nml", "<annotation>", 2, "root element <things>"),
])
def test_bad_input_names_file_element_and_line(name, element, line, reason):
    with pytest.raises(InputError) as info:
        read_annotation(FIXTURES / name)
    err = info.value
    assert err.path == str(FIXTURES / name)
    assert err.element == element and err.line == line
    assert reason in err.reason
    assert str(err).startswith(str(FIXTURES / name))


def test_entity_declared_after_the_sniffed_head_is_still_refused(tmp_path):
    f = tmp_path / "late.nml"
    padding = "<!-- " + "x" * 70000 + " -->\n"
    f.write_text(f'<?xml version="1.0"?>\n{padding}<!DOCTYPE things [<!ENTITY e "boom">]>\n'
                 '<things><thing id="1" comment="&e;"/></things>')
    with pytest.raises(InputError, match="entity"):
        read_annotation(f)


def test_external_entities_are_never_fetched_or_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    f = tmp_path / "xxe.nml"
    f.write_text(f'<!DOCTYPE things [<!ENTITY s SYSTEM "file://{secret}">]>'
                 '<things><thing id="1" comment="&s;"/></things>')
    with pytest.raises(InputError, match="entity"):
        read_annotation(f)


@pytest.mark.parametrize("xml, reason", [
    ('<things><thing id="1"><nodes><node id="a" x="1" y="1" z="1"/></nodes></thing></things>', "expected an integer"),
    ('<things><thing id="1"><nodes><node id="1" x="nan" y="1" z="1"/></nodes></thing></things>', "finite"),
    ('<things><thing id="1"><nodes><node id="-3" x="1" y="1" z="1"/></nodes></thing></things>', r"0\.\.2\^64-1"),
    ('<things><thing><nodes/></thing></things>', "attribute 'id' missing"),
    ('<things><thing id="1"/><thing id="1"/></things>', "duplicate tree id"),
    ('<things><thing id="1" visible="maybe"/></things>', "visible"),
    ('<things><parameters><scale x="1" y="1" z="1" unit="furlong"/></parameters></things>', "unit"),
    ('<things><branchpoints><branchpoint id="5"/></branchpoints></things>', "missing node 5"),
    ('<things><comments><comment content="x"/></comments></things>', "attribute 'node' missing"),
    ("", "malformed XML: no element found"),
])
def test_invalid_values_are_input_errors(tmp_path, xml, reason):
    f = tmp_path / "bad.nml"
    f.write_text(xml)
    with pytest.raises(InputError, match=reason):
        read_annotation(f)


def test_coordinates_too_large_to_rescale_are_input_errors(tmp_path):
    f = tmp_path / "huge.nml"
    f.write_text('<things><parameters><scale x="10" y="10" z="10"/></parameters>'
                 '<thing id="1"><nodes><node id="1" x="1e308" y="1" z="1"/></nodes></thing></things>')
    assert read_annotation(f).trees[0].nodes[0].x == 1e308 - 1
    with pytest.raises(InputError, match="too large to rescale") as info:
        read_annotation(f, voxel_size_nm=(1, 1, 1))
    assert info.value.element.startswith('<node id="1"')


def test_missing_file_and_unknown_extension_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_annotation(tmp_path / "absent.nml")
    with pytest.raises(InputError, match="unknown annotation file type"):
        read_annotation(tmp_path / "a.txt")


SOURCE = (FIXTURES / "knossos_current.nml").read_bytes()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, len(SOURCE)),
       edits=st.lists(st.tuples(st.integers(0, len(SOURCE) - 1), st.binary(min_size=0, max_size=4)), max_size=4))
def test_mutated_and_truncated_files_raise_only_syconn_errors_or_round_trip(cut, edits):
    data = bytearray(SOURCE)
    for pos, repl in edits:
        data[pos:pos + 1] = repl
    data = bytes(data[:cut])
    try:
        read_nml(io.BytesIO(data), path="fuzz.nml", voxel_size_nm=(3, 7, 11))  # the rescaling path
    except SyconnError:
        pass
    try:
        skel = read_nml(io.BytesIO(data), path="fuzz.nml")
    except SyconnError:
        return
    out = io.BytesIO()
    write_nml(skel, out)
    again = read_nml(io.BytesIO(out.getvalue()), path="again.nml")
    assert replace(again, dialect="") == replace(skel, dialect="")


@settings(max_examples=60, deadline=None)
@given(token=st.sampled_from(['id="', 'x="', 'source="', 'node="', 'ms="', 'visible="', 'color.r="', 'radius="']),
       value=st.text(max_size=6))
def test_random_attribute_values_raise_only_syconn_errors(token, value):

    data = SOURCE.decode().replace(token, token[:-1] + quoteattr(value)[:-1] + "junk", 1)
    try:
        read_nml(io.BytesIO(data.encode()), path="fuzz.nml")
    except SyconnError:
        pass
