"""Benchmark of the `hulls` and `mapping` stages on synthetic tissue (true barrier and organelles as oracles).

Prints nodes/s and rays/s of hull extraction, Mvoxel/s of voxelisation, objects/s of mapping, the
peak memory of each pass, and the vectorised ray marching against a plain per-ray Python loop
on a small case, side by side in this process. Run: `.venv/bin/python benchmarks/bench_hulls.py [--shape 256,256,128]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def march_one_ray(barrier, origin_vx, direction, voxel_size_nm, step_vx, cutoff, threshold, max_length_nm):
    """The straightforward alternative: one ray, one Python step at a time (same rule as `cast_rays`)."""
    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    step_nm = step_vx * vs.min()
    delta = direction * step_nm / vs
    prev = tuple(np.floor(origin_vx + 0.5).astype(int))
    acc, last_clear = 0.0, 0
    for k in range(1, int(max_length_nm / step_nm) + 1):
        index = np.floor(origin_vx + k * delta + 0.5).astype(int)
        if np.any(index < 0) or np.any(index >= barrier.shape):
            return np.nan  # left the box
        voxel = tuple(index)
        v = barrier[voxel] / 255.0
        v = v if v > cutoff else 0.0
        if voxel != prev:
            acc += v
        if v == 0:
            last_clear = k
        prev = voxel
        if acc >= threshold:
            return (last_clear + 1) * step_nm
    return np.nan


def run_inline(stage, analysis, timings: dict) -> None:
    """Every pass of `stage` in this process, in order, timing each (no done-markers, no executor)."""
    from syconn_ng.engine.tasks import Task

    params = stage.params(analysis)
    stage.prepare(analysis, fresh=True)
    for p in stage.passes(analysis):
        tracemalloc.start()
        t0 = time.perf_counter()
        for i, unit in enumerate(p.units):
            box = unit if unit is not None and not isinstance(unit, int) else None
            cell = unit if isinstance(unit, int) else None
            p.func(analysis, Task(stage.name, p.name, box=box, cell_id=cell, index=i, params=params))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        timings[f"{stage.name}/{p.name}"] = (time.perf_counter() - t0, len(p.units), peak / 2**20)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="256,256,128", help="synthetic volume in voxels (x,y,z)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))

    from syconn_ng.analysis import Analysis
    from syconn_ng.box import Box
    from syconn_ng.config import write_config
    from syconn_ng.engine import LocalExecutor, run_stage
    from syconn_ng.hulls.raycast import RayParams, cast_rays, node_degrees, node_tangents, ray_directions
    from syconn_ng.layers import layer_box, open_layer, read_box
    from syconn_ng.stages import get_stage
    from syconn_ng.synth.generate import generate_tissue, oracle_config

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        stats = generate_tissue(tmp / "synth", shape=shape, seed=args.seed)
        print(f"synthetic tissue {shape}: {stats['cells']} cells, {stats['skeleton_nodes']} traced nodes, "
              f"{stats['mitochondria']} mi, {stats['vesicle_clouds']} vc, {stats['synapses']} sj ({time.perf_counter() - t0:.1f} s)")
        synth = tmp / "synth"
        cfg = oracle_config(synth)
        write_config(cfg, tmp / "analysis")
        analysis = Analysis.open(tmp / "analysis")
        ex = LocalExecutor(1)
        run_stage(get_stage("objects"), analysis, executor=ex, progress=False)
        ex.close()

        timings: dict = {}
        run_inline(get_stage("hulls"), analysis, timings)
        run_inline(get_stage("mapping"), analysis, timings)

        n_nodes = n_rays = 0
        for f in (analysis.tables_dir / "hulls").glob("*.npz"):
            with np.load(f) as z:
                n_nodes += len(z["node_vx"])
                ends = node_degrees(len(z["node_vx"]), z["edges"]) < 2
                n_rays += int(np.where(ends, cfg.hulls.rays_per_end_node, cfg.hulls.rays_per_node).sum())
        voxels = int(np.prod(shape))
        objects = sum(len(open(analysis.tables_dir / f"objects_{k}.csv").readlines()) - 1 for k in ("mi", "vc", "sj"))
        print(f"\n{'pass':<20}{'units':>7}{'seconds':>10}{'peak MiB':>10}  throughput")
        rates = {
            "hulls/hull": f"{n_nodes / timings['hulls/hull'][0]:,.0f} nodes/s, {n_rays / timings['hulls/hull'][0]:,.0f} rays/s",
            "hulls/voxelize": f"{voxels / timings['hulls/voxelize'][0] / 1e6:.2f} Mvoxel/s",
            "hulls/fragments": f"{voxels / timings['hulls/fragments'][0] / 1e6:.2f} Mvoxel/s",
            "mapping/count": f"{voxels / timings['mapping/count'][0] / 1e6:.2f} Mvoxel/s",
        }
        total_mapping = timings["mapping/count"][0] + timings["mapping/assign"][0]
        rates["mapping/assign"] = f"{objects / total_mapping:,.0f} objects/s (count + assign, {objects} objects)"
        for name, (sec, units, peak) in timings.items():
            print(f"{name:<20}{units:>7}{sec:>10.2f}{peak:>10.1f}  {rates.get(name, '')}")

        # ray marching: vectorised vs a per-ray Python loop, same rays, same barrier box
        vol = open_layer(cfg.oracle.barrier)
        p = RayParams.from_config(cfg.section_params("hulls"))
        vs = np.asarray(cfg.dataset.voxel_size_nm)
        centre = np.asarray(shape) // 2
        box = Box(centre - 80, centre + 80).intersect(layer_box(vol))
        barrier = read_box(vol, box, fill_value=255)[..., 0]
        rng = np.random.default_rng(0)
        origins = rng.uniform(40, 120, size=(25, 3)) * [1, 1, 0.5]
        _, directions, _ = ray_directions(node_tangents(origins * vs, np.zeros((0, 2), int)), np.zeros(25, bool), p, rng)
        origins = np.repeat(origins, p.rays_per_node, axis=0)
        kw = dict(step_vx=p.step_vx, cutoff=p.barrier_cutoff, threshold=p.barrier_threshold, max_length_nm=p.max_ray_length_nm)
        t0 = time.perf_counter()
        fast, _, _ = cast_rays(barrier, origins, directions, voxel_size_nm=vs, **kw)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        slow = np.array([march_one_ray(barrier, o, d, vs, **kw) for o, d in zip(origins, directions)])
        t_slow = time.perf_counter() - t0
        agree = np.mean(np.isclose(fast, slow, atol=0.01) | (np.isnan(fast) & np.isnan(slow)))
        print(f"\nray marching, {len(origins)} rays: vectorised {len(origins) / t_fast:,.0f} rays/s, "
              f"per-ray loop {len(origins) / t_slow:,.0f} rays/s, ratio {t_slow / t_fast:.0f}x (same lengths: {agree:.1%})")
        import resource

        print(f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
