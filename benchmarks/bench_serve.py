"""Review server latency: the matrix and a cell's synapses over HTTP with 1,000 cells and 100,000 synapses
(synthetic tables), and the time from a review POST to the websocket update in another client.

The server runs as `syconn-ng serve --no-viewer` in its own process; the clients are tornado's. Side by side:
the simple alternative of recomputing the matrix from the table per request (`build_connectome` + dense JSON).

    .venv/bin/python benchmarks/bench_serve.py [--cells 1000] [--synapses 100000] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def stats_ms(samples) -> str:
    a = np.asarray(samples) * 1000
    return f"median {np.median(a):7.2f} ms   p99 {np.percentile(a, 99):7.2f} ms   (n={len(a)})"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(url: str, token: str, root: Path, n: int) -> dict:
    import pandas as pd
    from tornado.httpclient import AsyncHTTPClient
    from tornado.websocket import websocket_connect

    client = AsyncHTTPClient()
    cells = pd.read_csv(root / "tables" / "cells.csv")["id"].to_numpy()
    syn_ids = pd.read_csv(root / "tables" / "synapses.csv", usecols=["id"])["id"].to_numpy()
    rng = np.random.default_rng(0)
    out = {}

    async def timed(path, **kw):
        t = time.perf_counter()
        resp = await client.fetch(url + path, **kw)
        return time.perf_counter() - t, resp

    first, resp = await timed("/api/v1/matrix")
    out["matrix_first_s"] = first
    out["matrix_bytes"] = len(resp.body)
    out["matrix"] = [(await timed("/api/v1/matrix"))[0] for _ in range(n // 4)]
    out["cell_synapses"] = [(await timed(f"/api/v1/cells/{rng.choice(cells)}/synapses"))[0] for _ in range(n)]
    out["synapse"] = [(await timed(f"/api/v1/synapses/{rng.choice(syn_ids)}"))[0] for _ in range(n)]

    ws = await websocket_connect(url.replace("http", "ws") + "/api/v1/ws")
    await ws.read_message()  # hello
    push, post = [], []
    for sid in rng.choice(syn_ids, n, replace=False):
        t = time.perf_counter()
        fut = client.fetch(url + f"/api/v1/synapses/{sid}/review", method="POST", headers={"Authorization": f"Bearer {token}"},
                           body=json.dumps({"decision": str(rng.choice(["accept", "reject", "flip"])), "reviewer": "bench"}))
        while True:
            event = json.loads(await ws.read_message())
            if event.get("type") == "review" and event["synapse"]["id"] == str(sid):
                push.append(time.perf_counter() - t)
                break
        await fut
        post.append(time.perf_counter() - t)
    out["review_to_ws"], out["review_post"] = push, post
    first, _ = await timed("/api/v1/matrix")
    out["matrix_after_review_s"] = first
    ws.close()
    return out


def simple_alternative(root: Path, n: int) -> list[float]:
    """Recompute the matrix from the tables and encode it densely, per request (no caching, no incremental update)."""
    import pandas as pd

    from syconn_ng.connectome.matrix import build_connectome

    syn, cells = pd.read_csv(root / "tables" / "synapses.csv"), pd.read_csv(root / "tables" / "cells.csv")
    times = []
    for _ in range(n):
        t = time.perf_counter()
        built = build_connectome(syn, cells)
        json.dumps({"ids": [str(i) for i in built["area"].index], "area": built["area"].to_numpy().round(6).tolist()})
        times.append(time.perf_counter() - t)
    return times


def main():
    from serve_data import synthetic_analysis

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--synapses", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        root = synthetic_analysis(Path(tmp) / "ana", n_cells=args.cells, n_synapses=args.synapses, seed=0)
        token = "bench-token-0123456789abcdef"
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "syconn_ng", "serve", str(root), "--port", "0", "--no-viewer", "--token", token],
                                stdout=subprocess.PIPE, text=True)
        try:
            url = re.search(r"(http://[0-9.]+:\d+)", proc.stdout.readline()).group(1)
            startup = time.perf_counter() - t0
            res = asyncio.run(measure(url, token, root, args.requests))
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(20)
        simple = simple_alternative(root, 5)
    print(f"review server, {args.cells} cells, {args.synapses} synapses (synthetic), {args.requests} requests per kind")
    print(f"  start-up (load tables, review.sqlite, first matrix order): {startup:.2f} s; server peak RSS {rss:.0f} MB")
    print(f"  GET matrix, first (sparse JSON, {res['matrix_bytes'] / 1e6:.2f} MB): {res['matrix_first_s'] * 1000:.1f} ms")
    print(f"  GET matrix (cached)          : {stats_ms(res['matrix'])}   → {1 / np.median(res['matrix']):.0f} requests/s")
    print(f"  GET cells/ID/synapses        : {stats_ms(res['cell_synapses'])}")
    print(f"  GET synapses/ID              : {stats_ms(res['synapse'])}")
    print(f"  review POST → ws update      : {stats_ms(res['review_to_ws'])}")
    print(f"  review POST round trip       : {stats_ms(res['review_post'])}")
    print(f"  GET matrix after a review    : {res['matrix_after_review_s'] * 1000:.1f} ms (re-encoded once per version)")
    print(f"  simple alternative, matrix recomputed + dense JSON per request: {stats_ms(simple)}")
    print(f"  ratio simple / served matrix (median): {np.median(simple) / np.median(res['matrix']):.0f}x")


if __name__ == "__main__":
    main()
