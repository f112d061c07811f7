"""`syconn-ng import-knossos`: a KNOSSOS cube dataset → precomputed `raw/` (and `seg/`) layers.

Every magnification present becomes one scale of the layer (voxel size from the config,
voxel offset 0). The conversion streams: one task is a chunk-aligned box of a few cubes,
read, pasted and written chunk by chunk through `syconn_ng.layers.write_box` (atomic per
chunk), so memory stays bounded and a re-run rewrites the same bytes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from itertools import product

import click

from syconn_ng.box import Box
from syconn_ng.config import ChunkingConfig
from syconn_ng.errors import InputError
from syconn_ng.io.knossos_dataset import (
    OVERLAY_EXTENSION,
    CubeLayer,
    Mag,
    assemble_box,
    cube_grid,
    cube_path,
    read_cube,
    read_dataset_config,
    scan_cubes,
)

# Decoded cubes kept when chunk and cube grids do not line up (a task then touches up to
# 2×2×2 cubes and the next task along z reuses half of them).
_CUBE_CACHE = 8


@dataclass(frozen=True)
class Source:
    """A cube layer chosen for one output layer, with the cubes present at each mag."""

    layer: CubeLayer
    cubes: dict[Mag, frozenset]  # only mags with at least one cube, finest first

    @property
    def n_cubes(self) -> int:
        return sum(len(c) for c in self.cubes.values())


@dataclass(frozen=True)
class ImportedLayer:
    """What one output layer holds (for the CLI summary and the tests)."""

    name: str
    cloudpath: str
    source: CubeLayer
    mags: list[Mag]
    scales: list[dict]
    cubes_found: int
    cubes_expected: int


def find_sources(layers: list[CubeLayer]) -> dict[str, Source]:
    """The image and the segmentation layer to import: per kind, the first declared with cubes.

    Overlay cubes (``.seg.sz.zip``) that sit beside the raw cubes under the same name are
    found even where the config does not declare them (legacy confs cannot).
    """
    candidates = list(layers)
    if not any(la.kind == "segmentation" for la in layers):
        candidates += [la.with_extension(OVERLAY_EXTENSION) for la in layers]
    sources: dict[str, Source] = {}
    for la in candidates:
        if la.kind in sources:
            continue
        cubes = {m: c for m in la.mags if (c := scan_cubes(la, m))}
        if cubes:
            sources[la.kind] = Source(la, cubes)
    if not sources:
        la = layers[0]
        example = cube_path(la, la.mags[0], (0, 0, 0))
        raise InputError(
            la.config,
            f"no cubes found: expected files like {example} "
            f"(checked extensions {', '.join(sorted({x.extension for x in candidates}))} at mags "
            f"{', '.join(str(m.folder) for m in la.mags)})",
        )
    return sources


def _key(voxel_size_nm) -> str:
    return "_".join(str(int(v)) if float(v).is_integer() else repr(float(v)) for v in voxel_size_nm)


def plan_scales(source: Source, chunk_size) -> list[dict]:
    """The precomputed `scales` entries, one per mag present, finest first."""
    scales = []
    for mag in source.cubes:
        res = [int(v) if float(v).is_integer() else float(v) for v in mag.voxel_size_nm]
        scale = {
            "encoding": "compressed_segmentation" if source.layer.kind == "segmentation" else "raw",
            "chunk_sizes": [[int(c) for c in chunk_size]],
            "key": _key(mag.voxel_size_nm),
            "resolution": res,
            "voxel_offset": [0, 0, 0],
            "size": [int(s) for s in mag.shape],
        }
        if source.layer.kind == "segmentation":
            scale["compressed_segmentation_block_size"] = [8, 8, 8]
        scales.append(scale)
    keys = [s["key"] for s in scales]
    if len(set(keys)) != len(keys):
        raise InputError(source.layer.config, f"two mags have the same voxel size ({keys})", element="voxel sizes")
    for a, b in zip(scales, scales[1:]):
        if any(rb < ra for ra, rb in zip(a["resolution"], b["resolution"])):
            raise InputError(source.layer.config, f"voxel sizes must not shrink from mag to mag: {a['resolution']} then {b['resolution']}", element="voxel sizes")
    return scales


_COMPARED = ("key", "size", "resolution", "voxel_offset", "chunk_sizes", "encoding")


def open_output(cloudpath: str, source: Source, scales: list[dict]):
    """Create the layer (or reopen the same one on a re-run) with all scales; refuse a different one."""
    from cloudfiles import CloudFiles

    from syconn_ng.layers import create_layer, open_layer

    la = source.layer
    existing = CloudFiles(cloudpath).get_json("info")
    if existing is not None:
        want = [{k: s[k] for k in _COMPARED} for s in scales]
        have = [{k: s.get(k) for k in _COMPARED} for s in existing.get("scales", [])]
        same = existing.get("type") == la.kind and existing.get("data_type") == la.dtype.name and want == have
        if not same:
            raise InputError(f"{cloudpath}/info", "a different layer already exists here (other type, mags, sizes or chunk size); remove it or choose another destination")
        vol = open_layer(cloudpath)
    else:
        first = scales[0]
        vol = create_layer(
            cloudpath, layer_type=la.kind, dtype=la.dtype, voxel_size_nm=first["resolution"],
            shape=first["size"], chunk_size=first["chunk_sizes"][0],
        )
    vol.info["scales"] = scales
    vol.info["syconn_ng"] = {
        "made_by": "import-knossos",
        "knossos_config": str(la.config),
        "cube_name": la.name,
        "cube_extension": la.extension,
        "mags": [m.folder for m in source.cubes],
    }
    vol.commit_info()
    return vol


def task_shape(chunk_size, cube_shape) -> tuple[int, int, int]:
    """Task box: whole chunks covering at least one cube per axis (one cube when they divide)."""
    return tuple(c * -(-k // c) for c, k in zip(chunk_size, cube_shape))


def task_boxes(shape, tshape):
    """The task boxes tiling a scale of `shape` voxels, generated (a huge dataset has millions)."""
    ranges = [range(0, s, t) for s, t in zip(shape, tshape)]
    for corner in product(*ranges):
        yield Box(corner, tuple(min(c + t, s) for c, t, s in zip(corner, tshape, shape)))


def convert_source(vol, source: Source, chunk_size, bar) -> None:
    """Write every task box of every mag of `source` into `vol` (scale i = i-th mag present)."""
    from syconn_ng.layers import write_box

    la = source.layer
    tshape = task_shape(chunk_size, la.cube_shape)
    aligned = all(t % k == 0 for t, k in zip(tshape, la.cube_shape))
    for mip, (mag, present) in enumerate(source.cubes.items()):
        vol.mip = mip
        cache: OrderedDict = OrderedDict()

        def read(index, mag=mag, cache=cache):
            if index not in cache:
                cache[index] = read_cube(la, mag, index)
                if len(cache) > (1 if aligned else _CUBE_CACHE):
                    cache.popitem(last=False)
            return cache[index]

        bar.set_description(f"{la.kind} mag{mag.folder}")
        for box in task_boxes(mag.shape, tshape):
            write_box(vol, box, assemble_box(box, la.cube_shape, present, read, la.dtype))
            bar.update(1)
    vol.mip = 0


def import_dataset(config_path, cloudpath, *, chunk_size, progress: bool | None = None) -> list[ImportedLayer]:
    """Convert the KNOSSOS dataset of `config_path` into `<cloudpath>/raw` and `<cloudpath>/seg`.

    chunk_size: (3,) voxels per precomputed chunk. progress: tqdm bar on stderr (None: only
    on a terminal). Returns what was written, image layer first.
    """
    from tqdm import tqdm

    from syconn_ng.layers import to_cloudpath

    chunk_size = tuple(int(c) for c in chunk_size)
    if len(chunk_size) != 3 or min(chunk_size) <= 0:
        raise InputError(None, f"chunk size must be 3 positive integers, got {chunk_size}", element="--chunk-size")
    layers = read_dataset_config(config_path)
    sources = find_sources(layers)
    base = to_cloudpath(cloudpath).rstrip("/")
    plans = []
    for kind, out_name in (("image", "raw"), ("segmentation", "seg")):
        if kind in sources:
            plans.append((out_name, sources[kind], plan_scales(sources[kind], chunk_size)))
    n_tasks = 0
    for _, src, _ in plans:
        tshape = task_shape(chunk_size, src.layer.cube_shape)
        n_tasks += sum(math.prod(-(-s // t) for s, t in zip(m.shape, tshape)) for m in src.cubes)
    done = []
    with tqdm(total=n_tasks, unit="task", disable=(None if progress is None else not progress)) as bar:
        for out_name, src, scales in plans:
            path = f"{base}/{out_name}"
            vol = open_output(path, src, scales)
            convert_source(vol, src, chunk_size, bar)
            expected = sum(math.prod(cube_grid(src.layer, m)) for m in src.cubes)
            done.append(ImportedLayer(out_name, path, src.layer, list(src.cubes), scales, src.n_cubes, expected))
    return done


def _parse_chunk_size(ctx, param, value):
    try:
        parts = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected X,Y,Z integers, got {value!r}") from None
    if len(parts) != 3 or min(parts) <= 0:
        raise click.BadParameter(f"expected three positive integers X,Y,Z, got {value!r}")
    return parts


@click.command("import-knossos")
@click.argument("config", type=click.Path(path_type=str))
@click.argument("cloudpath")
@click.option("--chunk-size", default=",".join(map(str, ChunkingConfig().chunk_size)), show_default=True, callback=_parse_chunk_size,
              help="precomputed chunk size in voxels, X,Y,Z")
def import_knossos(config, cloudpath, chunk_size):
    """Convert the KNOSSOS dataset of CONFIG (knossos.conf, *.k.toml, *.pyk.conf or the dataset
    folder) into precomputed layers CLOUDPATH/raw (uint8) and CLOUDPATH/seg (uint64, only if
    overlay cubes exist), one scale per magnification present. Missing cubes read as zeros."""
    for layer in import_dataset(config, cloudpath, chunk_size=chunk_size):
        mags = ", ".join(
            f"mag{m.folder} {'×'.join(f'{v:g}' for v in m.voxel_size_nm)} nm {'×'.join(map(str, m.shape))} vx"
            for m in layer.mags
        )
        click.echo(f"{layer.name}: {layer.cloudpath} ({layer.source.extension} cubes, {layer.cubes_found}/{layer.cubes_expected} present; {mags})")
