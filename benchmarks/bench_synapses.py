"""Benchmark of the `synapses` stage on a 256 × 256 × 128 synthetic tissue (true barrier and organelles).

Prints contact sites and synapses per second of the stage's passes, peak memory, and the
all-pairs alternative side by side: for every pair of traced cells, the surface voxels of one
searched near the other's (SyConn v1 looked at all C(N, 2) pairs), timed on a random sample of
pairs and extrapolated to all of them.

    .venv/bin/python benchmarks/bench_synapses.py [--workdir /tmp/bench_synapses] [--pairs 400]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
import tracemalloc
from pathlib import Path

import numpy as np


def prepare(workdir: Path):
    """The tissue and its oracle analysis up to mapping (reused when present)."""
    from syconn_ng.analysis import Analysis
    from syconn_ng.config import write_config
    from syconn_ng.engine import LocalExecutor, run_stage
    from syconn_ng.stages import get_stage
    from syconn_ng.synth.generate import generate_tissue, oracle_config

    tissue, out = workdir / "tissue", workdir / "analysis"
    if not (tissue / ".complete").exists():
        shutil.rmtree(tissue, ignore_errors=True)
        generate_tissue(tissue, shape=(256, 256, 128), seed=1, synapses_per_um3=3.0)
        (tissue / ".complete").write_text("ok")
    if not (out / ".complete").exists():
        shutil.rmtree(out, ignore_errors=True)
        write_config(oracle_config(tissue), out)
        ex = LocalExecutor(1)
        try:
            for name in ("objects", "hulls", "mapping"):
                run_stage(get_stage(name), Analysis.open(out), executor=ex, progress=False)
        finally:
            ex.close()
        (out / ".complete").write_text("ok")
    return tissue, Analysis.open(out)


def run_passes(analysis):
    """Run the stage's passes in this process; (seconds per pass, tracemalloc peak bytes, result of classify)."""
    from syconn_ng.engine.state import params_hash
    from syconn_ng.engine.tasks import Task
    from syconn_ng.stages.synapses import STAGE

    STAGE.prepare(analysis, fresh=True)
    params = STAGE.params(analysis)
    times, result = {}, None
    tracemalloc.start()
    for p in STAGE.passes(analysis):
        t0 = time.perf_counter()
        for i, unit in enumerate(p.units):
            box = unit if unit is not None else None
            result = p.func(analysis, Task("synapses", p.name, box=box, index=i, params=params, params_hash=params_hash(params)))
        times[p.name] = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return times, peak, result


def contacts_only(analysis):
    """Seconds of the stage's contact search alone (contact voxels and pieces) on the whole volume, and the pieces."""
    from syconn_ng.layers import layer_box, open_layer, read_box
    from syconn_ng.synapses.contacts import contact_pieces, contact_voxels

    vol = open_layer(analysis.layer_path("cells"))
    cells = read_box(vol, layer_box(vol))[..., 0]
    t0 = time.perf_counter()
    a, b, area = contact_voxels(cells, voxel_size_nm=analysis.voxel_size_nm, contact_dist_nm=analysis.config.synapses.contact_dist_nm)
    pieces = contact_pieces(a, b, area)
    return time.perf_counter() - t0, len(pieces.voxels), len(set(zip(pieces.cell_a.tolist(), pieces.cell_b.tolist())))


def all_pairs(analysis, n_sample: int, contact_dist_nm: float, seed: int = 0):
    """Seconds for the all-pairs contact search on `n_sample` random pairs, and the number of pairs."""
    from scipy import ndimage
    from scipy.spatial import cKDTree

    from syconn_ng.layers import layer_box, open_layer, read_box

    vol = open_layer(analysis.layer_path("cells"))
    cells = read_box(vol, layer_box(vol))[..., 0]
    vs = np.asarray(analysis.voxel_size_nm)
    surface = cells != ndimage.grey_erosion(cells, size=(3, 3, 3))
    ids = np.unique(cells[cells > 0])
    points = {}
    vox = np.argwhere(surface & (cells > 0))
    lab = cells[tuple(vox.T)]
    order = np.argsort(lab, kind="stable")
    bounds = np.searchsorted(lab[order], ids)
    for i, c in enumerate(ids):
        stop = bounds[i + 1] if i + 1 < len(ids) else len(order)
        points[int(c)] = vox[order[bounds[i]:stop]] * vs
    pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]]
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(pairs), size=min(n_sample, len(pairs)), replace=False)
    t0 = time.perf_counter()
    found = 0
    for k in sample:
        a, b = pairs[k]
        tree = cKDTree(points[int(a)])
        d, _ = tree.query(points[int(b)], distance_upper_bound=contact_dist_nm + vs.max())
        found += int(np.isfinite(d).any())
    return time.perf_counter() - t0, len(pairs), len(sample), found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/bench_synapses")
    ap.add_argument("--pairs", type=int, default=400, help="pairs timed for the all-pairs alternative")
    args = ap.parse_args()
    tissue, analysis = prepare(Path(args.workdir))
    times, peak, result = run_passes(analysis)
    total = sum(times.values())
    shape = (256, 256, 128)
    print(f"volume {shape}, {np.prod(shape) / 1e6:.1f} Mvoxels; {result}")
    for name, t in times.items():
        print(f"  pass {name:9s} {t:7.2f} s")
    print(f"stage: {total:.2f} s, {result['contact_sites'] / total:.0f} contact sites/s, {result['synapses'] / total:.2f} synapses/s, "
          f"{result['candidates'] / total:.2f} candidates/s, {np.prod(shape) / total / 1e6:.2f} Mvoxels/s")
    print(f"peak memory: tracemalloc {peak / 2**20:.0f} MiB, process RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    tc, n_sites, n_touching = contacts_only(analysis)
    print(f"contact search alone (contact voxels + sites, whole volume): {tc:.2f} s, {n_sites} sites of {n_touching} touching pairs, "
          f"{n_sites / tc:.0f} sites/s")
    t, n_pairs, n_sample, found = all_pairs(analysis, args.pairs, analysis.config.synapses.contact_dist_nm)
    est = t / n_sample * n_pairs
    print(f"all-pairs alternative: {n_sample} of {n_pairs} pairs in {t:.2f} s ({found} in contact) -> {est:.1f} s for all pairs "
          f"(surface search only, no sites); ratio all-pairs / contact search = {est / tc:.1f}")


if __name__ == "__main__":
    main()
