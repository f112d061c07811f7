"""Before/after of the hot spots fixed after profiling the pipeline (docs/performance.md), side by side in one process.

1. CNN inference (the slowest stage): the trained module as it is (eval mode) against
   `syconn_ng.cnn.inference.inference_module` (BatchNorm folded into the convolutions, channels-last
   3D layout on CPU), on the bundled barrier and organelle U-Nets, one torch thread, a batch of two
   patches of each model's own size; alternating runs, CPU seconds and wall seconds, largest
   difference of the probabilities.
2. Hull voxelisation (the slowest step of the slowest CPU stage, `hulls`): `rasterize_stars` with the
   previous per-node claim (four gathers from strided plane columns, one temporary per term) against
   the current one (contiguous columns, in-place sums), on 400 star-shaped node regions in a
   128 x 128 x 64 box; CPU seconds and whether the labels are identical.

    .venv/bin/python benchmarks/bench_hotspots.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def time_forward(module, x, rounds_out: list) -> np.ndarray:
    """One forward pass; appends (wall s, CPU s) to `rounds_out`; returns the probabilities."""
    import torch

    w0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        y = torch.sigmoid(module(x)).numpy()
    rounds_out.append((time.perf_counter() - w0, time.process_time() - c0))
    return y


def cnn_before_after(task: str, rounds: int) -> dict:
    import torch

    from syconn_ng.cnn.inference import inference_module
    from syconn_ng.cnn.modelfile import bundled_model_path, load_model

    module, info = load_model(bundled_model_path(task))
    fast = inference_module(module, "cpu")
    px, py, pz = info.patch_size
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 1, pz, py, px)).astype(np.float32))
    xc = x.contiguous(memory_format=torch.channels_last_3d)
    before, after = [], []
    time_forward(fast, xc, [])  # warm-up (allocator, oneDNN kernels)
    for _ in range(rounds):
        y0 = time_forward(module, x, before)
        y1 = time_forward(fast, xc, after)
    b, a = np.median(before, axis=0), np.median(after, axis=0)
    vox = 2 * int(np.prod(np.asarray(info.patch_size) - 2 * np.asarray(info.output_crop)))
    return {"task": task, "patch": list(info.patch_size), "before_s": b.tolist(), "after_s": a.tolist(),
            "cpu_ratio": float(b[1] / a[1]), "wall_ratio": float(b[0] / a[0]), "max_abs_diff": float(np.abs(y0 - y1).max()),
            "mvox_per_cpu_s_after": vox / 1e6 / a[1]}


def claim_before(out, best, sub, start, centre, dist, bins, planes, label, vs) -> None:
    """`syconn_ng.hulls.voxelize._claim` before the fix (the same rule)."""
    ox, oy, oz = ((np.arange(a, b) - c).astype(np.float32) * np.float32(v) for a, b, c, v in zip(sub.start, sub.stop, centre, vs))
    inside = (ox[:, None, None] * planes[:, 0][bins] + oy[None, :, None] * planes[:, 1][bins]
              + oz[None, None, :] * planes[:, 2][bins]) <= planes[:, 3][bins]
    o = sub.slices(relative_to=start)
    claim = inside & (dist < best[o])
    best[o][claim] = dist[claim]
    out[o][claim] = label


def voxelize_before_after(rounds: int, n_nodes: int = 400, seed: int = 0) -> dict:
    from syconn_ng.box import Box
    from syconn_ng.hulls import voxelize

    rng = np.random.default_rng(seed)
    vs = (10.0, 10.0, 20.0)
    box = Box((0, 0, 0), (128, 128, 64))
    nodes_vx = rng.uniform((0, 0, 0), box.stop, (n_nodes, 3))
    radius = rng.uniform(100, 400, n_nodes)
    dirs = rng.normal(size=(n_nodes, 100, 3))
    dirs /= np.linalg.norm(dirs, axis=2, keepdims=True)
    lengths = radius[:, None] * rng.uniform(0.7, 1.3, (n_nodes, 100))
    points_nm = (nodes_vx * vs)[:, None] + dirs * lengths[..., None]
    planes = voxelize.node_planes(nodes_vx * vs, points_nm.reshape(-1, 3), np.repeat(np.arange(n_nodes), 100), n_bins=12, max_gap_deg=35.0)
    reach = lengths.max(axis=1)
    labels = rng.integers(1, 50, n_nodes).astype(np.uint64)
    current = voxelize._claim
    times = {"before": [], "after": []}
    results = {}
    try:
        for _ in range(rounds):
            for name, fn in (("before", claim_before), ("after", current)):
                voxelize._claim = fn
                c0 = time.process_time()
                results[name] = voxelize.rasterize_stars(box, nodes_vx, planes, reach, labels, voxel_size_nm=vs, n_bins=12)
                times[name].append(time.process_time() - c0)
    finally:
        voxelize._claim = current
    b, a = float(np.median(times["before"])), float(np.median(times["after"]))
    return {"before_s": b, "after_s": a, "cpu_ratio": b / a, "identical": bool(np.array_equal(results["before"], results["after"]))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}, 1 thread")
    print(f"{'hot spot':34s} {'before CPU s':>12s} {'after CPU s':>11s} {'CPU ratio':>9s} {'wall ratio':>10s} {'max |diff|':>10s}")
    for task in ("barrier", "organelles"):
        r = cnn_before_after(task, args.rounds)
        print(f"{'CNN forward, ' + task:34s} {r['before_s'][1]:12.2f} {r['after_s'][1]:11.2f} {r['cpu_ratio']:8.2f}x "
              f"{r['wall_ratio']:9.2f}x {r['max_abs_diff']:10.1e}")
    r = voxelize_before_after(args.rounds)
    print(f"{'hull voxelisation (rasterize_stars)':34s} {r['before_s']:12.2f} {r['after_s']:11.2f} {r['cpu_ratio']:8.2f}x "
          f"{'':>10s} {'identical' if r['identical'] else 'DIFFERENT':>10s}")


if __name__ == "__main__":
    main()
