"""Reading and writing annotation files by extension: `.nml`, `.k.zip`, `.swc`.

The public entry points for skeletons in files; the formats live in `nml`, `kzip`, `swc`.
Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

from syconn_ng.errors import InputError, SyconnError
from syconn_ng.io.kzip import read_kzip, write_kzip
from syconn_ng.io.nml import read_nml, write_nml
from syconn_ng.io.skeleton import Skeleton
from syconn_ng.io.swc import read_swc, swc_lines

FORMATS = {".nml": "nml", ".xml": "nml", ".zip": "kzip", ".swc": "swc"}


def annotation_format(path) -> str:
    """``nml``, ``kzip`` or ``swc`` from the file name (`.nml`/`.xml`, `.k.zip`/`.zip`, `.swc`)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(path, f"unknown annotation file type {suffix!r}: expected .nml, .k.zip or .swc")
    return FORMATS[suffix]


def _voxel_size(value, path):
    if value is None:
        return None
    vs = tuple(float(v) for v in value)
    if len(vs) != 3 or min(vs) <= 0:
        raise InputError(path, f"voxel size {value!r}: expected three positive numbers (nm)")
    return vs


def read_annotation(path, *, allow_mergelist_only: bool = False, voxel_size_nm=None) -> Skeleton:
    """Read a `.nml`, `.k.zip` or `.swc` file into a Skeleton (0-based voxels, radii in voxels).

    voxel_size_nm: the dataset's (x, y, z) nm per mag-1 voxel. For NML and k.zip it is
    optional: when the file's `<scale>` differs, positions become round(value × file_scale /
    voxel_size_nm) and radii scale with x, as in KNOSSOS. SWC (nm) needs it.
    allow_mergelist_only: accept a `.k.zip` with `mergelist.txt` but no `annotation.xml`.
    """
    kind = annotation_format(path)
    voxel_size_nm = _voxel_size(voxel_size_nm, path)
    if not os.path.isfile(path):
        raise InputError(path, "no such file")
    if kind == "kzip":
        return read_kzip(path, allow_mergelist_only=allow_mergelist_only, voxel_size_nm=voxel_size_nm)
    if kind == "swc":
        if voxel_size_nm is None:
            raise InputError(path, "SWC positions are in nm: give the voxel size (voxel_size_nm, --voxel-size X,Y,Z)")
        try:
            with open(path, encoding="utf-8") as f:
                return read_swc(f, path=path, voxel_size_nm=voxel_size_nm)
        except UnicodeDecodeError as err:
            raise InputError(path, f"not UTF-8 text: {err.reason}") from None
    with open(path, "rb") as f:
        return read_nml(f, path=path, voxel_size_nm=voxel_size_nm)


def write_annotation(skeleton: Skeleton, path, *, voxel_size_nm=None) -> None:
    """Write `skeleton` to a `.nml`, `.k.zip` or `.swc` file, atomically.

    NML and k.zip are KNOSSOS-compatible (1-based, see docs/knossos_files.md); voxel_size_nm
    fills `<scale>` when the skeleton has none and must agree with it otherwise. SWC is in
    nm: voxel_size_nm, or else the skeleton's scale, converts voxels to nm.
    """
    kind = annotation_format(path)
    voxel_size_nm = _voxel_size(voxel_size_nm, path)
    scale = skeleton.parameters.scale_nm
    if kind == "swc":
        vs = voxel_size_nm or scale
        if vs is None:
            raise SyconnError(f"{path}: SWC is in nm: give the voxel size (the skeleton has no <scale>)")
        _atomic(path, lambda f: f.writelines(line.encode("utf-8") for line in swc_lines(skeleton, vs)))
        return
    if voxel_size_nm is not None and scale is None:
        skeleton = replace(skeleton, parameters=replace(skeleton.parameters, scale_nm=voxel_size_nm))
    elif voxel_size_nm is not None and tuple(float(v) for v in scale) != voxel_size_nm:
        raise SyconnError(f"{path}: voxel size {voxel_size_nm} differs from the skeleton's scale {scale}; "
                          "read it with read_annotation(..., voxel_size_nm=...) to rescale first")
    _atomic(path, lambda f: (write_kzip if kind == "kzip" else write_nml)(skeleton, f))


def _atomic(path, write) -> None:
    """Call `write(binary file)` on a temporary file beside `path`, then rename it to `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
