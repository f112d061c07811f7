"""Benchmark `import-knossos`: streamed cube-by-cube conversion vs. load-everything-then-write.

Writes a synthetic KNOSSOS dataset (raw 512×512×256 + overlay with cubes in one 256³ corner, 128³ cubes, mag 1
and 2) into a temp dir, converts it with `import_dataset`, and side by side with the simple
alternative: decode every cube into one array and write it with one CloudVolume assignment.
Prints throughput (MB of decoded voxels per second) and peak traced memory of each.

    .venv/bin/python benchmarks/bench_import_knossos.py
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from knossos_cubes import segmentation_volume, write_cubes, write_k_toml  # noqa: E402

from syconn_ng.commands.import_knossos import import_dataset  # noqa: E402
from syconn_ng.io.knossos_dataset import cube_grid, read_cube, read_dataset_config, scan_cubes  # noqa: E402

CHUNK = (128, 128, 64)


def make(root: Path) -> Path:
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, size=(512, 512, 256), dtype=np.uint8)
    seg = segmentation_volume((256, 256, 256), rng)
    write_cubes(root, "bench", raw, mag=1, ext=".raw")
    write_cubes(root, "bench", raw[::2, ::2, ::2].copy(), mag=2, ext=".raw")
    write_cubes(root, "bench", seg, mag=1, ext=".seg.sz.zip")
    return write_k_toml(root / "bench.k.toml", "bench", (512, 512, 256), [(10, 10, 25), (20, 20, 50)], exts=(".raw", ".seg.sz.zip"))


def whole_array(config: Path, out: Path) -> None:
    """The simple alternative: every cube of a layer decoded into one array, one CloudVolume write."""
    from cloudvolume import CloudVolume

    for layer in read_dataset_config(config):
        for mip, mag in enumerate(m for m in layer.mags if scan_cubes(layer, m)):
            cubes = scan_cubes(layer, mag)
            grid = np.array(cube_grid(layer, mag))
            arr = np.zeros(tuple(grid * 128), dtype=layer.dtype)
            for ix, iy, iz in cubes:
                arr[ix * 128:(ix + 1) * 128, iy * 128:(iy + 1) * 128, iz * 128:(iz + 1) * 128] = read_cube(layer, mag, (ix, iy, iz))
            arr = arr[: mag.shape[0], : mag.shape[1], : mag.shape[2]]
            path = f"file://{out}/{layer.kind}/m{mip}"
            info = CloudVolume.create_new_info(1, layer.kind, layer.dtype.name,
                                               "compressed_segmentation" if layer.kind == "segmentation" else "raw",
                                               list(mag.voxel_size_nm), [0, 0, 0], list(mag.shape), chunk_size=CHUNK)
            vol = CloudVolume(path, info=info, compress=False, parallel=1, progress=False)
            vol.commit_info()
            vol[:, :, :] = arr
            del arr


def measure(fn, *args) -> tuple[float, float]:
    tracemalloc.start()
    t = time.perf_counter()
    fn(*args)
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return dt, peak / 2**20


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = make(tmp / "ds")
        mb = (512 * 512 * 256 + 256 * 256 * 128 + 512 * 512 * 256 * 8) / 2**20
        results = {}
        for rep in range(2):  # alternate, keep the better time of each
            for name, fn in (("streamed (import_dataset)", lambda o: import_dataset(config, o, chunk_size=CHUNK, progress=False)),
                             ("whole array + CloudVolume", lambda o: whole_array(config, o))):
                dt, peak = measure(fn, tmp / f"out-{name[:5]}-{rep}")
                best = results.get(name, (np.inf, 0))
                results[name] = (min(dt, best[0]), max(peak, best[1]))
        print(f"dataset: {mb:.0f} MiB of decoded voxels (raw 512×512×256 + mag2, overlay 512×512×256 uint64, 1/8 of its cubes present)")
        for name, (dt, peak) in results.items():
            print(f"{name:28s} {mb / dt:7.1f} MiB/s  {dt:6.2f} s  peak traced memory {peak:7.1f} MiB")
        (s_dt, s_peak), (w_dt, w_peak) = results.values()
        print(f"streamed / whole-array: time {s_dt / w_dt:.2f}×, peak memory {s_peak / w_peak:.2f}×")


if __name__ == "__main__":
    main()
