"""Benchmark of multi-resolution meshes (`syconn_ng.multires_mesh`): legacy vs multires bytes and files per cell,
encode time per cell, and what a zoomed-out view fetches (the coarsest LOD) against the full mesh.

Two inputs: the cells of a synthetic tissue after the `hulls` stage (true barrier, as `bench_hulls.py`), and
one long wavy tube (`--length-um`, full-resolution marching cubes, not simplified: the worst case a long cell
gives). Run: `.venv/bin/python benchmarks/bench_multires_mesh.py [--shape 256,256,128] [--length-um 100]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def legacy_size(mesh_dir: Path, cell: int) -> tuple[int, int]:
    """(bytes, files) of one cell's legacy mesh: manifest + fragments."""
    import json

    manifest = mesh_dir / f"{cell}:0"
    files = [manifest] + [mesh_dir / f for f in json.loads(manifest.read_text())["fragments"]]
    return sum(p.stat().st_size for p in files), len(files)


def report(name: str, rows: list[dict]) -> None:
    """Print the per-cell numbers of `rows` (one per cell: legacy/multires bytes, encode s, LOD bytes and faces)."""
    legacy = np.array([r["legacy_bytes"] for r in rows])
    multi = np.array([r["multires_bytes"] for r in rows])
    enc = np.array([r["encode_s"] for r in rows]) * 1e3
    top = np.array([r["top_bytes"] for r in rows])
    faces = np.array([r["faces"] for r in rows])
    lods = np.array([r["lods"] for r in rows])
    print(f"\n{name}: {len(rows)} cells, faces per cell median {np.median(faces):,.0f} (max {faces.max():,})")
    print(f"  legacy   : {legacy.sum() / 1e6:8.2f} MB, median {np.median(legacy) / 1e3:7.1f} kB/cell, "
          f"{sum(r['legacy_files'] for r in rows)} files ({rows[0]['legacy_files']} per cell)")
    print(f"  multires : {multi.sum() / 1e6:8.2f} MB, median {np.median(multi) / 1e3:7.1f} kB/cell (all LODs + manifest), "
          f"ratio to legacy {multi.sum() / legacy.sum():.2f}")
    print(f"  encode   : median {np.median(enc):.0f} ms/cell, max {enc.max():.0f} ms; LODs per cell {lods.min()}-{lods.max()}")
    print(f"  zoomed out (manifest + coarsest LOD): median {np.median(top) / 1e3:.1f} kB/cell = "
          f"{np.median(top / legacy):.2%} of the legacy mesh")


def encode_row(vertices, faces, legacy_bytes: int, legacy_files: int) -> dict:
    from syconn_ng.multires_mesh import encode_multires

    t0 = time.perf_counter()
    m = encode_multires(vertices, faces)
    dt = time.perf_counter() - t0
    return {"legacy_bytes": legacy_bytes, "legacy_files": legacy_files, "multires_bytes": len(m.manifest) + len(m.fragments),
            "encode_s": dt, "top_bytes": len(m.manifest) + m.bytes_per_lod[-1], "faces": len(faces),
            "lods": len(m.faces_per_lod), "mesh": m}


def long_tube(length_um: float) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes mesh (nm) of a wavy tube `length_um` long, 0.2-0.4 µm thick, at 10×10×20 nm voxels."""
    import zmesh

    vs = (10.0, 10.0, 20.0)
    nx = int(length_um * 1000 / vs[0])
    x = np.arange(nx)[:, None, None]
    y, z = np.arange(72)[None, :, None], np.arange(40)[None, None, :]
    r = 10 + 5 * np.sin(x / 37.0)
    labels = np.asfortranarray(((y - 36 - 12 * np.sin(x / 150.0)) ** 2 + ((z - 20) * 2.0) ** 2 < r ** 2) & (x > 2) & (x < nx - 3),
                               dtype=np.uint32)
    mesher = zmesh.Mesher(vs)
    mesher.mesh(labels)
    m = mesher.get(1, normals=False, voxel_centered=True)
    return m.vertices, m.faces


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="256,256,128", help="synthetic volume in voxels (x,y,z)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--length-um", type=float, default=100.0, help="length of the long tube")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))

    from syconn_ng.analysis import Analysis
    from syconn_ng.config import write_config
    from syconn_ng.engine import LocalExecutor, run_stage
    from syconn_ng.multires_mesh import legacy_ids, read_legacy_mesh, write_multires_source
    from syconn_ng.stages import get_stage
    from syconn_ng.synth.generate import generate_tissue, oracle_config

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stats = generate_tissue(tmp / "synth", shape=shape, seed=args.seed)
        write_config(oracle_config(tmp / "synth"), tmp / "analysis")
        analysis = Analysis.open(tmp / "analysis")
        ex = LocalExecutor(1)
        for name in ("objects", "hulls"):
            run_stage(get_stage(name), analysis, executor=ex, progress=False)
        ex.close()
        mesh_dir = tmp / "analysis" / "layers" / "cells" / "mesh"
        rows = [encode_row(*read_legacy_mesh(mesh_dir, c), *legacy_size(mesh_dir, c)) for c in legacy_ids(mesh_dir)]
        report(f"synthetic tissue {shape} seed {args.seed} ({stats['cells']} cells; hulls-stage meshes, simplified)", rows)
        t0 = time.perf_counter()
        out = write_multires_source(tmp / "multires", {i: r["mesh"] for i, r in enumerate(rows, start=1)})
        print(f"  sharded source: {out['shards']} shard file(s), {out['bytes'] / 1e6:.2f} MB, written in "
              f"{time.perf_counter() - t0:.2f} s (+ info)")

        vertices, faces = long_tube(args.length_um)
        from cloudvolume import Mesh

        legacy_bytes = len(Mesh(vertices, faces, None).to_precomputed()) + len('{"fragments": ["1:0:1"]}')
        row = encode_row(vertices, faces, legacy_bytes, 2)
        report(f"one wavy tube {args.length_um:g} µm long (marching cubes, not simplified)", [row])
        m = row["mesh"]
        print(f"  {'LOD':>4}{'faces':>10}{'fragments':>11}{'kB':>9}")
        for lod, (f, n, b) in enumerate(zip(m.faces_per_lod, m.fragments_per_lod, m.bytes_per_lod)):
            print(f"  {lod:>4}{f:>10,}{n:>11}{b / 1e3:>9.1f}")


if __name__ == "__main__":
    main()
