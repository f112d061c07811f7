"""Benchmark `syconn-ng export`: time and size of exporting an analysis (unsharded and sharded) against a plain
copy of its layers and tables, and a 100,000-synapse annotation layer (ours unsharded / sharded vs the released
`neuroglancer.write_annotations` writer): files, bytes, write time, and how many requests (and bytes)
Neuroglancer's own client makes to show one view, counted in the static server's log.

    .venv/bin/python benchmarks/bench_export.py [--analysis DIR] [--synapses 100000] [--no-browser]

Without --analysis a 128×128×64 synthetic tissue is generated and run (oracle barrier and organelles).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/browser.py: headless Chromium with the project's flags


def tree_stats(path: Path) -> tuple[int, int]:
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def timed(fn, *args, **kw):
    """(result, seconds, peak traced MB) of one call."""
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return out, seconds, peak


def build_analysis(work: Path) -> Path:
    tissue, ana = work / "tissue", work / "analysis"
    run = [sys.executable, "-m", "syconn_ng"]
    subprocess.run(run + ["synth", str(tissue), "--shape", "128,128,64", "--seed", "6", "--synapse-density", "3"], check=True,
                   capture_output=True)
    ana.mkdir()
    for name in ("raw", "skeletons", "syconn.toml"):
        src = tissue / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, ana / name)
    subprocess.run(run + ["run", str(ana), "--quiet", "--workers", "1", "--oracle",
                          f"barrier={tissue / 'truth' / 'barrier'},organelles={tissue / 'truth' / 'organelles'}"], check=True)
    return ana


def plain_copy(analysis: Path, dest: Path) -> None:
    """The simple alternative: copy the analysis' layers, raw EM and tables as they are."""
    shutil.copytree(analysis / "layers", dest / "layers")
    shutil.copytree(analysis / "raw", dest / "raw")
    shutil.copytree(analysis / "tables", dest / "tables")


def bench_export(analysis: Path, work: Path) -> list[dict]:
    import cloudvolume  # noqa: F401  (imported before timing: the first export would pay for it)

    from syconn_ng.export import export_analysis

    rows = []
    for label, fn in (("plain copy (cp -r layers raw tables)", lambda d: plain_copy(analysis, d)),
                      ("export, unsharded", lambda d: export_analysis(analysis, d)),
                      ("export, sharded", lambda d: export_analysis(analysis, d, sharded=True))):
        dest = work / label.split(",")[-1].strip().replace(" ", "_").replace("(", "").replace(")", "")
        _, seconds, peak = timed(fn, dest)
        files, size = tree_stats(dest)
        rows.append({"what": label, "seconds": round(seconds, 2), "files": files, "MB": round(size / 1e6, 2), "peak_MB": round(peak, 1)})
    return rows


# ---------------------------------------------------------------- 100,000 synapses

def random_synapses(n: int, shape_vx, seed: int = 0) -> pd.DataFrame:
    """A synapse table like tables/synapses.csv: uniform positions, 2,000 cells, realistic areas and probabilities."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(np.arange(1, 10**7, dtype=np.int64), 2000, replace=False)
    xyz = rng.uniform(0, shape_vx, (n, 3)).round(2)
    return pd.DataFrame({"id": np.arange(1, n + 1), "pre_cell": rng.choice(cells, n), "post_cell": rng.choice(cells, n),
                         "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "area_um2": rng.gamma(2.0, 0.03, n).round(5),
                         "probability": rng.uniform(0.5, 1.0, n).round(3),
                         "type": np.where(rng.random(n) < 0.8, "asymmetric", "symmetric")})


def released_writer(path: Path, syn: pd.DataFrame, voxel_size_nm) -> None:
    """The simple alternative: neuroglancer's own AnnotationWriter (one spatial cell, unsharded)."""
    import neuroglancer
    from neuroglancer.write_annotations import AnnotationWriter

    space = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=list(voxel_size_nm))
    w = AnnotationWriter(space, "point", relationships=["pre_cell", "post_cell"],
                         properties=[neuroglancer.AnnotationPropertySpec(id="area", type="float32"),
                                     neuroglancer.AnnotationPropertySpec(id="probability", type="float32"),
                                     neuroglancer.AnnotationPropertySpec(id="type", type="uint8")])
    for r in syn.itertuples():
        w.add_point([r.x + 0.5, r.y + 0.5, r.z + 0.5], id=int(r.id), area=r.area_um2, probability=r.probability,
                    type=int(r.type == "symmetric"), pre_cell=int(r.pre_cell), post_cell=int(r.post_cell))
    w.write(str(path))


def bench_annotations(syn: pd.DataFrame, voxel_size_nm, work: Path) -> dict[str, dict]:
    from syconn_ng.stages.synapses import write_synapse_layer

    out = {}
    for label, fn in (("neuroglancer AnnotationWriter (released)", lambda p: released_writer(p, syn, voxel_size_nm)),
                      ("syconn_ng, unsharded", lambda p: write_synapse_layer(p, syn, voxel_size_nm)),
                      ("syconn_ng, sharded", lambda p: write_synapse_layer(p, syn, voxel_size_nm, sharded=True))):
        path = work / ("ann_" + label.split(",")[-1].strip().split(" ")[0])
        _, seconds, peak = timed(fn, path)
        files, size = tree_stats(path)
        levels = len(json.loads((path / "info").read_text())["spatial"])
        out[label] = {"path": path, "seconds": round(seconds, 2), "files": files, "MB": round(size / 1e6, 2),
                      "levels": levels, "peak_MB": round(peak, 1)}
    return out


class LoggingServer:
    """A static file server (CORS, Range) on 127.0.0.1 that records every request: (path, status, bytes sent, monotonic time)."""

    def __init__(self, root: Path):
        import tornado.web

        from syconn_ng.serve.app import StatETag

        log = self.log = []

        class Handler(StatETag, tornado.web.StaticFileHandler):
            def set_default_headers(self):
                self.set_header("Access-Control-Allow-Origin", "*")
                self.set_header("Access-Control-Expose-Headers", "Content-Range")

            def on_finish(self):
                sent = int(self._headers.get("Content-Length", 0) or 0) if self.request.method != "HEAD" else 0  # HEAD sends no body
                log.append((self.request.path, self.get_status(), sent, time.monotonic()))

        ready = threading.Event()

        def run():
            asyncio.set_event_loop(asyncio.new_event_loop())
            app = tornado.web.Application([(r"/(.*)", Handler, {"path": str(root)})])
            server = app.listen(0, address="127.0.0.1")
            self.port = next(iter(server._sockets.values())).getsockname()[1]
            ready.set()
            asyncio.get_event_loop().run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"


def count_requests(driver, viewer, server: LoggingServer, layer: str, position_vx, voxel_size_nm, settle_s: float = 4.0) -> tuple[int, int]:
    """Requests and bytes the client fetches from `server` to draw `layer` in the 4-panel view at `position_vx`."""
    from syconn_ng.viewer_state import SYNAPSE_SHADER, viewer_state
    import neuroglancer

    server.log.clear()
    layers = [{"type": "annotation", "name": "synapses", "source": f"precomputed://{server.url}/{layer}", "shader": SYNAPSE_SHADER}]
    viewer.set_state(neuroglancer.ViewerState(viewer_state(layers, position_vx=position_vx, voxel_size_nm=voxel_size_nm,
                                                           cross_section_scale=1.0)))
    driver.get(viewer.get_viewer_url())
    deadline, last, stable_since = time.monotonic() + 120, -1, time.monotonic()
    while time.monotonic() < deadline:
        n = len(server.log)
        if n != last:
            last, stable_since = n, time.monotonic()
        elif n > 0 and time.monotonic() - stable_since > settle_s:
            break
        time.sleep(0.2)
    return len(server.log), sum(e[2] for e in server.log)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--analysis", type=Path, default=None, help="a finished analysis (default: build a 128×128×64 one)")
    ap.add_argument("--synapses", type=int, default=100_000)
    ap.add_argument("--no-browser", action="store_true", help="skip the request counts (no Chromium)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_export_"))
    try:
        analysis = args.analysis or build_analysis(work)
        from syconn_ng.analysis import Analysis

        vs = Analysis.open(analysis).voxel_size_nm
        shape = json.loads((analysis / "layers" / "cells" / "info").read_text())["scales"][0]["size"]
        print(f"analysis {analysis}: {shape[0]}×{shape[1]}×{shape[2]} voxels, "
              f"{len(pd.read_csv(analysis / 'tables' / 'cells.csv'))} cells, {len(pd.read_csv(analysis / 'tables' / 'synapses.csv'))} synapses")
        rows = bench_export(analysis, work)
        base = rows[0]["seconds"]
        print("\n| export of the analysis | seconds | files | MB | peak traced MB | time vs plain copy |\n|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['what']} | {r['seconds']} | {r['files']} | {r['MB']} | {r['peak_MB']} | {r['seconds'] / base:.1f}× |")

        big = (2048, 2048, 1024)  # ~20 × 20 × 20 µm³ at 10×10×20 nm: 100,000 synapses ≈ 12 per µm³
        syn = random_synapses(args.synapses, big)
        ann = bench_annotations(syn, vs, work)
        if not args.no_browser:
            from browser import chromium_driver, neuroglancer_viewer

            server = LoggingServer(work)
            driver = chromium_driver()
            viewer = neuroglancer_viewer()
            try:
                for label, a in ann.items():
                    a["requests"], a["bytes_fetched"] = count_requests(driver, viewer, server, a["path"].name,
                                                                       [b / 2 for b in big], vs)
            finally:
                driver.quit()
        print(f"\n| {args.synapses:,} synapses | write s | files | MB | spatial levels | requests for one view | MB fetched |\n|---|---|---|---|---|---|---|")
        for label, a in ann.items():
            print(f"| {label} | {a['seconds']} | {a['files']:,} | {a['MB']} | {a['levels']} | {a.get('requests', '-')} | "
                  f"{a['bytes_fetched'] / 1e6:.2f} |" if "requests" in a else f"| {label} | {a['seconds']} | {a['files']:,} | {a['MB']} | {a['levels']} | - | - |")
        print(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
