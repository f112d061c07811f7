"""Write small KNOSSOS datasets for tests, in the real on-disk layout, with every config flavour.

Written from the format facts (docs/reference/knossos.md §3), independently of the reader in
`syconn_ng.io.knossos_dataset`: cubes of 128³ with x fastest, images X wide and Y·Z high,
overlay cubes as a zip holding one raw-snappy uint64 member.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CUBE = (128, 128, 128)


def cube_file(root, name: str, mag: int, index, ext: str) -> Path:
    x, y, z = index
    return Path(root) / f"mag{mag}" / f"x{x:04d}" / f"y{y:04d}" / f"z{z:04d}" / f"{name}_mag{mag}_x{x:04d}_y{y:04d}_z{z:04d}{ext}"


def encode_cube(cube_xyz: np.ndarray, ext: str) -> bytes:
    """The bytes of one cube file; `cube_xyz` is (X, Y, Z)."""
    zyx = np.ascontiguousarray(cube_xyz.transpose(2, 1, 0))  # file order: x fastest
    if ext == ".raw":
        return zyx.astype(np.uint8).tobytes()
    if ext in (".png", ".jpg", ".j2k"):
        from PIL import Image

        z, y, x = zyx.shape
        buf = io.BytesIO()
        img = Image.fromarray(zyx.astype(np.uint8).reshape(z * y, x), mode="L")
        options = {".png": {"format": "PNG"}, ".jpg": {"format": "JPEG", "quality": 100}, ".j2k": {"format": "JPEG2000", "irreversible": False}}
        img.save(buf, **options[ext])  # PNG and reversible JPEG 2000 are lossless
        return buf.getvalue()
    if ext == ".seg":
        return zyx.astype("<u8").tobytes()
    if ext in (".seg.sz", ".seg.sz.zip"):
        import snappy

        payload = snappy.compress(zyx.astype("<u8").tobytes())
        if ext == ".seg.sz":
            return payload
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("cube.seg.sz", payload)
        return buf.getvalue()
    raise ValueError(ext)


def write_cubes(root, name: str, volume_xyz: np.ndarray, *, mag: int, ext: str, skip=(), cube=CUBE) -> list[tuple]:
    """Cut `volume_xyz` into cubes (zero padded at the far edges) and write them; returns indices."""
    grid = [-(-s // c) for s, c in zip(volume_xyz.shape, cube)]
    written = []
    for index in np.ndindex(*grid):
        if index in skip:
            continue
        block = np.zeros(cube, dtype=volume_xyz.dtype)
        start = [i * c for i, c in zip(index, cube)]
        part = volume_xyz[start[0]:start[0] + cube[0], start[1]:start[1] + cube[1], start[2]:start[2] + cube[2]]
        block[: part.shape[0], : part.shape[1], : part.shape[2]] = part
        path = cube_file(root, name, mag, index, ext)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_cube(block, ext))
        written.append(tuple(index))
    return written


def write_knossos_conf(path, name: str, extent, scale_nm, *, ext=".raw", magnification=None) -> Path:
    """A legacy ``knossos.conf`` as knossos_cuber writes it (`name` gets the usual ``_mag1``)."""
    lines = [f'experiment name "{name}_mag1";']
    lines += [f"boundary {a} {v};" for a, v in zip("xyz", extent)]
    lines += [f"scale {a} {float(v)};" for a, v in zip("xyz", scale_nm)]
    if magnification is not None:
        lines.append(f"magnification {magnification};")
    if ext == ".jpg":
        lines.append("compression_ratio 1000;")
    if ext == ".png":
        lines.append("png;")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_pyk_conf(path, name: str, extent, voxel_sizes_nm, *, ext=".raw", base_url="", server_format="2", file_type=None) -> Path:
    """A PyKNOSSOS ``*.pyk.conf`` (flat ``_DataScale`` with a trailing comma, as PyKNOSSOS writes)."""
    flat = ",".join(f"{float(v):f}" for vs in voxel_sizes_nm for v in vs)
    lines = ["[Dataset]", f"_BaseName = {name}", f"_BaseURL = {base_url}", f"_ServerFormat = {server_format}"]
    lines += [f"_FileType = {file_type}"] if file_type is not None else [f"_BaseExt = {ext}"]
    lines += [f"_DataScale = {flat},", f"_Extent = {','.join(map(str, extent))},", "_CubeSize = 128,128,128", "_Origin = 0,0,0,"]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_k_toml(path, name: str, extent, voxel_sizes_nm, *, exts=(".raw",), url="", server_format="knossos") -> Path:
    """A ``*.k.toml`` with one ``[[Layer]]``."""
    sizes = ", ".join("[" + ", ".join(f"{v:g}" for v in vs) + "]" for vs in voxel_sizes_nm)
    lines = [
        "[[Layer]]",
        f'URL = "{url}"',
        f'Name = "{name}"',
        "FileExtension = [" + ", ".join(f'"{e}"' for e in exts) + "]",
    ]
    if server_format is not None:
        lines.append(f'ServerFormat = "{server_format}"')
    lines += [f"Extent_px = [{', '.join(map(str, extent))}]", "CubeShape_px = [128, 128, 128]", f"VoxelSize_nm = [{sizes}]"]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def jpeg_exact_volume(shape, rng) -> np.ndarray:
    """uint8 (X, Y, Z) constant on 8×8 x-y tiles: a quality-100 JPEG of such cubes decodes exactly."""
    tiles = rng.integers(0, 256, size=(-(-shape[0] // 8), -(-shape[1] // 8), shape[2]), dtype=np.uint8)
    return np.repeat(np.repeat(tiles, 8, axis=0), 8, axis=1)[: shape[0], : shape[1]]


def segmentation_volume(shape, rng) -> np.ndarray:
    """uint64 (X, Y, Z) of 16³ blocks whose ids include 0 and values above 2^32 and 2^63."""
    ids = np.array([0, 1, 7, 2**32 + 5, 2**40 + 123, 2**63 + 11, 2**64 - 2], dtype=np.uint64)
    blocks = rng.integers(0, len(ids), size=[-(-s // 16) for s in shape])
    vol = ids[blocks]
    for axis in range(3):
        vol = np.repeat(vol, 16, axis=axis)
    return vol[: shape[0], : shape[1], : shape[2]]


def downsample(volume_xyz: np.ndarray, factor) -> np.ndarray:
    """Striding: the value of every `factor`-th voxel (what a mag-N cube holds here)."""
    fx, fy, fz = factor
    return np.ascontiguousarray(volume_xyz[::fx, ::fy, ::fz])


@dataclass
class Dataset:
    """A written test dataset: its config and the (X, Y, Z) arrays per mag folder."""

    config: Path
    root: Path
    voxel_size_nm: tuple
    raw: dict[int, np.ndarray] = field(default_factory=dict)
    seg: dict[int, np.ndarray] = field(default_factory=dict)
    missing: dict[int, set] = field(default_factory=dict)


def make_dataset(
    root,
    flavour: str,
    *,
    ext=".raw",
    extent=(256, 256, 128),
    voxel_size_nm=(10, 10, 25),
    with_seg=True,
    missing=((1, 0, 0),),
    seed=0,
) -> Dataset:
    """A dataset of mag1 (extent, 128³ cubes, cube 1,0,0 missing) and mag2 (factor 2,2,2 or,
    for the PyKNOSSOS flavour with ordinal mags, 2,2,1), with overlay cubes beside the raw ones.

    flavour: ``knossos.conf`` (conf in ``mag1/``), ``k.toml`` or ``pyk.conf``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    name = "testds"
    if ext == ".jpg":
        raw1 = jpeg_exact_volume(extent, rng)
    else:
        raw1 = rng.integers(0, 256, size=extent, dtype=np.uint8)
    factor = (2, 2, 1) if flavour == "pyk.conf" else (2, 2, 2)
    vs2 = tuple(v * f for v, f in zip(voxel_size_nm, factor))
    ds = Dataset(config=root, root=root, voxel_size_nm=tuple(voxel_size_nm))
    ds.raw[1] = raw1
    ds.raw[2] = downsample(raw1, factor)
    if ext == ".jpg":  # keep mag 2 JPEG-exact too
        ds.raw[2] = jpeg_exact_volume(ds.raw[2].shape, rng)
    ds.missing = {1: set(missing), 2: set()}
    if with_seg:
        ds.seg[1] = segmentation_volume(extent, rng)
        ds.seg[2] = downsample(ds.seg[1], factor)
    for mag in (1, 2):
        write_cubes(root, name, ds.raw[mag], mag=mag, ext=ext, skip=ds.missing[mag])
        if with_seg:
            write_cubes(root, name, ds.seg[mag], mag=mag, ext=".seg.sz.zip", skip=ds.missing[mag])
    if flavour == "knossos.conf":
        ds.config = write_knossos_conf(root / "mag1" / "knossos.conf", name, extent, voxel_size_nm, ext=ext)
    elif flavour == "k.toml":
        exts = (ext, ".seg.sz.zip") if with_seg else (ext,)
        ds.config = write_k_toml(root / f"{name}.k.toml", name, extent, [voxel_size_nm, vs2], exts=exts)
    elif flavour == "pyk.conf":
        ds.config = write_pyk_conf(root / f"{name}.pyk.conf", name, extent, [voxel_size_nm, vs2], ext=ext)
    else:
        raise ValueError(flavour)
    return ds


def expected(ds: Dataset, kind: str, mag: int, cube=CUBE) -> np.ndarray:
    """What the converted layer must hold at `mag`: the written volume with missing cubes zeroed."""
    vol = (ds.raw if kind == "raw" else ds.seg)[mag].copy()
    for index in ds.missing.get(mag, ()):
        vol[tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, cube))] = 0
    return vol
