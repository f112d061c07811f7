"""The KNOSSOS plugin (`knossos_plugin/syconn_plugin.py`) against a REAL `syconn-ng serve` on 127.0.0.1 and the
`knossos` stand-in (`tests/knossos_standin.py`: exactly the documented §4.2 calls the plugin uses, raising on
anything else): fetching a cell's analysis, node comments by compartment, tree comment and colour by type,
0-based coordinates without an off-by-one, bulk edits with signals blocked, the synapse table, reviews with the
token, and every failure (unreachable server, wrong token, unknown tree) as a message, never an exception.
"Send skeleton" on a REAL finished analysis: the exported NML (1-based), the re-analysis job, the cell's new nodes,
compartments and recovered synapse, other cells untouched, bad uploads, a failed job leaving the analysis as it was."""

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
    why = "" if row.get("typeable", 1) else "; " + P.UNTYPEABLE[row["untypeable_reason"]]  # older tables: no column
    assert tree.comment() == f"{row['type']} (p={row['p_' + row['type']]:.2f}{why})"
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


# ---------------------------------------------------------------------- "Send skeleton": re-analysis of one cell
# A REAL finished analysis (the session's oracle run of `tests/pipeline_data.py`), copied with its skeleton files; the
# tree is built in the stand-in from the cell's KNOSSOS file, a branch is added inside the cell's TRUE segmentation.

import hashlib  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

import pipeline_data  # noqa: E402
from serve_data import copy_analysis  # noqa: E402
from syconn_ng.io.annotation import read_annotation  # noqa: E402
from syconn_ng.layers import layer_box, open_layer, read_box  # noqa: E402

INPUT_LAYERS = ("mi", "vc", "sj")


def real_copy(tmp_path_factory, out: Path) -> tuple[Path, Path]:
    """(a writable copy of the finished oracle analysis with its skeleton files, the tissue folder with truth/)."""
    src = pipeline_data.analysis(tmp_path_factory, "oracle")
    root = copy_analysis(src, out)
    shutil.copytree(src / "skeletons", root / "skeletons", ignore=shutil.ignore_patterns("enriched"))
    return root, pipeline_data.tissue(tmp_path_factory)


def tree_in_knossos(kn: KnossosModule, root: Path, cid: int):
    """Tree `cid` in the stand-in from its KNOSSOS file (0-based positions, edges as segments); returns the Tree."""
    tree = read_annotation(root / "skeletons" / f"cell_{cid}.k.zip").tree(cid)
    kn.skeleton.add_tree(cid)
    for n in tree.nodes:
        kn.skeleton.add_node(n.id, [int(n.x), int(n.y), int(n.z)], cid, {})
    for a, b in tree.edges:
        kn.skeleton.add_segment(a, b)
    return tree


def missed_synapse(root: Path, tissue: Path) -> pd.Series:
    """A true synapse whose cell pair the pipeline found no synapse for."""
    truth = pd.read_csv(tissue / "truth" / "synapses.csv")
    found = pd.read_csv(root / "tables" / "synapses.csv")
    pairs = set(zip(found.pre_cell, found.post_cell)) | set(zip(found.post_cell, found.pre_cell))
    missed = truth[[(a, b) not in pairs for a, b in zip(truth.pre_cell, truth.post_cell)]]
    assert len(missed), "the test tissue should have a synapse the traced skeletons miss"
    return missed.iloc[0]


def branch_towards(kn, tree, cid: int, target_vx, labels: np.ndarray, voxel_size_nm, n: int = 4) -> list[tuple[int, list]]:
    """Add `n` nodes from the tree's node nearest to `target_vx` towards it, each on the voxel of the cell's true
    segmentation nearest to its point on the straight line; returns [(node id, 0-based position)]."""
    vs = np.asarray(voxel_size_nm)
    inside = np.argwhere(labels == cid)
    pos = tree.positions()
    k = int(np.argmin(np.linalg.norm((pos - target_vx) * vs, axis=1)))
    prev, start, added = tree.nodes[k].id, pos[k], []
    next_id = max(nd.node_id() for t in kn.skeleton.trees() for nd in t.nodes()) + 1
    for f in np.linspace(1 / n, 1, n):
        point = start + f * (np.asarray(target_vx, float) - start)
        xyz = [int(v) for v in inside[np.argmin(np.linalg.norm((inside - point) * vs, axis=1))]]
        kn.skeleton.add_node(next_id, xyz, cid, {})
        kn.skeleton.add_segment(prev, next_id)
        added.append((next_id, xyz))
        prev, next_id = next_id, next_id + 1
    return added


def digests(root: Path, subs=("layers", "tables", "skeletons")) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for s in subs for p in sorted((root / s).rglob("*")) if p.is_file()}


def csv_lines(path: Path, keep) -> list[str]:
    """The data lines of a CSV table whose parsed row passes `keep(row)` (the exact text, for byte-identity)."""
    lines = path.read_text().splitlines()
    table = pd.read_csv(path)
    return [line for line, ok in zip(lines[1:], [bool(keep(r)) for r in table.itertuples()]) if ok]


def post_raw(srv, path, data: bytes, token="__srv__"):
    """POST raw bytes; (status, JSON body)."""
    headers = {"Content-Type": "application/xml"}
    token = srv.token if token == "__srv__" else token
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(srv.url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        return err.code, (json.loads(body) if body else {})


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Send cell X's tree with a branch towards a synapse the pipeline missed; everything before and after."""
    root, tissue = real_copy(tmp_path_factory, tmp_path_factory.mktemp("reanalyse") / "ana")
    syn = missed_synapse(root, tissue)
    cid = int(syn.pre_cell)
    truth = open_layer(tissue / "truth" / "cells")
    labels = read_box(truth, layer_box(truth))[..., 0]
    cells_vol = lambda: read_box(open_layer(root / "layers" / "cells"), layer_box(truth))[..., 0]  # noqa: E731
    before = {"digests": digests(root), "cells": cells_vol(), "nodes": pd.read_csv(root / "tables" / "nodes.csv"),
              "synapses": pd.read_csv(root / "tables" / "synapses.csv"),
              "other_nodes": csv_lines(root / "tables" / "nodes.csv", lambda r: r.cell != cid),
              "other_comp": csv_lines(root / "tables" / "compartments.csv", lambda r: r.cell != cid),
              "other_syn": csv_lines(root / "tables" / "synapses.csv", lambda r: cid not in (r.pre_cell, r.post_cell))}
    srv = ReviewServer(root, port=0).start()
    try:
        reviewed = int(pd.read_csv(root / "tables" / "synapses.csv").id.iloc[0])
        c = P.Controller(srv.url, srv.token, reviewer="tracer1")
        assert c.review(reviewed, "reject")[0]["status"] == "rejected"
        kn = KnossosModule()
        tree = tree_in_knossos(kn, root, cid)
        added = branch_towards(kn, tree, cid, [syn.x, syn.y, syn.z], labels, srv.ctx.reviewed.analysis.voxel_size_nm)
        seen = []
        t0 = time.perf_counter()
        analysis, msgs = P.send_tree(kn, c, cid, progress=seen.append, poll_s=0.2, timeout_s=300)
        seconds = time.perf_counter() - t0
        after_api = {"skeleton": c._request(f"cells/{cid}/skeleton")[0], "synapses": c._request(f"cells/{cid}/synapses")[0],
                     "reviewed": c._request(f"synapses/{reviewed}")[0], "cell": c._request(f"cells/{cid}")[0]}
    finally:
        srv.stop()
    yield {"root": root, "tissue": tissue, "cid": cid, "syn": syn, "before": before, "added": added, "tree": tree, "kn": kn,
           "analysis": analysis, "msgs": msgs, "progress": seen, "api": after_api, "cells_after": cells_vol(),
           "seconds": seconds, "reviewed": reviewed}


def test_send_skeleton_reanalyses_the_cell_and_the_tree_gets_the_new_compartments(round_trip):
    rt = round_trip
    assert rt["analysis"] is not None, rt["msgs"]
    cid, added = rt["cid"], rt["added"]
    states = [j["state"] for j in rt["progress"]]
    assert states[-1] == "done" and set(states) <= {"queued", "running", "done"}
    fractions = [j["progress"]["fraction"] for j in rt["progress"]]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    old = rt["before"]["nodes"]
    nodes = {int(n["node"]): n for n in rt["api"]["skeleton"]["nodes"]}
    assert len(nodes) == (old.cell == cid).sum() + len(added)
    for nid, xyz in added:  # the new nodes at their 0-based positions (the NML was 1-based: no shift either way)
        assert [nodes[nid][a] for a in "xyz"] == xyz
    assert {n["compartment"] for n in nodes.values()} <= set(COMPARTMENTS)
    assert all(n["compartment"] for n in nodes.values())
    tree = rt["kn"].skeleton.find_tree_by_id(cid)
    assert {nd.node_id(): nd.comment() for nd in tree.nodes()} == {k: v["compartment"] for k, v in nodes.items()}
    assert rt["api"]["cell"]["nodes"] == len(nodes)
    assert rt["seconds"] < 60


def test_the_branch_recovers_the_synapse_the_old_skeleton_missed(round_trip):
    rt = round_trip
    cid, syn = rt["cid"], rt["syn"]
    old = rt["before"]["synapses"]
    assert not ((old.pre_cell == syn.pre_cell) & (old.post_cell == syn.post_cell)).any()
    new = [s for s in rt["api"]["synapses"] if s["pre_cell"] == str(syn.pre_cell) and s["post_cell"] == str(syn.post_cell)]
    assert len(new) == 1  # the true synapse, with the true direction
    assert np.linalg.norm(np.array([new[0][a] for a in "xyz"]) - [syn.x, syn.y, syn.z]) < 3
    assert new[0]["pre_compartment"] == "axon"
    assert any(r["partner"] == str(syn.post_cell) and r["direction"] == "out" for r in rt["analysis"]["rows"])
    table = pd.read_csv(rt["root"] / "tables" / "synapses.csv")
    assert len(table) == len(old) + 1
    matrix = pd.read_csv(rt["root"] / "tables" / "matrix_counts.csv", index_col=0)
    assert matrix.loc[int(syn.post_cell), str(int(syn.pre_cell))] == 1  # rows post, columns pre


def test_other_cells_are_untouched_by_the_reanalysis(round_trip):
    rt = round_trip
    root, cid, before = rt["root"], rt["cid"], rt["before"]
    assert csv_lines(root / "tables" / "nodes.csv", lambda r: r.cell != cid) == before["other_nodes"]
    assert csv_lines(root / "tables" / "compartments.csv", lambda r: r.cell != cid) == before["other_comp"]
    assert csv_lines(root / "tables" / "synapses.csv", lambda r: cid not in (r.pre_cell, r.post_cell)) == before["other_syn"]
    old, new = before["cells"], rt["cells_after"]
    others = (old != cid) & (new != cid)
    assert np.array_equal(old[others], new[others])  # every other cell keeps each of its voxels
    assert (new == cid).sum() > (old == cid).sum()  # the branch grew the cell
    for nid, xyz in rt["added"]:
        assert new[tuple(xyz)] == cid
    after = digests(root)
    changed = {k for k in before["digests"] if before["digests"][k] != after.get(k)}
    per_cell = [k for k in before["digests"] if "/mesh/" in k or "/skeletons" in k or "/hulls/" in k or "/compartments/" in k]
    of_cell = {k: Path(k).name.split(":")[0].split(".")[0].removeprefix("cell_") for k in per_cell}
    assert {str(cid)} == {of_cell[k] for k in per_cell if k in changed}  # its own mesh, skeletons, hull ... changed
    assert not [k for k in per_cell if k in changed and of_cell[k] != str(cid)]  # no other cell's
    assert not [k for k in changed if k.startswith(tuple(f"layers/{n}/" for n in INPUT_LAYERS))]


def test_the_uploaded_skeleton_is_kept_and_replaces_the_cells_tree_for_later_runs(round_trip):
    from syconn_ng.analysis import Analysis
    from syconn_ng.hulls.skeletons import input_skeleton_files, load_skeletons, reanalysed_files

    rt = round_trip
    root, cid = rt["root"], rt["cid"]
    kept = root / "skeletons" / "reanalysed" / f"cell_{cid}.nml"
    assert kept.is_file() and reanalysed_files(root) == [kept.resolve()]
    a = Analysis.open(root)
    bounds = layer_box(open_layer(root / "layers" / "cells"))
    cells = {c.cell_id: c for c in load_skeletons(input_skeleton_files(a.config.dataset.skeletons, root), voxel_size_nm=a.voxel_size_nm,
                                                  bounds=bounds, replacements=reanalysed_files(root))}
    assert len(cells[cid].node_ids) == len(rt["tree"].nodes) + len(rt["added"])  # the upload's tree, not the original file's
    from syconn_ng.stages.hulls import STAGE as HULLS

    assert str(kept.resolve()) in HULLS.params(a)["skeletons"]  # a later `syconn-ng run` sees new inputs: hulls re-run
    name = f"skeletons/cell_{cid}.k.zip"
    assert digests(root, ("skeletons",))[name] == rt["before"]["digests"][name]  # the tracer's input file is never rewritten
    enriched = read_annotation(root / "skeletons" / "enriched" / f"cell_{cid}.k.zip").tree(cid)
    assert len(enriched.nodes) == len(cells[cid].node_ids) and all(n.comment for n in enriched.nodes)
    assert not (root / "scratch" / "reanalyse").exists()


def test_reviews_survive_the_reanalysis(round_trip):
    assert round_trip["api"]["reviewed"]["status"] == "rejected"


def test_exported_nml_is_1_based_in_the_file_and_reads_back_0_based(tmp_path):
    import wknml

    kn = KnossosModule(scale=(10.0, 10.0, 20.0))
    kn.skeleton.add_tree(7)
    for nid, xyz in ((1, [0, 0, 0]), (2, [5, 6, 7]), (3, [127, 0, 63])):
        kn.skeleton.add_node(nid, xyz, 7, {})
    kn.skeleton.add_segment(1, 2)
    kn.skeleton.add_segment(2, 3)
    kn.skeleton.set_radius(3, 4.0)
    text, msg = P.tree_to_nml(kn, 7)
    assert msg is None and '<node id="1" radius="1.5" x="1" y="1" z="1"/>' in text
    import io

    theirs = wknml.parse_nml(io.BytesIO(text.encode()))  # an independent reader, no offset applied
    assert [tuple(n.position) for n in theirs.trees[0].nodes] == [(1, 1, 1), (6, 7, 8), (128, 1, 64)]
    assert sorted((e.source, e.target) for e in theirs.trees[0].edges) == [(1, 2), (2, 3)]
    path = tmp_path / "t.nml"
    path.write_text(text)
    ours = read_annotation(path, voxel_size_nm=(10, 10, 20)).tree(7)
    assert ours.positions().tolist() == [[0, 0, 0], [5, 6, 7], [127, 0, 63]] and ours.radii().tolist() == [1.5, 1.5, 4.0]
    assert P.tree_to_nml(kn, 8) == (None, "Tree 8 is not in this annotation.")
    kn.skeleton.add_tree(9)
    assert "no nodes" in P.tree_to_nml(kn, 9)[1]


@pytest.fixture(scope="module")
def real_served(tmp_path_factory):
    root, tissue = real_copy(tmp_path_factory, tmp_path_factory.mktemp("reanalyse_bad") / "ana")
    srv = ReviewServer(root, port=0).start()
    yield srv, root
    srv.stop()


def test_a_cell_too_short_to_type_says_so_in_its_tree_comment(real_served):
    srv, root = real_served
    cells = pd.read_csv(root / "tables" / "cells.csv")
    short = cells[(cells.typeable == 0) & (cells.untypeable_reason == "short")]
    typed = cells[cells.typeable == 1]
    assert len(short) and len(typed)  # the pipeline's tissue has both
    for cid, ending in ((int(short.id.iloc[0]), "; too short to judge)"), (int(typed.id.iloc[0]), ")")):
        kn = knossos_with_tree(root, cid)
        done, msgs = P.fetch_and_apply(kn, P.Controller(srv.url, srv.token), [cid])
        comment = kn.skeleton.find_tree_by_id(cid).comment()
        assert list(done) == [cid] and comment.endswith(ending) and (ending != ")" or "judge" not in comment), (comment, msgs)


def nml_of(kn, cid) -> bytes:
    text, msg = P.tree_to_nml(kn, cid)
    assert msg is None
    return text.encode()


def test_bad_uploads_get_one_clear_4xx_and_nothing_is_written(real_served):
    srv, root = real_served
    before = digests(root)
    cid = int(pd.read_csv(root / "tables" / "nodes.csv").cell.iloc[0])
    kn = KnossosModule()
    tree_in_knossos(kn, root, cid)
    good = nml_of(kn, cid)
    url = f"/api/v1/cells/{cid}/reanalyse"
    code, body = post_raw(srv, url, good, token=None)
    assert code == 401 and "token" in body["error"]
    assert post_raw(srv, url, good, token="wrong-token-wrong-token")[0] == 401
    code, body = post_raw(srv, url, good[:-40])  # cut off mid-element
    assert code == 400 and "malformed XML" in body["error"] and f"uploaded skeleton of cell {cid}" in body["error"]
    code, body = post_raw(srv, url, b"PK\x03\x04 not really a zip")
    assert code == 400 and "(k.zip): not a readable zip file" in body["error"]
    code, body = post_raw(srv, url, b"")
    assert code == 400 and "empty" in body["error"]
    code, body = post_raw(srv, "/api/v1/cells/424242/reanalyse", good)
    assert code == 404 and "424242" in body["error"]
    code, body = post_raw(srv, url, good.replace(f'<thing id="{cid}">'.encode(), b'<thing id="777">'))
    assert code == 422 and "no tree with id" in body["error"] and "777" in body["error"]
    code, body = post_raw(srv, url, f'<things><thing id="{cid}"><nodes/><edges/></thing></things>'.encode())
    assert code == 422 and "empty skeleton" in body["error"]
    bounds = layer_box(open_layer(root / "layers" / "cells"))
    last = max(nd.node_id() for nd in kn.skeleton.find_tree_by_id(cid).nodes())
    kn.skeleton.add_node(last + 1, [int(bounds.stop[0]) + 5, 3, 4], cid, {})  # past the volume's x face
    kn.skeleton.add_segment(last, last + 1)
    code, body = post_raw(srv, url, nml_of(kn, cid))
    assert code == 422 and f"node {last + 1}" in body["error"] and f"x={int(bounds.stop[0]) + 6}" in body["error"]
    assert f"x 1..{bounds.stop[0]}" in body["error"] and "outside the volume" in body["error"]
    # the plugin turns each into a message
    c = P.Controller(srv.url, srv.token)
    got, msg = c.submit_skeleton(cid, nml_of(kn, cid))
    assert got is None and "outside the volume" in msg and f"Tree {cid}" in msg
    got, msg = c.submit_skeleton(424242, good)
    assert got is None and "no cell" in msg
    got, msg = P.Controller(srv.url, "wrong-token-wrong-token").send_skeleton(cid, good)
    assert got is None and "401" in msg
    got, msg = P.Controller(srv.url, "").send_skeleton(cid, good)
    assert got is None and "token" in msg
    got, msg = P.Controller("127.0.0.1:1", "t", timeout_s=2).send_skeleton(cid, good)
    assert got is None and "Cannot reach" in msg
    assert c.job(999)[0] is None and "no job 999" in c.job(999)[1]
    done, msgs = P.send_tree(KnossosModule(), c, cid)
    assert done is None and "not in this annotation" in msgs[0]
    assert digests(root) == before and c.health()[0]["version"] == 0
    assert not (root / "scratch").exists() and not (root / "skeletons" / "reanalysed").exists()


def test_uploads_over_64_kib_are_accepted_and_a_failed_job_leaves_the_analysis_as_it_was(real_served):
    srv, root = real_served
    cid = int(pd.read_csv(root / "tables" / "nodes.csv").cell.iloc[-1])
    kn = KnossosModule()
    tree_in_knossos(kn, root, cid)
    padded = nml_of(kn, cid).replace(b"<things>", b"<things><!--" + b"x" * 200_000 + b"-->")  # a large real tracing's size
    table = root / "tables" / "objects_mi.csv"
    aside = root.parent / "objects_mi.csv"
    shutil.move(table, aside)  # the mapping pass will find no mitochondria table
    before = digests(root)
    try:
        code, job = post_raw(srv, f"/api/v1/cells/{cid}/reanalyse", padded)
        assert code == 202 and job["state"] in ("queued", "running") and job["cell"] == str(cid)
        c = P.Controller(srv.url, srv.token)
        for _ in range(600):
            got, _ = c.job(job["id"])
            if got["state"] in ("done", "failed"):
                break
            time.sleep(0.1)
        assert got["state"] == "failed" and "objects_mi.csv" in got["message"]
        assert digests(root) == before and not (root / "scratch" / "reanalyse").exists()
        got, msg = c.send_skeleton(cid, padded, poll_s=0.1)
        assert got is None and "failed" in msg and "objects_mi.csv" in msg
        assert [j["state"] for j in c._request("jobs")[0]] == ["failed", "failed"]
    finally:
        shutil.move(aside, table)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)  # over 16 MiB: refused before the body is read
    conn.putrequest("POST", f"/api/v1/cells/{cid}/reanalyse")
    conn.putheader("Authorization", f"Bearer {srv.token}")
    conn.putheader("Content-Length", str(16 * 1024 * 1024 + 1))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and "16777216" in json.loads(resp.read())["error"]
    conn.close()
