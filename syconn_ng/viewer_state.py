"""Neuroglancer states for an analysis or an exported folder: one layer JSON dict per existing layer,
then a complete viewer state (dimensions, position, layout). Pure functions, no server.

Used by the review server (layers served from the analysis) and by `syconn-ng export` (`state.json`
beside the exported layers). Both folder layouts are understood: an analysis keeps its layers under
`layers/<name>` and its tables under `tables/`; an export keeps both at its top level.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Iterable

from syconn_ng.compartments.outputs import MYELIN_RGB, TYPE_RGBA, skeleton_shader

# the order layers are listed in the viewer (bottom to top of the drawing order)
LAYER_NAMES = ("raw", "barrier", "organelles", "myelin", "syntype", "mi", "vc", "sj", "cells", "synapses")
OBJECT_RGB = {"mi": "#3cb44b", "vc": "#4363d8", "sj": "#f58231"}  # one colour per organelle kind
SYNAPSE_RGB = {"asymmetric": (1.0, 0.35, 0.0), "symmetric": (0.0, 0.6, 1.0)}  # by the `type` enum (0, 1)
COMPARTMENT_SKELETONS = "skeletons_compartments"  # the compartments stage's skeleton source inside an analysis' cells layer

BARRIER_SHADER = "void main() {\n  emitRGBA(vec4(1.0, 0.0, 1.0, toNormalized(getDataValue())));\n}\n"
# channels sj, vc, mi (the organelle CNN's order) → the organelle colours above
ORGANELLES_SHADER = "\n".join([
    "void main() {",
    "  float sj = toNormalized(getDataValue(0));",
    "  float vc = toNormalized(getDataValue(1));",
    "  float mi = toNormalized(getDataValue(2));",
    "  emitRGBA(vec4(0.96 * sj + 0.24 * mi + 0.26 * vc, 0.51 * sj + 0.71 * mi + 0.39 * vc, 0.19 * sj + 0.29 * mi + 0.85 * vc,"
    " max(sj, max(vc, mi))));",
    "}",
    "",
])
# myelin probability as a purple overlay (the skeleton shader's myelin colour), transparent where there is none
MYELIN_SHADER = ("void main() {{\n  float m = toNormalized(getDataValue());\n  emitRGBA(vec4({}, {}, {}, m));\n}}\n"
                 .format(*MYELIN_RGB))
# P(symmetric) at junction voxels: blue (symmetric) to orange (asymmetric), as the synapse annotations; read on sj voxels
SYNTYPE_SHADER = "\n".join([
    "void main() {",
    "  float s = toNormalized(getDataValue());",
    "  emitRGBA(vec4(mix(vec3({}, {}, {}), vec3({}, {}, {}), s), 1.0));".format(*(1.0, 0.35, 0.0), *(0.0, 0.6, 1.0)),
    "}",
    "",
])
SYNAPSE_SHADER = "\n".join([
    "void main() {",
    "  setColor(prop_type() == 1u ? vec3({}, {}, {}) : vec3({}, {}, {}));".format(*SYNAPSE_RGB["symmetric"], *SYNAPSE_RGB["asymmetric"]),
    "  setPointMarkerSize(6.0 + 40.0 * prop_area());",
    "  setPointMarkerBorderWidth(1.0);",
    "}",
    "",
])


def type_colours(cells_csv) -> dict[str, str]:
    """{cell id (decimal string): '#rrggbb'} from a `cells.csv` (`id,type,...`), in the compartments stage's
    type colours; cells of an unknown type keep Neuroglancer's own colour."""
    out = {}
    with open(cells_csv, newline="") as f:
        for row in csv.DictReader(f):
            rgba = TYPE_RGBA.get(row.get("type", ""))
            if rgba is not None:
                out[str(int(row["id"]))] = "#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3])
    return out


def _layer_dir(root: Path, name: str) -> Path | None:
    """The folder of layer `name` in an export (`root/name`) or an analysis (`root/layers/name`), if it has an info."""
    for d in (root / name, root / "layers" / name):
        if (d / "info").is_file():
            return d
    return None


def _has_raw(root: Path) -> bool:
    """Raw EM exists: an exported `raw/`, or the analysis' `[dataset] raw` (remote paths are assumed present)."""
    if _layer_dir(root, "raw") is not None:
        return True
    if not (root / "syconn.toml").is_file():
        return False
    from syconn_ng.analysis import Analysis
    from syconn_ng.layers import local_dir

    local = local_dir(Analysis.open(root).raw_layer)
    return local is None or (local / "info").is_file()


def existing_layers(root) -> list[str]:
    """Names (in `LAYER_NAMES` order) of the layers present in an analysis or export folder."""
    root = Path(root)
    return [n for n in LAYER_NAMES if (_has_raw(root) if n == "raw" else _layer_dir(root, n) is not None)]


def _cells_layer(root: Path, source_url: Callable[[str], str]) -> dict:
    d = _layer_dir(root, "cells")
    info = json.loads((d / "info").read_text())
    source: list = [source_url("cells")]
    if (d / COMPARTMENT_SKELETONS / "info").is_file() and info.get("skeletons") != COMPARTMENT_SKELETONS:
        # an analysis: the hulls stage's skeletons have no compartment attribute, so show the compartments stage's instead
        source = [{"url": source_url("cells"), "subsources": {"default": True, "bounds": True, "mesh": True, "properties": True,
                                                              "skeletons": False}, "enableDefaultSubsources": False},
                  source_url("cells") + "/" + COMPARTMENT_SKELETONS]
    layer = {"type": "segmentation", "name": "cells", "source": source, "visible": True,
             "selectedAlpha": 0.35, "notSelectedAlpha": 0.0, "objectAlpha": 1.0,
             "skeletonRendering": {"shader": skeleton_shader(_skeletons_have_myelin(d, info)), "mode2d": "lines_and_points",
                                   "mode3d": "lines"}}
    for table in (root / "cells.csv", root / "tables" / "cells.csv"):
        if table.is_file():
            layer["segmentColors"] = type_colours(table)
            break
    return layer


def _skeletons_have_myelin(cells_dir: Path, info: dict) -> bool:
    """The skeleton source the cells layer shows has a `myelin` vertex attribute (older analyses' have none)."""
    for sub in (COMPARTMENT_SKELETONS, info.get("skeletons") or "skeletons"):
        sk = cells_dir / sub / "info"
        if sk.is_file():
            return any(a.get("id") == "myelin" for a in json.loads(sk.read_text()).get("vertex_attributes", []))
    return False


def _layer(root: Path, name: str, source_url: Callable[[str], str]) -> dict:
    url = source_url(name)
    if name == "raw":
        return {"type": "image", "name": name, "source": url, "visible": True}
    if name == "barrier":
        return {"type": "image", "name": name, "source": url, "visible": False, "opacity": 0.5, "shader": BARRIER_SHADER}
    if name == "organelles":
        return {"type": "image", "name": name, "source": url, "visible": False, "opacity": 0.6, "shader": ORGANELLES_SHADER}
    if name == "myelin":
        return {"type": "image", "name": name, "source": url, "visible": True, "opacity": 0.5, "shader": MYELIN_SHADER}
    if name == "syntype":
        return {"type": "image", "name": name, "source": url, "visible": False, "opacity": 0.6, "shader": SYNTYPE_SHADER}
    if name in OBJECT_RGB:
        return {"type": "segmentation", "name": name, "source": url, "visible": False, "selectedAlpha": 0.5,
                "segmentDefaultColor": OBJECT_RGB[name]}
    if name == "cells":
        return _cells_layer(root, source_url)
    if name == "synapses":
        layer = {"type": "annotation", "name": name, "source": url, "visible": True, "shader": SYNAPSE_SHADER}
        if _layer_dir(root, "cells") is not None:
            layer["linkedSegmentationLayer"] = {"pre_cell": "cells", "post_cell": "cells"}
        return layer
    raise ValueError(f"unknown layer {name!r} (one of {', '.join(LAYER_NAMES)})")


def layer_specs(analysis_dir, source_url: Callable[[str], str], *, names: Iterable[str] | None = None) -> list[dict]:
    """One Neuroglancer layer JSON dict per layer of `analysis_dir` (an analysis or an export folder).

    source_url(name) is the URL the layer is served at (``precomputed://http://127.0.0.1:PORT/...``).
    names: the layers to include (default: every existing one). Raw EM is visible, myelin a visible purple
    overlay; barrier, organelle and synapse-type probabilities are hidden colour overlays; mi/vc/sj are hidden segmentations; cells show meshes and
    compartment-coloured skeletons (a `color_by_myelin` checkbox colours them by myelin; segments coloured by cell type when `cells.csv` exists); synapses
    are coloured by type, sized by area and linked to `cells` through `pre_cell`/`post_cell`.
    """
    root = Path(analysis_dir)
    names = existing_layers(root) if names is None else [n for n in LAYER_NAMES if n in set(names)]
    return [_layer(root, n, source_url) for n in names]


def viewer_state(layers: list[dict], *, position_vx, voxel_size_nm, selected=(), layout: str = "4panel",
                 cross_section_scale: float = 1.0, projection_scale: float | None = None) -> dict:
    """A complete Neuroglancer JSON state: dimensions x, y, z in nm (voxel units), the view centred on the
    0-based voxel `position_vx` (drawn at the voxel's centre, + 0.5), `layers`, `layout`, and the cell ids
    `selected` shown in the `cells` layer. Ids travel as decimal strings (JSON numbers lose uint64 precision).
    """
    vs = [float(v) for v in voxel_size_nm]
    layers = [dict(layer) for layer in layers]
    ids = [str(int(i)) for i in selected]
    for layer in layers:
        if layer["name"] == "cells" and ids:
            layer["segments"] = ids
    state = {
        "dimensions": {axis: [v * 1e-9, "m"] for axis, v in zip("xyz", vs)},
        "position": [float(p) + 0.5 for p in position_vx],
        "crossSectionScale": float(cross_section_scale),
        "projectionOrientation": [0.3, -0.25, 0.08, 0.92],
        "layers": layers,
        "layout": layout,
        "showSlices": True,
    }
    if projection_scale is not None:
        state["projectionScale"] = float(projection_scale)
    if any(layer["name"] == "cells" for layer in layers):
        state["selectedLayer"] = {"layer": "cells", "visible": False}
    return state
