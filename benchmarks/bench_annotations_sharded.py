"""Benchmark: a million synapses as a sharded precomputed annotation layer, and the requests a viewer makes.

Writes N synapses (default 1,000,000) between C cells (default 100,000) in a 200 × 200 × 200 µm volume
with the pipeline's own writer (`syconn_ng.stages.synapses.write_synapse_layer`, sharded) in a child
process, so wall time and peak memory (max RSS) are the writer's alone. Positions cluster around the
postsynaptic cell's centre (σ 5 µm), partners are drawn with a heavy tail, so the spatial index meets
dense regions. Then it reads the layer back with Neuroglancer's own annotation reader (by id, by
relationship, spatially, checked against the table) and counts the HTTP range requests Neuroglancer needs with a cold cache
(per sharded key: the minishard's 16-byte entry in the shard index, the minishard index, the data;
the first two once per minishard) for a zoomed-out view, a zoomed-in view, a by-id and a
by-relationship lookup. The unsharded form's file count is the number of keys the shards hold.

Run: .venv/bin/python benchmarks/bench_annotations_sharded.py [--n 1000000 --cells 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VOXEL_SIZE_NM = (10.0, 10.0, 20.0)
VOLUME_VX = np.array([20000, 20000, 10000])  # 200 × 200 × 200 µm

CHILD = r"""
import json, resource, sys, time
import numpy as np
import pandas as pd
sys.path.insert(0, sys.argv[4])
from bench_annotations_sharded import synapses
from syconn_ng.stages.synapses import write_synapse_layer
out, n, cells = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
syn = synapses(n, cells)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
s = write_synapse_layer(out, syn, (10.0, 10.0, 20.0), sharded=True)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_mib": rss0 / 1024, "files": s["files"], "bytes": s["bytes"], "limits": s["limits"]}))
"""


def synapses(n: int, n_cells: int, seed: int = 0):
    """A synapse table (the columns `write_synapse_layer` reads) of `n` synapses between `n_cells` cells."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    centre = rng.uniform(0, VOLUME_VX, (n_cells, 3))
    weight = 1.0 / np.arange(1, n_cells + 1) ** 0.5  # a few cells receive many synapses
    weight /= weight.sum()
    post = rng.choice(n_cells, n, p=weight)
    pre = rng.choice(n_cells, n, p=weight[rng.permutation(n_cells)])
    sigma_vx = 5000.0 / np.asarray(VOXEL_SIZE_NM)
    pos = np.clip(centre[post] + rng.normal(0, 1, (n, 3)) * sigma_vx, 0, VOLUME_VX - 1).round(2)
    return pd.DataFrame({"id": np.arange(1, n + 1, dtype=np.uint64), "pre_cell": (pre + 1).astype(np.uint64),
                         "post_cell": (post + 1).astype(np.uint64), "x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2],
                         "area_um2": rng.uniform(0.01, 0.5, n).round(5), "probability": rng.uniform(0.5, 1, n).round(4),
                         "type": np.where(rng.random(n) < 0.2, "symmetric", "asymmetric")})


def _spec(sharding: dict):
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

    return ShardingSpecification.from_dict(sharding)


def cold_requests(sharding: dict, keys) -> int:
    """Range requests for `keys` of one sharded index with an empty cache: 2 per distinct minishard + 1 per key."""
    spec = _spec(sharding)
    minishards = {(loc.shard_number, loc.minishard_number) for loc in (spec.compute_shard_location(int(k)) for k in keys)}
    return 2 * len(minishards) + len(list(keys))


def view_requests(info: dict, lo_vx, hi_vx, levels: int) -> dict:
    """Spatial cells of the first `levels` levels intersecting the box [lo_vx, hi_vx), and the cold requests for them."""
    from syconn_ng.sharding import compressed_morton

    lower = np.asarray(info["lower_bound"], float)
    cells, requests, per_level = 0, 0, []
    for level in info["spatial"][:levels]:
        chunk, grid = np.asarray(level["chunk_size"], float), np.asarray(level["grid_shape"])
        a = np.clip(np.floor((np.asarray(lo_vx) - lower) / chunk).astype(int), 0, grid - 1)
        b = np.clip(np.ceil((np.asarray(hi_vx) - lower) / chunk).astype(int), 1, grid)
        grid_cells = [(x, y, z) for x in range(a[0], b[0]) for y in range(a[1], b[1]) for z in range(a[2], b[2])]
        keys = [compressed_morton(c, grid) for c in grid_cells]
        per_level.append(len(keys))
        cells += len(keys)
        requests += cold_requests(level["sharding"], keys)
    return {"cells": cells, "cells_per_level": per_level, "requests": requests}


def read_back(layer: Path, syn) -> dict:
    """Neuroglancer's own reader (tensorstore's sharded kvstore) on the layer: by id, by relationship, a 2 µm box
    (every level, compared with the table); plus the shard index checks."""
    from neuroglancer.read_precomputed_annotations import AnnotationReader

    from syconn_ng.sharding import check_shards

    reader = AnnotationReader("file://" + str(layer))
    info = json.loads((layer / "info").read_text())
    t0 = time.perf_counter()
    row = syn.iloc[len(syn) // 2]
    np.testing.assert_allclose(reader.by_id[int(row["id"])].point, [row["x"] + 0.5, row["y"] + 0.5, row["z"] + 0.5], rtol=1e-6)
    busiest = int(syn["post_cell"].value_counts().index[0])
    rel = reader.relationships["post_cell"][busiest]
    assert sorted(int(a.id) for a in rel) == sorted(syn.loc[syn["post_cell"] == busiest, "id"].astype(int).tolist())
    lo = np.floor(row[["x", "y", "z"]].to_numpy(float)) - [100, 100, 50]
    hi = lo + [200, 200, 100]
    pos = syn[["x", "y", "z"]].to_numpy(float) + 0.5
    truth = set(syn.loc[np.all((pos >= lo) & (pos < hi), axis=1), "id"].astype(int))
    got = {int(a.id) for a in reader.get_within_spatial_bounds(lower_bound=lo, upper_bound=hi)}
    assert got == truth, (len(got), len(truth))
    seconds = time.perf_counter() - t0
    keys = {}
    for index in [info["by_id"]] + info["relationships"] + info["spatial"]:
        keys[index["key"]] = check_shards(layer / index["key"], index["sharding"])["keys"]
    return {"read_seconds": seconds, "busiest_cell": busiest, "busiest_synapses": len(rel),
            "box_annotations": len(got), "keys": keys, "info": info, "zoom_in_lo": lo}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--keep", type=Path, default=None, help="write the layer here and keep it")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_annotations_sharded_"))
    out = args.keep or tmp / "synapses"
    try:
        load0 = os.getloadavg()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(out), str(args.n), str(args.cells), str(Path(__file__).parent)],
                              capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        w = json.loads(proc.stdout.strip().splitlines()[-1])
        load1 = os.getloadavg()
        syn = synapses(args.n, args.cells)
        r = read_back(out, syn)
        info = r["info"]
        files = [p for p in out.rglob("*") if p.is_file()]
        mib = sum(f.stat().st_size for f in files) / 2**20
        unsharded_files = 1 + sum(r["keys"].values())
        n_levels = len(info["spatial"])
        whole_lo, whole_hi = info["lower_bound"], info["upper_bound"]
        zoom_lo = r["zoom_in_lo"]
        views = {
            "zoomed out (whole volume, level 0)": view_requests(info, whole_lo, whole_hi, 1),
            "zoomed out (whole volume, levels 0-1)": view_requests(info, whole_lo, whole_hi, 2),
            "zoomed in (2 x 2 x 2 um, every level)": view_requests(info, zoom_lo, zoom_lo + np.array([200, 200, 100]), n_levels),
        }
        by_id = cold_requests(info["by_id"]["sharding"], [int(syn["id"].iloc[len(syn) // 2])])
        by_rel = cold_requests(info["relationships"][1]["sharding"], [r["busiest_cell"]])
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.n:,} synapses between {args.cells:,} cells, 200 x 200 x 200 um (10 x 10 x 20 nm voxels); sharded; "
          f"{os.cpu_count()}-core VM, load average {load0[0]:.1f} before, {load1[0]:.1f} after the write")
    print(f"write: {w['seconds']:.1f} s ({args.n / w['seconds']:,.0f} synapses/s), peak RSS {w['peak_rss_mib']:.0f} MiB "
          f"({w['rss_before_mib']:.0f} MiB before the write: the table)")
    print(f"files: {len(files):,} sharded ({mib:.1f} MiB) vs {unsharded_files:,} unsharded "
          f"(keys: {', '.join(f'{k} {v:,}' for k, v in r['keys'].items())})")
    print(f"spatial levels: {n_levels}; limit per level: {info['spatial'][0]['limit']:,} ... {info['spatial'][-1]['limit']:,} "
          f"({', '.join(str(lv['limit']) for lv in info['spatial'])})")
    print("cold-cache range requests (sharded; unsharded = one request per cell or key):")
    for name, v in views.items():
        print(f"  {name:40} {v['requests']:4} requests for {v['cells']} spatial cells {v['cells_per_level']}")
    print(f"  {'by id (one synapse)':40} {by_id:4} requests (unsharded: 1)")
    print(f"  {'by relationship (post_cell, busiest cell)':40} {by_rel:4} requests for {r['busiest_synapses']:,} synapses (unsharded: 1)")
    print(f"read back with Neuroglancer's reader (by id, by relationship, the 2 um box: {r['box_annotations']} synapses, "
          f"as in the table) in {r['read_seconds']:.1f} s")


if __name__ == "__main__":
    main()
