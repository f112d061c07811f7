"""The skeletons named in the config (`[dataset] skeletons` globs) as per-cell arrays: one tree = one cell.

Nodes outside the dataset bounds are skipped with one warning line per tree (file, tree, count),
not an error: tracers often click past the edge of the volume.

A skeleton uploaded for re-analysis (`syconn-ng serve`, docs/review.md) is kept as
`skeletons/reanalysed/cell_<id>.nml` (or `.k.zip`) in the analysis; its tree replaces the tree of the
same id in the configured files, so later runs use the tracer's latest version of that cell.
"""

from __future__ import annotations

import glob
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from syconn_ng.box import Box
from syconn_ng.errors import InputError

log = logging.getLogger("syconn_ng.hulls")


@dataclass
class CellSkeleton:
    """One cell's skeleton: node ids (N,) uint64, positions (N, 3) float64 voxels, edges (E, 2) int64 indices."""

    cell_id: int
    source: str
    node_ids: np.ndarray
    positions_vx: np.ndarray
    edges: np.ndarray


def skeleton_files(patterns, root) -> list[Path]:
    """The files matching the glob `patterns` (relative to `root` unless absolute), sorted, without repeats."""
    found = set()
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(Path(root) / pattern)
        found.update(Path(p).resolve() for p in glob.glob(full, recursive=True) if Path(p).is_file())
    return sorted(found)


REANALYSED_DIR = "skeletons/reanalysed"  # uploaded skeletons that replace a cell's tree (relative to the analysis)


def reanalysed_files(root) -> list[Path]:
    """The uploaded skeletons of re-analysed cells (`skeletons/reanalysed/cell_<id>.nml|.k.zip`), sorted."""
    folder = Path(root) / REANALYSED_DIR
    return sorted(p.resolve() for p in folder.glob("cell_*") if p.is_file() and p.name.endswith((".nml", ".k.zip")))


def input_skeleton_files(patterns, root) -> list[Path]:
    """`skeleton_files` without the re-analysed uploads, even where a glob matches them (they replace, not add)."""
    folder = (Path(root) / REANALYSED_DIR).resolve()
    return [p for p in skeleton_files(patterns, root) if not p.is_relative_to(folder)]


def files_digest(paths) -> dict[str, str]:
    """sha256 of each file (so a stage re-runs when a skeleton changes)."""
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16] for p in paths}


def tree_arrays(tree, *, path, bounds: Box) -> CellSkeleton | None:
    """One tree as a CellSkeleton, nodes outside `bounds` dropped (warned); None if no node is left."""
    ids = tree.node_ids()
    pos = tree.positions()
    inside = bounds.contains(np.rint(pos)) if len(pos) else np.zeros(0, dtype=bool)
    outside = int((~inside).sum())
    if outside:
        log.warning("%s: tree %d: %d node(s) outside the dataset bounds %s skipped", path, tree.id, outside, bounds)
    if not inside.any():
        return None
    e = tree.edge_index()
    keep_edge = inside[e[:, 0]] & inside[e[:, 1]] if len(e) else np.zeros(0, dtype=bool)
    new_index = np.cumsum(inside) - 1
    return CellSkeleton(int(tree.id), str(path), ids[inside], pos[inside], new_index[e[keep_edge]].reshape(-1, 2))


def load_skeletons(paths, *, voxel_size_nm, bounds: Box, replacements=()) -> list[CellSkeleton]:
    """Read the annotation files and return their cells, sorted by cell id.

    A tree id used in two files (or twice in one) is an InputError naming both places.
    `replacements`: files (`reanalysed_files`) whose trees replace the trees of the same id in `paths`.
    """
    from syconn_ng.io.annotation import read_annotation

    cells: dict[int, CellSkeleton] = {}
    seen: dict[int, str] = {}
    replaced = {}
    for path in replacements:
        for tree in read_annotation(path, voxel_size_nm=voxel_size_nm).trees:
            replaced[int(tree.id)] = (path, tree)
    for path in paths:
        skeleton = read_annotation(path, voxel_size_nm=voxel_size_nm)
        for tree in skeleton.trees:
            if tree.id <= 0:
                raise InputError(path, "a tree id is a cell id: expected a positive integer (0 is background)",
                                 element=f'<thing id="{tree.id}">')
            if tree.id in seen:
                raise InputError(path, f"tree id {tree.id} is also used in {seen[tree.id]}: one tree = one cell, ids must be unique",
                                 element=f'<thing id="{tree.id}">')
            seen[tree.id] = str(path)
            source, tree = replaced.get(int(tree.id), (path, tree))
            cell = tree_arrays(tree, path=source, bounds=bounds)
            if cell is not None:
                cells[cell.cell_id] = cell
    return [cells[c] for c in sorted(cells)]
