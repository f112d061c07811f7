"""KNOSSOS datasets (cubes on disk): parse the three config flavours and decode cube files.

A KNOSSOS dataset is a tree of 128³ cubes,
``{root}/mag{M}/x{X:04d}/y{Y:04d}/z{Z:04d}/{name}_mag{M}_x{X:04d}_y{Y:04d}_z{Z:04d}{ext}``,
described by a legacy ``knossos.conf``, a PyKNOSSOS ``*.pyk.conf`` or a ``*.k.toml``.
Everything here is a plain function on text, bytes and numpy arrays (plus directory scans);
`syconn_ng.commands.import_knossos` turns the result into precomputed layers.
Arrays are (X, Y, Z) like the rest of the project; in a cube file x runs fastest.
"""

from __future__ import annotations

import io
import math
import os
import re
import tomllib
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from syconn_ng.box import Box
from syconn_ng.errors import InputError

IMAGE_EXTENSIONS = (".raw", ".png", ".jpg", ".jpeg", ".j2k", ".6.jp2")
SEGMENTATION_EXTENSIONS = (".seg.sz.zip", ".seg.sz", ".seg")
OVERLAY_EXTENSION = ".seg.sz.zip"
DEFAULT_CUBE_SHAPE = (128, 128, 128)
_LEGACY_NAMES = ("knossos.conf", ".k.conf")
_PYK_NAMES = (".pyk.conf", ".pyknossos.conf", ".pyk.auth.conf", "ariadne.conf")


@dataclass(frozen=True)
class Mag:
    """One magnification: `folder` is the N of ``magN``; `shape` its extent in its own voxels."""

    folder: int
    voxel_size_nm: tuple[float, float, float]
    shape: tuple[int, int, int]


@dataclass(frozen=True)
class CubeLayer:
    """One layer of cubes: where they are, how they are named and encoded, at which mags."""

    config: Path
    root: Path
    name: str
    extension: str
    cube_shape: tuple[int, int, int]
    mags: tuple[Mag, ...]

    @property
    def kind(self) -> str:
        """``image`` (uint8 raw EM) or ``segmentation`` (uint64 overlay)."""
        return "segmentation" if self.extension in SEGMENTATION_EXTENSIONS else "image"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint64 if self.kind == "segmentation" else np.uint8)

    def with_extension(self, extension: str) -> "CubeLayer":
        return replace(self, extension=extension)


# ---------------------------------------------------------------------------------------
# Config files
# ---------------------------------------------------------------------------------------


def find_config(path) -> Path:
    """The config file for `path`: the file itself, or the one a dataset folder holds."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise InputError(p, "no such file or folder (expected knossos.conf, *.k.toml or *.pyk.conf)")
    candidates = [p / "mag1" / "knossos.conf", p / "knossos.conf"]
    candidates += sorted(p.glob("*.k.toml")) + sorted(q for q in p.glob("*.conf") if _flavour(q) == "pyk")
    for c in candidates:
        if c.is_file():
            return c
    raise InputError(p, "folder holds no KNOSSOS dataset config (knossos.conf, mag1/knossos.conf, *.k.toml, *.pyk.conf)")


def _flavour(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".k.toml") or name.endswith(".toml"):
        return "toml"
    if name.endswith(_PYK_NAMES):
        return "pyk"
    if name.endswith(_LEGACY_NAMES):
        return "legacy"
    return "unknown"


def read_dataset_config(path) -> list[CubeLayer]:
    """Parse a ``knossos.conf``, ``*.pyk.conf`` or ``*.k.toml`` (or a dataset folder) into layers."""
    p = find_config(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(p, f"not a text file ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise InputError(p, f"cannot read: {err.strerror}") from err
    flavour = _flavour(p)
    if flavour == "unknown":  # decide by content, as the file name says nothing
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        flavour = "toml" if first.startswith("[[") else "pyk" if first.startswith("[") else "legacy"
    parse = {"toml": parse_k_toml, "pyk": parse_pyk_conf, "legacy": parse_knossos_conf}[flavour]
    return parse(text, p)


_LEGACY_LINE = re.compile(r"^(?P<body>[^;]*);\s*(#.*)?$")


def parse_knossos_conf(text: str, path) -> list[CubeLayer]:
    """Legacy ``knossos.conf`` (``key value;`` lines) → one image layer with power-of-two mags.

    The conf describes mag ``magnification`` (default 1); a conf inside ``magN/`` belongs to
    the dataset root one folder up. Other mags are ``2^i`` with voxel size ``2^i × scale``.
    """
    path = Path(path)
    values: dict[str, tuple[object, int]] = {}
    png = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LEGACY_LINE.match(line)
        if m is None:
            raise InputError(path, f"expected 'key value;' (missing ';'), got {line!r}", line=lineno)
        words = m["body"].split()
        key = words[0] if words else ""
        if key in ("boundary", "scale") and len(words) == 3 and words[1] in ("x", "y", "z"):
            key, value = f"{key} {words[1]}", words[2]
        elif key == "experiment" and len(words) >= 3 and words[1] == "name":
            key, value = "experiment name", " ".join(words[2:]).strip('"')
        elif key == "png" and len(words) == 1:
            png = True
            continue
        elif key in ("magnification", "cube_edge_length", "compression_ratio") and len(words) == 2:
            value = words[1]
        else:
            continue  # unknown keys (ftp_mode, ...) do not change how local cubes are read
        number = float if key.startswith("scale") else int
        if key != "experiment name":
            try:
                value = number(value)
            except ValueError:
                raise InputError(path, f"expected {'an integer' if number is int else 'a number'}, got {value!r}", element=key, line=lineno) from None
            if value < 0 or (value == 0 and key != "compression_ratio"):
                raise InputError(path, f"expected a positive value, got {value}", element=key, line=lineno)
        values[key] = (value, lineno)

    def get(key, default=None):
        if key in values:
            return values[key][0]
        if default is None:
            raise InputError(path, f"missing line '{key} ...;'", element=key)
        return default

    name = str(get("experiment name"))
    name = name.split("_mag")[0]  # KNOSSOS drops '_mag1' from cube names
    mag = int(get("magnification", 1))
    extent = tuple(int(get(f"boundary {a}")) * mag for a in "xyz")
    scale = tuple(float(get(f"scale {a}")) / mag for a in "xyz")
    edge = int(get("cube_edge_length", DEFAULT_CUBE_SHAPE[0]))
    ratio = int(values.get("compression_ratio", (0, None))[0])
    ext = ".png" if png else {0: ".raw", 1000: ".jpg", 6: ".6.jp2"}.get(ratio, ".j2k")
    root = path.parent.parent if re.fullmatch(r"mag\d+", path.parent.name) else path.parent
    mags = power_of_two_mags(extent, scale)
    return [CubeLayer(path, root, name, ext, (edge,) * 3, mags)]


def power_of_two_mags(extent_px, voxel_size_nm) -> tuple[Mag, ...]:
    """Mags 1, 2, 4, ... (voxel size ×2 per step) while the dataset is at least one voxel wide."""
    out, m = [], 1
    while m <= max(extent_px):
        vs = tuple(float(v) * m for v in voxel_size_nm)
        out.append(Mag(m, vs, tuple(-(-int(e) // m) for e in extent_px)))
        m *= 2
    return tuple(out)


def mags_from_voxel_sizes(extent_px, voxel_sizes_nm, *, power_of_two: bool) -> tuple[Mag, ...]:
    """Mags from one voxel size per mag; folders ``mag1, mag2, mag4, ...`` or ``mag1, mag2, mag3, ...``.

    The extent of mag i is ``ceil(extent_px × voxel_size[0] / voxel_size[i])`` per axis (the
    factor may be anisotropic and non-integer, e.g. PyKNOSSOS' 9.252 → 37.008 × 25 → 37.008).
    """
    first = np.asarray(voxel_sizes_nm[0], dtype=np.float64)
    out = []
    for i, vs in enumerate(voxel_sizes_nm):
        ratio = first / np.asarray(vs, dtype=np.float64)
        shape = tuple(max(1, math.ceil(e * r - 1e-6)) for e, r in zip(extent_px, ratio))
        out.append(Mag(2**i if power_of_two else i + 1, tuple(float(v) for v in vs), shape))
    return tuple(out)


def _numbers(path, text: str, key: str, lineno: int | None, *, kind=float, multiple_of=3) -> list:
    """Comma separated numbers (a trailing comma is allowed) with a clear error naming the key."""
    items = [t.strip() for t in text.split(",")]
    if items and items[-1] == "":
        items.pop()
    try:
        vals = [kind(t) for t in items]
    except ValueError:
        raise InputError(path, f"expected comma separated {'integers' if kind is int else 'numbers'}, got {text!r}", element=key, line=lineno) from None
    if not vals or len(vals) % multiple_of or min(vals) <= 0:
        raise InputError(path, f"expected positive numbers in groups of {multiple_of} (x, y, z), got {text!r}", element=key, line=lineno)
    return vals


def _dataset_root(path: Path, url: str, key: str, lineno: int | None = None) -> Path:
    """The local folder a config's URL names: '' = the config's folder; relative to the config."""
    url = url.strip()
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url) and not url.startswith("file://"):
        raise InputError(path, f"names a remote dataset ({url}); only local cube folders can be imported: download it and point {key} at the folder", element=key, line=lineno)
    local = url[len("file://"):] if url.startswith("file://") else url
    root = (path.parent / local) if local else path.parent
    if not root.is_dir():
        raise InputError(path, f"dataset folder {root} does not exist", element=key, line=lineno)
    return root


def parse_pyk_conf(text: str, path) -> list[CubeLayer]:
    """PyKNOSSOS ``*.pyk.conf``: one layer per ``[Dataset]`` section with ``_Key = value`` lines."""
    path = Path(path)
    sections: list[dict[str, tuple[str, int]]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise InputError(path, f"expected a section header like [Dataset], got {line!r}", line=lineno)
            sections.append({})
            continue
        if "=" not in line:
            raise InputError(path, f"expected '_Key = value', got {line!r}", line=lineno)
        if not sections:
            raise InputError(path, "expected a [Dataset] section before the first key", line=lineno)
        key, value = (s.strip() for s in line.split("=", 1))
        sections[-1][key] = (value, lineno)
    if not sections:
        raise InputError(path, "no [Dataset] section")
    layers = []
    for i, sec in enumerate(sections):
        where = f"[Dataset] #{i + 1}"

        def get(key, default=None, sec=sec, where=where):
            if key in sec:
                return sec[key]
            if default is None:
                raise InputError(path, f"missing key in {where}", element=key)
            return default, None

        fmt, fmt_line = get("_ServerFormat", "")
        if fmt.strip() == "1":
            raise InputError(path, "OpenConnectome (_ServerFormat = 1) datasets are remote; only local cube folders can be imported", element="_ServerFormat", line=fmt_line)
        name, _ = get("_BaseName")
        url, url_line = get("_BaseURL", "")
        root = _dataset_root(path, url, "_BaseURL", url_line)
        ext, ext_line = get("_BaseExt", "")
        if not ext:
            ftype, ftype_line = get("_FileType", "0")
            ext = {"0": ".raw", "2": ".png", "3": ".jpg"}.get(ftype.strip())
            if ext is None:
                raise InputError(path, f"expected 0 (raw), 2 (png) or 3 (jpg), got {ftype!r}", element="_FileType", line=ftype_line)
        _check_extension(path, ext, "_BaseExt", ext_line)
        ev, el = get("_Extent")
        extent = tuple(_numbers(path, ev, "_Extent", el, kind=int)[:3])
        sv, sl = get("_DataScale")
        flat = _numbers(path, sv, "_DataScale", sl)
        cv, cl = get("_CubeSize", ",".join(map(str, DEFAULT_CUBE_SHAPE)))
        cube = tuple(_numbers(path, cv, "_CubeSize", cl, kind=int)[:3])
        voxel_sizes = [flat[j:j + 3] for j in range(0, len(flat), 3)]
        mags = mags_from_voxel_sizes(extent, voxel_sizes, power_of_two=fmt.strip().lower() == "knossos")
        layers.append(CubeLayer(path, root, name.strip(), ext, cube, mags))
    return layers


def _check_extension(path, ext: str, key: str, lineno=None) -> None:
    if ext not in IMAGE_EXTENSIONS + SEGMENTATION_EXTENSIONS:
        known = ", ".join(IMAGE_EXTENSIONS + SEGMENTATION_EXTENSIONS)
        raise InputError(path, f"expected a cube file extension ({known}), got {ext!r}", element=key, line=lineno)


def parse_k_toml(text: str, path) -> list[CubeLayer]:
    """``*.k.toml``: a list of ``[[Layer]]`` tables; one layer per entry of ``FileExtension``."""
    path = Path(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InputError(path, f"not valid TOML: {err}") from err
    tables = doc.get("Layer")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise InputError(path, "expected one or more [[Layer]] tables", element="[[Layer]]")
    layers = []
    for i, t in enumerate(tables):
        where = f"[[Layer]] #{i + 1}"

        def get(key, types, default=None, t=t, where=where):
            if key not in t:
                if default is None:
                    raise InputError(path, "missing key", element=f"{where} {key}")
                return default
            if not isinstance(t[key], types):
                raise InputError(path, f"expected {_type_names(types)}, got {t[key]!r}", element=f"{where} {key}")
            return t[key]

        def vector(key, value, kind):
            ok = isinstance(value, list) and len(value) == 3 and all(isinstance(v, kind) and not isinstance(v, bool) and v > 0 for v in value)
            if not ok:
                raise InputError(path, f"expected 3 positive {'integers' if kind is int else 'numbers'} [x, y, z], got {value!r}", element=f"{where} {key}")
            return tuple(value)

        fmt = get("ServerFormat", str, "")
        if fmt == "precomputed":
            raise InputError(path, "this layer is already Neuroglancer precomputed; open it directly", element=f"{where} ServerFormat")
        if get("NumChannels", int, 1) != 1:
            raise InputError(path, "only single-channel cubes can be imported", element=f"{where} NumChannels")
        name = get("Name", str)
        root = _dataset_root(path, get("URL", str, ""), f"{where} URL")
        exts = get("FileExtension", (str, list))
        exts = [exts] if isinstance(exts, str) else exts
        for e in exts:
            _check_extension(path, e, f"{where} FileExtension")
        extent = vector("Extent_px", get("Extent_px", list), int)
        cube = vector("CubeShape_px", get("CubeShape_px", list, list(DEFAULT_CUBE_SHAPE)), int)
        sizes = get("VoxelSize_nm", list)
        if not sizes:
            raise InputError(path, "expected one [x, y, z] per mag, got []", element=f"{where} VoxelSize_nm")
        sizes = [vector("VoxelSize_nm", s, (int, float)) for s in sizes]
        mags = mags_from_voxel_sizes(extent, sizes, power_of_two=fmt == "knossos")
        dtype = get("DataType", str, "")
        for e in exts:
            layer = CubeLayer(path, root, name, e, cube, mags)
            if dtype and dtype != layer.dtype.name:
                raise InputError(path, f"{e} cubes are imported as {layer.dtype.name}, got DataType {dtype!r}", element=f"{where} DataType")
            layers.append(layer)
    return layers


def _type_names(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {str: "a string", int: "an integer", float: "a number", list: "an array", bool: "a boolean"}
    return " or ".join(names.get(t, t.__name__) for t in types)


# ---------------------------------------------------------------------------------------
# Cube files
# ---------------------------------------------------------------------------------------


def cube_path(layer: CubeLayer, mag: Mag, index) -> Path:
    """The file of cube `index` (x, y, z cube indices) at `mag`."""
    x, y, z = (int(v) for v in index)
    m = mag.folder
    return (
        layer.root / f"mag{m}" / f"x{x:04d}" / f"y{y:04d}" / f"z{z:04d}"
        / f"{layer.name}_mag{m}_x{x:04d}_y{y:04d}_z{z:04d}{layer.extension}"
    )


def cube_grid(layer: CubeLayer, mag: Mag) -> tuple[int, int, int]:
    """Number of cubes per axis that cover the extent of `mag`."""
    return tuple(-(-s // c) for s, c in zip(mag.shape, layer.cube_shape))


def cube_nbytes(layer: CubeLayer) -> int:
    """Bytes of one decoded cube."""
    return int(np.prod(layer.cube_shape)) * layer.dtype.itemsize


def scan_cubes(layer: CubeLayer, mag: Mag) -> frozenset[tuple[int, int, int]]:
    """Indices of the cubes of `layer` present at `mag` inside its extent (a directory scan).

    ``.raw`` and ``.seg`` cubes are size-checked here, so a truncated cube fails before any
    output is written.
    """
    mag_dir = layer.root / f"mag{mag.folder}"
    grid = cube_grid(layer, mag)
    found = set()

    def indices(folder: Path, axis: str, n: int):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for e in entries:
            m = re.fullmatch(axis + r"(\d+)", e.name)
            if m and int(m[1]) < n and e.is_dir():
                yield int(m[1]), Path(e.path)

    for x, xd in indices(mag_dir, "x", grid[0]):
        for y, yd in indices(xd, "y", grid[1]):
            for z, _ in indices(yd, "z", grid[2]):
                p = cube_path(layer, mag, (x, y, z))
                try:
                    size = p.stat().st_size
                except OSError:
                    continue
                if layer.extension in (".raw", ".seg") and size != cube_nbytes(layer):
                    raise InputError(p, f"truncated cube: expected {cube_nbytes(layer)} bytes, found {size}")
                found.add((x, y, z))
    return frozenset(found)


def decode_cube(payload: bytes, extension: str, cube_shape, *, path=None) -> np.ndarray:
    """One cube file's bytes → (X, Y, Z) array (uint8 for images, uint64 for overlay cubes).

    ``.raw``/``.seg``: the voxels, x fastest. ``.png``/``.jpg``/``.j2k``: one grayscale image
    ``X`` wide and ``Y·Z`` high (row = z·Y + y). ``.seg.sz``: raw-snappy uint64 LE;
    ``.seg.sz.zip``: a zip whose first member is that. Bad bytes → InputError naming `path`.
    """
    cx, cy, cz = (int(v) for v in cube_shape)
    n = cx * cy * cz
    if extension in (".raw", ".seg", ".seg.sz", ".seg.sz.zip"):
        dtype = np.dtype("<u8") if extension.startswith(".seg") else np.dtype(np.uint8)
        if extension == ".seg.sz.zip":
            payload = _unzip_first(payload, path)
        if extension in (".seg.sz", ".seg.sz.zip"):
            payload = _unsnappy(payload, path)
        if len(payload) != n * dtype.itemsize:
            what = "truncated cube" if len(payload) < n * dtype.itemsize else "cube too large"
            raise InputError(path, f"{what}: expected {n * dtype.itemsize} bytes, found {len(payload)}")
        flat = np.frombuffer(payload, dtype=dtype).astype(dtype.newbyteorder("="), copy=False)
    else:
        flat = _decode_image(payload, (cx, cy * cz), path)
    return flat.reshape(cz, cy, cx).transpose(2, 1, 0)


def _unzip_first(payload: bytes, path) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            names = zf.namelist()
            if not names:
                raise InputError(path, "empty zip: expected one member holding the snappy cube")
            return zf.read(names[0])
    except zipfile.BadZipFile as err:
        raise InputError(path, f"not a zip file ({err})") from err
    except (zipfile.LargeZipFile, NotImplementedError, OSError, EOFError) as err:
        raise InputError(path, f"cannot read the zip member ({err})") from err


def _unsnappy(payload: bytes, path) -> bytes:
    import snappy

    try:
        return snappy.decompress(payload)
    except Exception as err:  # python-snappy raises UncompressError or cramjam's own errors
        raise InputError(path, f"corrupt snappy stream ({type(err).__name__}: {err})") from err


def _decode_image(payload: bytes, size_wh, path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(payload)) as im:
            im.load()
            if im.mode != "L":
                raise InputError(path, f"expected an 8-bit grayscale image, found mode {im.mode}")
            if im.size != tuple(size_wh):
                raise InputError(path, f"expected an image of {size_wh[0]}×{size_wh[1]} pixels (width × height), found {im.size[0]}×{im.size[1]}")
            return np.asarray(im, dtype=np.uint8).reshape(-1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(path, f"not a readable image ({err})") from err


def read_cube(layer: CubeLayer, mag: Mag, index) -> np.ndarray:
    """Decode one cube file of `layer` at `mag` → (X, Y, Z) array."""
    p = cube_path(layer, mag, index)
    try:
        payload = p.read_bytes()
    except OSError as err:
        raise InputError(p, f"cannot read cube: {err.strerror}") from err
    return decode_cube(payload, layer.extension, layer.cube_shape, path=p)


def assemble_box(box: Box, cube_shape, present, read: Callable[[tuple], np.ndarray], dtype) -> np.ndarray:
    """The (X, Y, Z) voxels of `box` (in the mag's own voxels) pasted from the cubes it touches.

    present: indices of existing cubes; read(index) → (X, Y, Z) cube array. Missing cubes
    stay zero.
    """
    c = tuple(int(v) for v in cube_shape)
    out = np.zeros(box.shape, dtype=dtype)
    lo = [a // cc for a, cc in zip(box.start, c)]
    hi = [-(-b // cc) for b, cc in zip(box.stop, c)]
    for ix in range(lo[0], hi[0]):
        for iy in range(lo[1], hi[1]):
            for iz in range(lo[2], hi[2]):
                if (ix, iy, iz) not in present:
                    continue
                cube_box = Box.from_shape(c, (ix * c[0], iy * c[1], iz * c[2]))
                inner = cube_box.intersect(box)
                out[inner.slices(relative_to=box.start)] = read((ix, iy, iz))[inner.slices(relative_to=cube_box.start)]
    return out
