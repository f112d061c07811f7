"""Benchmark of downsampling: tinybrain (`syconn_ng.downsample.reduce_block`) next to the plain alternatives.

In one process on one core: a 3-channel uint8 probability block averaged 2x2x1 then 2x2x2, against a numpy
reshape-mean; a uint64 segmentation block reduced by mode, against `scipy.stats.mode` over the children.
Reports input megavoxels per second (voxels of the block, all channels) and the peak memory above the
input (the kernel's resident high-water mark, reset before each run). Then the whole `syconn-ng downsample` path (tasks on a 1-worker pool,
chunks on local disk) on the same image. Both alternatives give the same means; scipy's mode is compared too.
Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_downsample.py [--shape 256,256,128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from syconn_ng.downsample import reduce_block


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakRSS:
    """Peak resident memory of this process above its level at entry: the kernel's high-water mark (VmHWM),
    reset at entry through /proc/self/clear_refs, so no sampling thread can miss a peak inside C code."""

    def __enter__(self):
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")
        self.base = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc):
        self.mib = max(0, _status_kib("VmHWM") - self.base) / 1024


def _children(block: np.ndarray, factor) -> np.ndarray:
    """(X', Y', Z', C, n) children of each coarse voxel (sizes divisible by the factor)."""
    f = factor
    x, y, z, c = block.shape
    r = block.reshape(x // f[0], f[0], y // f[1], f[1], z // f[2], f[2], c)
    return r.transpose(0, 2, 4, 6, 1, 3, 5).reshape(x // f[0], y // f[1], z // f[2], c, -1)


def numpy_mean(block: np.ndarray, factor) -> np.ndarray:
    return np.floor(_children(block, factor).mean(axis=-1)).astype(block.dtype)


def scipy_mode(block: np.ndarray, factor) -> np.ndarray:
    from scipy import stats

    return stats.mode(_children(block, factor), axis=-1, keepdims=False).mode.astype(block.dtype)


def timed(func, repeat: int):
    """(best seconds, peak MiB, result) of `func()` over `repeat` runs."""
    best, peak, out = float("inf"), 0.0, None
    for _ in range(repeat):
        out = None
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            out = func()
            best = min(best, time.perf_counter() - t0)
        peak = max(peak, mem.mib)
    return best, peak, out


def main():
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:  # a fixed threshold: large buffers are fresh mappings, so the peak counts them
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="256,256,128", help="block size x,y,z (even)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-engine", action="store_true", help="skip the end-to-end command timing")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    rng = np.random.default_rng(0)
    image = np.asfortranarray(rng.integers(0, 256, shape + (3,), dtype=np.uint8))
    coarse = rng.integers(1, 200, tuple(s // 4 for s in shape)).astype(np.uint64) + np.uint64(2**40)
    seg = np.repeat(np.repeat(np.repeat(coarse, 4, 0), 4, 1), 4, 2)
    noise = rng.random(shape) < 0.2  # boundaries and noise: blocks with several ids
    seg[noise] = rng.integers(1, 200, int(noise.sum())).astype(np.uint64) + np.uint64(2**40)
    seg = np.asfortranarray(seg[..., None])

    print(f"block {shape}, 1 core (OMP_NUM_THREADS should be 1); best of {args.repeat}; Mvox/s = input voxels x channels per second")
    print(f"{'case':34s} {'method':>16s} {'s':>7s} {'Mvox/s':>8s} {'peak MiB':>9s} {'tinybrain / alt':>16s}")
    rows = [("uint8 x3, average 2x2x1", image, (2, 2, 1), "average", numpy_mean, "numpy reshape-mean"),
            ("uint8 x3, average 2x2x2", image, (2, 2, 2), "average", numpy_mean, "numpy reshape-mean"),
            ("uint64, mode 2x2x1", seg, (2, 2, 1), "mode", scipy_mode, "scipy.stats.mode"),
            ("uint64, mode 2x2x2", seg, (2, 2, 2), "mode", scipy_mode, "scipy.stats.mode")]
    for name, block, factor, method, alt, alt_name in rows:
        mvox = block.size / 1e6
        s_tb, m_tb, out_tb = timed(lambda: reduce_block(block, factor, method=method), args.repeat)
        s_alt, m_alt, out_alt = timed(lambda: alt(block, factor), args.repeat)
        same = np.mean(out_tb == out_alt)
        print(f"{name:34s} {'tinybrain':>16s} {s_tb:7.3f} {mvox / s_tb:8.1f} {m_tb:9.0f} {s_alt / s_tb:15.1f}x")
        print(f"{'':34s} {alt_name:>16s} {s_alt:7.3f} {mvox / s_alt:8.1f} {m_alt:9.0f}   (same output: {100 * same:.2f} % of voxels)")

    if args.no_engine:
        return
    from syconn_ng.config import Config
    from syconn_ng.downsample import DownsampleStage, DownsampleTarget
    from syconn_ng.engine import LocalExecutor, run_stage
    from syconn_ng.layers import create_layer, layer_box, write_box

    tmp = Path(tempfile.mkdtemp(prefix="bench_downsample_"))
    try:
        vol = create_layer(tmp / "img", layer_type="image", dtype=np.uint8, voxel_size_nm=(10, 10, 20), shape=shape,
                           chunk_size=(64, 64, 32), num_channels=3)
        write_box(vol, layer_box(vol), image)
        ex = LocalExecutor(1)
        try:
            list(ex.map_unordered(int, [("1",)]))  # start the worker before timing
            stage = DownsampleStage(vol.cloudpath, max_mips=-1, min_size_vx=32)
            t0 = time.perf_counter()
            report = run_stage(stage, DownsampleTarget(Config(), tmp / "state"), progress=False, executor=ex)
            s = time.perf_counter() - t0
        finally:
            ex.close()
        print(f"{'syconn-ng downsample (1 worker)':34s} {'tasks + disk':>16s} {s:7.3f} {image.size / 1e6 / s:8.1f} {'':>9s}"
              f"   ({report.ran} tasks, all mips of the uint8 x3 layer read from and written to local disk)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
