"""Benchmark of CNN inference: megavoxels/s per CPU core (and on a GPU when torch sees one), FLOPs per voxel,
peak memory, and the simple alternative side by side: a naive sliding window (tiles side by side,
no overlap blending, one patch at a time) against the blended, batched tiling the stages use.

The seam column is the mean absolute jump of the output across naive tile borders divided by
the mean jump elsewhere (1.0 = no visible seam).
On a GPU the batch size is swept, and a "model only" row times the forward pass on device-resident
patches (no tiling, no host copies) so the gap to the device's peak and to the host-side tiling shows.
Usage: .venv/bin/python benchmarks/bench_cnn.py [--task barrier] [--shape 384 384 96] [--threads 1]
       python benchmarks/bench_cnn.py --devices cuda --random --shape 1024 1024 256 --batch-sizes 2 8 32
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import psutil


class PeakRSS:
    """Samples this process's resident memory every 10 ms; `.peak_mb` is the rise over the start."""

    def __enter__(self):
        self.proc = psutil.Process()
        self.start = self.proc.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def test_volume(shape, seed: int = 0) -> np.ndarray:
    """(X, Y, Z) uint8 synthetic tissue raw (the speed of a CNN does not depend on the content)."""
    import tempfile

    from syconn_ng.cnn.train import read_stack
    from syconn_ng.synth.generate import generate_tissue

    with tempfile.TemporaryDirectory() as d:
        generate_tissue(d, shape=tuple(shape), seed=seed)
        return read_stack(f"{d}/raw")


def seam_ratio(prob: np.ndarray, tile: int) -> float:
    """Mean |jump| along x at multiples of `tile` over the mean |jump| at the other x positions."""
    p = prob.astype(np.float32)
    jumps = np.abs(np.diff(p, axis=0)).mean(axis=(1, 2, 3))  # jump between x and x + 1
    at = np.arange(tile - 1, len(jumps), tile)
    other = np.setdiff1d(np.arange(len(jumps)), at)
    return float(jumps[at].mean() / max(jumps[other].mean(), 1e-9)) if len(at) else float("nan")


def run(predictor, raw, label: str, tile_x: int) -> dict:
    from syconn_ng.box import Box
    from syconn_ng.cnn.inference import output_tiles, predict_volume

    tiles = output_tiles(Box.from_shape(raw.shape), predictor.tile, predictor.overlap)
    passes = len(tiles) * int(np.prod(predictor.patch_size))
    predict_volume(predictor, raw[:64, :64, :16])  # warm-up (allocator, kernels)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        prob = predict_volume(predictor, raw)
        seconds = time.perf_counter() - t0
    return {"label": label, "seconds": seconds, "mvox_s": raw.size / seconds / 1e6, "tiles": len(tiles),
            "passes_per_voxel": passes / raw.size, "peak_mb": mem.peak_mb, "seam": seam_ratio(prob, tile_x)}


def model_only(predictor, batch_size: int, repeats: int = 20) -> dict:
    """Forward passes on device-resident patches (CUDA-synchronised): the model's own throughput, no tiling."""
    import torch

    cuda = predictor.device.startswith("cuda")
    x = torch.randn((batch_size, 1) + tuple(predictor.patch_size[::-1]), device=predictor.device)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
        for _ in range(3):
            predictor.module(x)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            predictor.module(x)
        if cuda:
            torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / repeats
    return {"seconds_per_batch": seconds, "mvox_s": batch_size * np.prod(predictor.patch_size) / seconds / 1e6}


def agreement(module, info, raw: np.ndarray, device: str, batch_size: int) -> dict:
    """The tiled prediction on `device` (float16 autocast on CUDA) against the CPU's float32, in uint8 steps."""
    from syconn_ng.cnn.inference import Predictor, predict_volume

    cpu = predict_volume(Predictor.from_model(module, info, batch_size=2, device="cpu"), raw).astype(np.int16)
    dev = predict_volume(Predictor.from_model(module, info, batch_size=batch_size, device=device), raw).astype(np.int16)
    diff = np.abs(cpu - dev)
    return {"max_abs": int(diff.max()), "mean_abs": float(diff.mean()), "frac_over_1": float(np.mean(diff > 1)),
            "frac_half_flipped": float(np.mean((cpu >= 128) != (dev >= 128)))}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", default="barrier", choices=["barrier", "organelles"])
    ap.add_argument("--shape", type=int, nargs=3, default=[384, 384, 96])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the per-core figure divides by this)")
    ap.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, and cuda when present)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32], help="GPU batch sizes of the blended tiling")
    ap.add_argument("--random", action="store_true", help="random uint8 input instead of synthetic tissue (same speed)")
    ap.add_argument("--agreement", default=None, metavar="RAW.npy",
                    help="also compare the GPU's tiled output with the CPU's on this (X, Y, Z) uint8 volume")
    ap.add_argument("--peak-tflops", type=float, default=790.0,
                    help="the GPU's dense fp16/bf16 peak for the fraction column (H200: ~790 measured, 990 datasheet)")
    args = ap.parse_args()

    import torch

    from syconn_ng.cnn.inference import Predictor
    from syconn_ng.cnn.model import count_parameters, flops_per_voxel
    from syconn_ng.cnn.modelfile import bundled_model_path, load_model

    torch.set_num_threads(args.threads)
    module, info = load_model(bundled_model_path(args.task), task=args.task)
    fpv = flops_per_voxel(info.spec)
    print(f"model: bundled {args.task}, U-Net width {info.spec.width} depth {info.spec.depth}, {count_parameters(module):,} parameters, "
          f"{fpv / 1e3:.1f} kFLOP per voxel per pass; patch {info.patch_size}, crop {info.output_crop}")
    raw = (np.random.default_rng(0).integers(0, 256, args.shape, dtype=np.uint8) if args.random else test_volume(args.shape))
    print(f"volume: {args.shape} = {raw.size / 1e6:.2f} Mvoxels of {'random input' if args.random else 'synthetic tissue'}; "
          f"CPU threads {args.threads}")
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    header = f"{'device':6} {'variant':34} {'s':>7} {'Mvox/s':>8} {'/core':>7} {'GFLOP/s':>8} {'passes/vox':>10} {'peak MB':>8} {'seam':>5}"
    print(header)
    for dev in devices:
        naive_p = Predictor.from_model(module, info, overlap=(0, 0, 0), batch_size=1, device=dev)
        rows = [run(naive_p, raw, "naive (no overlap, 1 patch a time)", naive_p.tile[0])]
        for b in [2] if dev == "cpu" else args.batch_sizes:
            blended_p = Predictor.from_model(module, info, batch_size=b, device=dev)
            rows.append(run(blended_p, raw, f"blended (overlap {list(blended_p.overlap)}, batch {b})", naive_p.tile[0]))
        if dev != "cpu" and args.agreement:
            a = agreement(module, info, np.load(args.agreement), dev, max(args.batch_sizes))
            print(f"{dev} vs cpu on {args.agreement}: max |diff| {a['max_abs']} / 255, mean {a['mean_abs']:.4f}, "
                  f"{100 * a['frac_over_1']:.4f} % of values differ by > 1, {100 * a['frac_half_flipped']:.4f} % change side of 0.5")
        if dev != "cpu":
            for b in args.batch_sizes:
                m = model_only(Predictor.from_model(module, info, batch_size=b, device=dev), b)
                tflops = m["mvox_s"] * 1e6 * fpv / 1e12
                print(f"{dev}: model only, batch {b}: {m['mvox_s']:.0f} Mvox/s of input patches = {tflops:.1f} TFLOP/s "
                      f"= {100 * tflops / args.peak_tflops:.2f} % of {args.peak_tflops:g} TFLOP/s; "
                      f"{m['mvox_s'] * 3.6:.0f} Gvox/h")
        for r in rows:
            per_core = r["mvox_s"] / args.threads if dev == "cpu" else float("nan")
            gflops = r["mvox_s"] * 1e6 * r["passes_per_voxel"] * fpv / 1e9
            print(f"{dev:6} {r['label']:34} {r['seconds']:7.2f} {r['mvox_s']:8.3f} {per_core:7.3f} {gflops:8.1f} "
                  f"{r['passes_per_voxel']:10.2f} {r['peak_mb']:8.0f} {r['seam']:5.2f}")
        print(f"{dev}: best blended / naive throughput = {max(r['mvox_s'] for r in rows[1:]) / rows[0]['mvox_s']:.2f}x; "
              f"best {max(r['mvox_s'] for r in rows) * 3.6:.1f} Gvox/h (SyConn2: 4.4 Gvox/h per GPU)")


if __name__ == "__main__":
    main()
