"""The review server over real HTTP and websockets (tornado's own clients): the JSON API on a finished analysis,
uint64 ids, tokens, size limits, traversal attempts, review decisions (log, overrides, restart, pipeline re-run),
live websocket updates, 20 concurrent reviewers, export, and the `serve` command."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClient, HTTPClientError
from tornado.websocket import websocket_connect

from pipeline_data import analysis
from serve_data import copy_analysis, synthetic_analysis
from syconn_ng.connectome.matrix import filter_synapses, read_matrix_csv, wiring_matrix
from syconn_ng.errors import ConfigError, SyconnError
from syconn_ng.serve.app import ReviewServer

pytestmark = pytest.mark.xdist_group("serve")  # one worker: one server module at a time, one Chromium


@pytest.fixture
def ana(tmp_path_factory, tmp_path):
    """A writable copy of the shared end-to-end analysis (oracle run, seed 7)."""
    return copy_analysis(analysis(tmp_path_factory, "oracle"), tmp_path / "ana")


@pytest.fixture
def start(request):
    """start(dir, **kw) → a running ReviewServer (no viewer), stopped after the test."""
    servers = []

    def go(path, **kw):
        srv = ReviewServer(path, port=0, **kw).start()
        servers.append(srv)
        return srv

    yield go
    for srv in servers:
        srv.stop()


def get(srv, path, **kw):
    resp = HTTPClient().fetch(f"{srv.url}{path}", **kw)
    return json.loads(resp.body)


def post(srv, path, body, token="__srv__", **kw):
    headers = {"Content-Type": "application/json"}
    token = srv.token if token == "__srv__" else token
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    resp = HTTPClient().fetch(f"{srv.url}{path}", method="POST", body=json.dumps(body), headers=headers, **kw)
    return json.loads(resp.body)


def status_of(fn) -> int:
    try:
        fn()
    except HTTPClientError as err:
        return err.code
    return 200


def raw_get(srv, path: str) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (no client-side normalisation of '..')."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.endheaders()
    resp = conn.getresponse()
    return resp.status, resp.read()


def io_text(body: bytes):
    import io

    return io.StringIO(body.decode())


def served_matrix(srv) -> pd.DataFrame:
    """GET matrix as a dense DataFrame [post, pre] of summed area."""
    m = get(srv, "/api/v1/matrix")
    ids = np.array([int(c["id"]) for c in m["cells"]], dtype=np.uint64)
    dense = np.zeros((len(ids), len(ids)))
    for r, c, _, a in m["entries"]:
        dense[r, c] = a
    return pd.DataFrame(dense, index=ids, columns=ids)


# ---------------------------------------------------------------------- reading


def test_health_and_cells_list_every_cell_with_string_ids_and_types(ana, start):
    srv = start(ana)
    health = get(srv, "/api/v1/health")
    cells_csv = pd.read_csv(ana / "tables" / "cells.csv")
    assert health["status"] == "ok" and health["cells"] == len(cells_csv) and health["decisions"] == 0
    assert {"cells", "synapses", "raw"} <= set(health["layers"])
    cells = get(srv, "/api/v1/cells")
    assert [c["id"] for c in cells] == [str(i) for i in cells_csv["id"]]
    assert all(isinstance(c["id"], str) for c in cells)
    assert [c["type"] for c in cells] == cells_csv["type"].tolist()
    assert [c["typeable"] for c in cells] == (cells_csv["typeable"] == 1).tolist()  # fragments too short to judge are flagged


def test_cell_detail_skeleton_and_synapses_match_the_tables(ana, start):
    srv = start(ana)
    syn = pd.read_csv(ana / "tables" / "synapses.csv")
    cid = int(syn["post_cell"].iloc[0])
    row = pd.read_csv(ana / "tables" / "cells.csv").set_index("id").loc[cid]
    cell = get(srv, f"/api/v1/cells/{cid}")
    assert cell["type"] == row["type"] and cell["nodes"] == row["nodes"]
    assert cell["probabilities"] == {c[2:]: pytest.approx(row[c]) for c in row.index if c.startswith("p_")}
    skel = get(srv, f"/api/v1/cells/{cid}/skeleton")
    comp = pd.read_csv(ana / "tables" / "compartments.csv")
    comp = comp[comp.cell == cid].sort_values("node")
    nodes = sorted(skel["nodes"], key=lambda n: n["node"])
    assert [n["node"] for n in nodes] == comp["node"].tolist()
    assert [n["compartment"] for n in nodes] == comp["compartment"].tolist()
    mine = syn[(syn.pre_cell == cid) | (syn.post_cell == cid)]
    got = get(srv, f"/api/v1/cells/{cid}/synapses")
    assert sorted(s["id"] for s in got) == sorted(str(i) for i in mine["id"])
    one = get(srv, f"/api/v1/synapses/{mine['id'].iloc[0]}")
    assert one["pre_cell"] == str(mine["pre_cell"].iloc[0]) and one["status"] == "pending"
    assert one["area_um2"] == pytest.approx(mine["area_um2"].iloc[0])
    assert status_of(lambda: get(srv, "/api/v1/cells/999999999")) == 404
    assert status_of(lambda: get(srv, "/api/v1/synapses/999999999")) == 404


def test_matrix_equals_the_connectome_stage_matrix(ana, start):
    srv = start(ana)
    stage = read_matrix_csv(ana / "tables" / "matrix.csv")
    served = served_matrix(srv)
    assert list(served.index) == list(stage.index)  # same cells, same type-sorted order
    np.testing.assert_allclose(served.to_numpy(), stage.to_numpy(), atol=1e-5)


def test_uint64_ids_beyond_2_53_survive_json_and_reviews(tmp_path, start):
    root = synthetic_analysis(tmp_path / "big", n_cells=12, n_synapses=40, seed=3, big_ids=True)
    srv = start(root)
    syn = pd.read_csv(root / "tables" / "synapses.csv", dtype={"id": np.uint64, "pre_cell": np.uint64, "post_cell": np.uint64})
    big = int(syn["id"].iloc[5])
    assert big > 2 ** 63
    cells = get(srv, "/api/v1/cells")
    assert {int(c["id"]) for c in cells} == set(int(i) for i in pd.read_csv(root / "tables" / "cells.csv", dtype={"id": np.uint64})["id"])
    done = post(srv, f"/api/v1/synapses/{big}/review", {"decision": "flip"})
    assert done["synapse"]["id"] == str(big)
    assert done["synapse"]["pre_cell"] == str(syn["post_cell"].iloc[5]) and done["synapse"]["post_cell"] == str(syn["pre_cell"].iloc[5])
    assert get(srv, f"/api/v1/cells/{syn['pre_cell'].iloc[5]}")["id"] == str(syn["pre_cell"].iloc[5])
    pre, post_ = syn["pre_cell"].iloc[0], syn["post_cell"].iloc[0]
    pair = syn[(syn.pre_cell == pre) & (syn.post_cell == post_)]
    selected = post(srv, "/api/v1/select", {"pre": str(pre), "post": str(post_)})
    assert selected["synapses"] == [str(i) for i in pair["id"]]
    assert status_of(lambda: post(srv, "/api/v1/select", {"action": "goto", "synapse": "12345"})) == 404


def test_a_bad_table_or_review_database_is_one_clear_error(ana):
    from syconn_ng.errors import InputError

    (ana / "review.sqlite").write_text("not a database, just text " * 100)
    with pytest.raises(InputError, match="review.sqlite.*not a review database"):
        ReviewServer(ana, port=0)
    (ana / "review.sqlite").unlink()
    syn = pd.read_csv(ana / "tables" / "synapses.csv")
    syn.drop(columns=["area_um2"]).to_csv(ana / "tables" / "synapses.csv", index=False)
    with pytest.raises(InputError, match="synapses.csv.*missing column.*area_um2"):
        ReviewServer(ana, port=0)
    assert not list(ana.glob("review.sqlite*"))  # a folder that cannot be served is left as it was


# ---------------------------------------------------------------------- safety


def test_changes_need_the_bearer_token(ana, start):
    srv = start(ana)
    sid = int(pd.read_csv(ana / "tables" / "synapses.csv")["id"].iloc[0])
    url = f"/api/v1/synapses/{sid}/review"
    assert status_of(lambda: post(srv, url, {"decision": "reject"}, token=None)) == 401
    assert status_of(lambda: post(srv, url, {"decision": "reject"}, token="x" * 32)) == 401
    assert status_of(lambda: post(srv, f"/api/v1/cells/{sid}/review", {"type": "GP"}, token=None)) in (401,)
    assert get(srv, "/api/v1/health")["decisions"] == 0
    assert post(srv, url, {"decision": "reject"})["synapse"]["status"] == "rejected"
    assert status_of(lambda: post(srv, url, {"decision": "maybe"})) == 400


def test_oversized_requests_are_refused_with_413(ana, start):
    srv = start(ana, max_request_bytes=1024)
    sid = int(pd.read_csv(ana / "tables" / "synapses.csv")["id"].iloc[0])
    body = {"decision": "accept", "reviewer": "x" * 2000}
    assert status_of(lambda: post(srv, f"/api/v1/synapses/{sid}/review", body)) == 413
    assert get(srv, "/api/v1/health")["decisions"] == 0


def test_layers_are_served_with_cors_and_range_requests(ana, start):
    srv = start(ana)
    info = (ana / "layers" / "cells" / "info").read_bytes()
    resp = HTTPClient().fetch(f"{srv.url}/layers/cells/info", headers={"Range": "bytes=2-11"})
    assert resp.code == 206 and resp.body == info[2:12]
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert json.loads(HTTPClient().fetch(f"{srv.url}/layers/raw/info").body)["type"] == "image"


def test_a_shard_past_64_mib_is_served_by_range_without_hashing_and_its_etag_follows_rewrites(tmp_path, start, caplog):
    root = synthetic_analysis(tmp_path / "ana", n_cells=3, n_synapses=4)
    layer = root / "layers" / "big"
    layer.mkdir(parents=True)
    (layer / "info").write_text(json.dumps({"@type": "neuroglancer_multilod_draco", "sharding": {}}))
    shard = layer / "0.shard"
    with shard.open("wb") as f:  # sparse: 80 MiB on disk costs nothing, tornado's content hash stops at 64 MiB
        f.truncate(80 << 20)
        f.seek((80 << 20) - 8)
        f.write(b"tailtail")
    srv = start(root)
    with caplog.at_level("ERROR", logger="tornado.general"):
        resp = HTTPClient().fetch(f"{srv.url}/layers/big/0.shard", headers={"Range": "bytes=-8"})
    assert resp.code == 206 and resp.body == b"tailtail"
    assert not [r for r in caplog.records if "Could not open static file" in r.getMessage()]
    first = resp.headers["Etag"]
    shard.write_bytes(b"rewritten")
    again = HTTPClient().fetch(f"{srv.url}/layers/big/0.shard")
    assert again.body == b"rewritten" and again.headers["Etag"] != first


def test_gzipped_chunk_files_are_served_under_their_plain_name(ana, start):
    import gzip

    scale = json.loads((ana / "layers" / "cells" / "info").read_text())["scales"][0]["key"]
    chunk = next(p for p in (ana / "layers" / "cells" / scale).iterdir() if p.is_file())
    data = chunk.read_bytes()
    chunk.with_name(chunk.name + ".gz").write_bytes(gzip.compress(data))
    chunk.unlink()
    srv = start(ana)
    resp = HTTPClient().fetch(f"{srv.url}/layers/cells/{scale}/{chunk.name}", decompress_response=True)
    assert resp.body == data


def test_path_traversal_never_reads_outside_the_layers(ana, start, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    (ana / "layers" / "cells" / "escape").symlink_to(secret)
    (ana / "layers" / "cells" / "escape_dir").symlink_to(tmp_path)
    srv = start(ana)
    attempts = ["/layers/cells/../../syconn.toml", "/layers/cells/%2e%2e/%2e%2e/syconn.toml", "/layers/cells/%2E%2E%2F%2E%2E%2Fsyconn.toml",
                f"/layers/cells/{secret}", f"/layers/cells//{secret}", "/layers/cells/escape", "/layers/cells/escape_dir/secret.txt",
                "/layers/..%2f..%2fsyconn.toml/x", "/layers/tables/cells.csv", "/layers/nonexistent/info",
                "/page/../review.py", "/page/%2e%2e/review.py", "/..%2f..%2fetc/passwd"]
    for path in attempts:
        code, body = raw_get(srv, path)
        assert code in (400, 403, 404), (path, code)
        assert b"TOP-SECRET" not in body and b"[dataset]" not in body and b"import" not in body, path


def test_binding_beyond_loopback_needs_a_token_and_then_guards_reads(ana, start):
    with pytest.raises(ConfigError, match="needs a token"):
        ReviewServer(ana, port=0, bind="0.0.0.0")
    with pytest.raises(SyconnError, match="at least 16"):
        ReviewServer(ana, port=0, bind="0.0.0.0", token="short")
    srv = start(ana, bind="0.0.0.0", token="t" * 24)
    assert status_of(lambda: get(srv, "/api/v1/health")) == 401
    assert get(srv, "/api/v1/health", headers={"Authorization": "Bearer " + "t" * 24})["status"] == "ok"

    async def socket(query):
        ws = await websocket_connect(f"ws://127.0.0.1:{srv.port}/api/v1/ws{query}")
        hello = json.loads(await ws.read_message())
        ws.close()
        return hello

    with pytest.raises(HTTPClientError) as err:
        asyncio.run(socket(""))
    assert err.value.code == 401
    assert asyncio.run(socket("?token=" + "t" * 24))["type"] == "hello"
    assert raw_get(srv, "/layers/cells/info")[0] == 401  # layer data too: the token is part of the viewer's data URL
    assert raw_get(srv, "/t/wrong/layers/cells/info")[0] == 401
    code, body = raw_get(srv, f"/t/{'t' * 24}/layers/cells/info")
    assert code == 200 and "scales" in json.loads(body)


# ---------------------------------------------------------------------- review


def test_a_busy_port_is_one_clear_error(ana, start):
    first = start(ana)
    with pytest.raises(SyconnError, match=f"cannot listen on 127.0.0.1:{first.port}"):
        ReviewServer(ana, port=first.port).start()


def test_review_decisions_are_logged_with_who_when_and_previous_value(ana, start):
    srv = start(ana)
    syn = pd.read_csv(ana / "tables" / "synapses.csv")
    sid, pre, post_ = (int(v) for v in syn[["id", "pre_cell", "post_cell"]].iloc[0])
    post(srv, f"/api/v1/synapses/{sid}/review", {"decision": "flip", "reviewer": "ada"})
    post(srv, f"/api/v1/synapses/{sid}/review", {"decision": "reject", "reviewer": "bob"})
    cell = int(syn["post_cell"].iloc[1])
    old = get(srv, f"/api/v1/cells/{cell}")["type"]
    new = "GP" if old != "GP" else "INT"
    post(srv, f"/api/v1/cells/{cell}/review", {"type": new, "reviewer": "cy"})
    log = get(srv, "/api/v1/reviews")
    assert [d["who"] for d in log] == ["cy", "bob", "ada"] and all(d["at"] for d in log)
    assert log[2]["previous"] == {"pre_cell": str(pre), "post_cell": str(post_), "status": "pending"}
    assert log[2]["value"]["pre_cell"] == str(post_)
    assert log[1]["previous"]["pre_cell"] == str(post_) and log[1]["value"]["status"] == "rejected"
    assert (log[0]["kind"], log[0]["target"], log[0]["previous"], log[0]["value"]) == ("cell", str(cell), old, new)
    got = get(srv, f"/api/v1/cells/{cell}")
    assert got["type"] == new and got["pipeline_type"] == old and got["reviewed"]


def test_a_cell_type_correction_regroups_the_matrix_and_tells_every_page(ana, start):
    srv = start(ana)
    before = get(srv, "/api/v1/matrix")
    moved = before["cells"][0]  # first of its type group
    new = next(t for t in ("INT", "GP", "MSN", "EA") if t != moved["type"])

    async def scenario():
        ws = await websocket_connect(f"ws://127.0.0.1:{srv.port}/api/v1/ws")
        await ws.read_message()  # hello
        await AsyncHTTPClient().fetch(f"{srv.url}/api/v1/cells/{moved['id']}/review", method="POST", body=json.dumps({"type": new}),
                                      headers={"Authorization": f"Bearer {srv.token}"})
        event = json.loads(await asyncio.wait_for(ws.read_message(), 10))
        ws.close()
        return event

    event = asyncio.run(scenario())
    assert (event["type"], event["cell"], event["cell_type"]) == ("matrix", moved["id"], new)
    after = get(srv, "/api/v1/matrix")
    types = [c["type"] for c in after["cells"]]
    position = [c["id"] for c in after["cells"]].index(moved["id"])
    assert types[position] == new
    order = {t: k for k, t in enumerate(("EA", "MSN", "GP", "INT"))}
    assert [order[t] for t in types] == sorted(order[t] for t in types)  # still grouped by type
    assert sorted(e[2] for e in after["entries"]) == sorted(e[2] for e in before["entries"])  # same synapses, new axes
    assert served_matrix(srv).loc[np.uint64(int(moved["id"]))].sum() == pytest.approx(
        read_matrix_csv(ana / "tables" / "matrix.csv").loc[np.uint64(int(moved["id"]))].sum())


def test_reviews_survive_a_restart_and_a_pipeline_rerun_with_new_ids(ana, start):
    srv = start(ana)
    syn = pd.read_csv(ana / "tables" / "synapses.csv")
    rej, flip = int(syn["id"].iloc[0]), int(syn["id"].iloc[1])
    post(srv, f"/api/v1/synapses/{rej}/review", {"decision": "reject"})
    post(srv, f"/api/v1/synapses/{flip}/review", {"decision": "flip"})
    before = served_matrix(srv)
    srv.stop()
    again = start(ana)
    assert get(again, f"/api/v1/synapses/{rej}")["status"] == "rejected"
    assert get(again, f"/api/v1/synapses/{flip}")["pre_cell"] == str(syn["post_cell"].iloc[1])
    pd.testing.assert_frame_equal(served_matrix(again), before)
    again.stop()
    # a re-run: new ids in a new order, centres moved by a fraction of a voxel
    rerun = syn.iloc[::-1].reset_index(drop=True)
    rerun["id"] = np.arange(500, 500 + len(rerun))
    rerun[["x", "y", "z"]] += 0.6
    rerun.to_csv(ana / "tables" / "synapses.csv", index=False)
    third = start(ana)
    new_id = {int(o): int(n) for o, n in zip(syn["id"][::-1], rerun["id"])}
    assert get(third, f"/api/v1/synapses/{new_id[rej]}")["status"] == "rejected"
    moved = get(third, f"/api/v1/synapses/{new_id[flip]}")
    assert (moved["pre_cell"], moved["status"]) == (str(syn["post_cell"].iloc[1]), "accepted")
    others = [get(third, f"/api/v1/synapses/{new_id[int(i)]}")["status"] for i in syn["id"].iloc[2:]]
    assert set(others) <= {"pending"}
    pd.testing.assert_frame_equal(served_matrix(third), before)


def test_a_review_is_pushed_over_the_websocket_to_another_client(ana, start):
    srv = start(ana)
    syn = pd.read_csv(ana / "tables" / "synapses.csv")
    sid, pre, post_ = (int(v) for v in syn[["id", "pre_cell", "post_cell"]].iloc[0])

    async def scenario():
        ws = await websocket_connect(f"ws://127.0.0.1:{srv.port}/api/v1/ws")
        hello = json.loads(await ws.read_message())
        assert hello["type"] == "hello" and hello["version"] == 0
        await AsyncHTTPClient().fetch(f"{srv.url}/api/v1/synapses/{sid}/review", method="POST", body=json.dumps({"decision": "reject"}),
                                      headers={"Authorization": f"Bearer {srv.token}"})
        event = json.loads(await asyncio.wait_for(ws.read_message(), 10))
        ws.close()
        return event

    event = asyncio.run(scenario())
    assert event["type"] == "review" and event["synapse"]["id"] == str(sid) and event["synapse"]["status"] == "rejected"
    m = get(srv, "/api/v1/matrix")
    index = {c["id"]: k for k, c in enumerate(m["cells"])}
    expect = served_matrix(srv).loc[np.uint64(post_), np.uint64(pre)]
    (entry,) = event["entries"]
    assert entry[:2] == [index[str(post_)], index[str(pre)]] and entry[3] == pytest.approx(expect)


def test_twenty_reviewers_posting_fifty_decisions_each_store_exactly_1000_and_a_consistent_matrix(tmp_path, start):
    root = synthetic_analysis(tmp_path / "syn", n_cells=60, n_synapses=400, seed=5)
    srv = start(root)
    ids = pd.read_csv(root / "tables" / "synapses.csv")["id"].to_numpy()
    rng = np.random.default_rng(0)
    plan = [[(int(rng.choice(ids)), str(rng.choice(["accept", "reject", "flip"]))) for _ in range(50)] for _ in range(20)]

    async def reviewer(k, seen):
        client = AsyncHTTPClient(force_instance=True)
        for sid, decision in plan[k]:
            resp = await client.fetch(f"{srv.url}/api/v1/synapses/{sid}/review", method="POST",
                                      body=json.dumps({"decision": decision, "reviewer": f"r{k}"}),
                                      headers={"Authorization": f"Bearer {srv.token}"})
            seen.append(json.loads(resp.body)["seq"])
        client.close()

    async def listen(events):
        ws = await websocket_connect(f"ws://127.0.0.1:{srv.port}/api/v1/ws")
        await ws.read_message()  # hello
        while len(events) < 1000:
            events.append(json.loads(await asyncio.wait_for(ws.read_message(), 30)))
        ws.close()

    async def scenario():
        seen, events = [], []
        listener = asyncio.ensure_future(listen(events))
        await asyncio.sleep(0.2)  # the listener is connected before the first review
        await asyncio.gather(*(reviewer(k, seen) for k in range(20)))
        await asyncio.wait_for(listener, 60)
        return seen, events

    seen, events = asyncio.run(scenario())
    assert sorted(seen) == list(range(1, 1001))
    assert len(events) == 1000 and {e["type"] for e in events} == {"review"}
    log = get(srv, "/api/v1/reviews?limit=5000")
    assert len(log) == 1000 and {d["who"] for d in log} == {f"r{k}" for k in range(20)}
    # replay the stored log in order: each decision's previous value is the one before it, and the result is the served matrix
    syn = pd.read_csv(root / "tables" / "synapses.csv").set_index("id")
    state = {int(i): {"pre_cell": str(r.pre_cell), "post_cell": str(r.post_cell), "status": "pending"} for i, r in syn.iterrows()}
    for d in sorted(log, key=lambda d: d["seq"]):
        sid = int(d["synapse_id"])
        assert d["previous"] == state[sid]
        state[sid] = d["value"]
    kept = syn.reset_index()
    kept["pre_cell"] = [int(state[int(i)]["pre_cell"]) for i in kept["id"]]
    kept["post_cell"] = [int(state[int(i)]["post_cell"]) for i in kept["id"]]
    kept = kept[[state[int(i)]["status"] != "rejected" for i in kept["id"]]]
    served = served_matrix(srv)
    expect = wiring_matrix(filter_synapses(kept), served.index.to_numpy(np.uint64))
    np.testing.assert_allclose(served.to_numpy(), expect.to_numpy(), atol=1e-6)
    exported = pd.read_csv(io_text(HTTPClient().fetch(f"{srv.url}/api/v1/export/matrix.csv").body), index_col="post_cell")
    np.testing.assert_allclose(exported.to_numpy(), expect.to_numpy(), atol=1e-5)


# ---------------------------------------------------------------------- the command


def test_export_option_writes_the_reviewed_synapse_table_and_matrix(ana, start, tmp_path):
    srv = start(ana)
    syn = pd.read_csv(ana / "tables" / "synapses.csv")
    rej = int(syn["id"].iloc[0])
    post(srv, f"/api/v1/synapses/{rej}/review", {"decision": "reject"})
    srv.stop()
    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-m", "syconn_ng", "serve", str(ana), "--export", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out / "reviewed_synapses.csv")
    assert rej not in set(table["id"]) and len(table) == len(syn) - 1
    matrix = read_matrix_csv(out / "reviewed_matrix.csv")
    stage = read_matrix_csv(ana / "tables" / "matrix.csv")
    pre, post_ = np.uint64(syn["pre_cell"].iloc[0]), np.uint64(syn["post_cell"].iloc[0])
    assert matrix.loc[post_, pre] == pytest.approx(stage.loc[post_, pre] - syn["area_um2"].iloc[0], abs=1e-5)


def test_serve_command_prints_the_page_url_and_token_and_answers(ana):
    token = "s3cret-token-for-tests-only"
    proc = subprocess.Popen([sys.executable, "-m", "syconn_ng", "serve", str(ana), "--port", "0", "--no-viewer", "--token", token],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        url = re.search(r"(http://127\.0\.0\.1:\d+)/#token=(\S+)", lines[0])
        assert url and url.group(2) == token and lines[1].strip() == f"token: {token}"
        health = json.loads(HTTPClient().fetch(f"{url.group(1)}/api/v1/health").body)
        assert health["status"] == "ok" and Path(health["analysis"]) == ana.resolve()
        page = HTTPClient().fetch(f"{url.group(1)}/").body.decode()
        assert "review.js" in page and "http" not in page.replace("http-equiv", "")  # no CDN: every file from this server
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(20) == 0  # a clean stop, even if this test runs where SIGINT is inherited as ignored
        finally:
            proc.kill()
