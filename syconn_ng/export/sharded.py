"""Sharded (`neuroglancer_uint64_sharded_v1`) forms of the id-keyed sources an export writes: skeletons and
the indices of an annotation layer. Few large files instead of one file per object; the client reads
them with HTTP Range requests (a plain static server that honours Range is enough).

Shard files are assembled with CloudVolume's `synthesize_shard_files` from {key: bytes}; keys are
segment / annotation ids (murmurhash) or, for spatial index cells, the cell's compressed Morton code
(identity hash), as the spec says.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def hashed_spec(n_keys: int, *, hash_function: str = "murmurhash3_x86_128") -> dict:
    """A sharding spec for `n_keys` objects (CloudVolume's sizing: ~8 KiB shard indices, ~32 KiB minishard indices)."""
    from cloudvolume.datasource.precomputed.sharding import compute_shard_params_for_hashed

    shard_bits, minishard_bits, preshift_bits = compute_shard_params_for_hashed(max(int(n_keys), 1))
    return {"@type": "neuroglancer_uint64_sharded_v1", "hash": hash_function, "preshift_bits": int(preshift_bits),
            "minishard_bits": int(minishard_bits), "shard_bits": int(shard_bits),
            "minishard_index_encoding": "gzip", "data_encoding": "gzip"}


def write_shards(directory: Path, spec: dict, data: dict[int, bytes]) -> list[Path]:
    """Write the shard files holding `data` ({uint64 key: bytes}) into `directory`; returns their paths."""
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification, synthesize_shard_files

    directory.mkdir(parents=True, exist_ok=True)
    if not data:
        return []
    files = synthesize_shard_files(ShardingSpecification.from_dict(spec), data)
    out = []
    for name, payload in files.items():
        (directory / name).write_bytes(payload)
        out.append(directory / name)
    return out


def compressed_morton(cell, grid_shape) -> int:
    """The spec's compressed Morton code of grid cell (x, y, z) in a grid of `grid_shape` cells."""
    code, j = 0, 0
    for i in range(max(int(g) for g in grid_shape).bit_length()):
        for d in range(3):
            if (1 << i) < int(grid_shape[d]):
                code |= ((int(cell[d]) >> i) & 1) << j
                j += 1
    return code


def shard_skeletons(directory: Path) -> dict:
    """Turn an unsharded skeleton source (`info` + one file per segment id) into a sharded one, in place."""
    directory = Path(directory)
    files = [p for p in directory.iterdir() if p.is_file() and p.name.isdigit()]
    info = json.loads((directory / "info").read_text())
    info["sharding"] = hashed_spec(len(files))
    shards = write_shards(directory, info["sharding"], {int(p.name): p.read_bytes() for p in files})
    for p in files:
        p.unlink()
    (directory / "info").write_text(json.dumps(info, indent=1) + "\n")
    return {"skeletons": len(files), "shards": len(shards)}


def shard_annotations(layer: Path) -> dict:
    """Turn an unsharded precomputed annotation layer (as `syconn_ng.annotations.write_annotations` writes it)
    into a sharded one, in place: by_id and every relationship index keyed by id, each spatial level
    keyed by compressed Morton code."""
    layer = Path(layer)
    info = json.loads((layer / "info").read_text())
    indices = [info["by_id"]] + info.get("relationships", [])
    n_files = 0
    for index in indices:
        d = layer / index["key"]
        data = {int(p.name): p.read_bytes() for p in d.iterdir() if p.is_file()} if d.is_dir() else {}
        index["sharding"] = hashed_spec(len(data))
        shutil.rmtree(d, ignore_errors=True)
        n_files += len(write_shards(d, index["sharding"], data))
    for level in info["spatial"]:
        d = layer / level["key"]
        data = {}
        for p in (d.iterdir() if d.is_dir() else ()):
            cell = [int(v) for v in p.name.split("_")]
            data[compressed_morton(cell, level["grid_shape"])] = p.read_bytes()
        level["sharding"] = {**hashed_spec(len(data)), "hash": "identity"}
        shutil.rmtree(d, ignore_errors=True)
        n_files += len(write_shards(d, level["sharding"], data))
    (layer / "info").write_text(json.dumps(info, indent=1) + "\n")
    return {"files": n_files}

