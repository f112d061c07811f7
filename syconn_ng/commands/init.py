"""`syconn-ng init DIR`: start an analysis directory with a commented `syconn.toml`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from syconn_ng.errors import InputError


def _absolute(value: str) -> str:
    """Local paths (as typed, relative to the current directory) made absolute; URLs unchanged."""
    return value if "://" in value else os.path.abspath(value)


def _parse_voxel_size(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or min(values) <= 0:
        raise click.BadParameter(f"expected three positive numbers X,Y,Z in nm, got {text!r}", param_hint="--voxel-size")
    return values


def _raw_voxel_size(raw: str) -> list[float] | None:
    """The raw layer's mag-1 resolution, or None if its info cannot be read."""
    from syconn_ng.layers import open_layer

    try:
        return [float(v) for v in open_layer(raw).resolution]
    except InputError:
        return None


@click.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--raw", required=True, help="Raw EM: a precomputed image layer (path, file://, gs://, s3://, https://).")
@click.option("--skeletons", "skeletons", multiple=True, required=True, help="KNOSSOS files (glob; repeat for several).")
@click.option("--voxel-size", "voxel_size", default=None, help="Voxel size in nm as X,Y,Z (default: the raw layer's).")
@click.option("--force", is_flag=True, help="Overwrite an existing syconn.toml.")
def init(directory, raw, skeletons, voxel_size, force):
    """Write DIRECTORY/syconn.toml for a new analysis (all stage parameters with their defaults)."""
    from syconn_ng.config import CONFIG_NAME, Config, write_config

    target = Path(directory) / CONFIG_NAME
    if target.exists() and not force:
        raise InputError(target, "already exists (use --force to overwrite it)")
    raw = _absolute(raw)
    from_layer = _raw_voxel_size(raw)
    if voxel_size is None:
        if from_layer is None:
            raise InputError(raw, "cannot read the raw layer's voxel size; give --voxel-size X,Y,Z", element="info")
        size = from_layer
    else:
        size = _parse_voxel_size(voxel_size)
        if from_layer is not None and [round(v, 6) for v in from_layer] != [round(v, 6) for v in size]:
            raise InputError(raw, f"the layer's resolution is {from_layer} nm, --voxel-size says {size}", element="info: resolution")
    cfg = Config()
    cfg.dataset.raw = raw
    cfg.dataset.skeletons = [_absolute(s) for s in skeletons]
    cfg.dataset.voxel_size_nm = size
    path = write_config(cfg, directory)
    click.echo(f"wrote {path}; edit it, then: syconn-ng run {directory}")
