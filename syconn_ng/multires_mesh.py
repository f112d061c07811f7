"""Multi-resolution, sharded, Draco-encoded meshes (`neuroglancer_multilod_draco`) from one mesh per cell.

A cell hundreds of micrometres long then loads progressively: Neuroglancer first fetches the coarse levels
of detail (LODs) and refines only the octree cells near the camera. Per cell:

1. LOD 0 is the full mesh; LOD k+1 is LOD k simplified to ~1/4 of its faces (zmesh's quadric simplifier),
   until a LOD has at most `min_faces` faces, stops shrinking, or `max_lods` is reached.
2. The octree: LOD k cells are `chunk_shape × 2**k` (nm) from the cell's `grid_origin`; `chunk_shape` is
   chosen so the top LOD is one cell. LOD 0 is cut on its own grid, LOD k > 0 on the grid of LOD k-1 (the
   format's 2×2×2 split), triangles cut at the planes, so every fragment lies in its cell.
3. Each fragment: vertices quantized to `vertex_quantization_bits` within its cell, Draco-encoded with
   integer positions (Draco's own quantization maps them one-to-one).
4. The manifest (chunk_shape, grid_origin, num_lods, lod_scales, vertex_offsets, fragments per LOD, their
   positions in Z-order and byte sizes); in a shard the fragments lie right before the manifest.

`write_multires_source` writes the `info` and the shard files of a set of cells (the `hulls` stage encodes
each cell in its `publish` task, then shards them all); `build_from_legacy` does both from a legacy mesh folder
(what the export calls).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from syconn_ng.errors import InputError

VERTEX_QUANTIZATION_BITS = 16  # the format allows 10 or 16
MAX_LODS = 6
MIN_FACES = 512  # a LOD this small is coarse enough; simplifying further only loses the shape
REDUCTION = 4  # faces of LOD k / faces of LOD k+1
MULTIRES_DIR = "mesh_multires"
LEGACY_MESH_DIR = "mesh"


@dataclass
class MultiresMesh:
    """One cell's encoded multi-resolution mesh: `manifest` and `fragments` (all LODs' Draco data, LOD 0 first)."""

    manifest: bytes
    fragments: bytes
    faces_per_lod: list[int]
    fragments_per_lod: list[int]
    bytes_per_lod: list[int]

    def arrays(self) -> dict[str, np.ndarray]:
        """The fields as arrays (for an `.npz` between the encoding task and the shard writer)."""
        return {"manifest": np.frombuffer(self.manifest, dtype=np.uint8), "fragments": np.frombuffer(self.fragments, dtype=np.uint8),
                "faces_per_lod": np.asarray(self.faces_per_lod, dtype=np.int64),
                "fragments_per_lod": np.asarray(self.fragments_per_lod, dtype=np.int64),
                "bytes_per_lod": np.asarray(self.bytes_per_lod, dtype=np.int64)}

    @classmethod
    def from_arrays(cls, z) -> "MultiresMesh":
        """The inverse of `arrays` (a dict or an open `.npz`)."""
        return cls(manifest=z["manifest"].tobytes(), fragments=z["fragments"].tobytes(), faces_per_lod=z["faces_per_lod"].tolist(),
                   fragments_per_lod=z["fragments_per_lod"].tolist(), bytes_per_lod=z["bytes_per_lod"].tolist())


# ---------------------------------------------------------------- levels of detail

def levels_of_detail(vertices: np.ndarray, faces: np.ndarray, *, max_lods: int = MAX_LODS, min_faces: int = MIN_FACES,
                     reduction: int = REDUCTION) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(vertices (N, 3) float32 nm, faces (M, 3) uint32), ...], LOD 0 = the input, each next ~`reduction`× fewer faces.

    Stops when a LOD has at most `min_faces` faces, when simplification removes fewer than a quarter of the
    faces (the mesh cannot get coarser) or at `max_lods` levels.
    """
    import zmesh

    lods = [(np.asarray(vertices, dtype=np.float32), np.asarray(faces, dtype=np.uint32))]
    while len(lods) < max_lods and len(lods[-1][1]) > min_faces:
        v, f = lods[-1]
        coarse = zmesh.simplify_fqmr(zmesh.Mesh(v, f, None), target_count=max(len(f) // reduction, 4), preserve_border=False)
        if len(coarse.faces) == 0 or len(coarse.faces) > 0.75 * len(f):
            break
        lods.append((np.asarray(coarse.vertices, dtype=np.float32), np.asarray(coarse.faces, dtype=np.uint32)))
    return lods


def lod_scales(lods: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(num_lods,) float32: each LOD's median edge length (nm), non-decreasing.

    Neuroglancer draws a LOD where this length, multiplied by `lod_scale_multiplier`, projects to less than
    its resolution cutoff (in screen pixels); LOD 0's edges are about a voxel long.
    """
    out = []
    for v, f in lods:
        tri = v[f.astype(np.int64)]
        out.append(float(np.median(np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2))))
    return np.maximum.accumulate(np.asarray(out, dtype=np.float32))


# ---------------------------------------------------------------- octree fragments

def morton_order(positions: np.ndarray) -> np.ndarray:
    """Indices sorting (n, 3) non-negative grid positions along the Z-curve (x the fastest-varying bit)."""
    positions = np.asarray(positions, dtype=np.uint64).reshape(-1, 3)
    code = np.zeros(len(positions), dtype=np.uint64)
    for bit in range(21):
        for axis in range(3):
            code |= ((positions[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return np.argsort(code, kind="stable")


def cut_at_plane(vertices: np.ndarray, faces: np.ndarray, axis: int, value: float) -> tuple[np.ndarray, np.ndarray]:
    """The mesh with every triangle that crosses the plane `x[axis] = value` split into triangles on either side.

    Winding is kept; the cut points are new vertices (one per cut edge and triangle; the client needs no sharing).
    """
    side = vertices[:, axis] - value
    side = np.where(np.abs(side) < 1e-6, 0.0, np.sign(side))[faces]  # (M, 3) of -1, 0, 1
    crossing = (side.max(axis=1) > 0) & (side.min(axis=1) < 0)
    if not crossing.any():
        return vertices, faces
    f, s = faces[crossing].astype(np.int64), side[crossing]
    # rotate each triangle (cyclically, keeping its winding) so that vertex 0 is the one on the plane (one vertex on
    # it, the others on either side) or else the one alone on its side
    on = s == 0
    alone = (s * np.roll(s, -1, axis=1) < 0) & (s * np.roll(s, 1, axis=1) < 0)
    first = np.where(on.any(axis=1), on.argmax(axis=1), alone.argmax(axis=1))
    idx = (first[:, None] + np.arange(3)) % 3
    f = np.take_along_axis(f, idx, axis=1)
    a, b, c = (vertices[f[:, i]] for i in range(3))

    def meet(p, q):  # where segment p→q meets the plane
        t = (value - p[:, axis]) / (q[:, axis] - p[:, axis])
        return p + t[:, None] * (q - p)

    n0 = len(vertices)
    one = on.any(axis=1)
    new_v, new_f = [], []
    # one vertex on the plane: (a, b, c) → (a, b, p), (a, p, c) with p on b→c
    if one.any():
        p = meet(b[one], c[one])
        ip = n0 + np.arange(len(p))
        fa = f[one]
        new_v.append(p)
        new_f += [np.stack([fa[:, 0], fa[:, 1], ip], axis=1), np.stack([fa[:, 0], ip, fa[:, 2]], axis=1)]
        n0 += len(p)
    two = ~one
    if two.any():  # a alone: (a, p, q), (p, b, c), (p, c, q) with p on a→b, q on a→c
        p, q = meet(a[two], b[two]), meet(a[two], c[two])
        ip, iq = n0 + np.arange(len(p)), n0 + len(p) + np.arange(len(p))
        fb = f[two]
        new_v += [p, q]
        new_f += [np.stack([fb[:, 0], ip, iq], axis=1), np.stack([ip, fb[:, 1], fb[:, 2]], axis=1),
                  np.stack([ip, fb[:, 2], iq], axis=1)]
    return np.concatenate([vertices, *new_v]), np.concatenate([faces[~crossing].astype(np.int64), *new_f])


def split_on_grid(vertices: np.ndarray, faces: np.ndarray, cell_nm: np.ndarray, origin_nm: np.ndarray) -> dict:
    """{(i, j, k): (vertices, faces)}: the mesh cut at the planes of a grid of `cell_nm` cells from `origin_nm`.

    Triangles are cut exactly at every plane (`cut_at_plane`; zmesh's `chunk_mesh` loses triangles that span
    several cells), then each goes to the cell of its centroid, so each piece lies inside its cell.
    """
    cell_nm, origin_nm = np.asarray(cell_nm, dtype=np.float64), np.asarray(origin_nm, dtype=np.float64)
    v, f = np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)
    for axis in range(3):
        first = int(np.floor((v[:, axis].min() - origin_nm[axis]) / cell_nm[axis])) + 1
        last = int(np.ceil((v[:, axis].max() - origin_nm[axis]) / cell_nm[axis])) - 1
        for k in range(first, last + 1):
            v, f = cut_at_plane(v, f, axis, origin_nm[axis] + k * cell_nm[axis])
    keys = np.floor((v[f].mean(axis=1) - origin_nm) / cell_nm).astype(np.int64)
    order = np.lexsort(keys.T[::-1])
    keys, f = keys[order], f[order]
    cut = np.flatnonzero(np.any(np.diff(keys, axis=0) != 0, axis=1)) + 1
    out = {}
    for ks, fs in zip(np.split(keys, cut), np.split(f, cut)):
        if not len(fs):
            continue
        used, local = np.unique(fs, return_inverse=True)
        lo = origin_nm + ks[0] * cell_nm
        out[tuple(int(k) for k in ks[0])] = (np.clip(v[used], lo, lo + cell_nm), local.reshape(-1, 3).astype(np.uint32))
    return out


def quantize(vertices: np.ndarray, lo_nm: np.ndarray, size_nm: np.ndarray, bits: int) -> np.ndarray:
    """(N, 3) uint32 stored positions in [0, 2**bits): `vertices` relative to the box [lo, lo + size)."""
    top = 2 ** bits - 1
    q = np.rint((np.asarray(vertices, dtype=np.float64) - lo_nm) / size_nm * top)
    return np.clip(q, 0, top).astype(np.uint32)


def encode_fragment(stored: np.ndarray, faces: np.ndarray, bits: int) -> bytes:
    """Draco bytes of a fragment with integer positions `stored` (the range 0..2**bits-1 maps one-to-one).

    Triangles that quantization collapses (two corners on one stored position) are dropped: Draco refuses a
    fragment of nothing else, and they draw nothing. A fragment left without triangles is empty (b"")."""
    import DracoPy

    corners = stored[faces]  # (M, 3 corners, 3 coordinates)
    flat = (np.all(corners[:, 0] == corners[:, 1], axis=1) | np.all(corners[:, 1] == corners[:, 2], axis=1)
            | np.all(corners[:, 0] == corners[:, 2], axis=1))
    faces = faces[~flat]
    if len(faces) == 0:
        return b""
    return DracoPy.encode(stored.astype(np.float32), faces.astype(np.uint32), quantization_bits=bits,
                          quantization_range=float(2 ** bits - 1), quantization_origin=np.zeros(3, dtype=np.float32),
                          compression_level=7)


def encode_multires(vertices: np.ndarray, faces: np.ndarray, *, bits: int = VERTEX_QUANTIZATION_BITS, max_lods: int = MAX_LODS,
                    min_faces: int = MIN_FACES, source: str = "mesh") -> MultiresMesh:
    """One cell's multi-resolution mesh from `vertices` (N, 3) nm (Neuroglancer's frame) and `faces` (M, 3).

    `source` names the mesh in the error an empty mesh raises (InputError: there is nothing to draw).
    """
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(faces).reshape(-1, 3)
    if len(faces) == 0 or len(vertices) == 0:
        raise InputError(source, "the mesh has no faces: a cell without voxels has no multi-resolution mesh")
    if faces.min() < 0 or faces.max() >= len(vertices) or not np.all(np.isfinite(vertices)):
        raise InputError(source, f"the mesh is malformed: face indices must lie in [0, {len(vertices)}) and vertices be finite")
    lods = levels_of_detail(vertices, faces.astype(np.uint32), max_lods=max_lods, min_faces=min_faces)
    num_lods = len(lods)
    lo = np.floor(np.min([v.min(axis=0) for v, _ in lods], axis=0)) - 1.0
    hi = np.ceil(np.max([v.max(axis=0) for v, _ in lods], axis=0)) + 1.0
    # the top LOD is one octree cell (a cube: lod scales are isotropic distances)
    chunk = np.full(3, max(float((hi - lo).max()) / 2 ** (num_lods - 1), 1.0))

    positions, blobs = [], []
    for lod, (v, f) in enumerate(lods):
        size = chunk * 2 ** lod
        # LOD > 0: cut on the child grid, so the client can draw the 8 octants of a fragment separately
        pieces = split_on_grid(v, f, size / 2 if lod else size, lo)
        grouped: dict[tuple, list] = {}
        for key, piece in pieces.items():
            parent = tuple(k >> 1 for k in key) if lod else key
            grouped.setdefault(parent, []).append(piece)
        if lod:  # every fragment of the finer LOD needs a parent here, empty if simplification left none
            for p in positions[-1]:
                grouped.setdefault(tuple(int(x) >> 1 for x in p), [])
        keys = np.asarray(sorted(grouped), dtype=np.int64).reshape(-1, 3)
        keys = keys[morton_order(keys)]
        lod_blobs = []
        for key in keys:
            parts = grouped[tuple(int(k) for k in key)]
            if not parts:
                lod_blobs.append(b"")
                continue
            pv, pf, n = [], [], 0
            for pv_i, pf_i in parts:
                pv.append(pv_i)
                pf.append(pf_i + n)
                n += len(pv_i)
            stored = quantize(np.concatenate(pv), lo + key * size, size, bits)
            lod_blobs.append(encode_fragment(stored, np.concatenate(pf), bits))
        positions.append(keys.astype(np.uint32))
        blobs.append(lod_blobs)

    header = [struct.pack("<3f", *chunk), struct.pack("<3f", *lo), struct.pack("<I", num_lods),
              lod_scales(lods).astype("<f4").tobytes(),
              np.zeros((num_lods, 3), dtype="<f4").tobytes(),
              np.asarray([len(p) for p in positions], dtype="<u4").tobytes()]
    for pos, lod_blobs in zip(positions, blobs):
        header.append(np.ascontiguousarray(pos.T, dtype="<u4").tobytes())  # [3, n], C order
        header.append(np.asarray([len(b) for b in lod_blobs], dtype="<u4").tobytes())
    return MultiresMesh(manifest=b"".join(header), fragments=b"".join(b"".join(b) for b in blobs),
                        faces_per_lod=[len(f) for _, f in lods], fragments_per_lod=[sum(1 for b in lb if b) for lb in blobs],
                        bytes_per_lod=[sum(len(b) for b in lb) for lb in blobs])


# ---------------------------------------------------------------- the source on disk

def multires_info(n_cells: int, *, bits: int = VERTEX_QUANTIZATION_BITS) -> dict:
    """The source's `info`: stored model = nm (identity transform), sharded with raw data (fragments precede manifests)."""
    from syconn_ng.sharding import hashed_spec

    sharding = {**hashed_spec(n_cells), "data_encoding": "raw"}
    return {"@type": "neuroglancer_multilod_draco", "vertex_quantization_bits": bits,
            "transform": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], "lod_scale_multiplier": 1.0, "sharding": sharding}


def write_multires_source(directory: Path, meshes: dict[int, MultiresMesh], *, bits: int = VERTEX_QUANTIZATION_BITS) -> dict:
    """Write `info` and the shard files of `meshes` ({cell id: MultiresMesh}) as `directory`, replacing it whole.

    Built in a sibling temporary folder and swapped in, so a killed run leaves the old source or none (never a
    mixture of shard files of two runs). Each shard value is fragments + manifest; the index points at the
    manifest (the spec's layout for sharded multi-resolution meshes). Returns {"cells", "shards", "bytes"}.
    """
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification, synthesize_shard_files

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    for stale in [*directory.parent.glob(f".{directory.name}.tmp-*"), *directory.parent.glob(f".{directory.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed writer (one writer per source: the stage lock)
    info = multires_info(len(meshes), bits=bits)
    files = {}
    if meshes:
        files = synthesize_shard_files(ShardingSpecification.from_dict(info["sharding"]),
                                       {int(c): m.fragments + m.manifest for c, m in meshes.items()},
                                       {int(c): len(m.manifest) for c, m in meshes.items()})
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        for name, payload in files.items():
            (tmp / name).write_bytes(payload)
        (tmp / "info").write_text(json.dumps(info, indent=1) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the source from a static server run by another user
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        if directory.exists():  # moved aside only now that the new source is complete
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"cells": len(meshes), "shards": len(files), "bytes": int(sum(len(b) for b in files.values()))}


def read_legacy_mesh(directory: Path, cell_id: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(vertices nm, faces) of cell `cell_id` in a legacy mesh folder (`<id>:0` manifest + fragments); None if absent."""
    directory = Path(directory)
    manifest = directory / f"{int(cell_id)}:0"
    if not manifest.is_file():
        return None
    verts, faces, n = [], [], 0
    for name in json.loads(manifest.read_text())["fragments"]:
        raw = (directory / name).read_bytes()
        nv = struct.unpack_from("<I", raw)[0]
        if len(raw) < 4 + 12 * nv or (len(raw) - 4 - 12 * nv) % 12:
            raise InputError(directory / name, f"legacy mesh fragment of {len(raw)} bytes does not hold {nv} vertices and whole triangles")
        verts.append(np.frombuffer(raw, dtype="<f4", count=3 * nv, offset=4).reshape(-1, 3))
        faces.append(np.frombuffer(raw, dtype="<u4", offset=4 + 12 * nv).reshape(-1, 3) + n)
        n += nv
    if not verts:
        return None
    return np.concatenate(verts), np.concatenate(faces)


def legacy_ids(directory: Path) -> list[int]:
    """Cell ids with a legacy mesh (`<id>:0`) in `directory`, sorted."""
    return sorted(int(p.name[:-2]) for p in Path(directory).glob("*:0") if p.name[:-2].isdigit())


def build_from_legacy(legacy_dir: Path, out_dir: Path, ids=None, **params) -> dict:
    """Multi-resolution source `out_dir` from the legacy meshes of `ids` (None = all) in `legacy_dir`.

    Cells without a legacy mesh (no voxels) are left out and counted. Returns {"cells", "shards", "bytes",
    "skipped", "faces_per_lod"} (faces summed over cells).
    """
    wanted = legacy_ids(legacy_dir) if ids is None else sorted(int(i) for i in ids)
    meshes, skipped = {}, 0
    for cell in wanted:
        mesh = read_legacy_mesh(legacy_dir, cell)
        if mesh is None or len(mesh[1]) == 0:
            skipped += 1
            continue
        meshes[cell] = encode_multires(*mesh, source=str(Path(legacy_dir) / f"{cell}:0"), **params)
    faces = np.zeros(max((len(m.faces_per_lod) for m in meshes.values()), default=0), dtype=np.int64)
    for m in meshes.values():
        faces[:len(m.faces_per_lod)] += m.faces_per_lod
    bits = params.get("bits", VERTEX_QUANTIZATION_BITS)
    return {**write_multires_source(out_dir, meshes, bits=bits), "skipped": skipped, "faces_per_lod": faces.tolist()}


def set_mesh_source(layer_path, name: str) -> None:
    """Point a segmentation layer's `info["mesh"]` at its mesh folder `name` (atomic rewrite of `info`)."""
    from cloudfiles import CloudFiles

    from syconn_ng.layers import atomic_write_text, local_dir, to_cloudpath

    local = local_dir(layer_path)
    cf = CloudFiles(to_cloudpath(layer_path))
    info = cf.get_json("info")
    if info.get("mesh") == name:
        return
    info["mesh"] = name
    if local is not None:
        atomic_write_text(local / "info", json.dumps(info))
    else:  # object stores replace whole objects
        cf.put_json("info", info)
