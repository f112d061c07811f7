"""Reading NML files of every dialect into the 0-based Skeleton model (fixtures written from the schema)."""

from pathlib import Path

import pytest

from syconn_ng.io.annotation import read_annotation

FIXTURES = Path(__file__).parent / "fixtures" / "knossos"


def read(name, **kw):
    return read_annotation(FIXTURES / name, **kw)


def node(skel, nid):
    return next(n for n in skel.nodes() if n.id == nid)


def test_knossos_files_are_one_based_and_converted_to_zero_based_voxels():
    s = read("knossos_current.nml")
    assert s.dialect == "knossos"
    n1 = node(s, 1)
    assert (n1.x, n1.y, n1.z) == (100, 200, 50)
    assert s.parameters.edit_position == (100, 200, 50)
    assert s.parameters.scale_nm == (10, 10, 25)
    assert s.parameters.time_ms == 754321
    assert s.parameters.active_node == 3
    assert (s.parameters.created_in, s.parameters.last_saved_in) == ("v5.1", "v5.1-327-gbf399a28")


def test_knossos_trees_keep_ids_comments_colours_visibility_and_properties():
    s = read("knossos_current.nml")
    assert [t.id for t in s.trees] == [17, 5]
    t17, t5 = s.trees
    assert t17.comment == "cell 17" and t17.attrs == {"synapticCleft": "5"}
    assert t17.color is None and t17.visible is True
    assert t5.color == (1.0, 0.0, 0.5, 1.0) and t5.visible is False


def test_knossos_nodes_keep_radius_time_viewport_mag_and_extra_attributes():
    s = read("knossos_current.nml")
    n3, n4 = node(s, 3), node(s, 4)
    assert (n3.radius, n3.in_vp, n3.in_mag, n3.time, n3.comment) == (1.5, 1, 2, 3000, "axon")
    assert n4.attrs == {"subobjectId": "8812"}
    assert node(s, 2).radius == 2.0


def test_edges_between_trees_and_branchpoint_order_are_kept():
    s = read("knossos_current.nml")
    assert s.trees[1].edges == [(10, 11), (11, 4)]
    assert s.trees[0].edges == [(1, 2), (2, 3), (2, 4)]
    assert s.branchpoints == [2, 11]
    assert {n.id: n.comment for n in s.nodes() if n.comment} == {1: "soma", 3: "axon", 10: "dendrite"}


def test_knossos_parameters_without_model_fields_are_kept_verbatim():
    s = read("knossos_current.nml")
    tags = [x.split()[0] for x in s.parameters.extra]
    assert tags == ["<guiMode", "<dataset", "<MovementArea", "<RadiusLocking", "<segmentation",
                    "<skeletonVPState", "<vpSettingsZoom"]
    assert 'lockToNodesWithComment="seed"' in s.parameters.extra[3]


def test_knossos_3_legacy_elements_and_metadata_tokens_are_kept():
    s = read("knossos_3.nml")
    assert s.dialect == "knossos_legacy"
    assert s.parameters.scale_nm == (9, 9, 20)
    assert [x.split()[0] for x in s.parameters.extra] == ["<offset", "<idleTime", "<skeletonDisplayMode"]
    assert s.trees[0].visible is True  # no visible attribute before 2018
    assert node(s, 2).comment == "__NODE_MD_B__ post"
    assert (node(s, 1).x, node(s, 1).y, node(s, 1).z) == (49, 59, 69)


def test_knossos_4_explicit_tree_comment_and_max_only_movement_area():
    s = read("knossos_4.nml")
    assert s.dialect == "knossos_legacy"  # 4.x still wrote <offset>
    assert s.trees[0].comment == "bipolar cell" and s.trees[0].visible
    n8 = node(s, 8)
    assert (n8.x, n8.y, n8.z, n8.radius, n8.comment) == (1029, 1039, 514, 2.5, "first branch")
    assert s.parameters.scale_nm == (16.5, 16.5, 25)
    assert any(x.startswith("<MovementArea") and "max.x" in x for x in s.parameters.extra)
    assert s.branchpoints == [7]


def test_node_position_numbering_index_origin_0_means_zero_based():
    s = read("knossos_2018_numbering.nml")
    assert s.dialect == "knossos"
    assert (node(s, 2).x, node(s, 2).y, node(s, 2).z) == (5, 6, 7)
    assert s.parameters.edit_position == (0, 0, 0)


def test_knossos_utils_nodes_0_based_comments_before_trees_and_properties():
    s = read("knossos_utils.nml")
    assert s.dialect == "knossos_utils"
    assert (node(s, 1).x, node(s, 1).y, node(s, 1).z) == (0, 10, 20)
    assert node(s, 1).comment == "soma" and node(s, 3).comment == "spine head"
    assert node(s, 3).attrs == {"spiness": "0.8"}
    assert s.extra[0].startswith("<properties>")
    assert s.branchpoints == [2]


def test_webknossos_export_zero_based_radius_nm_to_voxels_groups_and_metadata():
    s = read("webknossos.nml")
    assert s.dialect == "webknossos"
    n1 = node(s, 1)
    assert (n1.x, n1.y, n1.z) == (100, 200, 50)
    assert n1.radius == 5.0  # 50 nm at 10 nm per voxel
    assert n1.time == 1700000001000
    assert n1.attrs["bitDepth"] == "8" and n1.attrs["rotX"] == "0.0"
    a, b = s.trees
    assert (a.comment, a.group_id, a.attrs, a.color) == ("neuron A", 3, {"type": "DEFAULT"}, (0.1, 0.2, 0.3, 1.0))
    assert a.extra[0].startswith("<metadata>") and 'stringValue="done"' in a.extra[0]
    assert (b.comment, b.color, b.visible, b.group_id) == ("", None, False, 4)
    assert [(g.id, g.name, g.attrs) for g in s.groups] == [(3, "cells", {"isExpanded": "true"})]
    assert [(g.id, g.name) for g in s.groups[0].children] == [(4, "fragments")]
    assert s.parameters.attrs["experiment"] == {"organization": "scalable_minds", "description": "a test"}
    assert s.parameters.time_ms == 1700000000000


def test_webknossos_meta_and_volume_parts_are_kept():
    s = read("webknossos.nml")
    tags = [x.split()[0] for x in s.extra]
    assert tags == ["<meta"] * 4 + ["<volume"]
    assert 'location="data_Volume.zip"' in s.extra[-1] and "<segment " in s.extra[-1]


def test_webknossos_micrometer_scale_and_transparent_tree():
    s = read("webknossos_micrometer.nml")
    assert s.parameters.scale_nm == pytest.approx((10, 10, 25))
    t = s.trees[0]
    assert t.visible is False  # color.a = 0 without isVisible
    assert (t.nodes[0].x, t.nodes[0].y, t.nodes[0].z) == (123, 45, 6)
    assert t.nodes[0].radius == pytest.approx(2.0)


def test_float_ids_are_truncated_and_float_coordinates_kept():
    s = read("float_ids_and_coordinates.nml")
    assert s.trees[0].id == 2
    assert [n.id for n in s.trees[0].nodes] == [1, 2]
    n1, n2 = s.trees[0].nodes
    assert (n1.x, n1.y, n1.z, n1.radius) == (9.5, 19, 29.75, 1.25)
    assert (n2.x, n2.y, n2.z) == (9, 20, 30)
    assert s.trees[0].edges == [(1, 2)]


def test_missing_optional_attributes_get_knossos_defaults():
    s = read("minimal.nml")
    assert s.dialect == "nml"
    assert s.parameters.scale_nm is None
    n1 = s.trees[0].nodes[0]
    assert (n1.x, n1.y, n1.z, n1.radius, n1.time, n1.in_vp) == (0, 0, 0, 1.5, None, None)
    assert n1.comment == "seed"  # a node comment attribute counts when <comments> has none
    assert s.trees[1].nodes == [] and s.trees[1].comment == "" and s.trees[1].visible


def test_empty_skeleton():
    s = read("empty.nml")
    assert s.trees == [] and s.branchpoints == [] and s.parameters.experiment == "empty"


def test_comments_element_wins_over_node_comment_attribute(tmp_path):
    f = tmp_path / "c.nml"
    f.write_text('<things><thing id="1"><nodes><node id="1" x="1" y="1" z="1" comment="old"/></nodes></thing>'
                 '<comments><comment node="1" content="new"/><comment node="9" content="no node"/></comments></things>')
    s = read_annotation(f)
    assert s.trees[0].nodes[0].comment == "new"
    assert s.orphan_comments == {9: "no node"}


def test_other_scale_is_rescaled_to_dataset_voxels_as_knossos_does():
    s = read("knossos_current.nml", voxel_size_nm=(5, 5, 25))
    n1 = node(s, 1)
    assert (n1.x, n1.y, n1.z) == (201, 401, 50)  # round(101 * 2) - 1
    assert n1.radius == 3.0
    assert s.parameters.scale_nm == (5, 5, 25)
    assert s.parameters.edit_position == (201, 401, 50)
    coarse = read("knossos_current.nml", voxel_size_nm=(20, 20, 50))
    n3 = node(coarse, 3)  # file 121, 211, 53: halves round away from zero
    assert (n3.x, n3.y, n3.z) == (60, 105, 26)
    assert n3.radius == 0.75


def test_same_scale_is_not_rescaled():
    assert read("float_ids_and_coordinates.nml", voxel_size_nm=(10, 10, 25)) == read("float_ids_and_coordinates.nml")


def test_webknossos_rescale_uses_dataset_voxel_size_for_radius():
    s = read("webknossos.nml", voxel_size_nm=(5, 5, 25))
    n1 = node(s, 1)
    assert (n1.x, n1.y, n1.z) == (200, 400, 50)
    assert n1.radius == 10.0


def test_large_files_stream_every_node_in_order(tmp_path):
    from syconn_ng.io.annotation import write_annotation
    from syconn_ng.io.skeleton import Node, Skeleton, Tree

    trees = []
    for t in range(3):
        ids = range(t * 2000 + 1, t * 2000 + 2001)
        nodes = [Node(i, i % 97, i % 89, i % 7, 1.5, "c" if i % 10 == 0 else "", i, 0, 1,
                      {"subobjectId": str(i)} if i % 3 == 0 else {}) for i in ids]
        trees.append(Tree(t + 1, nodes=nodes, edges=list(zip(ids[:-1], ids[1:]))))
    skel = Skeleton(trees=trees)
    write_annotation(skel, tmp_path / "big.nml")
    back = read_annotation(tmp_path / "big.nml")
    back.dialect = skel.dialect
    assert back == skel


def test_webknossos_meta_without_parameters_still_means_zero_based(tmp_path):
    f = tmp_path / "wk.nml"
    f.write_text('<things><meta name="writer" content="wk"/><thing id="1"><nodes>'
                 '<node id="1" x="5" y="6" z="7" radius="10"/></nodes></thing></things>')
    s = read_annotation(f)
    assert s.dialect == "webknossos"
    n = s.trees[0].nodes[0]
    assert (n.x, n.y, n.z, n.radius) == (5, 6, 7, 10)  # no scale: the radius stays a number
