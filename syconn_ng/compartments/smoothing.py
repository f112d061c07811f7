"""Class probabilities smoothed along the skeleton, so a compartment is contiguous and the axon does not flicker."""

from __future__ import annotations

import numpy as np

from syconn_ng.compartments.features import adjacency, node_lengths_nm, window_sums


def smooth_probabilities(positions_nm: np.ndarray, edges: np.ndarray, proba: np.ndarray, *, distance_nm: float,
                         mask: np.ndarray | None = None) -> np.ndarray:
    """(N, C) probabilities averaged over the nodes within path distance `distance_nm`, weighted by path length.

    mask (N,) bool: only these nodes contribute (e.g. the dendrite nodes when smoothing spine
    probabilities); a node with no contributing neighbour keeps its own values. 0 = no smoothing.
    """
    if distance_nm <= 0 or len(proba) == 0:
        return proba.copy()
    adj = adjacency(positions_nm, edges)
    w = node_lengths_nm(positions_nm, edges)
    if mask is not None:
        w = w * mask
    s = window_sums(adj, np.column_stack([w, proba * w[:, None]]), distance_nm)
    return np.where(s[:, :1] > 0, s[:, 1:] / np.maximum(s[:, :1], 1e-12), proba)
