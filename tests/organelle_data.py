"""Test data for the engine and the `objects` stage: organelle probability layers in real analysis dirs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from syconn_ng.analysis import Analysis
from syconn_ng.box import Box
from syconn_ng.config import Config, write_config
from syconn_ng.layers import create_layer, open_layer, read_box, write_box

VOXEL_SIZE_NM = (10, 10, 20)


def random_probabilities(shape, *, seed: int, density: float, balls: int = 4) -> np.ndarray:
    """(X, Y, Z, 3) uint8: scattered voxels of random value (a `density` fraction) plus a few large balls."""
    rng = np.random.default_rng(seed)
    prob = np.zeros(tuple(shape) + (3,), dtype=np.uint8)
    grid = np.indices(shape)
    for c in range(3):
        scattered = rng.random(shape) < density
        prob[..., c] = np.where(scattered, rng.integers(1, 256, size=shape), 0)
        for _ in range(balls):
            centre = rng.integers(0, shape)
            radius = rng.integers(3, 12)
            inside = ((grid - centre[:, None, None, None]) ** 2).sum(0) <= radius**2
            prob[inside, c] = 230
    return prob


def write_organelles(path, prob: np.ndarray, *, chunk_size=(32, 32, 32), voxel_size_nm=VOXEL_SIZE_NM):
    """A 3-channel uint8 precomputed layer holding `prob` (X, Y, Z, 3)."""
    vol = create_layer(path, layer_type="image", dtype=prob.dtype, voxel_size_nm=voxel_size_nm, shape=prob.shape[:3],
                       chunk_size=chunk_size, num_channels=prob.shape[3])
    write_box(vol, Box.from_shape(prob.shape[:3]), prob)
    return vol


def make_analysis(root, prob: np.ndarray | None, *, chunk=(32, 32, 32), task=(32, 32, 32), objects=None,
                  chunking=None, executor=None, oracle: str = "") -> Analysis:
    """An analysis dir with `prob` as `layers/organelles` (or `oracle` as [oracle] organelles) and a config."""
    root = Path(root)
    if prob is not None:
        write_organelles(root / "layers" / "organelles", prob, chunk_size=chunk)
    cfg = Config()
    cfg.dataset.voxel_size_nm = list(VOXEL_SIZE_NM)
    cfg.chunking.chunk_size = list(chunk)
    cfg.chunking.task_size = list(task)
    cfg.oracle.organelles = oracle
    for section, values in (("objects", objects), ("chunking", chunking), ("executor", executor)):
        for k, v in (values or {}).items():
            setattr(getattr(cfg, section), k, v)
    write_config(cfg, root)
    return Analysis.open(root)


def read_layer(path) -> np.ndarray:
    """A whole single-channel layer as an (X, Y, Z) array, read back through CloudVolume."""
    vol = open_layer(path)
    return read_box(vol, Box(vol.voxel_offset, np.add(vol.voxel_offset, vol.volume_size)))[..., 0]


def assert_same_partition(got: np.ndarray, want: np.ndarray) -> None:
    """Same foreground and a one-to-one correspondence between the labels of `got` and `want`."""
    np.testing.assert_array_equal(got > 0, want > 0)
    fg = got > 0
    pairs = np.unique(np.stack([got[fg].astype(np.uint64), want[fg].astype(np.uint64)]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1])), "labels are split or merged"


def output_files(root) -> dict[str, bytes]:
    """Every file of the stage's outputs (layers mi, vc, sj and the tables), relative path → bytes."""
    root = Path(root)
    out = {}
    for sub in ("layers/mi", "layers/vc", "layers/sj", "tables"):
        for f in sorted((root / sub).rglob("*")):
            if f.is_file():
                out[str(f.relative_to(root))] = f.read_bytes()
    return out
