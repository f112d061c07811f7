"""`report.html`: one self-contained page of an analysis's results — counts, accuracy, timings, the wiring
matrix and raw EM slices with cells, organelles and synapses overlaid (images inlined as PNG)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

ORGANELLE_COLOURS = {"mi": (0.2, 0.5, 1.0), "vc": (0.2, 0.9, 0.3), "sj": (1.0, 0.2, 0.2)}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def cell_outlines(cells: np.ndarray) -> np.ndarray:
    """(X, Y) bool: pixels where a cell id (non-zero) meets a different id. cells: (X, Y) uint64."""
    edge = np.zeros(cells.shape, dtype=bool)
    dx = cells[1:, :] != cells[:-1, :]
    dy = cells[:, 1:] != cells[:, :-1]
    edge[1:, :] |= dx
    edge[:-1, :] |= dx
    edge[:, 1:] |= dy
    edge[:, :-1] |= dy
    return edge & (cells > 0)


def overlay_rgb(raw: np.ndarray, cells: np.ndarray | None, organelles: dict) -> np.ndarray:
    """(Y, X, 3) float RGB of one section: raw grey, organelles tinted, cell outlines yellow.

    raw: (X, Y) uint8; cells: (X, Y) uint64 or None; organelles: kind → (X, Y) ids.
    """
    rgb = np.repeat((raw.astype(np.float32) / 255)[..., None], 3, axis=2)
    for kind, labels in organelles.items():
        m = labels > 0
        rgb[m] = 0.5 * rgb[m] + 0.5 * np.asarray(ORGANELLE_COLOURS[kind])
    if cells is not None:
        rgb[cell_outlines(cells)] = (1.0, 0.85, 0.0)
    return np.transpose(rgb, (1, 0, 2))  # image rows = y


def _read(path):
    from syconn_ng.evaluation._layers import read_whole

    return read_whole(path)


def slice_figures(analysis, *, n_slices: int = 3) -> list[tuple[str, str]]:
    """(caption, base64 PNG) of `n_slices` sections evenly through the volume."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    raw = _read(analysis.raw_layer)
    if raw is None:
        return []
    cells = _read(analysis.layer_path("cells"))
    organelles = {k: v for k in ORGANELLE_COLOURS if (v := _read(analysis.layer_path(k))) is not None}
    syn_path = analysis.tables_dir / "synapses.csv"
    synapses = pd.read_csv(syn_path) if syn_path.is_file() else None
    out = []
    for z in np.linspace(0, raw.shape[2] - 1, n_slices + 2)[1:-1].astype(int):
        fig, ax = plt.subplots(figsize=(6, 6 * raw.shape[1] / raw.shape[0]))
        ax.imshow(overlay_rgb(raw[:, :, z], None if cells is None else cells[:, :, z],
                              {k: v[:, :, z] for k, v in organelles.items()}), interpolation="nearest")
        n_syn = 0
        if synapses is not None and len(synapses):
            near = synapses[(synapses.z - z).abs() <= 3]
            n_syn = len(near)
            ax.scatter(near.x, near.y, s=80, facecolors="none", edgecolors="magenta", linewidths=2)
        ax.set_axis_off()
        out.append((f"section z = {z}: cells outlined yellow, mitochondria blue, vesicle clouds green, synaptic junctions red"
                    + (f", {n_syn} synapse(s) within 3 sections circled magenta" if synapses is not None else ""), _png(fig)))
        plt.close(fig)
    return out


def _scores_table(scores: dict) -> str:
    from syconn_ng.evaluation import TABLE_SKIP, flat_rows

    rows = []
    for stage, result in scores.items():
        result = {k: v for k, v in result.items() if k not in TABLE_SKIP}
        if "skipped" in result or "error" in result:
            rows.append((stage, "skipped" if "skipped" in result else "error", result.get("skipped", result.get("error"))))
            continue
        for key, value in flat_rows("", result, 3):
            rows.append((stage, key, f"{value:.4f}" if isinstance(value, float) else value))
    body = "".join(f"<tr><td>{html.escape(str(s))}</td><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for s, k, v in rows)
    return f"<table><tr><th>stage</th><th>metric</th><th>value</th></tr>{body}</table>"


def write_report(analysis, path, *, scores: dict | None = None, summary=None, title: str = "syconn_ng analysis") -> Path:
    """Write the self-contained HTML report of `analysis` to `path` (atomically); returns the path."""
    from syconn_ng.layers import atomic_write_text

    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>analysis: <code>{html.escape(str(analysis.root))}</code></p>"]
    if summary is not None:
        counts = summary.counts()
        if counts:
            parts.append("<p>" + ", ".join(f"{k.replace('_', ' ')}: <b>{v}</b>" for k, v in counts.items()) + "</p>")
        rows = "".join(f"<tr><td>{s['stage']}</td><td>{s['ran']}</td><td>{s['skipped']}</td><td>{s['seconds']:.1f}</td></tr>"
                       for s in summary.stages)
        parts.append(f"<h2>Run</h2><table><tr><th>stage</th><th>tasks run</th><th>already done</th><th>seconds</th></tr>{rows}"
                     f"<tr><td>total</td><td></td><td></td><td>{summary.seconds:.1f}</td></tr></table>")
    if scores is not None:
        parts.append("<h2>Accuracy against ground truth</h2>" + _scores_table(scores))
    matrix = analysis.tables_dir / "matrix.png"
    if matrix.is_file():
        parts.append("<h2>Wiring matrix</h2><img alt='wiring matrix' src='data:image/png;base64,"
                     + base64.b64encode(matrix.read_bytes()).decode("ascii") + "'>")
    figures = slice_figures(analysis)
    if figures:
        parts.append("<h2>Sections</h2>")
        for caption, png in figures:
            parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{png}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}img{max-width:100%}")
    page = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    path = Path(path)
    atomic_write_text(path, page)
    return path
