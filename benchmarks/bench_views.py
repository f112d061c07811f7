"""Benchmark: what Neuroglancer fetches to show an exported analysis, before and after multi-resolution and sharding.

Exports one finished analysis twice: *before* — unsharded, legacy meshes, every volume reduced to its
full-resolution scale (what an export was before the `scales` stage and issue 15); *after* — sharded,
all downsampled scales, multi-resolution Draco meshes. Each export is served by a logging static server
(tornado, Range requests, 127.0.0.1) and opened in headless Chromium with Neuroglancer's own client,
one fresh browser (cold cache) per view:

* `overview`: the whole volume in the xy panel and every cell's mesh in the 3D panel (4-panel layout);
* `zoomed_in`: a 2 µm-wide xy view at the volume's centre (1 voxel per 5 screen pixels).

A view counts as loaded when the server has seen no request for `--quiet-s` seconds. The server log gives
requests and bytes per view; the ratios before / after are printed and written as JSON.

Give the raw EM its scales first (`syconn-ng downsample raw --analysis ANALYSIS_DIR`), or the raw layer
is full resolution only in both forms.

Run: .venv/bin/python benchmarks/bench_views.py ANALYSIS_DIR [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench_export import LoggingServer  # benchmarks/ is the script's folder, so on sys.path (bench_export puts tests/ there)
from browser import chromium_driver  # tests/browser.py: headless Chromium with the project's flags

PLACEHOLDER = "http://bench-views.invalid"


def make_exports(analysis: Path, work: Path) -> dict[str, Path]:
    """The two exports of `analysis` under `work`: 'before' (unsharded, full resolution only, legacy meshes)
    and 'after' (sharded, every scale, multi-resolution meshes)."""
    from syconn_ng.export import export_analysis

    out = {}
    for form, sharded in (("before", False), ("after", True)):
        dest = work / form
        export_analysis(analysis, dest, sharded=sharded, url_prefix=PLACEHOLDER, raw="copy", overwrite=True)
        out[form] = dest
    for info in out["before"].glob("*/info"):
        meta = json.loads(info.read_text())
        if meta.get("type") in ("image", "segmentation") and len(meta.get("scales", [])) > 1:
            for scale in meta["scales"][1:]:
                shutil.rmtree(info.parent / scale["key"], ignore_errors=True)
            meta["scales"] = meta["scales"][:1]
            info.write_text(json.dumps(meta))
    return out


def view_states(state: dict, shape_vx, panel_px: int = 700) -> dict[str, dict]:
    """The Neuroglancer states of the two views (from the export's state.json)."""
    import numpy as np

    centre = (np.asarray(shape_vx) / 2).tolist()
    overview = dict(state, layout="4panel", position=centre, crossSectionScale=max(shape_vx[:2]) / (panel_px / 2),
                    projectionScale=2.0 * max(shape_vx))  # as export's own state: the whole volume in view
    zoomed = dict(state, layout="xy", position=centre, crossSectionScale=0.2)
    return {"overview": overview, "zoomed_in": zoomed}


def measure(driver_factory, server: LoggingServer, state: dict, *, quiet_s: float, timeout_s: float) -> dict:
    """Open `state` in a fresh browser; wait until the server has been quiet for `quiet_s`; requests and bytes."""
    import neuroglancer

    neuroglancer.set_server_bind_address("127.0.0.1")
    viewer = neuroglancer.Viewer()
    viewer.set_state(neuroglancer.ViewerState(state))
    start = len(server.log)
    driver = driver_factory()
    t0 = time.monotonic()
    try:
        driver.get(viewer.get_viewer_url())
        while True:
            time.sleep(0.25)  # polling the server log
            last = server.log[-1][3] if len(server.log) > start else t0
            if len(server.log) > start and time.monotonic() - last >= quiet_s:
                break
            if time.monotonic() - t0 > timeout_s:
                break
    finally:
        driver.quit()
    entries = server.log[start:]
    by_kind: dict[str, list[int]] = {}
    for path, _, sent, _ in entries:
        kind = path.strip("/").split("/")[0] or "/"
        k = by_kind.setdefault(kind, [0, 0])
        k[0] += 1
        k[1] += sent
    return {"requests": len(entries), "bytes": sum(e[2] for e in entries), "errors": sum(1 for e in entries if e[1] >= 400),
            "seconds_to_quiet": round((entries[-1][3] if entries else t0) - t0, 2), "by_layer": by_kind}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("analysis", type=Path)
    ap.add_argument("--workdir", type=Path, default=None, help="Where the exports go (default: a temporary folder, removed).")
    ap.add_argument("--quiet-s", type=float, default=4.0, help="A view is loaded after this long without a request.")
    ap.add_argument("--timeout-s", type=float, default=300.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from syconn_ng.layers import layer_box, open_layer

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_views_"))
    try:
        t0 = time.perf_counter()
        exports = make_exports(args.analysis, work)
        print(f"exports written in {time.perf_counter() - t0:.0f} s")
        shape = [int(v) for v in layer_box(open_layer(exports["after"] / "cells")).shape]
        factory = lambda: chromium_driver(window_size=(1400, 1400))  # noqa: E731  (a fresh browser: a cold cache)
        results = {"analysis": str(args.analysis), "shape_vx": shape, "quiet_s": args.quiet_s, "forms": {}}
        for form, dest in exports.items():
            server = LoggingServer(dest)
            state = json.loads((dest / "state.json").read_text().replace(PLACEHOLDER, server.url))
            files = [p for p in dest.rglob("*") if p.is_file()]
            results["forms"][form] = {"files": len(files), "bytes_on_disk": sum(p.stat().st_size for p in files), "views": {}}
            for view, vstate in view_states(state, shape).items():
                r = measure(factory, server, vstate, quiet_s=args.quiet_s, timeout_s=args.timeout_s)
                results["forms"][form]["views"][view] = r
                print(f"{form:6s} {view:9s} requests {r['requests']:6d}  MB {r['bytes'] / 1e6:8.2f}  errors {r['errors']}  "
                      f"loaded in {r['seconds_to_quiet']:.1f} s  {r['by_layer']}", flush=True)
        for view in ("overview", "zoomed_in"):
            b, a = results["forms"]["before"]["views"][view], results["forms"]["after"]["views"][view]
            results[f"ratio_{view}"] = {"requests": round(b["requests"] / max(a["requests"], 1), 2),
                                        "bytes": round(b["bytes"] / max(a["bytes"], 1), 2)}
            print(f"{view}: before / after = {results[f'ratio_{view}']['requests']}x requests, {results[f'ratio_{view}']['bytes']}x bytes")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
