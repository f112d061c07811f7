"""The driver: grow a tissue, then write its raw EM and truth layers chunk by chunk, its tables,
traced skeletons, statistics and an analysis config (`generate_tissue`, `syconn-ng synth`).

Memory is bounded by one chunk plus its halo (and the geometry), whatever the volume size;
chunks can run in a process pool.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from syconn_ng.box import Box
from syconn_ng.errors import InputError
from syconn_ng.layers import DEFAULT_CHUNK_SIZE, atomic_write_text, create_layer, open_layer, write_box
from syconn_ng.synth.em import HALO_VX, finish, render_clean
from syconn_ng.synth.raster import rasterise, sj_areas_um2
from syconn_ng.synth.tissue import Tissue, build_tissue, demote_synapses, myelin_fractions
from syconn_ng.synth.truth import ChunkCounts, count_chunk, truth_arrays, write_tables

MIN_SYNAPSE_AREA_UM2 = 0.01  # a planned synapse whose cleft a third cell squeezes below this is a contact

# layer name -> (layer type, dtype, channels)
LAYERS = {
    "raw": ("image", np.uint8, 1),
    "truth/cells": ("segmentation", np.uint64, 1),
    "truth/barrier": ("image", np.uint8, 1),
    "truth/mi": ("segmentation", np.uint64, 1),
    "truth/vc": ("segmentation", np.uint64, 1),
    "truth/sj": ("segmentation", np.uint64, 1),
    "truth/organelles": ("image", np.uint8, 3),
}
MYELIN_LAYER = {"truth/myelin": ("image", np.uint8, 1)}  # only in tissues made with myelin


def layers_of(tissue: Tissue) -> dict:
    """The layers a tissue is written to: `LAYERS`, and `MYELIN_LAYER` if it was grown with myelin."""
    return {**LAYERS, **MYELIN_LAYER} if tissue.has_myelin else LAYERS


def generate_tissue(out, *, shape=(256, 256, 128), voxel_size_nm=(10.0, 10.0, 20.0), n_cells: int = 0, seed: int = 0,
                    noise: float = 1.0, synapses_per_um3: float = 1.0, artefacts: bool = True,
                    myelin: bool = False, myelin_fraction: dict[str, float] | None = None,
                    chunk_size=DEFAULT_CHUNK_SIZE, workers: int = 1, progress: bool = False) -> dict:
    """Generate a synthetic tissue with complete ground truth into the folder `out`.

    shape: volume in voxels (x, y, z); voxel_size_nm: nm per voxel; n_cells: cells with
    neurites in the volume (0 = as dense as neuropil); noise: 0 = clean image, 1 = typical
    SBEM; artefacts: occasional missing and shifted sections; myelin: myelinated stretches on
    EA and some INT axons, with a ``truth/myelin`` layer and a ``myelinated`` node column (off by
    default, so default tissues stay as the bundled models were trained on); myelin_fraction:
    cell type -> myelinated share of its axons, over `MYELIN_SPECS`. Returns the statistics
    (also written to ``out/truth/stats.json``).
    """
    out = Path(out)
    fractions = myelin_fractions(myelin_fraction) if myelin else None
    _prepare(out)
    tissue = build_tissue(shape, voxel_size_nm, seed, n_cells=n_cells, synapses_per_um3=synapses_per_um3,
                          artefacts=artefacts, myelin=fractions)
    tissue = demote_synapses(tissue, sj_areas_um2(tissue) < MIN_SYNAPSE_AREA_UM2)
    for name, (kind, dtype, channels) in layers_of(tissue).items():
        create_layer(out / name, layer_type=kind, dtype=dtype, voxel_size_nm=voxel_size_nm, shape=shape,
                     chunk_size=chunk_size, num_channels=channels,
                     extra_info={"syconn_ng": {"layer": name, "synthetic_seed": seed}})
    boxes = Box.from_shape(shape).chunks(chunk_size)
    counts = None
    bar = _progress(len(boxes), progress)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for c in pool.map(generate_chunk, [tissue] * len(boxes), [str(out)] * len(boxes), boxes,
                              [noise] * len(boxes)):
                counts = c if counts is None else counts + c
                bar.update(1)
    else:
        for box in boxes:
            c = generate_chunk(tissue, str(out), box, noise)
            counts = c if counts is None else counts + c
            bar.update(1)
    bar.close()
    traced = write_skeletons(tissue, counts, out)
    stats = write_tables(tissue, counts, traced, out / "truth")
    stats["noise"] = noise
    atomic_write_text(out / "truth" / "stats.json", json.dumps(stats, indent=2) + "\n")
    write_analysis_config(out, voxel_size_nm, chunk_size)
    return stats


def _prepare(out: Path) -> None:
    """Create `out`, or clear a previous synthetic tissue there; refuse any other non-empty folder."""
    if out.exists() and any(out.iterdir()):
        if not (out / "truth" / "stats.json").exists():
            raise InputError(out, "exists and is not empty (nor a synthetic tissue to replace): choose a new folder")
        for name in ("raw", "truth", "skeletons", "skeletons_labelled"):
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def generate_chunk(tissue: Tissue, out: str, box: Box, noise: float) -> ChunkCounts:
    """One task: rasterise `box` with a halo, render and write every layer's chunk; return counts."""
    big = box.grow(HALO_VX)
    fields = rasterise(tissue, big)
    raw = finish(tissue, render_clean(tissue, fields), big, box, noise=noise)
    inner = _crop(fields, box)
    arrays = truth_arrays(tissue, inner)
    arrays["raw"] = raw
    for name in layers_of(tissue):
        key = name.split("/")[-1]
        write_box(open_layer(Path(out) / name), box, arrays[key])
    return count_chunk(tissue, inner)


def _crop(fields, box: Box):
    """The fields restricted to `box` (inside the fields' own box)."""
    from dataclasses import fields as dc_fields, replace

    sl = box.slices(relative_to=fields.box.start)
    return replace(fields, box=box, **{f.name: getattr(fields, f.name)[sl] for f in dc_fields(fields) if f.name != "box"})


def write_skeletons(tissue: Tissue, counts: ChunkCounts, out: Path) -> dict[int, list]:
    """`skeletons/cell_<id>.k.zip` (plain) and `skeletons_labelled/` (compartment and type
    comments) for every cell present in the volume; returns the traced nodes per cell index."""
    from syconn_ng.io.annotation import write_annotation
    from syconn_ng.synth.tracer import to_skeleton, trace_cell

    rng = np.random.default_rng([tissue.seed, 7])
    plain, labelled = out / "skeletons", out / "skeletons_labelled"
    plain.mkdir(exist_ok=True)
    labelled.mkdir(exist_ok=True)
    traced: dict[int, list] = {}
    next_id = 1
    for ci in np.flatnonzero(counts.cell[1:] > 0):
        nodes = trace_cell(tissue, int(ci), rng, next_id)
        if not nodes:
            continue
        next_id = nodes[-1].node_id + 1
        traced[int(ci)] = nodes
        cid, ctype = int(tissue.cell_ids[ci]), tissue.cell_types[ci]
        write_annotation(to_skeleton(cid, ctype, nodes, tissue.voxel_size_nm, labelled=False), plain / f"cell_{cid}.k.zip")
        write_annotation(to_skeleton(cid, ctype, nodes, tissue.voxel_size_nm, labelled=True), labelled / f"cell_{cid}.k.zip")
    return traced


def write_analysis_config(out: Path, voxel_size_nm, chunk_size) -> Path:
    """`OUT/syconn.toml` for `syconn-ng run OUT`: names only `raw/` and `skeletons/`, never `truth/`."""
    from syconn_ng.config import Config, write_config

    cfg = Config()
    cfg.dataset.raw = "raw"
    cfg.dataset.skeletons = ["skeletons/*.k.zip"]
    cfg.dataset.voxel_size_nm = [float(v) for v in voxel_size_nm]
    cfg.chunking.chunk_size = [int(v) for v in chunk_size]
    cfg.chunking.task_size = [2 * int(v) for v in chunk_size]
    return write_config(cfg, out)


def oracle_config(tissue, oracle=("barrier", "organelles")):
    """A `Config` analysing the synthetic tissue at `tissue` from another folder (raw EM and skeletons by
    absolute path) with the tissue's truth layers named in `oracle` instead of the CNNs' outputs."""
    from syconn_ng.config import load_config

    tissue = Path(tissue).resolve()
    cfg = load_config(tissue)
    cfg.dataset.raw = str(tissue / "raw")
    cfg.dataset.skeletons = [str(tissue / "skeletons" / "*.k.zip")]
    for name in oracle:
        setattr(cfg.oracle, name, str(tissue / "truth" / name))
    return cfg


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="chunks", unit="chunk", disable=not enabled)
