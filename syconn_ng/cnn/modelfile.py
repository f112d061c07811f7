"""CNN model files: a torch state dict with its metadata embedded as JSON, plus a readable `.json` copy.

The file loads with ``torch.load(..., weights_only=True)``, so a model from elsewhere cannot run
code. The metadata says what the model is for (task, channels and their meaning), what it
expects (voxel size, input patch, output crop, intensity normalisation) and how it was made
(training data, metrics, library versions); `load_model` refuses a model that does not fit.
"""

from __future__ import annotations

import io
import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from syconn_ng.cnn import PARTIAL_TASKS, TASK_CHANNELS
from syconn_ng.cnn.model import UNetSpec, build_unet
from syconn_ng.errors import InputError
from syconn_ng.layers import atomic_write_bytes, atomic_write_text

FORMAT = "syconn_ng.cnn/1"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass
class ModelInfo:
    """The metadata of a model file (all lengths in voxels, x y z order)."""

    task: str
    channels: list[str]
    spec: UNetSpec
    voxel_size_nm: list[float]
    patch_size: list[int]  # input patch the model was trained on and predicts with
    output_crop: list[int]  # voxels at each patch border whose predictions are discarded
    intensity_mean: float  # input = (raw / 255 - mean) / std
    intensity_std: float
    training: dict  # data, seeds, iterations, metrics
    versions: dict

    def to_dict(self) -> dict:
        return {"format": FORMAT, "task": self.task, "channels": list(self.channels), "architecture": self.spec.to_dict(),
                "voxel_size_nm": list(self.voxel_size_nm), "patch_size": list(self.patch_size),
                "output_crop": list(self.output_crop),
                "normalization": {"mean": self.intensity_mean, "std": self.intensity_std, "input": "raw uint8 / 255"},
                "training": self.training, "versions": self.versions}

    @classmethod
    def from_dict(cls, d: dict, path) -> "ModelInfo":
        try:
            if d.get("format") != FORMAT:
                raise InputError(path, f"unknown model format {d.get('format')!r} (expected {FORMAT!r})", element="metadata: format")
            return cls(task=d["task"], channels=list(d["channels"]), spec=UNetSpec.from_dict(d["architecture"]),
                       voxel_size_nm=[float(v) for v in d["voxel_size_nm"]], patch_size=[int(v) for v in d["patch_size"]],
                       output_crop=[int(v) for v in d["output_crop"]], intensity_mean=float(d["normalization"]["mean"]),
                       intensity_std=float(d["normalization"]["std"]), training=dict(d.get("training", {})),
                       versions=dict(d.get("versions", {})))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(path, f"incomplete or invalid model metadata ({type(err).__name__}: {err})", element="metadata") from err


def library_versions() -> dict:
    import torch

    from syconn_ng import __version__

    return {"syconn_ng": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


def bundled_model_path(task: str) -> Path:
    """The default weights shipped with the package for `task` (``barrier``, ``organelles`` or ``myelin_syntype``)."""
    return BUNDLED_DIR / f"{task}.pt"


def save_model(path, module, info: ModelInfo) -> Path:
    """Write the weights and metadata to `path` (``.pt``) and the metadata alone to `path` with ``.json``."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps(info.to_dict(), indent=1, sort_keys=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"state_dict": state, "metadata": meta}, buf)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_text(path.with_suffix(".json"), meta + "\n")
    return path


def read_model_info(path) -> tuple[ModelInfo, dict]:
    """The metadata and state dict of a model file; InputError if it is not one."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the weights-only unpickler raises many kinds (UnpicklingError, KeyError, ...) on foreign files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(path, f"not a loadable torch weights file ({first})") from err
    if not isinstance(payload, dict) or "state_dict" not in payload or "metadata" not in payload:
        raise InputError(path, "expected a syconn_ng model file (a dict with 'state_dict' and 'metadata')")
    try:
        meta = json.loads(payload["metadata"])
    except (TypeError, json.JSONDecodeError) as err:
        raise InputError(path, f"metadata is not valid JSON ({err})", element="metadata") from err
    return ModelInfo.from_dict(meta, path), payload["state_dict"]


def check_compatible(info: ModelInfo, path, *, task: str, voxel_size_nm, tolerance: float) -> None:
    """Raise InputError unless the model is for `task` with its channels and a voxel size within `tolerance` (relative)."""
    if info.task != task:
        raise InputError(path, f"this model is for task {info.task!r}, but the {task!r} stage needs a {task!r} model", element="metadata: task")
    expected = list(TASK_CHANNELS[task])
    if task in PARTIAL_TASKS:  # some of the channels, in order
        fits = bool(info.channels) and [c for c in expected if c in info.channels] == list(info.channels)
    else:
        fits = list(info.channels) == expected
    if not fits or info.spec.out_channels != len(info.channels):
        wanted = f"some of {expected}, in this order" if task in PARTIAL_TASKS else str(expected)
        raise InputError(path, f"model outputs channels {info.channels} ({info.spec.out_channels}), expected {wanted}", element="metadata: channels")
    if info.spec.in_channels != 1:
        raise InputError(path, f"model takes {info.spec.in_channels} input channels, expected 1 (raw EM)", element="metadata: architecture")
    have, want = np.asarray(info.voxel_size_nm, float), np.asarray(voxel_size_nm, float)
    if have.shape != (3,) or np.any(np.abs(have - want) > tolerance * want):
        raise InputError(path, f"model was trained at voxel size {have.tolist()} nm, the data has {want.tolist()} nm "
                               f"(more than {tolerance:.0%} apart on an axis); train a model for this voxel size "
                               f"(`syconn-ng train cnn`)", element="metadata: voxel_size_nm")


def load_model(path, *, task: str | None = None, voxel_size_nm=None, tolerance: float = 0.2):
    """(module in eval mode, ModelInfo) from `path`; checks the task and voxel size when they are given."""
    info, state = read_model_info(path)
    if task is not None:
        check_compatible(info, path, task=task, voxel_size_nm=voxel_size_nm if voxel_size_nm is not None else info.voxel_size_nm,
                         tolerance=tolerance)
    module = build_unet(info.spec)
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as err:
        first = str(err).strip().splitlines()[0]
        raise InputError(path, f"weights do not fit the architecture in its metadata ({first})", element="state_dict") from err
    module.eval()
    return module, info
