"""Precomputed annotation layers (points or lines) with properties, relationships and a multi-level spatial index.

The project's own writer of Neuroglancer's `neuroglancer_annotations_v1` format (spec:
`annotations.md` of Neuroglancer's precomputed data source), because the released
`neuroglancer.write_annotations` mis-encodes uint32 properties and writes one spatial cell.
Pure encoders (`record_dtype`, `encode_records`, `encode_annotations`, `encode_by_id`,
`spatial_levels`) are separate from `write_annotations`, which lays the indices out as one file per
key or sharded (`syconn_ng.sharding`) and swaps the finished layer in atomically.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from syconn_ng.errors import InputError

# spec type -> (numpy little-endian dtype, size in bytes); the spec groups fields by size
PROPERTY_TYPES = {
    "float32": ("<f4", 4), "uint32": ("<u4", 4), "int32": ("<i4", 4),
    "uint16": ("<u2", 2), "int16": ("<i2", 2),
    "uint8": ("u1", 1), "int8": ("i1", 1),
}
_ID_RE = re.compile(r"^[a-z][a-zA-Z0-9_]*$")
# Neuroglancer's voxel i spans [i, i + 1): a 0-based voxel position is drawn at its centre, i + 0.5
VOXEL_CENTRE_OFFSET = 0.5
MAX_LEVELS = 24


def spec_type(dtype) -> str:
    """The spec's property type for a numpy dtype (float64 is stored as float32)."""
    dt = np.dtype(dtype)
    if dt == np.float64:
        return "float32"
    if dt.name not in PROPERTY_TYPES:
        raise ValueError(f"dtype {dt.name} has no precomputed property type (use one of {', '.join(PROPERTY_TYPES)})")
    return dt.name


def property_offsets(types: dict[str, str], geometry_bytes: int) -> tuple[dict[str, int], int]:
    """Byte offset of each property inside one record, and the record size (a multiple of 4).

    Spec layout: the geometry, then all 4-byte properties, then 2-byte, then 1-byte ones (each group
    in declaration order), then zero padding to a multiple of 4.
    """
    offsets, pos = {}, geometry_bytes
    for size in (4, 2, 1):
        for name, t in types.items():
            if PROPERTY_TYPES[t][1] == size:
                offsets[name] = pos
                pos += size
    return offsets, (pos + 3) // 4 * 4


def record_dtype(geometry_floats: int, types: dict[str, str]) -> np.dtype:
    """Structured dtype of one encoded annotation (geometry + properties + padding, no relationships)."""
    offsets, itemsize = property_offsets(types, 4 * geometry_floats)
    names = ["geometry"] + list(offsets)
    formats = [("<f4", (geometry_floats,))] + [PROPERTY_TYPES[types[n]][0] for n in offsets]
    return np.dtype({"names": names, "formats": formats, "offsets": [0] + list(offsets.values()), "itemsize": itemsize})


def encode_records(geometry: np.ndarray, properties: dict[str, np.ndarray], types: dict[str, str]) -> np.ndarray:
    """(N,) structured records: geometry (N, G) float32 (point: x,y,z; line: xa,ya,za,xb,yb,zb) and properties."""
    geometry = np.asarray(geometry, dtype=np.float32)
    rec = np.zeros(len(geometry), dtype=record_dtype(geometry.shape[1], types))  # zeros: the padding bytes
    rec["geometry"] = geometry
    for name, values in properties.items():
        rec[name] = values
    return rec


def encode_annotations(records: np.ndarray, ids: np.ndarray) -> bytes:
    """Multiple-annotation encoding (spatial cells, related-id lists): uint64le count, records, uint64le ids.

    records: (N,) from `encode_records`, or its (N, record bytes) uint8 view.
    """
    return np.uint64(len(records)).astype("<u8").tobytes() + records.tobytes() + np.asarray(ids, dtype="<u8").tobytes()


def encode_by_id(record: np.ndarray, related: list[np.ndarray]) -> bytes:
    """Single-annotation encoding (the by_id index): the record, then per relationship uint32le count + uint64le ids."""
    parts = [record.tobytes()]
    for ids in related:
        ids = np.asarray(ids, dtype="<u8")
        parts.append(np.uint32(len(ids)).astype("<u4").tobytes())
        parts.append(ids.tobytes())
    return b"".join(parts)


def _uniform(ids: np.ndarray, level: int) -> np.ndarray:
    """A pseudo-random number in [0, 1) per (id, level) (splitmix64), so the layer is reproducible."""
    x = ids.astype(np.uint64) ^ np.uint64((0x9E3779B97F4A7C15 * (level + 1)) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _next_chunk(chunk: np.ndarray, voxel_size_nm: np.ndarray) -> np.ndarray:
    """Halve the dimensions within a factor 2 of the longest (physically), keeping cells near-isotropic.

    A cell is not halved below one voxel: annotations closer than that share a cell anyway.
    """
    phys = chunk * voxel_size_nm
    return np.where((phys * 2 > phys.max()) & (chunk >= 2), chunk / 2, chunk)


def _cells_of(lo: np.ndarray, hi: np.ndarray, lower: np.ndarray, chunk: np.ndarray, grid: np.ndarray):
    """(annotation index, flat cell index) pairs for every cell the boxes [lo, hi] (N, 3) intersect."""
    a = np.clip(np.floor((lo - lower) / chunk).astype(np.int64), 0, grid - 1)
    b = np.clip(np.floor((hi - lower) / chunk).astype(np.int64), 0, grid - 1)
    span = b - a + 1
    n = span.prod(axis=1)
    ann = np.repeat(np.arange(len(lo)), n)
    k = np.arange(len(ann)) - np.repeat(np.cumsum(n) - n, n)  # index of the cell inside each box
    cz = k % span[ann, 2]
    cy = (k // span[ann, 2]) % span[ann, 1]
    cx = k // (span[ann, 2] * span[ann, 1])
    cell = np.stack([a[ann, 0] + cx, a[ann, 1] + cy, a[ann, 2] + cz], axis=1)
    flat = np.ravel_multi_index(cell.T, grid)
    return ann, flat


def spatial_levels(lo: np.ndarray, hi: np.ndarray, ids: np.ndarray, *, lower, upper, voxel_size_nm,
                   max_per_cell: int) -> list[dict]:
    """The spatial index: per level {grid_shape, chunk_size, limit, cells: {(x, y, z): annotation indices}}.

    lo, hi: (N, 3) float bounding box of each annotation (equal for points), in the layer's
    coordinates; the grid starts at `lower`. Follows the spec's sampling rule: at each level every
    remaining annotation is emitted with probability min(1, max_per_cell / maxCount(level)) (the
    same in every cell, so density is not distorted), the rest go on to the finer level, whose cells
    halve the coarser ones; cell lists are in pseudo-random order. An annotation intersecting several
    cells is listed in each of them at the one level where it is emitted.
    """
    lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    vs = np.asarray(voxel_size_nm, np.float64)
    chunk = upper - lower
    grid = np.ones(3, dtype=np.int64)
    remaining = np.arange(len(ids))
    levels = []
    for level in range(MAX_LEVELS):
        ann, flat = _cells_of(lo[remaining], hi[remaining], lower, chunk, grid)
        ann = remaining[ann]
        counts = np.bincount(flat)
        max_count = int(counts.max()) if len(counts) else 0
        u = _uniform(ids, level)
        last = level == MAX_LEVELS - 1 or np.array_equal(_next_chunk(chunk, vs), chunk)
        p = 1.0 if last else min(1.0, max_per_cell / max(max_count, 1))
        cap = len(ids) + 1 if last else max_per_cell
        emitted = u[ann] < p
        e_ann, e_flat = ann[emitted], flat[emitted]
        order = np.lexsort((u[e_ann], e_flat))  # by cell, then pseudo-randomly within a cell
        e_ann, e_flat = e_ann[order], e_flat[order]
        # a cell the sampling filled beyond max_per_cell keeps its first max_per_cell; the rest go on
        # to the next level (an annotation spanning cells goes on if any of its cells is full)
        new_cell = np.r_[True, e_flat[1:] != e_flat[:-1]] if len(e_flat) else np.zeros(0, bool)
        rank = np.arange(len(e_flat)) - np.maximum.accumulate(np.where(new_cell, np.arange(len(e_flat)), 0))
        over = np.zeros(len(ids), dtype=bool)
        over[e_ann[rank >= cap]] = True
        keep = ~over[e_ann]
        e_ann, e_flat = e_ann[keep], e_flat[keep]
        starts = np.flatnonzero(np.r_[True, e_flat[1:] != e_flat[:-1]]) if len(e_flat) else np.array([], int)
        ends = np.r_[starts[1:], len(e_flat)]
        cells = {tuple(int(c) for c in np.unravel_index(e_flat[s], grid)): e_ann[s:e] for s, e in zip(starts, ends)}
        limit = max((len(v) for v in cells.values()), default=0)
        levels.append({"grid_shape": grid.tolist(), "chunk_size": chunk.tolist(), "limit": limit, "cells": cells})
        done = np.zeros(len(ids), dtype=bool)
        done[e_ann] = True
        remaining = remaining[~done[remaining]]
        if len(remaining) == 0:
            break
        chunk = _next_chunk(chunk, vs)
        grid = np.round((upper - lower) / chunk).astype(np.int64)
    return levels


def _relationship_lists(path, name: str, value, n: int) -> list[np.ndarray]:
    """Per annotation the related ids of one relationship (0 = none), as uint64 arrays."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        if len(value) != n:
            raise InputError(path, f"relationship {name!r} has {len(value)} values for {n} annotations", element="relationships")
        v = value.astype(np.uint64)
        empty = np.zeros(0, np.uint64)
        return [v[i:i + 1] if v[i] else empty for i in range(n)]
    lists = list(value)
    if len(lists) != n:
        raise InputError(path, f"relationship {name!r} has {len(lists)} lists for {n} annotations", element="relationships")
    out = []
    for x in lists:
        a = np.atleast_1d(np.asarray(x, dtype=np.uint64))
        a = a[a != 0]
        out.append(a[np.sort(np.unique(a, return_index=True)[1])])  # each id once, in the given order
    return out


def _check_inputs(path, ids, points, points_b, properties, relationships, enum_labels) -> tuple[dict, dict]:
    n = len(ids)
    if points.shape != (n, 3) or (points_b is not None and points_b.shape != (n, 3)):
        raise InputError(path, f"expected positions of shape ({n}, 3)", element="points_vx")
    if not np.all(np.isfinite(points)) or (points_b is not None and not np.all(np.isfinite(points_b))):
        raise InputError(path, "positions must be finite", element="points_vx")
    if len(np.unique(ids)) != n:
        raise InputError(path, "annotation ids must be unique", element="ids")
    types, values = {}, {}
    for name, v in (properties or {}).items():
        if not _ID_RE.match(name):
            raise InputError(path, f"property id {name!r} must match {_ID_RE.pattern}", element="properties")
        v = np.asarray(v)
        if v.shape != (n,):
            raise InputError(path, f"property {name!r} has shape {v.shape}, expected ({n},)", element="properties")
        try:
            types[name] = spec_type(v.dtype)
        except ValueError as err:
            raise InputError(path, f"property {name!r}: {err}", element="properties") from err
        values[name] = v
    for name in relationships or {}:
        if not _ID_RE.match(name):
            raise InputError(path, f"relationship id {name!r} must match {_ID_RE.pattern}", element="relationships")
    for name in enum_labels or {}:
        if name not in types or types[name] == "float32":
            raise InputError(path, f"enum labels for {name!r}, which is not an integer property", element="enum_labels")
    return types, values


def _info(voxel_size_nm, lower, upper, annotation_type, types, enum_labels, relationships, levels) -> dict:
    # properties listed in layout order (4-, 2-, then 1-byte): the same bytes by the spec, and readers
    # that decode in declaration order (neuroglancer.read_precomputed_annotations 2.41) then agree
    props = []
    for name in property_offsets(types, 0)[0]:
        entry = {"id": name, "type": types[name]}
        labels = (enum_labels or {}).get(name)
        if labels:
            entry["enum_values"] = [int(k) for k in labels]
            entry["enum_labels"] = [str(v) for v in labels.values()]
        props.append(entry)
    return {
        "@type": "neuroglancer_annotations_v1",
        "dimensions": {d: [float(s) * 1e-9, "m"] for d, s in zip("xyz", voxel_size_nm)},
        "lower_bound": [float(v) for v in lower],
        "upper_bound": [float(v) for v in upper],
        "annotation_type": annotation_type,
        "properties": props,
        "relationships": [{"id": name, "key": f"rel_{name}"} for name in relationships],
        "by_id": {"key": "by_id"},
        "spatial": [{"key": f"spatial{i}", "grid_shape": lv["grid_shape"], "chunk_size": lv["chunk_size"],
                     "limit": lv["limit"]} for i, lv in enumerate(levels)],
    }


def _local_path(path) -> Path:
    s = os.fspath(path)
    if s.startswith("precomputed://"):
        s = s[len("precomputed://"):]
    if s.startswith("file://"):
        s = s[len("file://"):]
    elif "://" in s:
        raise InputError(s, "annotation layers are written to local folders only (copy them to a bucket afterwards)")
    return Path(s)


def swap_in_folder(tmp: Path, dest: Path) -> None:
    """Replace `dest` by the complete folder `tmp`: the old layer is moved aside only now, then deleted."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_annotations(path, *, ids, points_vx, voxel_size_nm, properties=None, relationships=None,
                      enum_labels=None, points_b_vx=None, max_per_cell=2000, sharded: bool = False) -> dict:
    """Write a complete precomputed annotation layer (points, or lines if `points_b_vx`) at `path`.

    ids: (N,) uint64 unique annotation ids; points_vx, points_b_vx: (N, 3) float 0-based voxels
    (stored at the voxel centre, + `VOXEL_CENTRE_OFFSET`); voxel_size_nm: (3,) the layer's scale;
    properties: {id: (N,) array} of dtype uint8/int8/uint16/int16/uint32/int32/float32 (float64
    is stored as float32); relationships: {id: (N,) uint64 (0 = none) or N lists of uint64};
    enum_labels: {property: {value: label}}; max_per_cell: the spatial index's target `limit`;
    sharded: by_id, relationship and spatial indices as `neuroglancer_uint64_sharded_v1` shard files
    (callers choose with `syconn_ng.sharding.use_sharding`) instead of one file per key.
    The layer is built in a temporary folder beside `path` and renamed into place when complete.
    Returns {"annotations", "files", "bytes", "levels", "limits", "path", "sharded"}.
    """
    dest = _local_path(path)
    ids = np.asarray(ids, dtype=np.uint64).reshape(-1)
    points = np.asarray(points_vx, dtype=np.float64).reshape(-1, 3) + VOXEL_CENTRE_OFFSET
    points_b = None if points_b_vx is None else np.asarray(points_b_vx, dtype=np.float64).reshape(-1, 3) + VOXEL_CENTRE_OFFSET
    relationships = dict(relationships or {})
    types, values = _check_inputs(dest, ids, points, points_b, properties, relationships, enum_labels)
    if max_per_cell < 1:
        raise InputError(dest, "max_per_cell must be >= 1", element="max_per_cell")
    n = len(ids)
    rel_lists = {name: _relationship_lists(dest, name, v, n) for name, v in relationships.items()}

    lo = points if points_b is None else np.minimum(points, points_b)
    hi = points if points_b is None else np.maximum(points, points_b)
    lower = np.floor(lo.min(axis=0)) if n else np.zeros(3)
    upper = np.floor(hi.max(axis=0)) + 1 if n else np.ones(3)  # exclusive
    geometry = points if points_b is None else np.concatenate([points, points_b], axis=1)
    records = encode_records(geometry, values, types)
    # rows of raw bytes: fancy-indexing a structured array may skip (and garble) the padding bytes
    records = records.view(np.uint8).reshape(n, records.dtype.itemsize)
    levels = spatial_levels(lo, hi, ids, lower=lower, upper=upper, voxel_size_nm=voxel_size_nm, max_per_cell=max_per_cell)
    info = _info(voxel_size_nm, lower, upper, "POINT" if points_b is None else "LINE", types, enum_labels,
                 relationships, levels)

    from syconn_ng.sharding import compressed_morton, hashed_spec, write_shards

    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.*"):  # folders a killed writer left
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    files, nbytes = 0, 0
    try:
        for index, data in _index_payloads(info, ids, records, rel_lists, levels):
            if sharded:
                key = index["key"]
                if key.startswith("spatial"):
                    grid = index["grid_shape"]
                    index["sharding"] = {**hashed_spec(len(data)), "hash": "identity"}
                    data = {compressed_morton(cell, grid): payload for cell, payload in data.items()}
                else:
                    index["sharding"] = hashed_spec(len(data))
                shards = write_shards(tmp / key, index["sharding"], data)
                f, b = len(shards), sum(p.stat().st_size for p in shards)
            else:
                f, b = _write_files(tmp / index["key"], data)
            files, nbytes = files + f, nbytes + b
            data.clear()  # one index in memory at a time
        (tmp / "info").write_text(json.dumps(info, indent=1))
        files, nbytes = files + 1, nbytes + (tmp / "info").stat().st_size
        swap_in_folder(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"path": str(dest), "annotations": n, "files": files, "bytes": nbytes, "levels": len(levels),
            "limits": [lv["limit"] for lv in levels], "sharded": bool(sharded)}


def _index_payloads(info: dict, ids, records, rel_lists: dict, levels: list[dict]):
    """(info entry of the index, {key: encoded bytes}) for by_id, each relationship and each spatial level, one at a time.

    Keys: annotation ids (by_id), related segment ids (relationships), (x, y, z) cells (spatial); the
    entry is the dict inside `info`, so a sharded writer can add its `sharding` there.
    """
    n = len(ids)
    rel_names = list(rel_lists)
    yield info["by_id"], {int(ids[i]): encode_by_id(records[i], [rel_lists[r][i] for r in rel_names]) for i in range(n)}
    for entry, lists in zip(info["relationships"], rel_lists.values()):
        seg = np.concatenate(lists) if n else np.zeros(0, np.uint64)
        ann = np.repeat(np.arange(n), [len(x) for x in lists])
        order = np.lexsort((ann, seg))
        seg, ann = seg[order], ann[order]
        starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]]) if len(seg) else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], len(seg)].astype(np.int64)
        yield entry, {int(seg[s]): encode_annotations(records[ann[s:e]], ids[ann[s:e]]) for s, e in zip(starts, ends)}
    for entry, lv in zip(info["spatial"], levels):
        yield entry, {cell: encode_annotations(records[idx], ids[idx]) for cell, idx in lv["cells"].items()}


def _write_files(directory: Path, data: dict) -> tuple[int, int]:
    """The unsharded form of one index: a file per key (`<id>`, or `<x>_<y>_<z>` for a spatial cell)."""
    directory.mkdir()
    nbytes = 0
    for key, payload in data.items():
        name = "_".join(str(c) for c in key) if isinstance(key, tuple) else str(key)
        (directory / name).write_bytes(payload)
        nbytes += len(payload)
    return len(data), nbytes
