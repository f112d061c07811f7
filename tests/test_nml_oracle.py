"""An independent oracle: webKnossos' `wknml` reader sees the same trees, nodes, edges and comments.

wknml applies no coordinate offset, so a 1-based KNOSSOS file reads 1 higher there than in
our 0-based model; 0-based dialects (webKnossos, `nodes_0_based`, `index_origin="0"`) read the same.
"""

from pathlib import Path

import pytest
import wknml

from syconn_ng.io.annotation import read_annotation, write_annotation

FIXTURES = Path(__file__).parent / "fixtures" / "knossos"

# fixture -> the value wknml's coordinates exceed ours by; wknml cannot read the others
# (float ids, empty colour strings, no <parameters>)
WKNML_READABLE = {
    "knossos_current.nml": 1,
    "knossos_3.nml": 1,
    "knossos_4.nml": 1,
    "knossos_2018_numbering.nml": 0,
    "knossos_utils.nml": 0,
    "webknossos_micrometer.nml": 0,
    "empty.nml": 0,
}
# what our writer wrote from each fixture: every one that has <experiment> and <scale>
WRITTEN = ["knossos_current.nml", "knossos_4.nml", "knossos_3.nml", "knossos_2018_numbering.nml", "knossos_utils.nml",
           "webknossos.nml", "webknossos_micrometer.nml", "float_ids_and_coordinates.nml", "empty.nml"]


def assert_same_as_wknml(ours, path, offset, radius_factor=1.0):
    with open(path, "rb") as f:
        theirs = wknml.parse_nml(f)
    assert [t.id for t in theirs.trees] == [t.id for t in ours.trees]
    for wt, t in zip(theirs.trees, ours.trees):
        assert (wt.name or "") == t.comment
        assert [n.id for n in wt.nodes] == [n.id for n in t.nodes]
        for wn, n in zip(wt.nodes, t.nodes):
            assert tuple(wn.position) == (n.x + offset, n.y + offset, n.z + offset)
            assert wn.radius == pytest.approx(n.radius * radius_factor)
            assert (wn.time, wn.inVp, wn.inMag) == (n.time, n.in_vp, n.in_mag)
        assert [(e.source, e.target) for e in wt.edges] == t.edges
    comments = {n.id: n.comment for n in ours.nodes() if n.comment} | ours.orphan_comments
    assert {c.node: c.content for c in theirs.comments} == comments
    assert [b.id for b in theirs.branchpoints] == ours.branchpoints


@pytest.mark.parametrize("name", sorted(WKNML_READABLE))
def test_wknml_reads_the_fixtures_as_we_do(name):
    ours = read_annotation(FIXTURES / name)
    factor = ours.parameters.scale_nm[0] if ours.dialect == "webknossos" else 1.0  # wK radii are nm
    assert_same_as_wknml(ours, FIXTURES / name, WKNML_READABLE[name], factor)


@pytest.mark.parametrize("name", WRITTEN)
def test_wknml_reads_our_written_files_as_we_do(tmp_path, name):
    ours = read_annotation(FIXTURES / name)
    out = tmp_path / "written.nml"
    write_annotation(ours, out)
    assert_same_as_wknml(ours, out, 1)  # we write 1-based voxels and voxel radii, like KNOSSOS


def test_wknml_sees_the_webknossos_groups_we_write_back(tmp_path):
    ours = read_annotation(FIXTURES / "webknossos.nml")
    write_annotation(ours, tmp_path / "w.nml")
    with open(tmp_path / "w.nml", "rb") as f:
        theirs = wknml.parse_nml(f)

    def tree(groups):
        return [(g.id, g.name, tree(g.children)) for g in groups]

    assert tree(theirs.groups) == tree(ours.groups) == [(3, "cells", [(4, "fragments", [])])]
    assert [t.groupId for t in theirs.trees] == [t.group_id for t in ours.trees] == [3, 4]
