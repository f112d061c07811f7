"""Before/after of the hot spots fixed after profiling the pipeline (docs/performance.md), side by side in one process.

1. CNN inference (the slowest stage): the trained module as it is (eval mode) against
   `syconn_ng.cnn.inference.inference_module` (BatchNorm folded into the convolutions, channels-last
   3D layout on CPU), on the bundled barrier and organelle U-Nets, one torch thread, a batch of two
   patches of each model's own size; alternating runs, CPU seconds and wall seconds, largest
   difference of the probabilities.

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


if __name__ == "__main__":
    main()
