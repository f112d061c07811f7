"""Reading whole layers and tables for scoring (synthetic volumes are small enough to hold in memory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_whole(path) -> np.ndarray | None:
    """(X, Y, Z) array of channel 0 of the layer at `path`, or None if there is no layer there."""
    from syconn_ng.layers import layer_box, open_layer, read_box

    if not (Path(str(path).removeprefix("file://")) / "info").is_file():
        return None
    vol = open_layer(path)
    return read_box(vol, layer_box(vol))[..., 0]
