"""Training and scoring the CNNs on the real labelled EM in `shared/realdata/` (held-out sections).

Two datasets (see their README for sources and licences; both are non-commercial, so neither
the data nor weights trained on them are ever packaged — this writes into a folder you name):
* Drosophila VNC (Gerhard et al. 2013), 20 sections of 1024², 4.6 x 4.6 x 50 nm: membranes,
  mitochondria, synapses. Barrier and organelle models (vc has no labels there: learnt as empty).
* ISBI 2012 training set, 30 sections of 512², 4 x 4 x 50 nm: membranes (label 0 = membrane), 3-fold
  cross-validation by section blocks.

Usage: python -m syconn_ng.cnn.realdata REALDATA_DIR OUT_DIR [--minutes 15] [--device cuda --batch-size 16]
Writes OUT_DIR/<name>.pt (+ .json, learning curve), OUT_DIR/results.json and picture panels.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from syconn_ng.cnn.train import LabelledVolume, TrainSettings, read_stack, train_model

# held-out splits by section: train on some sections, validate (early stopping) on the next, test on the rest.
# VNC: one split. ISBI: 3-fold cross-validation over its 30 sections (the test labels were never released).
SPLITS = {"vnc": [{"train": [(0, 13)], "val": (13, 15), "test": (15, 20)}],
          "isbi": [{"train": [(14, 30)], "val": (10, 14), "test": (0, 10)},
                   {"train": [(0, 10), (24, 30)], "val": (20, 24), "test": (10, 20)},
                   {"train": [(0, 16)], "val": (16, 20), "test": (20, 30)}]}
VOXEL_SIZE_NM = {"vnc": [4.6, 4.6, 50.0], "isbi": [4.0, 4.0, 50.0]}


def load_vnc(root) -> tuple[LabelledVolume, LabelledVolume, np.ndarray]:
    """Barrier volume (membranes), organelle volume (sj = synapses, vc = empty, mi = mitochondria), 2D truth cells."""
    import cc3d

    stack = Path(root) / "drosophila_vnc_gerhard2013" / "stack1"
    raw = read_stack(stack / "raw")
    mem = read_stack(stack / "membranes") > 0
    mito = read_stack(stack / "mitochondria") > 0
    syn = read_stack(stack / "synapses") > 0
    labels = read_stack(stack / "labels")
    cells = np.stack([cc3d.connected_components(np.isin(labels[:, :, z], (191, 255)), connectivity=4) for z in range(labels.shape[2])], axis=2)
    barrier = LabelledVolume("drosophila VNC membranes", raw, mem[..., None])
    organelles = LabelledVolume("drosophila VNC synapses+mitochondria", raw, np.stack([syn, np.zeros_like(syn), mito], axis=3))
    return barrier, organelles, cells.astype(np.int64)


def load_isbi(root) -> tuple[LabelledVolume, np.ndarray]:
    """Barrier volume (label 0 = membrane) and 2D truth cells (components of label 255)."""
    import cc3d

    d = Path(root) / "isbi2012_train"
    raw = read_stack(d / "image")
    if raw.ndim == 4:
        raw = raw[..., 0]
    lab = read_stack(d / "label")
    cells = np.stack([cc3d.connected_components(lab[:, :, z] > 127, connectivity=4) for z in range(lab.shape[2])], axis=2)
    return LabelledVolume("ISBI 2012 membranes", raw.astype(np.uint8), (lab <= 127)[..., None]), cells.astype(np.int64)


def _split(v: LabelledVolume, split: dict):
    return [v.sections(*t) for t in split["train"]], v.sections(*split["val"]), v.sections(*split["test"])


def score_membranes(prob: np.ndarray, truth: np.ndarray, cells: np.ndarray) -> dict:
    """Membrane pixel F1 at 0.5 and adapted Rand error of 2D cells (mean over sections)."""
    from syconn_ng.cnn.metrics import adapted_rand_error, cells_from_boundary, voxel_scores

    p = prob[..., 0].astype(np.float32) / 255
    seg = cells_from_boundary(p, threshold=0.5)
    rand = [adapted_rand_error(seg[:, :, z], cells[:, :, z])["error"] for z in range(p.shape[2])]
    return {"pixel": voxel_scores(p >= 0.5, truth), "adapted_rand_error": float(np.mean(rand)), "sections": p.shape[2]}


def score_vnc_organelles(prob: np.ndarray, truth: np.ndarray) -> dict:
    """Mitochondria voxel IoU; synapse objects (3D components) matched at IoU >= 0.5 and at any overlap."""
    import cc3d

    from syconn_ng.cnn.metrics import object_scores, voxel_scores

    pred_syn = cc3d.connected_components(prob[..., 0] >= 128, connectivity=26)
    true_syn = cc3d.connected_components(truth[..., 0], connectivity=26)
    return {"mitochondria": voxel_scores(prob[..., 2] >= 128, truth[..., 2]),
            "synapse_objects_iou50": object_scores(pred_syn, true_syn, min_iou=0.5),
            "synapse_objects_any_overlap": object_scores(pred_syn, true_syn, min_iou=1e-9),
            "synapse_voxels": voxel_scores(prob[..., 0] >= 128, truth[..., 0])}


def panel(raw2d: np.ndarray, prob2d: np.ndarray, truth2d: np.ndarray, path, *, size: int = 256) -> Path:
    """A PNG: raw | prediction | truth of one section crop (x right, y down)."""
    from PIL import Image

    tiles = [raw2d, prob2d, (truth2d > 0).astype(np.uint8) * 255]
    img = np.concatenate([t[:size, :size].T for t in tiles], axis=1).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def run(root, out, *, minutes: float = 15.0, device: str = "cpu", batch_size: int = 2, width: int = 16, loader_threads: int = 0,
        progress: bool = True) -> dict:
    """Train and score the real-data models (VNC membranes, VNC organelles, ISBI membranes in 3 folds);
    returns (and writes) the results, with the ISBI folds' mean."""
    from syconn_ng.cnn.inference import Predictor, predict_volume
    from syconn_ng.cnn.modelfile import load_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = TrainSettings(width=width, depth=4, patch_size=[160, 160, 4], inference_patch=[256, 256, 4], output_crop=[16, 16, 0],
                         batch_size=batch_size, iterations=100000, max_minutes=minutes, validate_every=50, patience=8, threads=1,
                         seed=0, device=device, loader_threads=loader_threads)
    results = {}
    vnc_barrier, vnc_organelles, vnc_cells = load_vnc(root)
    isbi, isbi_cells = load_isbi(root)
    jobs = [("vnc_barrier", "barrier", vnc_barrier, vnc_cells, "vnc", SPLITS["vnc"][0]),
            ("vnc_organelles", "organelles", vnc_organelles, None, "vnc", SPLITS["vnc"][0])]
    jobs += [(f"isbi_barrier_fold{k}", "barrier", isbi, isbi_cells, "isbi", split) for k, split in enumerate(SPLITS["isbi"])]
    for name, task, vol, cells, key, split in jobs:
        train, val, test = _split(vol, split)
        settings = replace(base, voxel_size_nm=VOXEL_SIZE_NM[key])
        path = out / f"{name}.pt"
        train_model(task, train, [val], settings, out=path, progress=progress, curve_png=out / f"{name}_curve.png",
                    data_description=f"{vol.name}, sections {split['train']} (validation {split['val']})")
        module, info = load_model(path)
        prob = predict_volume(Predictor.from_model(module, info, batch_size=batch_size, device=device), test.raw)
        if task == "barrier":
            results[name] = score_membranes(prob, test.target[..., 0], cells[:, :, slice(*split["test"])])
            panel(test.raw[:, :, 0], prob[:, :, 0, 0], test.target[:, :, 0, 0], out / f"{name}_test_section.png")
        else:
            results[name] = score_vnc_organelles(prob, test.target)
            z = int(np.argmax(test.target[..., 0].sum(axis=(0, 1))))
            x, y = (int(v) for v in np.argwhere(test.target[:, :, z, 0]).mean(axis=0))
            crop = (slice(max(0, x - 128), max(0, x - 128) + 256), slice(max(0, y - 128), max(0, y - 128) + 256), z)
            panel(test.raw[crop], np.maximum(prob[crop + (0,)], prob[crop + (2,)] // 2), test.target[crop + (0,)] | test.target[crop + (2,)],
                  out / f"{name}_test_section.png")
        results[name].update(test_sections=list(split["test"]), training_seconds=info.training["seconds"],
                             iterations=info.training["iterations_run"], best_iteration=info.training["best_iteration"],
                             device=device, batch_size=batch_size, width=width)
        folds = [r for k, r in results.items() if k.startswith("isbi_barrier_fold")]
        if folds:
            results["isbi_barrier_mean"] = {"folds": len(folds), "pixel_f1": float(np.mean([r["pixel"]["f1"] for r in folds])),
                                            "adapted_rand_error": float(np.mean([r["adapted_rand_error"] for r in folds]))}
        (out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("realdata", help="the shared/realdata folder")
    ap.add_argument("out", help="folder for the (non-redistributable) weights, results.json and pictures")
    ap.add_argument("--minutes", type=float, default=15.0, help="training time per model")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="train and predict here")
    ap.add_argument("--batch-size", type=int, default=2, help="patches per step (larger on a GPU)")
    ap.add_argument("--width", type=int, default=16, help="U-Net channels at full resolution")
    ap.add_argument("--loader-threads", type=int, default=0, help="threads preparing batches ahead (use ~8 with a GPU)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.realdata, args.out, minutes=args.minutes, device=args.device, batch_size=args.batch_size,
                         width=args.width, loader_threads=args.loader_threads, progress=not args.quiet), indent=1, default=float))


if __name__ == "__main__":
    main()
