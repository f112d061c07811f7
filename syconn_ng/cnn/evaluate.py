"""Scoring CNN outputs against truth: barrier and myelin voxel F1, organelle objects as the `objects` stage would
extract them, synapse types by the fraction rule over each junction."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from syconn_ng.cnn.metrics import object_scores, voxel_scores


def score_barrier(prob: np.ndarray, truth: np.ndarray, *, threshold: int = 128) -> dict:
    """Voxel scores of `prob >= threshold` against the truth membranes. prob: (X, Y, Z[, 1]) uint8; truth: (X, Y, Z) bool."""
    p = prob[..., 0] if prob.ndim == 4 else prob
    return voxel_scores(p >= threshold, truth)


def extract_objects(prob: np.ndarray, *, threshold: float, min_voxels: int, connectivity: int = 26) -> np.ndarray:
    """(X, Y, Z) uint32 objects from one organelle channel, as the `objects` stage finds them in one box:
    components of prob > int(threshold * 255), those under `min_voxels` removed."""
    from syconn_ng.stages.objects import label_components, threshold_u8

    labels, n, _ = label_components(prob, threshold=threshold_u8(threshold), connectivity=connectivity)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = sizes < max(min_voxels, 1)
    small[0] = True
    labels[small[labels]] = 0
    return labels


def score_organelles(prob: np.ndarray, truth_objects: dict, objects_config, *, min_iou: float = 0.5) -> dict:
    """Per organelle (sj, vc, mi): object scores (matched at IoU >= `min_iou`) and voxel scores.

    Truth objects smaller than the stage's `min_voxels_<kind>` are left out of the object scores
    (the stage drops such objects by design, e.g. slivers cut by the volume border).

    prob: (X, Y, Z, 3) uint8; truth_objects: kind → (X, Y, Z) integer labels; objects_config: the
    `[objects]` section (thresholds, minimum sizes, connectivity).
    """
    from syconn_ng.stages.objects import ORGANELLES, threshold_u8

    out = {}
    for c, kind in enumerate(ORGANELLES):
        thr = getattr(objects_config, f"threshold_{kind}")
        labels = extract_objects(prob[..., c], threshold=thr, min_voxels=getattr(objects_config, f"min_voxels_{kind}"),
                                 connectivity=objects_config.connectivity)
        truth = np.asarray(truth_objects[kind]).copy()
        ids, sizes = np.unique(truth[truth > 0], return_counts=True)
        truth[np.isin(truth, ids[sizes < getattr(objects_config, f"min_voxels_{kind}")])] = 0  # below the stage's size filter by design
        out[kind] = {"object": object_scores(labels, truth, min_iou=min_iou),
                     "voxel": voxel_scores(prob[..., c] > threshold_u8(thr), truth > 0)}
    return out


def read_truth(folder, task: str):
    """The truth of a synthetic tissue folder: barrier (X, Y, Z) bool, or organelle objects kind → (X, Y, Z) uint64."""
    from syconn_ng.layers import layer_box, open_layer, read_box

    def read(name):
        vol = open_layer(Path(folder) / "truth" / name)
        return read_box(vol, layer_box(vol))[..., 0]

    if task == "barrier":
        return read("barrier") > 0
    if task == "myelin_syntype":
        return {"myelin": read("myelin") > 0, "sj": read("sj"), "synapses": Path(folder) / "truth" / "synapses.csv"}
    return {kind: read(kind) for kind in ("sj", "vc", "mi")}


def symmetric_fractions(syntype: np.ndarray, sj_objects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(object ids, mean symmetric probability over each object's voxels): a junction's symmetric fraction.
    syntype: (X, Y, Z) uint8 (probability x 255); sj_objects: (X, Y, Z) integer labels."""
    ids, inverse = np.unique(sj_objects, return_inverse=True)
    sums = np.bincount(inverse.ravel(), weights=syntype.ravel().astype(np.float64))
    counts = np.bincount(inverse.ravel())
    keep = ids > 0
    return ids[keep], sums[keep] / counts[keep] / 255.0


def calibrate_symmetric_fraction(fractions, symmetric) -> float:
    """The symmetric-fraction threshold that best separates junctions of known type (highest balanced accuracy;
    among equally good thresholds the middle one): a model's channel is calibrated on tissues it did not learn from."""
    f = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(symmetric, dtype=bool)
    if not y.any() or y.all():
        return 0.5
    u = np.unique(f)
    cands = np.concatenate([[u[0] - 1e-3], (u[:-1] + u[1:]) / 2, [u[-1] + 1e-3]])
    pred = f[None, :] > cands[:, None]
    balanced = ((pred & y).sum(1) / y.sum() + (~pred & ~y).sum(1) / (~y).sum()) / 2
    best = np.flatnonzero(balanced >= balanced.max() - 1e-12)
    return float(np.clip(round(cands[best[len(best) // 2]], 3), 0.0, 1.0))


def junction_fractions(model_path, folders, *, device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(symmetric fractions, is symmetric) of every true junction of synthetic tissue folders under a
    myelin_syntype model: its syntype channel averaged over each junction's true voxels."""
    import pandas as pd

    from syconn_ng.cnn.inference import Predictor, predict_volume
    from syconn_ng.cnn.modelfile import load_model
    from syconn_ng.cnn.train import read_stack

    module, info = load_model(model_path, task="myelin_syntype")
    predictor = Predictor.from_model(module, info, batch_size=1, device=device)
    fr, sym = [], []
    for folder in folders:
        prob = predict_volume(predictor, read_stack(Path(folder) / "raw"))
        truth = read_truth(folder, "myelin_syntype")
        ids, frac = symmetric_fractions(prob[..., info.channels.index("syntype")], truth["sj"])
        types = pd.read_csv(truth["synapses"], usecols=["sj_id", "type"]).set_index("sj_id")["type"]
        fr.append(frac)
        sym.append(types.reindex(ids).to_numpy() == "symmetric")
    return np.concatenate(fr) if fr else np.zeros(0), np.concatenate(sym) if sym else np.zeros(0, bool)


def score_myelin_syntype(prob: np.ndarray, truth: dict, channels, *, symmetric_fraction: float = 0.5) -> dict:
    """Myelin voxel scores; synapse-type accuracy of the fraction rule over each true junction's voxels
    (symmetric when the mean symmetric probability exceeds `symmetric_fraction`) and voxel scores there."""
    import pandas as pd

    out = {}
    if "myelin" in channels:
        out["myelin"] = {"voxel": voxel_scores(prob[..., list(channels).index("myelin")] >= 128, truth["myelin"])}
    if "syntype" in channels:
        st = prob[..., list(channels).index("syntype")]
        ids, frac = symmetric_fractions(st, truth["sj"])
        syn = pd.read_csv(truth["synapses"], usecols=["sj_id", "type"]).set_index("sj_id")["type"]
        sym = syn.reindex(ids).to_numpy() == "symmetric"
        junction = truth["sj"] > 0
        sym_voxels = np.isin(truth["sj"], ids[sym])
        out["syntype"] = {"synapses": int(len(ids)), "symmetric": int(sym.sum()),
                          "accuracy": float(np.mean((frac > symmetric_fraction) == sym)) if len(ids) else 1.0,
                          "voxel": voxel_scores((st >= 128) & junction, sym_voxels)}
    return out


def evaluate_on_tissue(model_path, folder, *, task: str, device: str = "auto", batch_size: int = 2, objects_config=None) -> dict:
    """Run a model over a whole synthetic tissue folder and score it (the numbers the bundled weights report)."""
    from syconn_ng.cnn.inference import Predictor, predict_volume
    from syconn_ng.cnn.modelfile import load_model
    from syconn_ng.cnn.train import read_stack
    from syconn_ng.config import ObjectsConfig

    module, info = load_model(model_path, task=task)
    predictor = Predictor.from_model(module, info, batch_size=batch_size, device=device)
    prob = predict_volume(predictor, read_stack(Path(folder) / "raw"))
    truth = read_truth(folder, task)
    if task == "barrier":
        return {"barrier": {"voxel": score_barrier(prob, truth)}}
    if task == "myelin_syntype":
        return score_myelin_syntype(prob, truth, info.channels, symmetric_fraction=info.training.get("symmetric_fraction", 0.5))
    return score_organelles(prob, truth, objects_config or ObjectsConfig())
