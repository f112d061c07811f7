"""`Box`: a half-open voxel box (start, stop) in x y z, the unit every chunked task works on."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np


def _vec(v) -> tuple[int, int, int]:
    a = tuple(int(x) for x in v)
    if len(a) != 3:
        raise ValueError(f"expected 3 coordinates (x, y, z), got {v!r}")
    return a


@dataclass(frozen=True)
class Box:
    """Half-open box [start, stop) in 0-based mag-1 voxels, x y z order."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    def __post_init__(self):
        object.__setattr__(self, "start", _vec(self.start))
        object.__setattr__(self, "stop", _vec(self.stop))

    @classmethod
    def from_shape(cls, shape, offset=(0, 0, 0)) -> "Box":
        o = _vec(offset)
        return cls(o, tuple(a + b for a, b in zip(o, _vec(shape))))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(max(0, b - a) for a, b in zip(self.start, self.stop))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def empty(self) -> bool:
        return self.size == 0

    def grow(self, amount) -> "Box":
        """The box enlarged by `amount` voxels (int or per-axis) on every side."""
        g = _vec(amount) if np.ndim(amount) else (int(amount),) * 3
        return Box(tuple(a - d for a, d in zip(self.start, g)), tuple(b + d for b, d in zip(self.stop, g)))

    def intersect(self, other: "Box") -> "Box":
        start = tuple(max(a, b) for a, b in zip(self.start, other.start))
        stop = tuple(max(s, min(a, b)) for s, a, b in zip(start, self.stop, other.stop))
        return Box(start, stop)

    def snap(self, grid, origin=(0, 0, 0)) -> "Box":
        """The smallest box on the grid (`grid` voxels per cell from `origin`) that holds this one."""
        g, o = _vec(grid), _vec(origin)
        start = tuple(o_ + ((a - o_) // gg) * gg for a, gg, o_ in zip(self.start, g, o))
        stop = tuple(o_ + -((o_ - b) // gg) * gg for b, gg, o_ in zip(self.stop, g, o))
        return Box(start, stop)

    def translate(self, offset) -> "Box":
        d = _vec(offset)
        return Box(tuple(a + b for a, b in zip(self.start, d)), tuple(a + b for a, b in zip(self.stop, d)))

    def contains(self, points) -> np.ndarray:
        """(N,) bool: which of the (N, 3) points lie inside the box."""
        p = np.asarray(points)
        return np.all((p >= np.array(self.start)) & (p < np.array(self.stop)), axis=-1)

    def slices(self, relative_to=(0, 0, 0)) -> tuple[slice, slice, slice]:
        """numpy slices of this box inside an array whose origin is `relative_to`."""
        r = _vec(relative_to)
        return tuple(slice(a - o, b - o) for a, b, o in zip(self.start, self.stop, r))

    def chunks(self, chunk_size) -> list["Box"]:
        """The grid cells of size `chunk_size` (from this box's start) that tile it, clipped."""
        c = _vec(chunk_size)
        ranges = [range(a, b, cc) for a, b, cc in zip(self.start, self.stop, c)]
        out = []
        for corner in product(*ranges):  # x slowest: a stable, documented task order
            out.append(Box(corner, tuple(min(p + cc, b) for p, cc, b in zip(corner, c, self.stop))))
        return out

    def name(self) -> str:
        """The precomputed chunk-file name of this box: ``x0-x1_y0-y1_z0-z1``."""
        return "_".join(f"{a}-{b}" for a, b in zip(self.start, self.stop))

    def __str__(self) -> str:
        return f"Box({list(self.start)}..{list(self.stop)})"
