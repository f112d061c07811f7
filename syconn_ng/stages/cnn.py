"""The `barrier`, `organelles` and `myelin_syntype` stages: CNN probabilities over the chunk grid, as uint8 layers.

One pass of tasks over the task grid. A task reads the raw EM of its box plus the context the
model's tiles need (the halo), predicts with tiles on the grid of the whole volume (so the
result does not depend on the task size), and writes `layers/barrier` (1 channel),
`layers/organelles` (3 channels: sj, vc, mi) or, from the myelin / synapse-type model, one layer
per channel it has: `layers/myelin` and `layers/syntype` (the probability that a junction voxel
belongs to a symmetric synapse). A layer that `[oracle]` provides is not predicted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

from syconn_ng.box import Box
from syconn_ng.cnn import PARTIAL_TASKS, TASK_CHANNELS
from syconn_ng.engine.driver import Pass
from syconn_ng.errors import InputError
from syconn_ng.layers import create_layer, layer_box, local_dir, open_layer, read_box, remove_temp_files, write_box


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _threads(analysis) -> int:
    """torch threads per worker: [cnn] threads, else the cores shared among the local workers."""
    cores = os.cpu_count() or 1
    if analysis.config.cnn.threads:
        return analysis.config.cnn.threads
    workers = analysis.config.executor.workers or cores
    return max(1, cores // workers)


def predict_task(analysis, task) -> dict:
    """CNN probabilities of one task box (raw read with the tiles' context), written as uint8."""
    import torch

    from syconn_ng.cnn.inference import Predictor, to_uint8
    from syconn_ng.cnn.modelfile import load_model

    p = task.params
    torch.set_num_threads(p["threads"])
    module, info = load_model(p["model"], task=p["task"], voxel_size_nm=p["voxel_size_nm"], tolerance=p["cnn"]["voxel_size_tolerance"])
    predictor = Predictor.from_model(module, info, patch_size=p["cnn"]["patch_size"], overlap=p["cnn"]["overlap"],
                                     batch_size=p["cnn"]["batch_size"], device=p["cnn"]["device"])
    bounds = Box(*p["bounds"])
    raw = open_layer(p["raw"], fill_missing=p["missing_chunks"] == "zeros")
    halo = predictor.halo_box(task.box, bounds)
    data = read_box(raw, halo)[..., 0]
    prob = to_uint8(predictor.predict_box(lambda b: data[b.slices(relative_to=halo.start)], task.box, bounds))
    for name, channels in p["layers"]:
        write_box(open_layer(analysis.layer_path(name)), task.box, np.ascontiguousarray(prob[..., channels]))
    return {"mean": [float(v) for v in prob.reshape(-1, prob.shape[-1]).mean(axis=0)]}


def output_layers(task: str, channels) -> list[tuple[str, list[int]]]:
    """(layer name, indices into the model's channels) of what a model for `task` writes: one layer named for
    the task holding every channel, or, for a task of separate channels, one layer per channel."""
    if task in PARTIAL_TASKS:
        return [(c, [i]) for i, c in enumerate(channels)]
    return [(task, list(range(len(channels))))]


def missing_channel_notes(task: str, channels, model) -> dict[str, str]:
    """{channel: what a run says once} for the channels of its task a model lacks (an older model file)."""
    notes = {"myelin": f"the model {model} has no myelin channel: no myelin layer, so {NO_MYELIN}",
             "syntype": f"the model {model} has no syntype channel: no syntype layer, so {NO_SYNTYPE}"}
    return {c: notes[c] for c in TASK_CHANNELS[task] if c not in channels and c in notes}


NO_SYNTYPE = "synapse types come from the synapse-type forest (or the [synapses] type_model rule)"
NO_MYELIN = "skeleton nodes get no myelin and compartments are predicted without it"


def _calibration(info, channels) -> dict:
    """What a layer's info records of the model's calibration: the syntype channel's symmetric-fraction threshold."""
    t = info.training.get("symmetric_fraction")
    return {"symmetric_fraction": t} if "syntype" in channels and t is not None else {}


class CnnStage:
    """A CNN stage (`barrier`, `organelles`, `myelin_syntype`) for the driver (`syconn_ng.engine.run_stage`)."""

    def __init__(self, task: str):
        self.name = task
        self.task = task

    def _oracle(self, analysis) -> bool:
        """True when `[oracle]` provides every layer of this stage (then it does nothing)."""
        if self.task in PARTIAL_TASKS:
            return all(getattr(analysis.config.oracle, c, "") for c in TASK_CHANNELS[self.task])
        return bool(getattr(analysis.config.oracle, self.task))

    def _layers(self, analysis, channels) -> list[tuple[str, list[int]]]:
        """The layers this run writes: the model's, less those `[oracle]` provides."""
        return [(name, idx) for name, idx in output_layers(self.task, channels) if not getattr(analysis.config.oracle, name, "")]

    def notes(self, analysis) -> dict[str, str]:
        """Said once per run (keyed by what is missing, as other stages say it too): channels the model file lacks."""
        from syconn_ng.cnn.modelfile import read_model_info

        if self._oracle(analysis):
            return {}
        info, _ = read_model_info(self.model_path(analysis))
        return missing_channel_notes(self.task, info.channels, self.model_path(analysis))

    def model_path(self, analysis) -> Path:
        """The model file the config names, or the bundled default."""
        from syconn_ng.cnn.modelfile import bundled_model_path
        from syconn_ng.config import resolve_path

        value = getattr(analysis.config.cnn, f"{self.task}_model")
        path = Path(resolve_path(analysis.root, value)) if value else bundled_model_path(self.task)
        if not path.is_file():
            raise InputError(path, f"{self.task} model file not found" + ("" if value else " (the bundled default is missing from this installation)"),
                             element=f"[cnn] {self.task}_model")
        return path

    def _raw(self, analysis):
        return analysis.open_input(analysis.raw_layer)

    def params(self, analysis) -> dict:
        if self._oracle(analysis):
            return {"oracle": self._oracle(analysis)}
        cfg = analysis.config
        model = self.model_path(analysis)
        bounds = layer_box(self._raw(analysis))
        from syconn_ng.cnn.modelfile import read_model_info

        cnn = cfg.section_params("cnn")
        cnn.pop("threads")  # changes speed, not results
        for key in [k for k in cnn if k.endswith("_model")]:
            cnn.pop(key)
        info, _ = read_model_info(model)
        return {"task": self.task, "model": str(model), "model_sha256": _file_sha256(model), "raw": analysis.raw_layer,
                "layers": [[name, idx] for name, idx in self._layers(analysis, info.channels)],
                "bounds": [list(bounds.start), list(bounds.stop)], "cnn": cnn, "threads": _threads(analysis),
                "chunk_size": list(cfg.chunking.chunk_size), "task_size": list(cfg.chunking.task_size),
                "missing_chunks": cfg.chunking.missing_chunks, "voxel_size_nm": list(analysis.voxel_size_nm)}

    def prepare(self, analysis, *, fresh: bool) -> None:
        """Check the raw layer and the model before any work; create `layers/<task>`."""
        from syconn_ng.cnn.modelfile import load_model

        if self._oracle(analysis):
            return
        raw = self._raw(analysis)
        if raw.num_channels != 1:
            raise InputError(raw.cloudpath, f"raw EM must have 1 channel, this layer has {raw.num_channels}", element="info: num_channels")
        if np.dtype(raw.dtype) != np.uint8:
            raise InputError(raw.cloudpath, f"raw EM must be uint8, this layer is {raw.dtype} (convert it to 8 bit first)", element="info: data_type")
        if not np.allclose(np.asarray(raw.resolution, dtype=float), analysis.voxel_size_nm):
            raise InputError(raw.cloudpath, f"voxel size {list(raw.resolution)} nm differs from [dataset] voxel_size_nm {list(analysis.voxel_size_nm)}", element="info: resolution")
        path = self.model_path(analysis)
        _, info = load_model(path, task=self.task, voxel_size_nm=analysis.voxel_size_nm, tolerance=analysis.config.cnn.voxel_size_tolerance)
        bounds = layer_box(raw)
        for name, idx in self._layers(analysis, info.channels):
            out = analysis.layer_path(name)
            d = local_dir(out)
            if fresh and d is not None:
                shutil.rmtree(d, ignore_errors=True)
            if d is not None and (d / "info").exists():
                remove_temp_files(d)  # left by a killed run; the driver holds the stage lock
                continue
            create_layer(out, layer_type="image", dtype=np.uint8, voxel_size_nm=analysis.voxel_size_nm, shape=bounds.shape,
                         voxel_offset=bounds.start, chunk_size=analysis.config.chunking.chunk_size, num_channels=len(idx),
                         extra_info={"syconn_ng": {"stage": self.task, "channels": [info.channels[i] for i in idx],
                                                   "encoding": "probability x 255", "model": str(path),
                                                   "model_trained_on": info.training.get("data", ""),
                                                   **_calibration(info, [info.channels[i] for i in idx])}})
        if fresh:  # a channel the model no longer has must not leave a stale layer behind
            for name, _ in output_layers(self.task, TASK_CHANNELS[self.task]):
                d = local_dir(analysis.layer_path(name))
                if name not in {n for n, _ in self._layers(analysis, info.channels)} and d is not None \
                        and not getattr(analysis.config.oracle, name, ""):
                    shutil.rmtree(d, ignore_errors=True)

    def passes(self, analysis) -> list[Pass]:
        if self._oracle(analysis):
            return []
        from syconn_ng.stages.objects import task_boxes

        return [Pass("predict", predict_task, task_boxes(layer_box(self._raw(analysis)), analysis.config.chunking.task_size))]


BARRIER = CnnStage("barrier")
ORGANELLES = CnnStage("organelles")
MYELIN_SYNTYPE = CnnStage("myelin_syntype")
