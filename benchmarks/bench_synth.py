"""Synthetic tissue generation: speed (voxels/s) and peak memory, against simple alternatives.

1. `generate_tissue` end to end per volume size, each in a fresh process (peak RSS of that
   process), chunked 128x128x64, next to the same volume generated as ONE chunk (what an
   unchunked generator holds in memory).
2. Rasterising one chunk with per-capsule bounding-box culling (what the generator does) next to
   evaluating every capsule on the whole chunk (the simple alternative); the labels must agree.

    .venv/bin/python benchmarks/bench_synth.py                  # 256^3 and 512x512x256
    .venv/bin/python benchmarks/bench_synth.py --sizes 128,128,64 --no-unchunked
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time

import numpy as np


def _generate(shape, chunk, queue):
    from syconn_ng.synth.generate import generate_tissue

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        stats = generate_tissue(d, shape=shape, seed=1, chunk_size=chunk)
        wall = time.perf_counter() - t
    queue.put((wall, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, stats["cells"], stats["synapses"]))


def run_generation(shape, chunk):
    """(seconds, peak RSS MiB, cells, synapses) of one generation in a fresh process."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_generate, args=(shape, chunk, q))
    p.start()
    result = q.get()
    p.join()
    return result


def naive_owner(tissue, box):
    """Owner labels of `box` evaluating every capsule on every voxel (no culling)."""
    from syconn_ng.synth.raster import _capsule_sd, _grids, _merge

    vs = np.asarray(tissue.voxel_size_nm)
    grids = _grids(box, vs)
    fill = np.float32(tissue.fill_nm)
    sd1 = np.full(box.shape, fill, np.float32)
    sd2 = sd1.copy()
    id1 = np.zeros(box.shape, np.int32)
    id2 = id1.copy()
    for i in range(len(tissue.cap_a)):
        d, _ = _capsule_sd(box, box, grids, tissue.cap_a[i], tissue.cap_b[i], tissue.cap_ra[i], tissue.cap_rb[i])
        _merge(sd1, id1, sd2, id2, d, int(tissue.cap_cell[i]) + 1)
    return id1


def bench_raster(shape):
    from syconn_ng.box import Box
    from syconn_ng.synth.raster import rasterise
    from syconn_ng.synth.tissue import build_tissue

    tissue = build_tissue(shape, (10, 10, 20), 1)
    box = Box((0, 0, 0), (128, 128, 64))
    t = time.perf_counter()
    fields = rasterise(tissue, box)
    culled = time.perf_counter() - t
    t = time.perf_counter()
    owner = naive_owner(tissue, box)
    naive = time.perf_counter() - t
    assert np.array_equal(owner, fields.owner), "culling changed the labels"
    return culled, naive, len(tissue.cap_a)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["256,256,256", "512,512,256"], help="volume shapes X,Y,Z")
    ap.add_argument("--no-unchunked", action="store_true", help="skip the one-chunk comparison")
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes]

    print("generation (seed 1, 10x10x20 nm, fresh process each)")
    print(f"{'shape':>14} {'chunking':>12} {'seconds':>8} {'Mvox/s':>7} {'peak MiB':>9} {'cells':>6} {'synapses':>8}")
    for shape in sizes:
        n = int(np.prod(shape))
        wall, rss, cells, syn = run_generation(shape, (128, 128, 64))
        print(f"{'x'.join(map(str, shape)):>14} {'128x128x64':>12} {wall:8.1f} {n / wall / 1e6:7.2f} {rss:9.0f} {cells:6d} {syn:8d}")
        if not args.no_unchunked and n <= 256**3:
            wall1, rss1, _, _ = run_generation(shape, shape)
            print(f"{'x'.join(map(str, shape)):>14} {'one chunk':>12} {wall1:8.1f} {n / wall1 / 1e6:7.2f} {rss1:9.0f}"
                  f"   (chunked peak = {rss / rss1:.2f} x one-chunk peak)")

    culled, naive, n_caps = bench_raster(sizes[0])
    vox = 128 * 128 * 64
    print(f"\nrasterising one 128x128x64 chunk of the {'x'.join(map(str, sizes[0]))} tissue ({n_caps} capsules)")
    print(f"  bounding-box culling : {culled:7.2f} s  {vox / culled / 1e6:6.2f} Mvox/s")
    print(f"  every capsule        : {naive:7.2f} s  {vox / naive / 1e6:6.2f} Mvox/s")
    print(f"  speed-up             : {naive / culled:7.1f} x (identical labels)")


if __name__ == "__main__":
    main()
