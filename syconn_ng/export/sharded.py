"""Shard files (`neuroglancer_uint64_sharded_v1`) of id-keyed sources: annotation indices, skeletons, meshes
(writers: `syconn_ng.annotations`, `syconn_ng.sharding.shard_skeleton_source`, the export). Few large files
instead of one file per object; the client reads them with HTTP Range requests (a plain static server that
honours Range is enough).

Shard files are assembled with CloudVolume's `synthesize_shard_files` from {key: bytes}; keys are
segment / annotation ids (murmurhash) or, for spatial index cells, the cell's compressed Morton code
(identity hash), as the spec says.
"""

from __future__ import annotations

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
