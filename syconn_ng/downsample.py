"""Downsampled scales (mip levels) of precomputed volume layers, with tinybrain.

Images and probabilities are averaged (the floor of the mean of the voxels a coarse voxel covers),
segmentations take the mode (a coarse voxel keeps one of its children's ids, never a mixture).
Each mip is made from the one before it, 2×2×1 while z is coarser than x/y by more than √2, then
2×2×2; the plan stops when a scale fits in one chunk or is at most `min_size_vx` voxels across.

Work is done in engine tasks: a task reads one block of a source mip, aligned to the chunk grid of
the coarsest mip it writes (so blocks never split a coarse voxel: no seams), and writes every mip
of its round from it; a later round starts from the last mip of the previous one, so a task's
memory stays under `MAX_TASK_BYTES`. `ScalesStage` (the pipeline's `scales` stage) and
`DownsampleStage` (`syconn-ng downsample LAYER`) drive those tasks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from syconn_ng.box import Box
from syconn_ng.engine.driver import Pass
from syconn_ng.errors import InputError
from syconn_ng.layers import _number, atomic_write_text, local_dir, open_layer, read_box, remove_temp_files, write_box

MAX_TASK_BYTES = 2**28  # input block of one task (the outputs and tinybrain's copies add about half of that)
ISOTROPY = math.sqrt(2)  # z is halved too once its voxel side is within this factor of x/y's
CHECKED_FILES = 1000  # chunk file names checked per scale by `check_scales` (a bound for huge layers)


# ------------------------------------------------------------ the pure functions


def _pad_even(channel: np.ndarray, factor) -> np.ndarray:
    """`channel` (X, Y, Z) with its last plane repeated on every odd axis that `factor` halves.

    Repeating the edge counts each voxel of an edge block equally often, so the mean and the most
    frequent labels stay those of the voxels that exist (tinybrain 1.7 mishandles odd 2×2 edges).
    """
    pad = [(0, int(f == 2 and s % 2)) for s, f in zip(channel.shape, factor)]
    if not any(p for _, p in pad):
        return np.asfortranarray(channel)
    return np.asfortranarray(np.pad(channel, pad, mode="edge"))


def reduce_block(block: np.ndarray, factor, *, method: str) -> np.ndarray:
    """One mip down: (X, Y, Z, C) → (⌈X/fx⌉, ⌈Y/fy⌉, ⌈Z/fz⌉, C), same dtype, Fortran order.

    factor: (2, 2, 1) or (2, 2, 2). method: ``average`` (floor of the mean; images, probabilities)
    or ``mode`` (the most frequent id; segmentations, so ids are never mixed). Odd edges use the
    voxels that exist.
    """
    import tinybrain

    factor = tuple(int(f) for f in factor)
    if factor not in ((2, 2, 1), (2, 2, 2)):
        raise ValueError(f"factor {factor} is not (2, 2, 1) or (2, 2, 2)")
    if method not in ("average", "mode"):
        raise ValueError(f"method {method!r} is not 'average' or 'mode'")
    shape = tuple(-(-s // f) for s, f in zip(block.shape[:3], factor))
    out = np.empty(shape + (block.shape[3],), dtype=block.dtype, order="F")
    for c in range(block.shape[3]):  # one 3-D call per channel: tinybrain's 4-D 2×2×2 mode corrupts memory
        channel = _pad_even(block[..., c], factor)
        if method == "average":
            out[..., c] = tinybrain.downsample_with_averaging(channel, factor)[0]
        else:
            out[..., c] = tinybrain.downsample_segmentation(channel, factor)[0]
    return out


def reduce_mips(block: np.ndarray, factors, *, method: str) -> list[np.ndarray]:
    """The mips of `block` for each factor in turn (each made from the previous one)."""
    out = []
    for f in factors:
        block = reduce_block(block, f, method=method)
        out.append(block)
    return out


# ------------------------------------------------------------ the scale plan


@dataclass(frozen=True)
class Scale:
    """One scale of a layer: its factor from the previous scale, voxel size, bounds and chunk size."""

    factor: tuple[int, int, int]
    resolution_nm: tuple[float, float, float]
    voxel_offset: tuple[int, int, int]
    size: tuple[int, int, int]
    chunk_size: tuple[int, int, int]

    @property
    def key(self) -> str:
        return "_".join(str(_number(r)) for r in self.resolution_nm)

    @property
    def bounds(self) -> Box:
        return Box.from_shape(self.size, self.voxel_offset)


def next_factor(resolution_nm) -> tuple[int, int, int]:
    """(2, 2, 2) once z's voxel side is within √2 of x/y's, else (2, 2, 1) (anisotropic EM: x/y catch up first)."""
    x, y, z = (float(r) for r in resolution_nm)
    return (2, 2, 2) if z <= ISOTROPY * max(x, y) else (2, 2, 1)


def scale_chunk_size(chunk0, resolution_nm) -> tuple[int, int, int]:
    """Chunk of a new scale: powers of two, no more voxels than the mip-0 chunk, as near a cube in nm as that allows."""
    budget = int(np.prod(chunk0))
    res = np.asarray(resolution_nm, dtype=float)
    side_nm = (budget * float(np.prod(res))) ** (1 / 3)
    return tuple(int(2 ** max(0, math.floor(math.log2(side_nm / r) + 1e-9))) for r in res)


def plan_scales(size, voxel_offset, resolution_nm, chunk_size, *, max_mips: int = -1, min_size_vx: int = 64) -> list[Scale]:
    """Mip 0 and the scales below it: halve until a scale fits in one chunk or is <= `min_size_vx` across.

    max_mips: at most this many scales after mip 0 (-1 = no limit, 0 = none). The plan also ends
    where the voxel offset is not divisible by the next factor (the grids would not line up).
    """
    scales = [Scale((1, 1, 1), tuple(float(r) for r in resolution_nm), tuple(int(v) for v in voxel_offset),
                    tuple(int(v) for v in size), tuple(int(v) for v in chunk_size))]
    while max_mips < 0 or len(scales) - 1 < max_mips:
        last = scales[-1]
        if all(s <= c for s, c in zip(last.size, last.chunk_size)) or max(last.size) <= min_size_vx:
            break
        f = next_factor(last.resolution_nm)
        if any(o % ff for o, ff in zip(last.voxel_offset, f)):
            break
        res = tuple(r * ff for r, ff in zip(last.resolution_nm, f))
        scales.append(Scale(f, res, tuple(o // ff for o, ff in zip(last.voxel_offset, f)),
                            tuple(-(-s // ff) for s, ff in zip(last.size, f)), scale_chunk_size(scales[0].chunk_size, res)))
    return scales


def scales_from_info(info: dict) -> list[Scale]:
    """The scales an `info` lists, as `Scale`s (factors relative to the previous scale; unchecked)."""
    out, prev = [], None
    for s in info["scales"]:
        res = tuple(float(r) for r in s["resolution"])
        factor = (1, 1, 1) if prev is None else tuple(int(round(r / p)) for r, p in zip(res, prev))
        out.append(Scale(factor, res, tuple(int(v) for v in s.get("voxel_offset", (0, 0, 0))), tuple(int(v) for v in s["size"]),
                         tuple(int(v) for v in s["chunk_sizes"][0])))
        prev = res
    return out


def check_scales(info: dict, path) -> None:
    """InputError naming the layer and the scale if the scales of `info` disagree with mip 0 or (local layers)
    with the chunk files on disk. As CloudVolume defines them: for an integer factor F = resolution / mip-0
    resolution, size = ⌈mip-0 size / F⌉ and offset = ⌊mip-0 offset / F⌋ (other factors: the size within a
    voxel of mip-0 size / F); no scale finer than mip 0; keys unique; chunk file names on the scale's grid."""
    scales = info.get("scales") or []
    if not scales:
        raise InputError(path, "the info lists no scales", element="info: scales")
    keys = [s.get("key") for s in scales]
    for i, s in enumerate(scales):
        where = f"info: scales[{i}] (key {s.get('key')!r})"
        missing = [k for k in ("key", "size", "resolution", "chunk_sizes") if k not in s]
        if missing:
            raise InputError(path, f"missing {', '.join(missing)}", element=where)
        if keys.count(s["key"]) > 1:
            raise InputError(path, "the key is used by more than one scale", element=where)
        if i == 0:
            continue
        base = scales[0]
        ratio = np.asarray(s["resolution"], dtype=float) / np.asarray(base["resolution"], dtype=float)
        if np.any(ratio < 1 - 1e-6):
            raise InputError(path, f"resolution {s['resolution']} is finer than the full-resolution scale's {base['resolution']}", element=where)
        size0 = np.asarray(base["size"], dtype=float)
        size = np.asarray(s["size"], dtype=float)
        if np.allclose(ratio, np.round(ratio), atol=1e-6):
            f = np.round(ratio).astype(int)
            want = [-(-int(a) // int(b)) for a, b in zip(base["size"], f)]
            if [int(v) for v in s["size"]] != want:
                raise InputError(path, f"size {s['size']} is not ceil({base['size']} / {f.tolist()}) = {want}", element=where)
            want_off = [int(a) // int(b) for a, b in zip(base.get("voxel_offset", (0, 0, 0)), f)]
            if [int(v) for v in s.get("voxel_offset", (0, 0, 0))] != want_off:
                raise InputError(path, f"voxel_offset {s.get('voxel_offset')} is not floor({base.get('voxel_offset', [0, 0, 0])} / "
                                       f"{f.tolist()}) = {want_off}", element=where)
        elif np.any(np.abs(size - size0 / ratio) >= 1):
            raise InputError(path, f"size {s['size']} does not cover the full-resolution extent ({base['size']} at "
                                   f"{base['resolution']} nm is {np.round(size0 / ratio, 2).tolist()} voxels here)", element=where)
    root = local_dir(str(path))
    if root is not None:
        for i, s in enumerate(scales):
            _check_chunk_files(root, s, path, f"info: scales[{i}] (key {s['key']!r})")


def _check_chunk_files(root: Path, scale: dict, path, where: str) -> None:
    d = root / scale["key"]
    if not d.is_dir() or scale.get("sharding"):
        return
    bounds = Box.from_shape(scale["size"], scale.get("voxel_offset", (0, 0, 0)))
    chunk = tuple(int(v) for v in scale["chunk_sizes"][0])
    for n, entry in enumerate(d.iterdir()):
        if n >= CHECKED_FILES:
            break
        if entry.name.startswith("."):  # temporary files of a running writer
            continue
        name = entry.name.removesuffix(".gz").removesuffix(".br")  # layers written compressed elsewhere
        try:
            parts = [tuple(int(v) for v in p.split("-")) for p in name.split("_")]
            box = Box([p[0] for p in parts], [p[1] for p in parts])
        except (ValueError, IndexError, TypeError):
            raise InputError(path, f"file {entry.name!r} in {scale['key']}/ is not a chunk name x0-x1_y0-y1_z0-z1", element=where) from None
        if box.snap(chunk, bounds.start).intersect(bounds) != box:
            raise InputError(path, f"chunk file {entry.name!r} does not lie on this scale's chunk grid {list(chunk)} within "
                                   f"{list(bounds.start)}..{list(bounds.stop)}: the info disagrees with the chunks on disk", element=where)


def scale_info(info: dict, scales: list[Scale]) -> dict:
    """A copy of `info` whose scales are mip 0 as it is followed by `scales[1:]` (same encoding)."""
    info = json.loads(json.dumps(info))
    base = info["scales"][0]
    new = [base]
    for s in scales[1:]:
        entry = {"key": s.key, "resolution": [_number(r) for r in s.resolution_nm], "voxel_offset": list(s.voxel_offset),
                 "size": list(s.size), "chunk_sizes": [list(s.chunk_size)], "encoding": base["encoding"]}
        if base["encoding"] == "compressed_segmentation":
            entry["compressed_segmentation_block_size"] = base.get("compressed_segmentation_block_size", [8, 8, 8])
        new.append(entry)
    info["scales"] = new
    return info


# ------------------------------------------------------------ rounds and blocks


def method_for(info: dict) -> str:
    """``mode`` for segmentation layers, ``average`` for images (raw, probabilities)."""
    return "mode" if info.get("type") == "segmentation" else "average"


def rounds(scales: list[Scale], itemsize: int, channels: int, *, max_bytes: int = MAX_TASK_BYTES,
           min_block=(1, 1, 1)) -> list[tuple[int, int, tuple]]:
    """Split mips 1..M into rounds (source mip, last mip, block size at the source mip).

    A round's block is aligned to every chunk grid it writes; the round grows while the block's
    bytes stay within `max_bytes` (a round writes at least one mip). The block is then made a
    multiple of `min_block` (e.g. `[chunking] task_size`) if that fits too: fewer, larger tasks.
    """
    out, s = [], 0
    while s < len(scales) - 1:
        block = tuple(scales[s].chunk_size)
        t = s
        while t < len(scales) - 1:
            cum = np.prod([scales[k].factor for k in range(s + 1, t + 2)], axis=0)
            cand = tuple(math.lcm(b, int(c) * int(f)) for b, c, f in zip(block, scales[t + 1].chunk_size, cum))
            if t > s and int(np.prod(cand)) * itemsize * channels > max_bytes:
                break
            block, t = cand, t + 1
        grown = tuple(math.lcm(b, int(m)) for b, m in zip(block, min_block))
        if int(np.prod(grown)) * itemsize * channels <= max_bytes:
            block = grown
        out.append((s, t, block))
        s = t
    return out


def round_boxes(scales: list[Scale], src: int, block) -> list[Box]:
    """The blocks of a round at its source mip (the last ones clipped at the bounds)."""
    return scales[src].bounds.chunks(block)


def target_box(scales: list[Scale], src: int, mip: int, box: Box) -> Box:
    """Where the source-mip block `box` lands at `mip` (clipped at that scale's bounds)."""
    cum = np.prod([scales[k].factor for k in range(src + 1, mip + 1)], axis=0)
    o_s, o_t = np.asarray(scales[src].voxel_offset), np.asarray(scales[mip].voxel_offset)
    start = o_t + (np.asarray(box.start) - o_s) // cum
    stop = o_t - (-(np.asarray(box.stop) - o_s) // cum)
    return Box(start, stop).intersect(scales[mip].bounds)


# ------------------------------------------------------------ the task


def downsample_task(analysis, task, *, layer: str, src: int, last: int) -> dict:
    """Read `task.box` of mip `src` of `layer`, write mips src+1..last of it (chunk-aligned, atomic chunk files)."""
    from cloudvolume import CloudVolume

    from syconn_ng.layers import _open_kwargs, to_cloudpath

    path = to_cloudpath(layer)
    vols = {m: CloudVolume(path, mip=m, **_open_kwargs(fill_missing=task.params["fill_missing"])) for m in range(src, last + 1)}
    scales = scales_from_info(vols[src].info)
    method = method_for(vols[src].info)
    block = np.asfortranarray(read_box(vols[src], task.box))
    for m in range(src + 1, last + 1):
        block = reduce_block(block, scales[m].factor, method=method)
        write_box(vols[m], target_box(scales, src, m, task.box), block)
    return {"mips": list(range(src + 1, last + 1))}


# ------------------------------------------------------------ stages: the pipeline's `scales` and `syconn-ng downsample`


def layer_passes(path: str, name: str, info: dict, *, max_bytes: int = MAX_TASK_BYTES, min_block=(1, 1, 1)) -> list[Pass]:
    """The passes (one per round) that build the scales `info` lists beyond mip 0 (see `rounds`)."""
    scales = scales_from_info(info)
    itemsize = np.dtype(info["data_type"]).itemsize
    return [Pass(f"{name}_mip{src}", partial(downsample_task, layer=path, src=src, last=last), round_boxes(scales, src, block))
            for src, last, block in rounds(scales, itemsize, int(info["num_channels"]), max_bytes=max_bytes, min_block=min_block)]


def _read_info(path: str) -> dict:
    return open_layer(path).info


def prepare_layer(path: str, *, max_mips: int, min_size_vx: int, fresh: bool) -> dict:
    """Write the planned scales into the layer's info (atomically) unless it lists them already; return the info."""
    vol = open_layer(path)
    info = vol.info
    base = scales_from_info(info)[0]
    plan = plan_scales(base.size, base.voxel_offset, base.resolution_nm, base.chunk_size, max_mips=max_mips, min_size_vx=min_size_vx)
    want = scale_info(info, plan)
    changed = want["scales"] != info["scales"]
    d = local_dir(vol.cloudpath)
    if (fresh or changed) and d is not None:
        import shutil

        for s in info["scales"][1:]:  # stale chunks of the old scales
            shutil.rmtree(d / s["key"], ignore_errors=True)
    if changed:  # an unchanged info keeps its bytes
        _write_info(vol.cloudpath, want)
        info = want
    if d is not None:
        for s in info["scales"][1:]:
            (d / s["key"]).mkdir(parents=True, exist_ok=True)
            remove_temp_files(d / s["key"])  # left by a killed run; the driver holds the stage lock
    check_scales(info, vol.cloudpath)
    return info


def _write_info(cloudpath: str, info: dict) -> None:
    d = local_dir(cloudpath)
    text = json.dumps(info, indent=1) + "\n"
    if d is not None:
        atomic_write_text(d / "info", text)
    else:
        from cloudfiles import CloudFiles

        CloudFiles(cloudpath).put("info", text.encode("utf-8"), content_type="application/json", compress=None)


# layers the pipeline writes that get scales, in pipeline order (images: average, segmentations: mode)
PIPELINE_LAYERS = ("barrier", "organelles", "myelin", "syntype", "mi", "vc", "sj", "cells")


class ScalesStage:
    """The pipeline's `scales` stage: downsampled scales of every volume layer under `layers/` ([scales] in the config)."""

    name = "scales"

    def _layers(self, analysis) -> list[str]:
        if analysis.config.scales.mips == 0:
            return []
        return [n for n in PIPELINE_LAYERS if (analysis.root / "layers" / n / "info").is_file()]

    def upstream(self, analysis) -> list[str]:
        return ["barrier", "organelles", "myelin_syntype", "objects", "hulls"]

    def params(self, analysis) -> dict:
        return {"scales": analysis.config.section_params("scales"), "layers": self._layers(analysis),
                "fill_missing": analysis.config.chunking.missing_chunks == "zeros", "max_task_bytes": MAX_TASK_BYTES,
                "task_size": list(analysis.config.chunking.task_size)}

    def prepare(self, analysis, *, fresh: bool) -> None:
        cfg = analysis.config.scales
        for n in self._layers(analysis):
            prepare_layer(analysis.layer_path(n), max_mips=cfg.mips, min_size_vx=cfg.min_size_vx, fresh=fresh)

    def passes(self, analysis) -> list[Pass]:
        out = []
        for n in self._layers(analysis):
            path = analysis.layer_path(n)
            out += layer_passes(path, n, _read_info(path), min_block=analysis.config.chunking.task_size)
        return out


STAGE = ScalesStage()


@dataclass(frozen=True)
class DownsampleTarget:
    """What the engine needs to downsample one layer outside an analysis: its config and where markers go."""

    config: object
    state_dir: Path


class DownsampleStage:
    """`syconn-ng downsample LAYER`: the scales of one layer (markers under the target's state dir)."""

    def __init__(self, layer: str, *, max_mips: int, min_size_vx: int, fill_missing: bool = False,
                 max_task_bytes: int = MAX_TASK_BYTES, min_block=(256, 256, 128), name: str = "downsample"):
        from syconn_ng.layers import to_cloudpath

        self.layer = to_cloudpath(layer)
        self.max_mips = max_mips
        self.min_size_vx = min_size_vx
        self.fill_missing = fill_missing
        self.max_task_bytes = max_task_bytes
        self.min_block = tuple(int(v) for v in min_block)
        self.name = name

    def params(self, analysis) -> dict:
        return {"layer": self.layer, "mips": self.max_mips, "min_size_vx": self.min_size_vx, "fill_missing": self.fill_missing,
                "max_task_bytes": self.max_task_bytes, "min_block": list(self.min_block)}

    def prepare(self, analysis, *, fresh: bool) -> None:
        prepare_layer(self.layer, max_mips=self.max_mips, min_size_vx=self.min_size_vx, fresh=fresh)

    def passes(self, analysis) -> list[Pass]:
        return layer_passes(self.layer, "layer", _read_info(self.layer), max_bytes=self.max_task_bytes, min_block=self.min_block)
