"""`syconn-ng info FILE`: summarise an annotation file or a precomputed layer."""

from __future__ import annotations

import json
import os

import click
import numpy as np

from syconn_ng.commands.convert import VOXEL_SIZE_HELP, VoxelSize
from syconn_ng.errors import InputError


def annotation_summary(skel, voxel_size_nm=None) -> dict:
    """Counts as the file holds them, bbox (0-based voxels, inclusive) and path length in µm.

    voxel_size_nm defaults to the file's `<scale>`; without either the length is None.
    Comments count once per node (from `<comments>` or a node `comment=`), plus comments
    naming no node; the path length sums every edge, including edges between trees.
    """
    nodes = list(skel.nodes())
    positions = np.array([(n.x, n.y, n.z) for n in nodes], dtype=np.float64).reshape(-1, 3)
    voxel_size_nm = voxel_size_nm or skel.parameters.scale_nm
    length = None
    if voxel_size_nm is not None:
        ids = np.array([n.id for n in nodes], dtype=np.uint64)
        order = np.argsort(ids)
        edges = np.array([e for t in skel.trees for e in t.edges], dtype=np.uint64).reshape(-1, 2)
        ends = order[np.searchsorted(ids[order], edges)] if len(ids) else np.zeros((0, 2), np.int64)
        p = positions * np.asarray(voxel_size_nm, dtype=np.float64)
        length = float(np.linalg.norm(p[ends[:, 0]] - p[ends[:, 1]], axis=1).sum() / 1000.0)
    bbox = None
    if len(positions):
        lo, hi = positions.min(axis=0), positions.max(axis=0)
        bbox = [[_plain(v) for v in lo], [_plain(v) for v in hi]]
    return {
        "kind": "annotation",
        "dialect": skel.dialect,
        "trees": len(skel.trees),
        "nodes": len(nodes),
        "edges": skel.num_edges(),
        "comments": sum(1 for n in nodes if n.comment) + len(skel.orphan_comments),
        "branchpoints": len(skel.branchpoints),
        "groups": len(skel.groups),
        "bbox": bbox,
        "voxel_size_nm": None if voxel_size_nm is None else [_plain(v) for v in voxel_size_nm],
        "path_length_um": length,
        "kept_elements": sorted({_tag(x) for x in skel.extra}),
        "members": sorted(skel.members),
    }


def _tag(xml: str) -> str:
    return xml[1:].split(None, 1)[0].rstrip("/>")


def _plain(v):
    """An integer-valued float as int, for readable JSON."""
    v = float(v)
    return int(v) if v.is_integer() else v


def layer_summary(path) -> dict:
    """Type, dtype, channels, scales, voxel size, bounds, chunk size, encoding, mesh/skeleton dirs; for a local
    layer, its sharded sources checked (`syconn_ng.sharding.check_shards`: files, bytes, keys)."""
    from cloudfiles import CloudFiles

    from syconn_ng.layers import local_dir, to_cloudpath

    cloudpath = to_cloudpath(path)
    try:
        info = CloudFiles(cloudpath).get_json("info")
    except Exception as err:  # noqa: BLE001 - any storage error means the same to the user
        raise InputError(path, f"cannot read the layer's info file: {err}", element="info") from None
    if not isinstance(info, dict):
        raise InputError(path, "no precomputed layer here (no info file)", element="info")
    scales = info.get("scales") or []
    out = {"kind": "layer", "path": cloudpath, "@type": info.get("@type"), "type": info.get("type"),
           "data_type": info.get("data_type"), "num_channels": info.get("num_channels")}
    if scales:
        s0 = scales[0]
        lo = list(s0.get("voxel_offset", [0, 0, 0]))
        out.update({
            "voxel_size_nm": s0.get("resolution"),
            "bounds": [lo, [a + b for a, b in zip(lo, s0.get("size", [0, 0, 0]))]],
            "chunk_size": (s0.get("chunk_sizes") or [None])[0],
            "encoding": s0.get("encoding"),
            "scales": [{k: s.get(k) for k in ("key", "resolution", "size", "voxel_offset", "chunk_sizes",
                                              "encoding", "sharding")} for s in scales],
        })
    for key in ("mesh", "skeletons", "annotation_type", "lower_bound", "upper_bound", "properties",
                "relationships", "by_id", "spatial"):
        if key in info:
            out[key] = info[key]
    local = local_dir(cloudpath)
    if local is not None:  # a truncated shard would only show as a failed request in the viewer: check them here
        from syconn_ng.sharding import check_shards, sharded_sources

        checked = {str(d.relative_to(local)): check_shards(d, spec) for d, spec in sharded_sources(local)}
        if checked:
            out["shards"] = checked
    return out


@click.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--voxel-size", type=VoxelSize(), default=None, help=VOXEL_SIZE_HELP)
def info(target, as_json, voxel_size):
    """Summarise TARGET: an annotation (.nml, .k.zip, .swc) or a precomputed layer (folder or URL)."""
    from syconn_ng.io.annotation import FORMATS, read_annotation

    is_annotation = os.path.splitext(target)[1].lower() in FORMATS and "://" not in target
    if is_annotation:
        skel = read_annotation(target, voxel_size_nm=voxel_size)
        summary = {"path": target, **annotation_summary(skel, voxel_size)}
    else:
        if "://" not in target and not os.path.isdir(target):
            raise InputError(target, "neither an annotation file (.nml, .k.zip, .swc) nor a layer folder")
        summary = layer_summary(target)
    if as_json:
        click.echo(json.dumps(summary))
        return
    for key, value in summary.items():
        click.echo(f"{key}: {value if not isinstance(value, (list, dict)) else json.dumps(value)}")
