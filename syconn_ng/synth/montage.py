"""A PNG montage of raw EM sections of a synthetic tissue: each section shown plain and with its
ground truth outlined (cell boundaries, mitochondria, vesicle clouds, synaptic junctions)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from syconn_ng.box import Box
from syconn_ng.layers import layer_box, open_layer, read_box

OUTLINE_RGB = {"cells": (1.0, 0.85, 0.1), "mi": (0.2, 0.55, 1.0), "vc": (0.1, 0.9, 0.3), "sj": (1.0, 0.15, 0.15)}


def _edges(labels: np.ndarray) -> np.ndarray:
    """(X, Y) bool: pixels whose label differs from a 4-neighbour's (and are not background)."""
    e = np.zeros(labels.shape, bool)
    e[1:] |= labels[1:] != labels[:-1]
    e[:-1] |= labels[:-1] != labels[1:]
    e[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    e[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return e & (labels > 0)


def _artefacts(tissue_dir: Path) -> dict[int, str]:
    """Section -> note for the sections with imaging artefacts (from truth/stats.json)."""
    import json

    p = tissue_dir / "truth" / "stats.json"
    if not p.exists():
        return {}
    stats = json.loads(p.read_text())
    notes = {int(z): " (missing section)" for z in stats.get("missing_sections", [])}
    notes.update({int(z): f" (section shifted {dx},{dy} vx)" for z, dx, dy in stats.get("shifted_sections", [])})
    return notes


def make_montage(tissue_dir, png_path, *, sections=None, size_vx: int = 256, dpi: int = 100) -> Path:
    """Write a montage of `sections` (z indices; default three spread through the volume).

    Each row is one section: raw on the left, raw with outlines on the right, cropped to a
    `size_vx` square at the volume's centre.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tissue_dir = Path(tissue_dir)
    raw = open_layer(tissue_dir / "raw")
    bounds = layer_box(raw)
    X, Y, Z = bounds.shape
    if sections is None:
        sections = [int(Z * f) for f in (0.3, 0.55, 0.8)]
    artefacts = _artefacts(tissue_dir)
    cx, cy = X // 2, Y // 2
    h = min(size_vx, X, Y) // 2
    layers = {k: open_layer(tissue_dir / "truth" / k) for k in OUTLINE_RGB}
    fig, axes = plt.subplots(len(sections), 2, figsize=(8, 4 * len(sections)), squeeze=False)
    for row, z in enumerate(sections):
        box = Box((cx - h, cy - h, z), (cx + h, cy + h, z + 1))
        img = read_box(raw, box)[:, :, 0, 0].T.astype(np.float32) / 255
        rgb = np.repeat(img[..., None], 3, axis=2)
        over = rgb.copy()
        for name, colour in OUTLINE_RGB.items():
            lab = read_box(layers[name], box)[:, :, 0, 0].T
            mask = _edges(lab) if name != "sj" else lab > 0
            over[mask] = colour
        for col, pic in enumerate((rgb, over)):
            ax = axes[row, col]
            ax.imshow(pic, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(f"z = {z}" + artefacts.get(z, ""))
    axes[0, 0].set_title("raw (synthetic)")
    axes[0, 1].set_title("truth: cells, mi (blue), vc (green), sj (red)")
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    plt.close(fig)
    # a 256-colour palette keeps the committed picture small (grey levels plus four outline colours)
    Image.open(buf).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(png_path, optimize=True)
    return png_path
