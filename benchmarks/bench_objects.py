"""Benchmark of the `objects` stage: megavoxels/s per worker and peak memory per worker.

Runs the real stage (precomputed layers on local disk, spawn process pool) on random-blob
volumes of 256³ and 512³ with 1 and 2 workers, next to the simple alternative: the whole
thresholded volume labelled in memory with `scipy.ndimage.label` (26-connectivity).
Usage: .venv/bin/python benchmarks/bench_objects.py [--sizes 256 512] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from syconn_ng.analysis import Analysis
from syconn_ng.box import Box
from syconn_ng.config import Config, write_config
from syconn_ng.engine import LocalExecutor, run_stage
from syconn_ng.layers import create_layer, write_box
from syconn_ng.stages.objects import ORGANELLES, STAGE, threshold_u8


def blob_volume(n: int, seed: int = 0) -> np.ndarray:
    """(n, n, n, 3) uint8: random balls (radius 2-10 voxels, ~5 % of the volume per channel) of random intensity."""
    rng = np.random.default_rng(seed)
    prob = np.zeros((n, n, n, 3), dtype=np.uint8)
    for c in range(3):
        for _ in range(int(0.05 * n**3 / 1000)):
            r = int(rng.integers(2, 11))
            g = np.indices((2 * r + 1,) * 3) - r
            ball = ((g**2).sum(0) <= r * r) * np.uint8(rng.integers(60, 256))
            x, y, z = rng.integers(0, n - 2 * r - 1, size=3)
            sub = prob[x:x + 2 * r + 1, y:y + 2 * r + 1, z:z + 2 * r + 1, c]
            np.maximum(sub, ball, out=sub)
    return prob


class PeakRSS:
    """Samples the resident memory of this process's children (the workers) every 20 ms."""

    def __enter__(self):
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    self.peak[child.pid] = max(self.peak.get(child.pid, 0), child.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_stage_once(root: Path, prob: np.ndarray, workers: int) -> tuple[float, int]:
    """Seconds of the whole stage and the peak RSS (bytes) of its busiest worker."""
    shutil.rmtree(root, ignore_errors=True)
    vol = create_layer(root / "layers/organelles", layer_type="image", dtype=np.uint8, voxel_size_nm=(10, 10, 20),
                       shape=prob.shape[:3], chunk_size=(128, 128, 64), num_channels=3)
    for box in Box.from_shape(prob.shape[:3]).chunks((256, 256, 128)):  # write in slabs: no full copy
        write_box(vol, box, prob[box.slices()])
    cfg = Config()
    cfg.dataset.voxel_size_nm = [10, 10, 20]
    write_config(cfg, root)
    analysis = Analysis.open(root)
    ex = LocalExecutor(workers)
    try:
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            run_stage(STAGE, analysis, executor=ex, progress=False)
            seconds = time.perf_counter() - t0
    finally:
        ex.close()
    return seconds, max(mem.peak.values())


def scipy_label_once(prob: np.ndarray) -> tuple[float, int]:
    """Seconds and extra peak RSS (bytes, sampled) of labelling the three channels in memory with scipy."""
    from scipy import ndimage

    me = psutil.Process()
    base = me.memory_info().rss
    peak = base
    t0 = time.perf_counter()
    for c, kind in enumerate(ORGANELLES):
        thr = threshold_u8(getattr(Config().objects, f"threshold_{kind}"))
        labels, _ = ndimage.label(prob[..., c] > thr, structure=np.ones((3, 3, 3), dtype=bool))
        peak = max(peak, me.memory_info().rss)
        del labels
    return time.perf_counter() - t0, peak - base


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_objects_"))
    print(f"{'volume':>8} {'engine':>16} {'s':>7} {'Mvox/s':>8} {'Mvox/s/worker':>14} {'peak MiB/worker':>16} {'vs scipy':>9}")
    try:
        for n in args.sizes:
            prob = blob_volume(n)
            mvox = n**3 / 1e6
            s_sp, mem_sp = scipy_label_once(prob)
            print(f"{n:>7}³ {'scipy in memory':>16} {s_sp:7.2f} {mvox / s_sp:8.2f} {mvox / s_sp:14.2f} {mem_sp / 2**20:16.0f} {1.0:9.2f}")
            for w in args.workers:
                s, peak = run_stage_once(tmp / f"a{n}_{w}", prob, w)
                print(f"{n:>7}³ {f'objects, {w} wkr':>16} {s:7.2f} {mvox / s:8.2f} {mvox / s / w:14.2f} {peak / 2**20:16.0f} {s_sp / s:9.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
