"""`.k.zip` annotation files: an `annotation.xml` (NML) plus other members kept byte for byte.

Members are checked before anything is decompressed: no absolute or `../` names, no more
than MAX_MEMBERS, at most MAX_TOTAL_BYTES uncompressed, and no member above
RATIO_CHECK_MIN_BYTES compressed more than MAX_COMPRESSION_RATIO times (a zip bomb). Members
such as `*.py` plugins, which KNOSSOS runs on load, are kept as bytes and never executed.
"""

from __future__ import annotations

import os
import zipfile
import zlib

from syconn_ng.errors import InputError, SyconnError
from syconn_ng.io.nml import read_nml, write_nml
from syconn_ng.io.skeleton import Skeleton

ANNOTATION = "annotation.xml"
MERGELIST = "mergelist.txt"
MAX_TOTAL_BYTES = 2 * 1024**3  # summed uncompressed size of all members
MAX_COMPRESSION_RATIO = 200  # uncompressed / compressed, per member...
RATIO_CHECK_MIN_BYTES = 1 << 20  # ...for members larger than this (small files compress well)
MAX_MEMBERS = 10_000


def _unsafe_name(name: str) -> bool:
    """True for member names that could escape a folder they were extracted to."""
    parts = name.replace("\\", "/").split("/")
    return (name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")
            or ".." in parts or "\x00" in name)


def checked_members(zf: zipfile.ZipFile, path) -> list[zipfile.ZipInfo]:
    """The file members of `zf`, after the safety checks above; InputError names the member."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise InputError(path, f"{len(infos)} members; at most {MAX_MEMBERS} accepted")
    total = 0
    names = set()
    files = []
    for info in infos:
        name = info.filename
        element = f'member "{name}"'
        if _unsafe_name(name):
            raise InputError(path, "absolute or '..' member name refused", element=element)
        if name in names:
            raise InputError(path, "member name appears twice", element=element)
        names.add(name)
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise InputError(path, "encrypted members are not supported", element=element)
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise InputError(path, f"members exceed {MAX_TOTAL_BYTES} bytes uncompressed (zip bomb?)",
                             element=element)
        if (info.file_size > RATIO_CHECK_MIN_BYTES
                and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1)):
            raise InputError(path, f"compression ratio above {MAX_COMPRESSION_RATIO} (zip bomb?)",
                             element=element)
        files.append(info)
    return files


def read_kzip(path, *, allow_mergelist_only: bool = False, voxel_size_nm=None) -> Skeleton:
    """Read a `.k.zip`: the skeleton from `annotation.xml`, every other member into `members`.

    Without `annotation.xml` this raises InputError, unless `allow_mergelist_only` and the
    zip holds `mergelist.txt`: then the Skeleton has no trees and dialect ``kzip_mergelist``.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = checked_members(zf, path)
            by_name = {i.filename: i for i in infos}
            if ANNOTATION in by_name:
                with zf.open(by_name[ANNOTATION]) as f:
                    skel = read_nml(f, path=f"{os.fspath(path)}[{ANNOTATION}]", voxel_size_nm=voxel_size_nm)
            elif allow_mergelist_only and MERGELIST in by_name:
                skel = Skeleton(dialect="kzip_mergelist")
            else:
                raise InputError(path, f"no {ANNOTATION} member (members: {sorted(by_name)[:10]})",
                                 element=ANNOTATION)
            skel.members = {i.filename: zf.read(i) for i in infos if i.filename != ANNOTATION}
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError, OSError) as err:
        raise InputError(path, f"not a readable zip file: {err}") from None
    return skel


def write_kzip(skel: Skeleton, f) -> None:
    """Write `skel` as a `.k.zip` into the binary file `f`: `annotation.xml`, then the kept members."""
    for name in skel.members:
        if name == ANNOTATION or _unsafe_name(name):
            raise SyconnError(f"cannot write member {name!r} next to the skeleton")
    with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(ANNOTATION, "w") as member:
            write_nml(skel, member)
        for name, data in skel.members.items():
            zf.writestr(name, data)
