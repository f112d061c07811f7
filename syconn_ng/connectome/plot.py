"""The wiring matrix as a heat map PNG: log colour scale, cell-type blocks outlined and labelled."""

from __future__ import annotations

import io

import numpy as np


def _blocks(types) -> list[tuple[str, int, int]]:
    """(type, start, stop) runs of equal consecutive types."""
    out, start = [], 0
    for i in range(1, len(types) + 1):
        if i == len(types) or types[i] != types[start]:
            out.append((types[start] or "?", start, i))
            start = i
    return out


def matrix_png(matrix: np.ndarray, types, *, title: str = "", label: str = "summed synaptic area (µm²)", dpi: int = 120) -> bytes:
    """PNG bytes of `matrix` (post × pre, float, cells sorted by type; `types` (n,) per cell).

    Zero entries are white; positive ones are coloured on a log scale. Lines separate the types; each
    block is labelled on both axes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    m = np.asarray(matrix, dtype=np.float64)
    n = m.shape[0]
    fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=dpi)
    positive = m[m > 0]
    if len(positive):
        lo, hi = float(positive.min()), float(positive.max())
        norm = LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 10)
        shown = np.ma.masked_less_equal(m, 0)
        cmap = plt.get_cmap("viridis").with_extremes(bad="white")
        im = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest", aspect="equal", extent=(0, max(n, 1), max(n, 1), 0))
        fig.colorbar(im, ax=ax, label=label, shrink=0.8)
    else:
        ax.imshow(np.zeros((max(n, 1), max(n, 1))), cmap="gray_r", vmin=0, vmax=1, extent=(0, max(n, 1), max(n, 1), 0))
        ax.text(0.5, 0.5, "no synapses", transform=ax.transAxes, ha="center", va="center")
    blocks = _blocks(list(types))
    for _, start, stop in blocks[1:]:
        ax.axhline(start, color="crimson", lw=1.2)
        ax.axvline(start, color="crimson", lw=1.2)
    centres = [(a + b) / 2 for _, a, b in blocks]
    names = [f"{t}\n({b - a})" for t, a, b in blocks]
    ax.set_xticks(centres, names, fontsize=8)
    ax.set_yticks(centres, [f"{t} ({b - a})" for t, a, b in blocks], fontsize=8)
    ax.tick_params(length=0)
    ax.set_xlabel("presynaptic cell (grouped by type)")
    ax.set_ylabel("postsynaptic cell (grouped by type)")
    ax.set_title(title or f"wiring diagram: {n} cells")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
