"""Sharded (`neuroglancer_uint64_sharded_v1`) sources: when to shard, writing shard files, skeleton sources
sharded past a size, and reading shards back with clear errors.

Writers choose the sharded form by size (`use_sharding`, the `[chunking] shard_annotations_over` and
`shard_skeletons_over` knobs). Shard files are assembled with CloudVolume's `synthesize_shard_files` from
{key: bytes} (`write_shards`); keys are segment / annotation ids (murmurhash) or, for spatial index cells,
the cell's compressed Morton code (identity hash), as the spec says. The client reads them with HTTP Range
requests (a plain static server that honours Range is enough). Skeletons are
written one file per cell by per-cell tasks and sharded by a finishing step (`shard_skeleton_source`),
which also merges a cell re-written later (re-analysis) into the shards. `check_shards` / `read_shards`
decode shard files with the spec's layout (shard index, gzip'd delta-coded minishard indices) and name
the shard file that is truncated or corrupt, which a viewer would only show as a failed request.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np

from syconn_ng.errors import InputError


def use_sharding(n_objects: int, over: int) -> bool:
    """The size rule of the `[chunking] shard_*_over` knobs: -1 = never, 0 = always, else more than `over` objects."""
    return over == 0 or (over > 0 and n_objects > over)


# ---------------------------------------------------------------- reading back (with clear errors)

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


def _decode(payload: bytes, encoding: str, path: Path, what: str) -> bytes:
    if encoding != "gzip":
        return payload
    try:
        return gzip.decompress(payload)
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(path, f"corrupt shard file: {what} does not decompress ({err})", element=what) from None


def _minishards(path: Path, spec: dict, read, size: int):
    """Per minishard of one shard file: (minishard, keys, data start offsets, data sizes), offsets from the file start.

    read(start, stop) returns those bytes of the file; size is its length. Every range an index names is
    checked against `size`, so a truncated file fails here, naming itself.
    """
    n_mini = 1 << int(spec["minishard_bits"])
    index_bytes = 16 * n_mini
    if size < index_bytes:
        raise InputError(path, f"truncated shard file: {size} bytes, shorter than its {index_bytes}-byte shard index",
                         element="shard index")
    ranges = np.frombuffer(read(0, index_bytes), "<u8").reshape(n_mini, 2).astype(np.int64)
    for m, (start, end) in enumerate(ranges):
        if start == end:
            continue
        if not 0 <= start <= end or index_bytes + end > size:
            raise InputError(path, f"truncated shard file: {size} bytes, but the index of minishard {m} ends at byte "
                                   f"{index_bytes + end}", element=f"minishard {m}")
        raw = _decode(read(index_bytes + start, index_bytes + end), spec.get("minishard_index_encoding", "raw"), path,
                      f"minishard {m} index")
        if len(raw) % 24:
            raise InputError(path, f"corrupt shard file: the index of minishard {m} is {len(raw)} bytes, not a multiple of 24",
                             element=f"minishard {m}")
        table = np.frombuffer(raw, "<u8").reshape(3, -1)
        keys = np.cumsum(table[0], dtype=np.uint64)
        sizes = table[2].astype(np.int64)
        starts = np.cumsum(table[1].astype(np.int64) + np.r_[0, sizes[:-1]]) + index_bytes
        if len(keys) and int((starts + sizes).max()) > size:
            raise InputError(path, f"truncated shard file: {size} bytes, but minishard {m} holds data up to byte "
                                   f"{int((starts + sizes).max())}", element=f"minishard {m}")
        yield m, keys, starts, sizes


def _reader(f):
    def read(start: int, stop: int) -> bytes:
        f.seek(start)
        return f.read(stop - start)
    return read


def check_shards(directory, spec: dict) -> dict:
    """Check every shard file of a sharded source folder against its indices (what a truncated copy breaks).

    Reads only the shard and minishard indices. Returns {"files", "bytes", "keys"}; raises `InputError`
    naming the shard file when an index points past its end or does not decode.
    """
    files = sorted(Path(directory).glob("*.shard"))
    n_keys, n_bytes = 0, 0
    for path in files:
        size = path.stat().st_size
        n_bytes += size
        with open(path, "rb") as f:
            n_keys += sum(len(keys) for _, keys, _, _ in _minishards(path, spec, _reader(f), size))
    return {"files": len(files), "bytes": n_bytes, "keys": n_keys}


def read_shards(directory, spec: dict) -> dict[int, bytes]:
    """Every {key: bytes} stored in the shard files of `directory` (decoded; errors name the shard file)."""
    out = {}
    for path in sorted(Path(directory).glob("*.shard")):
        size = path.stat().st_size
        with open(path, "rb") as f:
            read = _reader(f)
            for m, keys, starts, sizes in _minishards(path, spec, read, size):
                for k, s, n in zip(keys.tolist(), starts.tolist(), sizes.tolist()):
                    out[k] = _decode(read(s, s + n), spec.get("data_encoding", "raw"), path, f"minishard {m} key {k}")
    return out


def sharded_sources(layer) -> list[tuple[Path, dict]]:
    """(folder, sharding spec) of every sharded source of a local layer: annotation indices, volume scales, and
    sub-sources with their own sharded `info` (skeletons, multi-resolution meshes); what `check_shards` runs on."""
    layer = Path(layer)
    info = json.loads((layer / "info").read_text())
    found = []
    if info.get("@type") == "neuroglancer_annotations_v1":
        for index in [info.get("by_id", {})] + info.get("relationships", []) + info.get("spatial", []):
            if "sharding" in index:
                found.append((layer / index["key"], index["sharding"]))
    for scale in info.get("scales", []):
        if "sharding" in scale:
            found.append((layer / scale["key"], scale["sharding"]))
    for sub in sorted(d for d in layer.iterdir() if not d.name.startswith(".") and (d / "info").is_file()):
        sub_info = json.loads((sub / "info").read_text())
        if isinstance(sub_info, dict) and "sharding" in sub_info:
            found.append((sub, sub_info["sharding"]))
    return found


# ---------------------------------------------------------------- skeleton sources

def _loose_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.is_file() and p.name.isdigit()]


def skeleton_source(directory) -> dict[int, bytes]:
    """{segment id: encoded skeleton} of a precomputed skeleton source folder, sharded or not; a per-cell
    `<id>` file beside the shards (a cell re-written after sharding) wins over the shards' copy."""
    directory = Path(directory)
    info = json.loads((directory / "info").read_text())
    out = read_shards(directory, info["sharding"]) if "sharding" in info else {}
    out.update({int(p.name): p.read_bytes() for p in _loose_files(directory)})
    return out


def shard_skeleton_source(directory, *, over: int) -> dict:
    """Rewrite a skeleton source folder as shard files when it holds more than `over` per-cell files
    (`use_sharding`), or when it is sharded already and per-cell files were added beside the shards (merged in).

    Built in a temporary folder beside it and swapped in, so a killed run leaves the old source.
    Returns {"rewritten", "skeletons", "shards"}.
    """
    from syconn_ng.annotations import swap_in_folder

    directory = Path(directory)
    info = json.loads((directory / "info").read_text())
    loose = _loose_files(directory)
    if not loose or ("sharding" not in info and not use_sharding(len(loose), over)):
        return {"rewritten": False, "skeletons": len(loose), "shards": len(list(directory.glob("*.shard")))}
    for stale in directory.parent.glob(f".{directory.name}.tmp-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    data = skeleton_source(directory)
    info["sharding"] = hashed_spec(len(data))
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        shards = write_shards(tmp, info["sharding"], data)
        (tmp / "info").write_text(json.dumps(info, indent=1) + "\n")
        swap_in_folder(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"rewritten": True, "skeletons": len(data), "shards": len(shards)}


def shard_layer_skeletons(layer_path, name: str, *, over: int) -> dict:
    """`shard_skeleton_source` on the skeleton source `name` of a segmentation layer (a stage's finishing pass);
    a layer that is not local keeps one file per cell."""
    from syconn_ng.layers import local_dir

    layer = local_dir(layer_path)
    if layer is None:
        return {"rewritten": False, "note": "not a local layer: one skeleton file per cell"}
    return shard_skeleton_source(layer / name, over=over)
