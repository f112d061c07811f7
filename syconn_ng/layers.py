"""Precomputed layers through CloudVolume: create, open, read a box, write chunks atomically.

Every layer the project writes is `compress=False` on `file://` (no `.gz` names a static
server cannot serve; the encodings still compress). Chunk writes on local disk encode the
chunk, write a temporary file and `os.replace` it, so a killed writer never leaves a
partial chunk visible; object stores replace whole objects atomically anyway.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from syconn_ng.box import Box
from syconn_ng.errors import InputError

DEFAULT_CHUNK_SIZE = (128, 128, 64)


def to_cloudpath(path) -> str:
    """A CloudVolume path for `path`: local paths become absolute ``file://`` URLs."""
    s = os.fspath(path)
    if s.startswith("precomputed://"):
        s = s[len("precomputed://"):]
    if "://" in s:
        return s
    return "file://" + str(Path(s).resolve())


def local_dir(cloudpath: str) -> Path | None:
    """The directory of a ``file://`` layer, or None for remote layers."""
    s = to_cloudpath(cloudpath)
    return Path(s[len("file://"):]) if s.startswith("file://") else None


def create_layer(
    path,
    *,
    layer_type: str,
    dtype,
    voxel_size_nm,
    shape,
    chunk_size=DEFAULT_CHUNK_SIZE,
    num_channels: int = 1,
    voxel_offset=(0, 0, 0),
    encoding: str | None = None,
    mesh: str | None = None,
    skeletons: str | None = None,
    extra_info: dict | None = None,
):
    """Write the `info` of a new precomputed layer and return it opened for writing.

    layer_type: ``image`` or ``segmentation``; segmentation defaults to
    ``compressed_segmentation`` encoding, images to ``raw``. `extra_info` is merged into
    the info (e.g. provenance-like metadata the pipeline attaches).
    """
    from cloudvolume import CloudVolume

    if encoding is None:
        encoding = "compressed_segmentation" if layer_type == "segmentation" else "raw"
    info = CloudVolume.create_new_info(
        num_channels=num_channels,
        layer_type=layer_type,
        data_type=np.dtype(dtype).name,
        encoding=encoding,
        resolution=[_number(v) for v in voxel_size_nm],
        voxel_offset=[int(v) for v in voxel_offset],
        volume_size=[int(v) for v in shape],
        chunk_size=[int(v) for v in chunk_size],
        mesh=mesh,
        skeletons=skeletons,
    )
    if extra_info:
        info.update(extra_info)
    cloudpath = to_cloudpath(path)
    vol = CloudVolume(cloudpath, info=info, **_open_kwargs())
    vol.commit_info()
    return vol


def _number(v):
    """An int where the value is integral, so scale keys read ``10_10_20``, not ``10.0_10.0_20.0``."""
    f = float(v)
    return int(f) if f.is_integer() else f


def _open_kwargs(fill_missing: bool = False) -> dict:
    return dict(parallel=1, compress=False, progress=False, fill_missing=fill_missing, bounded=False)


def open_layer(path, *, fill_missing: bool = False):
    """Open an existing layer (CloudVolume, `parallel=1`); a clear InputError if it is not one."""
    from cloudvolume import CloudVolume
    from cloudvolume.exceptions import InfoUnavailableError

    cloudpath = to_cloudpath(path)
    try:
        return CloudVolume(cloudpath, **_open_kwargs(fill_missing))
    except InfoUnavailableError as err:
        raise InputError(cloudpath, "not a precomputed layer (no readable 'info' file)") from err
    except json.JSONDecodeError as err:
        raise InputError(cloudpath, f"its 'info' file is not valid JSON ({err})", element="info") from err


def layer_box(vol) -> Box:
    """The layer's bounds at mag 1 as a Box."""
    return Box(vol.voxel_offset, np.asarray(vol.voxel_offset) + np.asarray(vol.volume_size))


def read_box(vol, box: Box, *, fill_value=0) -> np.ndarray:
    """(X, Y, Z, C) Fortran-order array of `box`; parts outside the layer bounds are `fill_value` (halos)."""
    bounds = layer_box(vol)
    # Fortran order like CloudVolume's cutouts: copying between the two orders costs more than the decode
    out = np.full(box.shape + (vol.num_channels,), fill_value, dtype=vol.dtype, order="F")
    inner = box.intersect(bounds)
    if inner.empty():
        return out
    from cloudvolume.exceptions import EmptyVolumeException

    try:
        data = vol[inner.slices()]
    except EmptyVolumeException as err:
        missing = sorted(name for name, ok in vol.exists(inner.slices()).items() if not ok)
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise InputError(vol.cloudpath, f"missing chunk(s) {shown or '?'} (set [chunking] missing_chunks = 'zeros' to read them as zeros)", element=f"chunk {missing[0] if missing else inner}") from err
    data = np.asarray(data)
    if data.shape != inner.shape + (vol.num_channels,):  # CloudVolume returns a 1-voxel read as (C, 1, 1, 1)
        data = data.reshape(inner.shape + (vol.num_channels,))
    out[inner.slices(relative_to=box.start)] = data
    return out


def write_box(vol, box: Box, array: np.ndarray) -> None:
    """Write `array` (X, Y, Z[, C]) at `box`, which must be chunk aligned (or end at the bounds).

    Local layers: each chunk is encoded, written to a temporary file beside its target and
    renamed into place. Remote layers: CloudVolume uploads whole objects.
    """
    arr = np.asarray(array)
    if arr.ndim == 3:
        arr = arr[..., np.newaxis]
    if arr.shape[:3] != box.shape:
        raise ValueError(f"array shape {arr.shape[:3]} does not match {box}")
    if arr.dtype != vol.dtype:
        raise ValueError(f"array dtype {arr.dtype} does not match the layer's {vol.dtype}")
    root = local_dir(vol.cloudpath)
    if root is None:
        vol[box.slices()] = arr
        return
    from cloudvolume import chunks as cv_chunks

    bounds = layer_box(vol)
    grid = tuple(int(c) for c in vol.chunk_size)
    origin = tuple(int(v) for v in vol.voxel_offset)
    if box.snap(grid, origin).intersect(bounds) != box:
        raise ValueError(f"{box} is not aligned to the chunk grid {grid} of {vol.cloudpath}")
    scale_dir = root / vol.key
    scale_dir.mkdir(parents=True, exist_ok=True)
    encoding = vol.encoding
    block = vol.meta.compressed_segmentation_block_size(vol.mip) if encoding == "compressed_segmentation" else None
    for cell in Box(box.start, box.stop).chunks(grid):
        data = np.asfortranarray(arr[cell.slices(relative_to=box.start)])
        payload = cv_chunks.encode(data, encoding, block_size=block)
        atomic_write_bytes(scale_dir / cell.name(), payload)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path, payload: bytes) -> None:
    """Write `payload` to `path` through a temporary file in the same folder and a rename.

    The file gets the permissions a plain `open()` would give (0666 less the umask), not mkstemp's 0600,
    so other users and static web servers can read outputs.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_temp_files(directory) -> int:
    """Delete the temporary files `atomic_write_bytes` left under `directory` when its writer was killed.

    Call only while no writer of that directory runs (e.g. when a stage starts). Returns the count.
    """
    n = 0
    for tmp in Path(directory).rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n
