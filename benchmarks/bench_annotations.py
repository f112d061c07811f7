"""Benchmark: writing 100,000 synapse annotations as a precomputed annotation layer.

syconn_ng's writer (`syconn_ng.annotations.write_annotations`: multi-level spatial index, spec byte layout)
side by side with the released `neuroglancer.write_annotations.AnnotationWriter` (one spatial cell).
Each writer runs in its own subprocess so its peak memory (max RSS) is its own. Also checks, with a
decoder written from the spec, whether each writer's uint32 property survives next to a float32.

Run: .venv/bin/python benchmarks/bench_annotations.py [--n 100000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np
which, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
pts = rng.uniform([0, 0, 0], [4096, 4096, 2048], (n, 3)).round(2)
ids = np.arange(1, n + 1, dtype=np.uint64)
area = rng.uniform(0.01, 0.5, n).astype(np.float32)
prob = rng.uniform(0.5, 1, n).astype(np.float32)
sj = rng.integers(2**31, 2**32, n, dtype=np.uint64).astype(np.uint32)
typ = rng.integers(0, 2, n).astype(np.uint8)
pre = rng.integers(1, 3000, n).astype(np.uint64)
post = rng.integers(1, 3000, n).astype(np.uint64)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if which == "syconn_ng":
    from syconn_ng.annotations import write_annotations
    s = write_annotations(out, ids=ids, points_vx=pts, voxel_size_nm=(10, 10, 20),
                          properties={"area": area, "probability": prob, "sj_id": sj, "type": typ},
                          relationships={"pre_cell": pre, "post_cell": post}, enum_labels={"type": {0: "asymmetric", 1: "symmetric"}})
    levels = s["levels"]
else:
    import neuroglancer
    from neuroglancer import write_annotations as nwa
    cs = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[10, 10, 20])
    w = nwa.AnnotationWriter(cs, "point", relationships=["pre_cell", "post_cell"], properties=[
        neuroglancer.AnnotationPropertySpec(id="area", type="float32"),
        neuroglancer.AnnotationPropertySpec(id="probability", type="float32"),
        neuroglancer.AnnotationPropertySpec(id="sj_id", type="uint32"),
        neuroglancer.AnnotationPropertySpec(id="type", type="uint8", enum_values=[0, 1], enum_labels=["asymmetric", "symmetric"])])
    for i in range(n):
        w.add_point(pts[i] + 0.5, id=int(ids[i]), area=float(area[i]), probability=float(prob[i]), sj_id=int(sj[i]),
                    type=int(typ[i]), pre_cell=int(pre[i]), post_cell=int(post[i]))
    w.write(out)
    levels = 1
dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": dt, "peak_rss_mib": rss / 1024, "rss_before_mib": rss0 / 1024, "levels": levels,
                  "first_sj_id": int(sj[0]), "first_area": float(area[0])}))
"""

SIZES = {"float32": 4, "uint32": 4, "int32": 4, "uint16": 2, "int16": 2, "uint8": 1, "int8": 1}
FMT = {"float32": "<f", "uint32": "<I", "int32": "<i", "uint16": "<H", "int16": "<h", "uint8": "<B", "int8": "<b"}


def spec_props(info: dict, buf: bytes) -> dict:
    """Properties of a by_id value decoded as the spec lays them out (geometry, 4-, 2-, 1-byte groups)."""
    pos, out = 12, {}
    for size in (4, 2, 1):
        for p in info["properties"]:
            if SIZES[p["type"]] == size:
                out[p["id"]] = struct.unpack_from(FMT[p["type"]], buf, pos)[0]
                pos += size
    return out


def layer_stats(path: Path) -> dict:
    files = [f for f in path.rglob("*") if f.is_file()]
    info = json.loads((path / "info").read_text())
    spatial = [len(list((path / s["key"]).iterdir())) for s in info["spatial"]]
    return {"files": len(files), "mib": sum(f.stat().st_size for f in files) / 2**20, "spatial_cells": spatial,
            "limits": [s["limit"] for s in info["spatial"]], "info": info}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_annotations_"))
    rows = {}
    try:
        for which in ("syconn_ng", "neuroglancer"):
            out = tmp / which
            proc = subprocess.run([sys.executable, "-c", CHILD, which, str(out), str(args.n)], capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            st = layer_stats(out)
            got = spec_props(st["info"], (out / "by_id" / "1").read_bytes())
            r.update(st, uint32_ok=got["sj_id"] == r["first_sj_id"], float32_ok=abs(got["area"] - r["first_area"]) < 1e-6)
            rows[which] = r
            shutil.rmtree(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.n:,} point annotations (4 properties: 2 float32, uint32, uint8; 2 relationships), 2-core VM, local ext4")
    print(f"{'writer':14} {'s':>7} {'ann/s':>9} {'peak MiB':>9} {'files':>7} {'MiB':>6} {'levels':>6}  spatial cells / limit per level   uint32 read back")
    for which, r in rows.items():
        cells = ", ".join(f"{c}/{lim}" for c, lim in zip(r["spatial_cells"], r["limits"]))
        print(f"{which:14} {r['seconds']:7.2f} {args.n / r['seconds']:9,.0f} {r['peak_rss_mib']:9.0f} {r['files']:7,} {r['mib']:6.1f} "
              f"{len(r['limits']):6}  {cells:32}  {'right' if r['uint32_ok'] else 'WRONG'}")
    a, b = rows["syconn_ng"], rows["neuroglancer"]
    print(f"speed ratio syconn_ng / neuroglancer: {b['seconds'] / a['seconds']:.1f}x; "
          f"peak memory ratio: {a['peak_rss_mib'] / b['peak_rss_mib']:.2f}")
    print("largest spatial cell the viewer must download first: "
          f"syconn_ng {a['limits'][0]:,} annotations, neuroglancer {b['limits'][0]:,}")


if __name__ == "__main__":
    main()
