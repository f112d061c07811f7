"""Volume layers for an export: copied chunk for chunk, optionally with every id but a kept set zeroed,
optionally re-written sharded (`neuroglancer_uint64_sharded_v1`, one file per shard, whole shards only).

Plain copies of local unsharded layers copy the chunk files byte for byte; everything else is read and
written through CloudVolume (`compress=False`, so no `.gz` names).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from syconn_ng.box import Box
from syconn_ng.errors import InputError
from syconn_ng.layers import local_dir, open_layer, read_box, to_cloudpath

# sharded volumes: at most this many uncompressed bytes per shard, so one shard fits in memory while written
SHARD_BYTES = 2**28
PER_VOLUME_KEYS = ("mesh", "skeletons", "segment_properties")  # sub-sources the export writes itself


def mask_except(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`labels` with every id not in `keep` set to 0 (a new array; dtype and order kept)."""
    out = np.array(labels, copy=True, order="K")
    out[~np.isin(out, np.asarray(keep, dtype=out.dtype))] = 0
    return out


def sharded_info(info: dict) -> dict:
    """A copy of a volume `info` whose every scale carries an image sharding spec (identity hash on the
    chunks' compressed Morton codes, shards of at most `SHARD_BYTES` uncompressed)."""
    from cloudvolume.datasource.precomputed.sharding import compute_shard_params_for_image

    info = json.loads(json.dumps(info))
    for scale in info["scales"]:
        spec = compute_shard_params_for_image(scale["size"], scale["chunk_sizes"][0], scale["encoding"], info["data_type"],
                                              uncompressed_shard_bytesize=SHARD_BYTES)
        scale["sharding"] = {k: int(v) if isinstance(v, np.integer) else v for k, v in spec.to_dict().items()}
    return info


def _write_boxes(vol, mip: int) -> list[Box]:
    """The boxes written one at a time: whole shards for a sharded scale, else slabs of whole chunks."""
    bounds = Box(vol.meta.voxel_offset(mip), np.asarray(vol.meta.voxel_offset(mip)) + vol.meta.volume_size(mip))
    chunk = np.asarray(vol.meta.chunk_size(mip))
    sharding = vol.meta.scale(mip).get("sharding")
    if sharding:
        from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

        spec = ShardingSpecification.from_dict(sharding)
        step = np.asarray(spec.image_shard_shape(vol.meta.volume_size(mip), chunk), dtype=np.int64)
    else:
        step = chunk * np.array([4, 4, 1])  # 16 chunks per read: few requests, bounded memory
    return bounds.chunks(step)


def copy_volume(src, dst: Path, *, keep_ids=None, sharded: bool = False) -> dict:
    """Copy the precomputed volume `src` (any CloudVolume path) to the local folder `dst`.

    keep_ids: (K,) ids to keep (segmentation only; every other voxel becomes 0), None = all. sharded:
    re-write every scale sharded. The `mesh`/`skeletons`/`segment_properties` keys are dropped (the
    caller writes those). Returns {"files": data files written, "bytes": their size}.
    """
    from syconn_ng.downsample import check_scales

    src_vol = open_layer(src)
    check_scales(src_vol.info, src_vol.cloudpath)  # every scale the info lists is copied: they must agree
    info = {k: v for k, v in src_vol.info.items() if k not in PER_VOLUME_KEYS}
    if sharded:
        info = sharded_info(info)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "info").write_text(json.dumps(info, indent=1) + "\n")
    src_dir = local_dir(src_vol.cloudpath)
    if not sharded and keep_ids is None and src_dir is not None:
        for i, scale in enumerate(info["scales"]):
            if not (src_dir / scale["key"]).is_dir():
                raise InputError(src_vol.cloudpath, f"the info lists this scale but its folder {scale['key']}/ is missing "
                                                    "(an unfinished `scales` stage or `syconn-ng downsample`?)", element=f"info: scales[{i}]")
            shutil.copytree(src_dir / scale["key"], dst / scale["key"], dirs_exist_ok=True)
    else:
        from cloudvolume import CloudVolume

        for mip in range(len(info["scales"])):
            src_mip = CloudVolume(src_vol.cloudpath, mip=mip, parallel=1, progress=False)
            out = CloudVolume(to_cloudpath(dst), mip=mip, parallel=1, compress=False, progress=False, fill_missing=True)
            for box in _write_boxes(out, mip):
                data = read_box(src_mip, box)
                if keep_ids is not None:
                    data = mask_except(data, keep_ids)
                out[box.slices()] = data
    files = [p for p in dst.rglob("*") if p.is_file() and p.name != "info"]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
