"""Test data for the `hulls` and `mapping` stages: hand-made membrane tubes, and one analysis on the
session's synthetic tissue (true barrier and organelles as oracles) run through objects → hulls → mapping."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from syconn_ng.analysis import Analysis
from syconn_ng.box import Box
from syconn_ng.config import Config, write_config
from syconn_ng.io.annotation import write_annotation
from syconn_ng.io.skeleton import Node, Parameters, Skeleton, Tree
from syconn_ng.layers import create_layer, layer_box, open_layer, read_box, write_box
from syconn_ng.synth.generate import oracle_config

VOXEL_SIZE_NM = (10.0, 10.0, 20.0)


def tube_barrier(shape, *, centre_vx, radius_nm: float, membrane_nm: float = 30.0, axis: int = 2,
                 voxel_size_nm=VOXEL_SIZE_NM, barrier=None) -> np.ndarray:
    """(X, Y, Z) uint8: a straight membrane tube (255) along `axis` through `centre_vx`, drawn into `barrier`."""
    out = np.zeros(shape, dtype=np.uint8) if barrier is None else barrier
    grid = np.indices(shape).astype(np.float64)
    vs = np.asarray(voxel_size_nm)
    d2 = sum(((grid[a] - centre_vx[a]) * vs[a]) ** 2 for a in range(3) if a != axis)
    r = np.sqrt(d2)
    out[(r >= radius_nm) & (r < radius_nm + membrane_nm)] = 255
    return out


def reader(barrier: np.ndarray):
    """A `read_barrier(box)` for an in-memory volume: full barrier outside it, as the stage reads layers."""
    bounds = Box.from_shape(barrier.shape)

    def read(box: Box) -> np.ndarray:
        out = np.full(box.shape, 255, dtype=np.uint8)
        inner = box.intersect(bounds)
        out[inner.slices(relative_to=box.start)] = barrier[inner.slices()]
        return out

    return read


def chain_skeleton(cell_id: int, positions_vx, first_node_id: int = 1) -> Tree:
    """A tree of nodes joined in order."""
    tree = Tree(id=cell_id)
    for i, p in enumerate(positions_vx):
        tree.nodes.append(Node(id=first_node_id + i, x=float(p[0]), y=float(p[1]), z=float(p[2])))
        if i:
            tree.edges.append((first_node_id + i - 1, first_node_id + i))
    return tree


def tube_analysis(root, *, task=(32, 32, 32), chunk=(32, 32, 32), hulls=None) -> Analysis:
    """An analysis of a 96 × 96 × 48 volume holding two membrane tubes (cells 5 and 9) and their skeletons."""
    root = Path(root)
    shape = (96, 96, 48)
    barrier = tube_barrier(shape, centre_vx=(30, 40, 0), radius_nm=150)
    tube_barrier(shape, centre_vx=(70, 50, 0), radius_nm=110, barrier=barrier)
    vol = create_layer(root / "barrier", layer_type="image", dtype=np.uint8, voxel_size_nm=VOXEL_SIZE_NM, shape=shape,
                       chunk_size=chunk)
    write_box(vol, Box.from_shape(shape), barrier)
    (root / "skeletons").mkdir(parents=True, exist_ok=True)
    for cell, (x, y) in ((5, (30, 40)), (9, (70, 50))):
        tree = chain_skeleton(cell, [(x, y, z) for z in range(3, 46, 7)], first_node_id=100 * cell)
        write_annotation(Skeleton(trees=[tree], parameters=Parameters(scale_nm=VOXEL_SIZE_NM)), root / "skeletons" / f"cell_{cell}.nml")
    cfg = Config()
    cfg.dataset.raw = "barrier"
    cfg.dataset.skeletons = ["skeletons/*.nml"]
    cfg.dataset.voxel_size_nm = list(VOXEL_SIZE_NM)
    cfg.chunking.chunk_size = list(chunk)
    cfg.chunking.task_size = list(task)
    cfg.oracle.barrier = "barrier"
    for k, v in (hulls or {}).items():
        setattr(cfg.hulls, k, v)
    write_config(cfg, root)
    return Analysis.open(root)


def read_layer(path) -> np.ndarray:
    vol = open_layer(path)
    return read_box(vol, layer_box(vol))[..., 0]


def synth_analysis(synth_dir, tmp_path_factory) -> Analysis:
    """A session synthetic tissue after objects → hulls → mapping with the true barrier and organelles.

    Built once per test session and shared by the xdist workers (a file lock and a completion
    marker, like the `synth_tissue` fixture); treat it as read-only.
    """
    from filelock import FileLock

    from syconn_ng.engine import LocalExecutor, run_stage
    from syconn_ng.stages import get_stage

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = root / f"hulls_on_{Path(synth_dir).name}"
    done = out / ".complete"
    with FileLock(str(root / f"hulls_on_{Path(synth_dir).name}.lock")):
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            synth = Path(synth_dir)
            write_config(oracle_config(synth), out)
            analysis = Analysis.open(out)
            executor = LocalExecutor(1)
            try:
                for name in ("objects", "hulls", "mapping"):
                    run_stage(get_stage(name), analysis, executor=executor, progress=False)
            finally:
                executor.close()
            done.write_text("ok\n")
    return Analysis.open(out)
