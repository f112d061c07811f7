"""Organelle objects → cells: how many of an object's voxels lie in (mi, vc) or next to (sj) each cell's hull.

Counts are per box and add up over boxes, so a volume task counts its own voxels and the stage
sums the counts. mi and vc belong to the cell holding the largest fraction of their voxels; an sj
lies in the cleft, which the `cells` layer leaves unlabelled, so it counts the cells within a
small neighbourhood of each of its voxels and keeps every cell above the threshold (both partners).
"""

from __future__ import annotations

import numpy as np


def _pair_counts(obj: np.ndarray, cell: np.ndarray):
    """Unique (object, cell) pairs with their multiplicities, as three (K,) arrays (uint64, uint64, int64)."""
    if len(obj) == 0:
        empty = np.zeros(0, dtype=np.uint64)
        return empty, empty, np.zeros(0, dtype=np.int64)
    pairs, counts = np.unique(np.stack([obj.astype(np.uint64), cell.astype(np.uint64)], axis=1), axis=0, return_counts=True)
    return pairs[:, 0], pairs[:, 1], counts.astype(np.int64)


def overlap_counts(objects: np.ndarray, cells: np.ndarray):
    """How many voxels of each object lie in each cell.

    objects, cells: (X, Y, Z) uint64 id arrays of the same box. Returns (object, cell, voxels)
    (K,) arrays for the pairs with voxels > 0 (cell 0, outside every hull, is left out).
    """
    both = (objects > 0) & (cells > 0)
    return _pair_counts(objects[both], cells[both])


def neighbourhood_counts(objects: np.ndarray, cells_padded: np.ndarray, radius_vx, *, batch: int = 1 << 16):
    """How many voxels of each object have each cell within `radius_vx` (a box neighbourhood).

    objects: (X, Y, Z) uint64; cells_padded: (X + 2rx, Y + 2ry, Z + 2rz) uint64, the same box
    with a halo of `radius_vx` (rx, ry, rz) voxels. A voxel counts once per cell, however many
    of its neighbours hold that cell. Returns (object, cell, voxels) (K,) arrays.
    """
    r = np.asarray(radius_vx, dtype=np.int64)
    vox = np.argwhere(objects > 0)
    ids = objects[tuple(vox.T)]
    offsets = np.stack(np.meshgrid(*[np.arange(-a, a + 1) for a in r], indexing="ij"), -1).reshape(-1, 3)
    parts_obj, parts_cell = [], []
    for start in range(0, len(vox), batch):
        v = vox[start: start + batch] + r  # into the padded array
        near = cells_padded[tuple((v[:, None, :] + offsets[None]).transpose(2, 0, 1))]  # (V, O)
        rows = np.repeat(np.arange(len(v)), near.shape[1])
        flat = near.ravel()
        keep = flat > 0
        # one count per (voxel, cell): unique rows of (voxel index, cell)
        vc = np.unique(np.stack([rows[keep].astype(np.uint64), flat[keep]], axis=1), axis=0)
        parts_obj.append(ids[start: start + batch][vc[:, 0].astype(np.int64)])
        parts_cell.append(vc[:, 1])
    if not parts_obj:
        return _pair_counts(np.zeros(0, np.uint64), np.zeros(0, np.uint64))
    return _pair_counts(np.concatenate(parts_obj), np.concatenate(parts_cell))


def sum_counts(obj: np.ndarray, cell: np.ndarray, voxels: np.ndarray):
    """Counts of repeated (object, cell) pairs (e.g. from several boxes) added up; same three arrays."""
    if len(obj) == 0:
        return obj.astype(np.uint64), cell.astype(np.uint64), voxels.astype(np.int64)
    pairs, inverse = np.unique(np.stack([obj.astype(np.uint64), cell.astype(np.uint64)], axis=1), axis=0, return_inverse=True)
    return pairs[:, 0], pairs[:, 1], np.bincount(inverse.ravel(), weights=voxels, minlength=len(pairs)).astype(np.int64)


def assign_objects(obj: np.ndarray, cell: np.ndarray, voxels: np.ndarray, object_ids: np.ndarray, object_voxels: np.ndarray,
                   *, min_fraction: float, best_only: bool):
    """The (object, cell, fraction) rows above `min_fraction`, sorted by object then cell.

    obj, cell, voxels: summed pair counts; object_ids, object_voxels: each object's size (its
    table). fraction = voxels / object size. `best_only`: keep only each object's largest
    fraction (ties: the smaller cell id).
    """
    size = dict(zip(np.asarray(object_ids, dtype=np.uint64).tolist(), np.asarray(object_voxels).tolist()))
    total = np.array([size.get(int(o), 0) for o in obj], dtype=np.float64)
    fraction = np.divide(voxels, total, out=np.zeros(len(obj)), where=total > 0)
    keep = fraction >= min_fraction
    obj, cell, fraction = obj[keep], cell[keep], fraction[keep]
    if best_only and len(obj):
        order = np.lexsort((cell, -fraction, obj))
        obj, cell, fraction = obj[order], cell[order], fraction[order]
        first = np.r_[True, obj[1:] != obj[:-1]]
        obj, cell, fraction = obj[first], cell[first], fraction[first]
    order = np.lexsort((cell, obj))
    return obj[order], cell[order], fraction[order]
