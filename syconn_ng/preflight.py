"""Checks of an analysis's inputs before any work starts: each problem is one clear InputError.

* a config naming a layer (raw, oracle layers) or a skeleton file that does not exist;
* a voxel size in `syconn.toml` that differs from the raw layer's (or an oracle layer's) resolution;
* oracle layers whose bounds differ from the raw layer's;
* a skeleton tree with no node inside the volume (wrong dataset, or wrong scale / offset);
* a missing model file (CNN weights or a forest) for a stage that will run.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from syconn_ng.config import CONFIG_NAME, OracleConfig, resolve_path
from syconn_ng.errors import ConfigError, InputError
from syconn_ng.layers import layer_box, open_layer, to_cloudpath

# stages that read the skeletons (and everything after them)
SKELETON_STAGES = ("hulls", "mapping", "compartments", "synapses", "celltypes", "connectome")


def _open_named(analysis, path: str, element: str):
    try:
        return open_layer(path)
    except InputError as err:
        raise ConfigError(analysis.root / CONFIG_NAME, f"names the layer {path}: {err.reason}", element=element) from None


def _check_resolution(analysis, vol, path: str) -> None:
    if not np.allclose(np.asarray(vol.resolution, dtype=float), analysis.voxel_size_nm):
        raise InputError(path, f"voxel size {[float(v) for v in vol.resolution]} nm differs from [dataset] voxel_size_nm "
                         f"{list(analysis.voxel_size_nm)} in {analysis.root / CONFIG_NAME}", element="info: resolution")


def check_layers(analysis, *, need_raw: bool = True) -> None:
    """The raw layer (if needed: a stage reads it) and every oracle layer exist, have the config's voxel size and the
    same bounds."""
    bounds = None
    if need_raw:
        raw_path = analysis.raw_layer
        raw = _open_named(analysis, raw_path, "[dataset] raw")
        _check_resolution(analysis, raw, raw_path)
        bounds = layer_box(raw)
    for name in OracleConfig.__dataclass_fields__:
        value = getattr(analysis.config.oracle, name)
        if not value:
            continue
        path = to_cloudpath(resolve_path(analysis.root, value))
        vol = _open_named(analysis, path, f"[oracle] {name}")
        _check_resolution(analysis, vol, path)
        if bounds is not None and layer_box(vol) != bounds:
            raise InputError(path, f"bounds {layer_box(vol)} differ from the raw layer's {bounds}", element="info")
        bounds = layer_box(vol) if bounds is None else bounds


def skeleton_paths(analysis) -> list[Path]:
    """The skeleton files of `[dataset] skeletons`; a pattern matching no file is an error naming it."""
    found = []
    for pattern in analysis.config.dataset.skeletons:
        full = pattern if Path(pattern).is_absolute() else str(analysis.root / pattern)
        matches = sorted(Path(p).resolve() for p in glob.glob(full, recursive=True) if Path(p).is_file())
        if not matches:
            what = "no file matches" if glob.has_magic(pattern) else "no such file:"
            raise ConfigError(analysis.root / CONFIG_NAME, f"{what} {full}", element="[dataset] skeletons")
        found += [m for m in matches if m not in found]
    return found


def check_skeletons(analysis, bounds) -> int:
    """Every skeleton tree has a node inside `bounds` (a Box, the volume); returns the number of trees."""
    from syconn_ng.io.annotation import read_annotation

    trees = 0
    for path in skeleton_paths(analysis):
        skeleton = read_annotation(path, voxel_size_nm=analysis.voxel_size_nm)
        for tree in skeleton.trees:
            pos = tree.positions()
            trees += 1
            if len(pos) and not bounds.contains(np.rint(pos)).any():
                lo, hi = pos.min(axis=0), pos.max(axis=0)
                raise InputError(path, f"all {len(pos)} nodes lie outside the volume {list(bounds.start)}..{list(bounds.stop)} "
                                 f"(0-based voxels; the tree spans {np.round(lo).astype(int).tolist()}..{np.round(hi).astype(int).tolist()}): "
                                 "a skeleton of another dataset, or a wrong scale or offset?", element=f'<thing id="{tree.id}">')
    return trees


def check_inputs(analysis, stages) -> None:
    """All checks that apply to running `stages` (stage objects); raises the first problem found."""
    names = [s.name for s in stages]
    cnn = [s for s in stages if hasattr(s, "model_path") and not getattr(analysis.config.oracle, s.name, "")]
    need_raw = bool(cnn)  # only the CNN stages read raw EM
    check_layers(analysis, need_raw=need_raw)
    if any(n in SKELETON_STAGES for n in names):
        volume = analysis.raw_layer if need_raw else analysis.input_layer("barrier")
        try:
            bounds = layer_box(open_layer(volume))
        except InputError:  # no barrier yet and no raw needed: the hulls stage names what is missing
            bounds = None
        if bounds is not None:
            check_skeletons(analysis, bounds)
        else:
            skeleton_paths(analysis)
    for stage in stages:
        if hasattr(stage, "model_path") and not getattr(analysis.config.oracle, stage.name, ""):
            stage.model_path(analysis)  # an InputError naming the missing file
        for path in getattr(stage, "model_files", lambda a: [])(analysis):
            if not Path(path).is_file():
                raise InputError(path, f"no such model file for the '{stage.name}' stage (set in [{stage.name}] of "
                                       f"syconn.toml; '' = the bundled model)")
