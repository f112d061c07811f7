"""Segmentation metrics: voxel F1 and IoU, object F1 (one-to-one matching by overlap), adapted Rand error."""

from __future__ import annotations

import numpy as np


def voxel_scores(pred: np.ndarray, truth: np.ndarray, *, mask: np.ndarray | None = None) -> dict:
    """Precision, recall, F1 and IoU of two boolean masks of the same shape (voxels where `mask` is False are ignored)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"shapes differ: {pred.shape} vs {truth.shape}")
    if mask is not None:
        pred, truth = pred[mask], truth[mask]
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    iou = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    return {"precision": precision, "recall": recall, "f1": f1, "iou": iou, "tp": tp, "fp": fp, "fn": fn}


def overlap_table(pred_labels: np.ndarray, truth_labels: np.ndarray):
    """Overlaps of two label arrays (0 = background): (pred ids, truth ids, shared voxels) of every touching pair,
    and the sizes of all pred and truth objects as dicts id → voxels."""
    p = np.asarray(pred_labels).ravel()
    t = np.asarray(truth_labels).ravel()
    if p.shape != t.shape:
        raise ValueError(f"shapes differ: {np.shape(pred_labels)} vs {np.shape(truth_labels)}")
    p_ids, p_sizes = np.unique(p[p > 0], return_counts=True)
    t_ids, t_sizes = np.unique(t[t > 0], return_counts=True)
    both = (p > 0) & (t > 0)
    pairs, shared = _pair_counts(p[both], t[both])
    return pairs[0], pairs[1], shared, dict(zip(p_ids.tolist(), p_sizes.tolist())), dict(zip(t_ids.tolist(), t_sizes.tolist()))


def _pair_counts(a: np.ndarray, b: np.ndarray):
    """The distinct pairs (a[i], b[i]) as a (2, K) array and how often each occurs (one sort of int64 keys)."""
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    keys, counts = np.unique(ia.astype(np.int64) * max(len(ub), 1) + ib, return_counts=True)
    return np.stack([ua[keys // max(len(ub), 1)], ub[keys % max(len(ub), 1)]]), counts


def object_scores(pred_labels: np.ndarray, truth_labels: np.ndarray, *, min_iou: float = 0.5) -> dict:
    """Object precision, recall and F1: objects are matched one-to-one, best IoU first, if their IoU >= `min_iou`.

    pred_labels, truth_labels: integer label arrays of the same shape (0 = background).
    """
    pi, ti, shared, p_size, t_size = overlap_table(pred_labels, truth_labels)
    iou = shared / (np.array([p_size[i] for i in pi.tolist()]) + np.array([t_size[j] for j in ti.tolist()]) - shared) if len(pi) else np.zeros(0)
    used_p, used_t = set(), set()
    matched_iou = []
    for k in np.argsort(-iou, kind="stable"):
        if iou[k] < min_iou:
            break
        a, b = int(pi[k]), int(ti[k])
        if a in used_p or b in used_t:
            continue
        used_p.add(a)
        used_t.add(b)
        matched_iou.append(float(iou[k]))
    tp, n_pred, n_truth = len(matched_iou), len(p_size), len(t_size)
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_truth if n_truth else 1.0
    f1 = 2 * tp / (n_pred + n_truth) if n_pred + n_truth else 1.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": n_pred - tp, "fn": n_truth - tp,
            "pred_objects": n_pred, "truth_objects": n_truth, "mean_matched_iou": float(np.mean(matched_iou)) if matched_iou else 0.0}


def adapted_rand_error(seg: np.ndarray, truth: np.ndarray) -> dict:
    """Adapted Rand error (1 − Rand F-score over pairs of voxels) as in the ISBI 2012 and CREMI challenges.

    seg, truth: integer label arrays of the same shape; voxels with truth 0 are ignored, seg 0
    is an ordinary segment. Returns error, precision (pairs together in seg that are together in
    truth) and recall.
    """
    s = np.asarray(seg).ravel()
    t = np.asarray(truth).ravel()
    keep = t > 0
    s, t = s[keep], t[keep]
    n = s.size
    if n == 0:
        return {"error": 0.0, "precision": 1.0, "recall": 1.0}
    _, pair_counts = _pair_counts(s, t)
    _, s_counts = np.unique(s, return_counts=True)
    _, t_counts = np.unique(t, return_counts=True)
    together_both = float(np.sum(pair_counts.astype(np.float64) ** 2) - n)
    together_seg = float(np.sum(s_counts.astype(np.float64) ** 2) - n)
    together_truth = float(np.sum(t_counts.astype(np.float64) ** 2) - n)
    precision = together_both / together_seg if together_seg > 0 else 1.0
    recall = together_both / together_truth if together_truth > 0 else 1.0
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"error": 1.0 - f, "precision": precision, "recall": recall}


def cells_from_boundary(prob: np.ndarray, *, threshold: float) -> np.ndarray:
    """2D cells per section from a boundary probability: components of `prob < threshold`, boundary voxels
    given to the nearest component. prob: (X, Y, Z) float; returns (X, Y, Z) int64 labels unique across sections."""
    import cc3d
    from scipy.ndimage import distance_transform_edt

    out = np.zeros(prob.shape, dtype=np.int64)
    next_id = 0
    for z in range(prob.shape[2]):
        inside = prob[:, :, z] < threshold
        labels = cc3d.connected_components(inside, connectivity=4).astype(np.int64)
        if labels.max() > 0:
            idx = distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
            labels = labels[tuple(idx)]
            labels[labels > 0] += next_id
            next_id = int(labels.max())
        out[:, :, z] = labels
    return out
