"""Compartments for people: precomputed skeletons with `compartment` and `myelin` vertex attributes (Neuroglancer
colours them with a shader) and enriched KNOSSOS files (node comments, tree comment and colour)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from syconn_ng.layers import atomic_write_bytes, atomic_write_text

COMPARTMENT_CODES = ("axon", "dendrite", "soma", "spine_head", "spine_neck")  # code = index; 255 = unknown
UNKNOWN_CODE = 255
# RGB per compartment code (also the shader's colours): axon blue, dendrite red, soma grey, head yellow, neck orange
COMPARTMENT_RGB = ((0.2, 0.4, 1.0), (0.9, 0.15, 0.15), (0.6, 0.6, 0.6), (1.0, 0.9, 0.1), (1.0, 0.5, 0.0))
TYPE_RGBA = {"EA": (0.2, 0.7, 0.2, 1.0), "MSN": (0.85, 0.2, 0.2, 1.0), "GP": (0.3, 0.3, 0.9, 1.0), "INT": (0.9, 0.6, 0.1, 1.0)}
SKELETON_INFO = {
    "@type": "neuroglancer_skeletons",
    "transform": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0],
    "vertex_attributes": [{"id": "radius", "data_type": "float32", "num_components": 1},
                          {"id": "compartment", "data_type": "float32", "num_components": 1},
                          {"id": "myelin", "data_type": "float32", "num_components": 1}],
}  # Neuroglancer's skeleton renderer takes float32 attributes only; the codes are exact in float32
MYELIN_RGB = (0.75, 0.1, 0.85)  # myelinated stretches in the skeleton shader's myelin mode (unmyelinated: light grey)


def skeleton_shader(myelin: bool = True) -> str:
    """Neuroglancer skeleton shader colouring by the `compartment` attribute (docs/compartments.md); with `myelin`
    (the source has that attribute) a `color_by_myelin` checkbox switches to purple where a node's myelin exceeds
    the `myelin_threshold` slider (default `[compartments] myelin_threshold`), light grey elsewhere."""
    from syconn_ng.config import CompartmentsConfig

    lines = ["#uicontrol bool color_by_myelin checkbox(default=false)",
             f"#uicontrol float myelin_threshold slider(min=0, max=1, default={CompartmentsConfig().myelin_threshold})",
             "void main() {",
             "  if (color_by_myelin) {{ emitRGB(myelin > myelin_threshold ? vec3({}, {}, {}) : vec3(0.8, 0.8, 0.8)); return; }}"
             .format(*MYELIN_RGB)] if myelin else ["void main() {"]
    return "\n".join([
        *lines,
        "  int c = int(compartment);",
        *[f"  if (c == {i}) {{ emitRGB(vec3({r}, {g}, {b})); return; }}" for i, (r, g, b) in enumerate(COMPARTMENT_RGB)],
        "  emitRGB(vec3(1.0, 1.0, 1.0));",
        "}",
    ])


def encode_skeleton(vertices_nm: np.ndarray, edges: np.ndarray, radius_nm: np.ndarray, compartment: np.ndarray,
                    myelin: np.ndarray) -> bytes:
    """Neuroglancer precomputed skeleton bytes: counts, float32 vertices (nm), uint32 edges, then radius, compartment
    and myelin (0-1)."""
    v = np.ascontiguousarray(vertices_nm, dtype="<f4")
    e = np.ascontiguousarray(edges, dtype="<u4").reshape(-1, 2)
    head = np.array([len(v), len(e)], dtype="<u4").tobytes()
    return head + v.tobytes() + e.tobytes() + b"".join(np.asarray(a, dtype="<f4").tobytes() for a in (radius_nm, compartment, myelin))


def write_skeleton_info(directory) -> None:
    """The `info` of a skeleton source with `radius`, `compartment` and `myelin` vertex attributes."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "info", json.dumps(SKELETON_INFO, indent=1) + "\n")


def write_skeleton(directory, cell_id: int, vertices_nm, edges, radius_nm, compartment, myelin) -> None:
    atomic_write_bytes(Path(directory) / str(int(cell_id)), encode_skeleton(vertices_nm, edges, radius_nm, compartment, myelin))


def enriched_skeleton(tree, node_compartment: dict[int, str], cell_type: str | None, *, voxel_size_nm):
    """A KNOSSOS Skeleton of one cell: node comments = predicted compartment, tree comment = cell type, colour by type."""
    from dataclasses import replace

    from syconn_ng.io.skeleton import Parameters, Skeleton

    nodes = [replace(n, comment=node_compartment.get(n.id, n.comment)) for n in tree.nodes]
    t = replace(tree, nodes=nodes, comment=cell_type or tree.comment,
                color=TYPE_RGBA.get(cell_type, tree.color) if cell_type else tree.color)
    return Skeleton(trees=[t], parameters=Parameters(scale_nm=tuple(float(v) for v in voxel_size_nm)))
