"""The KNOSSOS plugin (`knossos_plugin/syconn_plugin.py`) against a REAL `syconn-ng serve` on 127.0.0.1 and the
`knossos` stand-in (`tests/knossos_standin.py`: exactly the documented §4.2 calls the plugin uses, raising on
anything else): fetching a cell's analysis, node comments by compartment, tree comment and colour by type,
0-based coordinates without an off-by-one, bulk edits with signals blocked, the synapse table, reviews with the
token, and every failure (unreachable server, wrong token, unknown tree) as a message, never an exception."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from knossos_standin import KnossosModule
from serve_data import synthetic_analysis
from syconn_ng.serve.app import ReviewServer

pytestmark = pytest.mark.xdist_group("serve")

PLUGIN = Path(__file__).resolve().parents[1] / "knossos_plugin" / "syconn_plugin.py"
COMPARTMENTS = ("axon", "dendrite", "soma", "spine_head", "spine_neck")


def load_plugin():
    spec = importlib.util.spec_from_file_location("syconn_plugin", PLUGIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


P = load_plugin()


def with_skeletons(root: Path, seed: int = 0) -> Path:
    """Add tables/nodes.csv (hulls stage layout) and tables/compartments.csv (compartments stage layout): 8 to 15
    nodes per cell at fractional 0-based voxel positions, random compartments."""
    rng = np.random.default_rng(seed)
    cells = pd.read_csv(root / "tables" / "cells.csv")["id"].tolist()
    nodes, comp, nid = [], [], 1
    for c in cells:
        for _ in range(int(rng.integers(8, 16))):
            x, y, z = rng.integers(1, 900, 3)
            nodes.append({"cell": c, "node": nid, "x": float(x), "y": float(y), "z": float(z), "radius_nm": 200.0})
            k = int(rng.integers(0, len(COMPARTMENTS)))
            comp.append({"cell": c, "node": nid, "compartment": COMPARTMENTS[k], "probability": 0.9,
                         **{f"p_{n}": 0.9 if n == COMPARTMENTS[k] else 0.025 for n in COMPARTMENTS}})
            nid += 1
    pd.DataFrame(nodes).to_csv(root / "tables" / "nodes.csv", index=False)
    pd.DataFrame(comp).to_csv(root / "tables" / "compartments.csv", index=False)
    return root


@pytest.fixture
def served(tmp_path):
    root = with_skeletons(synthetic_analysis(tmp_path / "ana", n_cells=6, n_synapses=40, seed=5))
    srv = ReviewServer(root, port=0).start()
    yield srv, root
    srv.stop()


def busiest_cell(root: Path) -> int:
    syn = pd.read_csv(root / "tables" / "synapses.csv")
    return int(pd.concat([syn.pre_cell, syn.post_cell]).value_counts().index[0])


def knossos_with_tree(root: Path, cid: int) -> KnossosModule:
    """The stand-in holding tree `cid` with the cell's nodes at their 0-based (rounded) voxel positions."""
    kn = KnossosModule()
    kn.skeleton.add_tree(cid)
    nodes = pd.read_csv(root / "tables" / "nodes.csv")
    for n in nodes[nodes.cell == cid].itertuples():
        kn.skeleton.add_node(int(n.node), [int(n.x), int(n.y), int(n.z)], cid, {})
    kn.events.clear()
    return kn


def test_plugin_uses_only_the_standard_library_and_builds_no_widget_outside_knossos():
    code = (f"import sys, runpy; before = set(sys.modules); runpy.run_path({str(PLUGIN)!r}, run_name='__main__'); "
            "bad = sorted(m for m in set(sys.modules) - before if m.split('.')[0] not in sys.stdlib_module_names); "
            "print(bad)")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_health_reports_the_served_analysis(served):
    srv, root = served
    health, msg = P.Controller(srv.url, srv.token).health()
    assert msg is None and health["status"] == "ok" and health["cells"] == 6 and health["synapses"] == 40


def test_fetch_cell_returns_type_probability_compartments_and_synapses(served):
    srv, root = served
    cid = busiest_cell(root)
    analysis, msg = P.Controller(srv.url, srv.token).fetch_cell(cid)
    assert msg is None
    row = pd.read_csv(root / "tables" / "cells.csv").set_index("id").loc[cid]
    assert analysis["type"] == row["type"]
    assert analysis["probability"] == pytest.approx(row[f"p_{row['type']}"])
    comp = pd.read_csv(root / "tables" / "compartments.csv")
    comp = comp[comp.cell == cid]
    assert {k: v["compartment"] for k, v in analysis["nodes"].items()} == dict(zip(comp.node, comp.compartment))
    syn = pd.read_csv(root / "tables" / "synapses.csv")
    mine = syn[(syn.pre_cell == cid) | (syn.post_cell == cid)]
    assert sorted(s["id"] for s in analysis["synapses"]) == sorted(str(i) for i in mine.id)


def test_synapse_rows_give_partner_direction_area_probability_and_type(served):
    srv, root = served
    cid = busiest_cell(root)
    analysis, _ = P.Controller(srv.url).fetch_cell(cid)
    syn = pd.read_csv(root / "tables" / "synapses.csv").set_index("id")
    assert len(analysis["rows"]) == len(analysis["synapses"]) > 0
    directions = set()
    for r in analysis["rows"]:
        s = syn.loc[int(r["id"])]
        out = int(s.pre_cell) == cid
        directions.add(r["direction"])
        assert r["direction"] == ("out" if out else "in")
        assert int(r["partner"]) == int(s.post_cell if out else s.pre_cell) != cid
        assert r["area_um2"] == pytest.approx(s.area_um2) and r["probability"] == pytest.approx(s.probability)
        assert r["type"] == s.type
    assert directions == {"in", "out"}


def test_apply_comments_nodes_by_compartment_and_sets_tree_comment_and_colour_in_one_blocked_edit(served):
    srv, root = served
    cid = busiest_cell(root)
    c = P.Controller(srv.url, srv.token)
    c.health()
    analysis, _ = c.fetch_cell(cid)
    kn = knossos_with_tree(root, cid)
    msg = P.apply_to_knossos(kn, cid, analysis, c.colour_of)
    assert msg.startswith(f"Tree {cid}")
    comp = pd.read_csv(root / "tables" / "compartments.csv")
    truth = dict(zip(comp[comp.cell == cid].node, comp[comp.cell == cid].compartment))
    tree = kn.skeleton.find_tree_by_id(cid)
    assert {n.node_id(): n.comment() for n in tree.nodes()} == truth
    row = pd.read_csv(root / "tables" / "cells.csv").set_index("id").loc[cid]
    assert tree.comment() == f"{row['type']} (p={row['p_' + row['type']]:.2f})"
    hexc = P.Controller(srv.url).health()[0]["type_colours"][row["type"]]
    assert tree.color()[:3] == pytest.approx(tuple(int(hexc[i:i + 2], 16) / 255 for i in (1, 3, 5)))
    assert kn.events and all(blocked for *_, blocked in kn.events)  # every edit with the skeletonizer's signals blocked
    assert kn.knossos_global_skeletonizer.resets == 1 and not kn.knossos_global_skeletonizer.blocked


def test_nodes_are_matched_by_0_based_position_without_an_off_by_one(served):
    srv, root = served
    cid = busiest_cell(root)
    analysis, _ = P.Controller(srv.url).fetch_cell(cid)
    nodes = pd.read_csv(root / "tables" / "nodes.csv")
    nodes = nodes[nodes.cell == cid].reset_index(drop=True)
    comp = pd.read_csv(root / "tables" / "compartments.csv").set_index("node")
    kn = KnossosModule()
    kn.skeleton.add_tree(cid)
    # the tracer's file renumbered the nodes: ids differ, positions are the API's 0-based voxels; node 0 is moved by +1
    for i, n in enumerate(nodes.itertuples()):
        shift = 1 if i == 0 else 0
        kn.skeleton.add_node(10_000 + i, [int(n.x) + shift, int(n.y) + shift, int(n.z) + shift], cid, {})
    P.apply_to_knossos(kn, cid, analysis)
    got = {n.node_id(): n.comment() for n in kn.skeleton.find_tree_by_id(cid).nodes()}
    assert got[10_000] == ""  # one voxel off: not the same node
    assert all(got[10_000 + i] == comp.loc[n.node, "compartment"] for i, n in enumerate(nodes.itertuples()) if i)


def test_a_synapse_node_lands_on_the_synapse_voxel(served):
    srv, root = served
    cid = busiest_cell(root)
    analysis, _ = P.Controller(srv.url).fetch_cell(cid)
    kn = knossos_with_tree(root, cid)
    row = analysis["rows"][0]
    nid = P.add_synapse_node(kn, row, cid)
    s = pd.read_csv(root / "tables" / "synapses.csv").set_index("id").loc[int(row["id"])]
    expect = [int(round(s.x)), int(round(s.y)), int(round(s.z))]
    node = kn.skeleton.find_node_by_id(nid)
    assert node.coordinate().list() == expect and kn.knossos.get_position() == expect
    assert node.comment() == f"synapse {row['id']}" and node.parent_tree().tree_id() == cid


def test_review_accept_reject_flip_reach_the_server(served):
    srv, root = served
    cid = busiest_cell(root)
    c = P.Controller(srv.url, srv.token, reviewer="tracer1")
    rows = c.fetch_cell(cid)[0]["rows"]
    a, r, f = rows[0], rows[1], rows[2]
    assert c.review(a["id"], "accept")[0]["status"] == "accepted"
    assert c.review(r["id"], "reject")[0]["status"] == "rejected"
    flipped, msg = c.review(f["id"], "flip")
    assert msg is None
    again = {x["id"]: x for x in P.Controller(srv.url).fetch_cell(cid)[0]["rows"]}
    assert again[a["id"]]["status"] == "accepted" and again[r["id"]]["status"] == "rejected"
    assert again[f["id"]]["direction"] != f["direction"] and again[f["id"]]["partner"] == f["partner"]
    log, _ = c._request("reviews")
    assert [e["who"] for e in log] == ["tracer1"] * 3


def test_failures_are_messages_never_exceptions(served):
    srv, root = served
    sid = pd.read_csv(root / "tables" / "synapses.csv")["id"].iloc[0]
    got, msg = P.Controller(srv.url, "wrong-token").review(sid, "accept")
    assert got is None and "401" in msg and "token" in msg
    got, msg = P.Controller(srv.url, "").review(sid, "accept")
    assert got is None and "token" in msg
    got, msg = P.Controller(srv.url, srv.token).review(sid, "maybe")
    assert got is None and "maybe" in msg
    got, msg = P.Controller(srv.url, srv.token).fetch_cell(424242)
    assert got is None and "424242" in msg and "no cell" in msg
    assert P.Controller(srv.url).health()[0]["decisions"] == 0
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for fn in (lambda c: c.health(), lambda c: c.fetch_cell(1), lambda c: c.review(1, "accept")):
        got, msg = fn(P.Controller(f"127.0.0.1:{port}", "t", timeout_s=2))
        assert got is None and "Cannot reach" in msg
    got, msg = P.Controller("http://[bad", "t").health()  # a mistyped URL
    assert got is None and "Cannot reach" in msg
    assert P.Controller(srv.url + "/api/v1/", srv.token).health()[0]["status"] == "ok"  # pasted with the API path
    kn = KnossosModule()
    assert "not in this annotation" in P.apply_to_knossos(kn, 77, {"nodes": {}, "type": "", "synapses": []})


def test_the_standin_refuses_calls_knossos_does_not_document():
    kn = KnossosModule()
    with pytest.raises(AttributeError, match="not a documented call"):
        kn.skeleton.from_xml("<x/>")  # listed by help() but absent in KNOSSOS (§4.2)
    with pytest.raises(AttributeError):
        kn.skeleton.addNode([1, 2, 3], 1)  # pre-2018 camelCase


def test_fetch_for_all_trees_labels_every_matching_tree_and_reports_the_others(served):
    srv, root = served
    cells = pd.read_csv(root / "tables" / "cells.csv")["id"].tolist()
    kn = knossos_with_tree(root, cells[0])
    nodes = pd.read_csv(root / "tables" / "nodes.csv")
    first = nodes[nodes.cell == cells[1]].iloc[0]
    kn.skeleton.add_tree(cells[1])
    kn.skeleton.add_node(int(first.node), [int(first.x), int(first.y), int(first.z)], cells[1], {})
    kn.skeleton.set_comment(int(first.node), "merger?")  # the tracer's own comment survives
    kn.skeleton.add_tree(999_999)  # traced, but no such cell
    done, msgs = P.fetch_and_apply(kn, P.Controller(srv.url, srv.token), [t.tree_id() for t in kn.skeleton.trees()])
    assert sorted(done) == sorted(cells[:2]) and len(msgs) == 3
    assert any("999999" in m and "no cell" in m for m in msgs)
    types = pd.read_csv(root / "tables" / "cells.csv").set_index("id")["type"]
    for cid in cells[:2]:
        assert kn.skeleton.find_tree_by_id(cid).comment().startswith(types[cid] + " (p=")
    assert kn.skeleton.find_node_by_id(int(first.node)).comment() == "merger?"
    assert kn.skeleton.find_tree_by_id(999_999).comment() == ""
    done, msgs = P.fetch_and_apply(kn, P.Controller("127.0.0.1:1", timeout_s=2), [cells[0]])
    assert done == {} and "Cannot reach" in msgs[0]
