"""SWC: positions and radii in nm, type codes from compartments, forests with parents first."""

from pathlib import Path

import numpy as np
import pytest

from syconn_ng.errors import InputError, SyconnError
from syconn_ng.io.annotation import read_annotation, write_annotation
from syconn_ng.io.skeleton import Node, Parameters, Skeleton, Tree

FIXTURES = Path(__file__).parent / "fixtures" / "knossos"


def rows(path):
    return [line.split() for line in Path(path).read_text().splitlines() if not line.startswith("#")]


def test_swc_positions_and_radii_are_nm_and_types_come_from_compartments(tmp_path):
    nodes = [Node(1, 10, 20, 4, 2.0, "Soma"), Node(2, 11, 20, 4, 1.0, "", attrs={"compartment": "axon"}),
             Node(3, 9, 20, 4, 1.0, "spine head"), Node(4, 8, 21, 4, 1.0, "dendrite"), Node(5, 12, 20, 4, 1.0, "x")]
    skel = Skeleton(trees=[Tree(1, "cell\nA", nodes=nodes, edges=[(1, 2), (1, 3), (3, 4), (2, 5)])])
    out = tmp_path / "cell.swc"
    write_annotation(skel, out, voxel_size_nm=(10, 10, 25))
    assert "# tree 1 cell A" in out.read_text().splitlines()
    table = rows(out)
    assert [r[1] for r in table] == ["1", "2", "3", "0", "3"]  # BFS from node 1: 1, 2, 3, 5, 4
    assert [float(v) for v in table[0][2:6]] == [100, 200, 100, 20]
    assert [r[6] for r in table] == ["-1", "1", "1", "2", "3"]


def test_swc_parents_come_before_children_and_cycles_and_cross_tree_edges_are_dropped(tmp_path):
    a = Tree(1, nodes=[Node(i, i, 0, 0) for i in (5, 6, 7)], edges=[(7, 6), (6, 5), (5, 7), (7, 100)])
    b = Tree(2, nodes=[Node(100, 0, 0, 0), Node(101, 1, 0, 0)], edges=[])
    out = tmp_path / "f.swc"
    write_annotation(Skeleton(trees=[a, b], parameters=Parameters(scale_nm=(1, 1, 1))), out)
    table = rows(out)
    assert len(table) == 5
    seen = set()
    for r in table:
        assert r[6] == "-1" or int(r[6]) in seen
        seen.add(int(r[0]))
    assert sum(r[6] == "-1" for r in table) == 3  # one root in tree 1, two components in tree 2


def test_swc_read_back_gives_voxels_trees_per_root_and_compartments(tmp_path):
    skel = read_annotation(FIXTURES / "knossos_current.nml")
    out = tmp_path / "c.swc"
    write_annotation(skel, out)  # the file's own scale
    back = read_annotation(out, voxel_size_nm=(10, 10, 25))
    assert back.dialect == "swc" and back.parameters.scale_nm == (10, 10, 25)
    ours = np.array(sorted((n.x, n.y, n.z, n.radius) for n in skel.nodes()))
    theirs = np.array(sorted((n.x, n.y, n.z, n.radius) for n in back.nodes()))
    np.testing.assert_allclose(theirs, ours)
    assert len(back.trees) == 2
    assert sorted(n.attrs.get("compartment", "") for n in back.nodes()) == ["", "", "", "axon", "dendrite", "soma"]


def test_swc_needs_a_voxel_size(tmp_path):
    skel = read_annotation(FIXTURES / "minimal.nml")
    with pytest.raises(SyconnError, match="voxel size"):
        write_annotation(skel, tmp_path / "a.swc")
    (tmp_path / "b.swc").write_text("1 1 0 0 0 1 -1\n")
    with pytest.raises(InputError, match="voxel size"):
        read_annotation(tmp_path / "b.swc")


@pytest.mark.parametrize("text, reason, line", [
    ("# c\n1 1 0 0 0 1 -1\n2 3 1 1\n", "expected 'id type x y z radius parent'", 3),
    ("1 1 0 0 0 1 -1\n1 3 1 1 1 1 1\n", "duplicate node id 1", 2),
    ("1 1 0 0 0 1 -1\n2 3 1 1 1 1 9\n", "parent 9", 2),
    ("1 1 0 0 0 1 -1\n2 3 1 nan 1 1 1\n", "finite numbers", 2),
    ("-4 1 0 0 0 1 -1\n", "id >= 0", 1),
])
def test_bad_swc_rows_name_the_line(tmp_path, text, reason, line):
    f = tmp_path / "bad.swc"
    f.write_text(text)
    with pytest.raises(InputError, match=reason) as info:
        read_annotation(f, voxel_size_nm=(1, 1, 1))
    assert info.value.line == line
