"""Organelle object P/R/F1 of the bundled organelle model on synthetic tissues never used in training,
per tissue and pooled, for any `[objects]` settings: the numbers behind the sj table of docs/cnn.md.

Each tissue is generated once and its probability map (1 torch thread) cached as `prob.npy` in
`--workdir`, so re-scoring with other settings takes seconds. Truth objects under the stage's
`min_voxels_<kind>` are left out, as in `syconn_ng.cnn.evaluate.score_organelles`.
Usage: .venv/bin/python benchmarks/eval_organelles.py --tissue 1:192,192,96:1 --tissue 6:192,192,96:4 \
           [--workdir /tmp/organelle_eval] [--set min_voxels_sj=8]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

KINDS = ("sj", "vc", "mi")


def probabilities(folder: Path, seed: int, shape, synapses_per_um3: float) -> np.ndarray:
    """The tissue's (X, Y, Z, 3) uint8 organelle probabilities, generating and predicting on first use."""
    import torch

    from syconn_ng.cnn.inference import Predictor, predict_volume
    from syconn_ng.cnn.modelfile import bundled_model_path, load_model
    from syconn_ng.cnn.train import read_stack
    from syconn_ng.layers import atomic_write_bytes
    from syconn_ng.synth.generate import generate_tissue

    cached = folder / "prob.npy"
    if cached.exists():
        return np.load(cached)
    if not (folder / ".complete").exists():
        generate_tissue(folder, shape=shape, seed=seed, synapses_per_um3=synapses_per_um3)
        (folder / ".complete").write_text("ok\n")
    torch.set_num_threads(1)
    module, info = load_model(bundled_model_path("organelles"), task="organelles")
    prob = predict_volume(Predictor.from_model(module, info, batch_size=1, device="cpu"), read_stack(folder / "raw"))
    buf = io.BytesIO()
    np.save(buf, prob)
    atomic_write_bytes(cached, buf.getvalue())
    return prob


def main(argv=None) -> None:
    from syconn_ng.cnn.evaluate import read_truth, score_organelles
    from syconn_ng.config import ObjectsConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tissue", action="append", required=True, help="SEED:X,Y,Z:SYNAPSES_PER_UM3 (repeatable)")
    ap.add_argument("--workdir", default="/tmp/organelle_eval")
    ap.add_argument("--set", action="append", default=[], help="an [objects] setting, e.g. min_voxels_sj=100 (repeatable)")
    args = ap.parse_args(argv)
    cfg = ObjectsConfig()
    for item in args.set:
        key, value = item.split("=", 1)
        setattr(cfg, key, type(getattr(cfg, key))(float(value)))  # "100" → 100, "0.2" → 0.2
    pooled = {k: np.zeros(3, dtype=np.int64) for k in KINDS}  # matched, predicted, true
    for spec in args.tissue:
        seed, shape, density = spec.split(":")
        shape = tuple(int(v) for v in shape.split(","))
        folder = Path(args.workdir) / f"seed{seed}_{'x'.join(map(str, shape))}_{density}"
        scores = score_organelles(probabilities(folder, int(seed), shape, float(density)), read_truth(folder, "organelles"), cfg)
        cells = []
        for kind in KINDS:
            o = scores[kind]["object"]
            pooled[kind] += (o["tp"], o["pred_objects"], o["truth_objects"])
            cells.append(f"{kind} P {o['precision']:.3f} R {o['recall']:.3f} F1 {o['f1']:.3f} ({o['tp']}/{o['truth_objects']}, {o['fp']} false)")
        print(f"{folder.name:28s} " + " | ".join(cells), flush=True)
    print(f"{'pooled':28s} " + " | ".join(f"{k} P {t / max(p, 1):.3f} R {t / max(n, 1):.3f} F1 {2 * t / max(p + n, 1):.3f} ({t}/{n})"
                                          for k, (t, p, n) in pooled.items()))


if __name__ == "__main__":
    main()
