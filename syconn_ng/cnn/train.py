"""Training the barrier and organelle CNNs on labelled volumes: synthetic tissue or real labelled stacks.

Volumes come from a synthetic tissue folder, TIFF/PNG slice stacks, HDF5 cubes or precomputed
layers (`load_labelled`). Patches are drawn with a bias towards rare foreground, augmented
(flips, 90° rotations in xy, intensity, missing sections) and fed to the U-Net with a BCE +
Dice loss; fixed validation patches choose the best weights and stop training early. With a
seed the run is deterministic on the CPU (same thread count, same weights).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from syconn_ng.box import Box
from syconn_ng.cnn import TASK_CHANNELS
from syconn_ng.errors import InputError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


@dataclass
class LabelledVolume:
    """One training or test volume: raw (X, Y, Z) uint8, target (X, Y, Z, C) bool, mask (X, Y, Z) bool or None
    (learn everywhere), or (X, Y, Z, C) for channels labelled only in part (syntype: only at junctions)."""

    name: str
    raw: np.ndarray
    target: np.ndarray
    mask: np.ndarray | None = None

    def __post_init__(self):
        if self.raw.ndim != 3 or self.target.shape[:3] != self.raw.shape or self.target.ndim != 4:
            raise InputError(self.name, f"raw {self.raw.shape} and labels {self.target.shape} do not have the same x y z shape")
        if self.mask is not None and self.mask.shape not in (self.raw.shape, self.target.shape):
            raise InputError(self.name, f"mask {self.mask.shape} does not match raw {self.raw.shape} or labels {self.target.shape}")

    def voxel_mask(self) -> np.ndarray | None:
        """(X, Y, Z) bool: voxels labelled in some channel (None = all)."""
        return self.mask if self.mask is None or self.mask.ndim == 3 else self.mask.any(axis=3)

    def sections(self, z0: int, z1: int) -> "LabelledVolume":
        """The sub-volume of sections [z0, z1) (a split by section)."""
        return LabelledVolume(f"{self.name}[z {z0}:{z1}]", self.raw[:, :, z0:z1], self.target[:, :, z0:z1],
                              None if self.mask is None else self.mask[:, :, z0:z1])


# ---------------------------------------------------------------- reading labelled data

def read_stack(path) -> np.ndarray:
    """A volume as (X, Y, Z): a folder of TIFF/PNG slices (sorted by name), a TIFF file, ``file.h5:dataset``
    (stored z, y, x) or a precomputed layer (first channel)."""
    s = str(path)
    if ".h5:" in s or ".hdf5:" in s:
        import h5py

        file, key = s.rsplit(":", 1)
        try:
            with h5py.File(file, "r") as f:
                return np.asarray(f[key]).transpose(2, 1, 0)
        except (OSError, KeyError) as err:
            raise InputError(file, f"cannot read HDF5 dataset ({err})", element=key) from err
    p = Path(s[len("file://"):] if s.startswith("file://") else s)
    if ("://" in s and not s.startswith("file://")) or (p / "info").is_file():
        from syconn_ng.layers import layer_box, open_layer, read_box

        vol = open_layer(s)
        return np.ascontiguousarray(read_box(vol, layer_box(vol))[..., 0])
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if not files:
            raise InputError(p, "no .tif/.tiff/.png slices in this folder")
        return np.stack([_read_image(f) for f in files], axis=2)
    if p.suffix.lower() in (".tif", ".tiff") and p.is_file():
        import tifffile

        arr = tifffile.imread(p)
        return arr.T if arr.ndim == 2 else arr.transpose(2, 1, 0)  # pages are sections
    raise InputError(p, "expected a folder of image slices, a TIFF file, FILE.h5:DATASET or a precomputed layer")


def _natural_key(path: Path) -> list:
    """Sort key that orders ``2.png`` before ``10.png``."""
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _read_image(path: Path) -> np.ndarray:
    """One 2D slice as (X, Y); PIL modes '1', 'L', 'P', 'I;16' and RGB (first band) are read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except OSError as err:
        raise InputError(path, f"not a readable image ({err})") from err
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr.T


def load_labelled(raw, labels, *, name: str = "", mask=None, invert: bool = False) -> LabelledVolume:
    """A LabelledVolume from a raw stack and one label stack per output channel (foreground = value > 0,
    or value == 0 with `invert`, e.g. ISBI 2012 where 0 marks membranes).

    raw, labels, mask: anything `read_stack` reads. Raw must be uint8 (uint16 is scaled by 1/257).
    """
    r = read_stack(raw)
    if r.dtype == np.uint16:
        r = (r // 257).astype(np.uint8)
    if r.dtype != np.uint8:
        raise InputError(str(raw), f"raw EM must be uint8 (or uint16), got {r.dtype}")
    target = np.stack([(read_stack(lab) > 0) != invert for lab in labels], axis=3)
    m = None if mask is None else read_stack(mask) > 0
    return LabelledVolume(name or str(raw), r, target, m)


def load_synthetic(folder, task: str) -> LabelledVolume:
    """The raw and truth of a synthetic tissue folder (`syconn-ng synth`) for `task`."""
    folder = Path(folder)
    raw = read_stack(folder / "raw")
    if task == "myelin_syntype":
        return _myelin_syntype_truth(folder, raw)
    from syconn_ng.layers import layer_box, open_layer, read_box

    vol = open_layer(folder / ("truth/barrier" if task == "barrier" else "truth/organelles"))
    target = read_box(vol, layer_box(vol)) > 0
    return LabelledVolume(f"{folder.name}", raw, target)


SYNTYPE_REACH = (3, 3, 1)  # voxels x y z around a junction where the syntype channel is learnt


def _myelin_syntype_truth(folder: Path, raw: np.ndarray) -> LabelledVolume:
    """Targets myelin (sheaths) and syntype (1 near the junctions of symmetric synapses, 0 near asymmetric
    ones); the syntype channel is learnt only within SYNTYPE_REACH of a junction."""
    import pandas as pd
    from scipy import ndimage

    from syconn_ng.layers import layer_box, open_layer, read_box

    if not (folder / "truth" / "myelin" / "info").exists():
        raise InputError(folder / "truth" / "myelin", "missing: the tissue has no myelin (make it with `syconn-ng synth --myelin`)")
    myelin = read_box(vol := open_layer(folder / "truth" / "myelin"), layer_box(vol))[..., 0] > 0
    sj = read_box(vol := open_layer(folder / "truth" / "sj"), layer_box(vol))[..., 0]
    syn = pd.read_csv(folder / "truth" / "synapses.csv", usecols=["sj_id", "type"])
    symmetric = np.zeros(int(max(sj.max(), syn["sj_id"].max() if len(syn) else 0)) + 1, dtype=bool)
    symmetric[syn["sj_id"].to_numpy(np.int64)] = syn["type"].to_numpy() == "symmetric"
    # the junction's neighbourhood, so the label covers the postsynaptic density that tells the types apart
    near = np.where(sj > 0, sj, ndimage.grey_dilation(sj, footprint=np.ones([2 * r + 1 for r in SYNTYPE_REACH], bool)))
    target = np.stack([myelin, symmetric[near] & (near > 0)], axis=3)
    mask = np.stack([np.ones_like(myelin), near > 0], axis=3)
    return LabelledVolume(f"{folder.name}", raw, target, mask)


def synthetic_volumes(workdir, seeds, *, shape, synapses_per_um3: float = 1.0, myelin: bool = False) -> list[Path]:
    """Synthetic tissue folders for `seeds` under `workdir` (generated once, then reused)."""
    from syconn_ng.synth.generate import generate_tissue

    out = []
    for seed in seeds:
        folder = Path(workdir) / f"synth_{'x'.join(str(s) for s in shape)}_syn{synapses_per_um3:g}{'_myelin' if myelin else ''}_seed{seed}"
        if not (folder / ".complete").exists():
            generate_tissue(folder, shape=tuple(shape), seed=int(seed), synapses_per_um3=synapses_per_um3, myelin=myelin)
            (folder / ".complete").write_text("ok\n")
        out.append(folder)
    return out


# ---------------------------------------------------------------- patches and augmentation

class PatchSampler:
    """Random training patches; a share `foreground_fraction` is centred on a foreground voxel of a random channel."""

    def __init__(self, volumes: list[LabelledVolume], patch_size, rng: np.random.Generator, *, foreground_fraction: float = 0.5,
                 fill: int = 128):
        self.patch = tuple(int(v) for v in patch_size)
        self.fill = fill  # raw value outside the volume
        self.volumes = [_pad_to(v, self.patch) for v in volumes]
        self.rng = rng
        self.foreground_fraction = foreground_fraction
        sizes = np.array([v.raw.size for v in self.volumes], dtype=float)
        self.volume_p = sizes / sizes.sum()
        # foreground voxels per volume and channel (at most 20000 each, enough to pick centres from)
        self.foreground = []
        for v in self.volumes:
            per_channel = []
            for c in range(v.target.shape[3]):
                partial = v.mask is not None and v.mask.ndim == 4 and not v.mask[..., c].all()
                idx = np.flatnonzero(v.mask[..., c] if partial else v.target[..., c])  # a partly labelled channel: its labels
                if len(idx) > 20000:
                    idx = np.sort(rng.choice(idx, 20000, replace=False))
                per_channel.append(idx)
            self.foreground.append(per_channel)

    def sample(self, rng: np.random.Generator | None = None):
        """(raw (X, Y, Z) uint8, target (X, Y, Z, C) bool, mask (X, Y, Z) bool) of one patch (drawn with `rng`, default the sampler's)."""
        rng = self.rng if rng is None else rng
        i = int(rng.choice(len(self.volumes), p=self.volume_p))
        v = self.volumes[i]
        shape = np.asarray(v.raw.shape)
        size = np.asarray(self.patch)
        start = None
        if rng.random() < self.foreground_fraction:
            channels = [c for c, idx in enumerate(self.foreground[i]) if len(idx)]
            if channels:
                c = channels[int(rng.integers(len(channels)))]
                centre = np.array(np.unravel_index(rng.choice(self.foreground[i][c]), v.raw.shape))
                start = centre - size // 2 + rng.integers(-(size // 4), size // 4 + 1)
        # patches may reach past the volume by up to a third of their size, filled there with the mean
        # intensity as inference does at the volume border; those voxels are context only (masked out)
        reach = size // 3
        if start is None:
            start = rng.integers(-reach, shape - size + reach + 1)
        start = np.clip(start, -reach, shape - size + reach)
        box = Box(start, start + size)
        inner = box.intersect(Box.from_shape(shape))
        pad = [(i0 - b0, b1 - i1) for b0, b1, i0, i1 in zip(box.start, box.stop, inner.start, inner.stop)]
        sl = inner.slices()
        mask = v.mask[sl] if v.mask is not None else np.ones(inner.shape, dtype=bool)
        if not any(a or b for a, b in pad):
            return v.raw[sl], v.target[sl], mask
        return (np.pad(v.raw[sl], pad, mode="constant", constant_values=self.fill), np.pad(v.target[sl], pad + [(0, 0)]),
                np.pad(mask, pad + [(0, 0)] * (mask.ndim - 3)))


def _pad_to(v: LabelledVolume, patch) -> LabelledVolume:
    """`v` mirrored up to at least `patch` on each axis; the added voxels are masked out."""
    pad = [(0, max(0, p - s)) for s, p in zip(v.raw.shape, patch)]
    if not any(b for _, b in pad):
        return v
    mask = np.ones(v.raw.shape, bool) if v.mask is None else v.mask
    return LabelledVolume(v.name, np.pad(v.raw, pad, mode="symmetric"), np.pad(v.target, pad + [(0, 0)], mode="symmetric"),
                          np.pad(mask, pad + [(0, 0)] * (mask.ndim - 3), mode="constant"))


def augment(x: np.ndarray, target: np.ndarray, mask: np.ndarray, rng: np.random.Generator, *,
            missing_section_p: float = 0.15, rotate: bool = True):
    """Random flips (x, y, z), 90° rotations in xy, contrast / brightness / gamma / noise, and a missing section.

    x: (X, Y, Z) float32 in [0, 1]; target: (X, Y, Z, C); mask: (X, Y, Z[, C]). Returns the three augmented.
    """
    for axis in range(3):
        if rng.random() < 0.5:
            x, target, mask = np.flip(x, axis), np.flip(target, axis), np.flip(mask, axis)
    if rotate and x.shape[0] == x.shape[1]:
        k = int(rng.integers(4))
        x, target, mask = (np.rot90(a, k, axes=(0, 1)) for a in (x, target, mask))
    gamma = float(np.exp(rng.uniform(-0.3, 0.3)))
    x = np.clip(x, 0, 1) ** gamma
    x = x * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1)
    x = x + rng.normal(0, rng.uniform(0, 0.04), x.shape).astype(np.float32)
    if x.shape[2] > 2 and rng.random() < missing_section_p:
        z = int(rng.integers(x.shape[2]))
        x = x.copy()
        x[:, :, z] = rng.uniform(0.0, 0.3) + rng.normal(0, 0.03, x.shape[:2])
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(target), np.ascontiguousarray(mask)


# ---------------------------------------------------------------- the training loop

@dataclass
class TrainSettings:
    """Hyper-parameters of one training run (all sizes in voxels, x y z)."""

    width: int = 16
    depth: int = 4
    max_width: int = 64
    patch_size: list[int] = field(default_factory=lambda: [96, 96, 24])
    batch_size: int = 2
    iterations: int = 400
    learning_rate: float = 3e-3
    dice_weight: float = 1.0  # loss = BCE + dice_weight x soft Dice
    weight_decay: float = 1e-4
    foreground_fraction: float = 0.5
    missing_section_p: float = 0.15
    validate_every: int = 25
    validation_patches: int = 8
    patience: int = 6  # validations without improvement before stopping
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 = torch's default
    device: str = "cpu"  # "cpu" (deterministic with the seed), "cuda" (bf16 autocast, not bit-reproducible) or "auto"
    loader_threads: int = 0  # threads drawing and augmenting batches ahead (a GPU outruns one); 0 = in line, as on a CPU
    max_minutes: float = 0.0  # stop after this long (0 = no limit)
    output_crop: list[int] = field(default_factory=lambda: [8, 8, 2])
    inference_patch: list[int] = field(default_factory=lambda: [208, 208, 56])
    voxel_size_nm: list[float] = field(default_factory=lambda: [10.0, 10.0, 20.0])


def _loss(logits, target, mask, dice_weight: float = 1.0):
    """Masked binary cross-entropy + soft Dice per channel (Dice keeps rare channels such as sj in view);
    mask (N, Z, Y, X) for all channels or (N, C, Z, Y, X) per channel. With per-channel masks each
    channel's cross-entropy is averaged over its own labelled voxels, so a channel labelled on few
    voxels (syntype: junctions only) weighs as much as one labelled everywhere."""
    import torch
    import torch.nn.functional as F

    dims = (0, 2, 3, 4)
    if mask.dim() < target.dim():
        m = mask[:, None].expand_as(target)
        bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * m).sum() / m.sum().clamp(min=1)
    else:
        m = mask
        per = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * m).sum(dims)
        bce = (per / m.sum(dims).clamp(min=1)).mean()
    p = torch.sigmoid(logits) * m
    inter = (p * target).sum(dims)
    dice = 1 - (2 * inter + 1) / (p.sum(dims) + (target * m).sum(dims) + 1)
    return bce + dice_weight * dice.mean()


def _to_batch(items, mean: float, std: float):
    """A list of (x float (X, Y, Z), target, mask) → torch tensors (N, 1, Z, Y, X), (N, C, Z, Y, X), (N, [C,] Z, Y, X)."""
    import torch

    x = np.stack([(a - mean) / std for a, _, _ in items])[:, None].transpose(0, 1, 4, 3, 2)
    t = np.stack([b for _, b, _ in items]).transpose(0, 4, 3, 2, 1).astype(np.float32)
    m = np.stack([c for _, _, c in items])
    m = m.transpose(0, 3, 2, 1) if m.ndim == 4 else m.transpose(0, 4, 3, 2, 1)
    m = m.astype(np.float32)
    return (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(np.ascontiguousarray(t)),
            torch.from_numpy(np.ascontiguousarray(m)))


def _schedule(opt, s: TrainSettings, t0: float):
    """One-cycle learning rate (10 % warm-up from lr/25, then cosine to ~0) over `iterations`; with `max_minutes`,
    over whichever of the iterations or the minutes runs out first, so a time-limited run still anneals."""
    import math

    import torch

    if not s.max_minutes:
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.learning_rate, total_steps=max(s.iterations, 2), pct_start=0.1)

    def factor(step: int) -> float:
        p = min(1.0, max(step / max(s.iterations, 1), (time.perf_counter() - t0) / (60 * s.max_minutes)))
        if p < 0.1:
            return 0.04 + 0.96 * p / 0.1
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (p - 0.1) / 0.9))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _make_batch(sampler: PatchSampler, s: TrainSettings, rng: np.random.Generator, mean: float, std: float):
    """One augmented training batch as torch tensors (see `_to_batch`)."""
    items = []
    for _ in range(s.batch_size):
        r, t, m = sampler.sample(rng)
        items.append(augment(r.astype(np.float32) / 255, t, m, rng, missing_section_p=s.missing_section_p))
    return _to_batch(items, mean, std)


def _batch_stream(sampler: PatchSampler, s: TrainSettings, rng: np.random.Generator, mean: float, std: float):
    """Training batches forever: drawn in line from `rng`, or with `loader_threads` ahead, batch i from the
    generator seeded (seed, i) so the batches do not depend on thread timing."""
    if not s.loader_threads:
        while True:
            yield _make_batch(sampler, s, rng, mean, std)
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(s.loader_threads) as pool:
        ahead, i = deque(), 0
        while True:
            while len(ahead) < 2 * s.loader_threads:
                ahead.append(pool.submit(_make_batch, sampler, s, np.random.default_rng([s.seed, i]), mean, std))
                i += 1
            yield ahead.popleft().result()


def train_model(task: str, train: list[LabelledVolume], val: list[LabelledVolume], settings: TrainSettings, *,
                out=None, data_description: str = "", progress: bool = True, curve_png=None):
    """Train a U-Net for `task` (a key of `TASK_CHANNELS`); returns (module, ModelInfo, history).

    Writes the model file to `out` and the learning curve to `curve_png` when given. The best
    weights on the validation patches are kept; training stops after `patience` validations
    without improvement, after `iterations`, or after `max_minutes`.
    """
    import torch
    from tqdm.auto import tqdm

    from syconn_ng.cnn.model import UNetSpec, build_unet
    from syconn_ng.cnn.modelfile import ModelInfo, library_versions, save_model

    if task not in TASK_CHANNELS:
        raise InputError(None, f"unknown task {task!r} (expected one of {sorted(TASK_CHANNELS)})")
    channels = list(TASK_CHANNELS[task])
    for v in train + val:
        if v.target.shape[3] != len(channels):
            raise InputError(v.name, f"has {v.target.shape[3]} label channel(s), task {task!r} needs {len(channels)} ({', '.join(channels)})")
    s = settings
    spec = UNetSpec(in_channels=1, out_channels=len(channels), width=s.width, depth=s.depth, max_width=s.max_width,
                    voxel_size_nm=tuple(s.voxel_size_nm))
    if any(p % d for p, d in zip(s.patch_size, spec.divisor)) or any(p % d for p, d in zip(s.inference_patch, spec.divisor)):
        raise InputError(None, f"patch sizes {s.patch_size} and {s.inference_patch} must be multiples of {list(spec.divisor)}")
    from syconn_ng.cnn.inference import pick_device

    device = pick_device(s.device)
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if s.threads:
        torch.set_num_threads(s.threads)
    torch.use_deterministic_algorithms(device == "cpu")  # CUDA's fast convolution kernels are not deterministic
    try:
        rng = np.random.default_rng(s.seed)
        torch.manual_seed(s.seed)
        raws = np.concatenate([v.raw[v.voxel_mask()] if v.mask is not None else v.raw.ravel() for v in train]).astype(np.float64) / 255.0
        mean, std = float(raws.mean()), float(max(raws.std(), 1e-3))
        del raws
        fill = int(np.clip(np.rint(mean * 255), 0, 255))  # what inference puts outside the volume
        sampler = PatchSampler(train, s.patch_size, rng, foreground_fraction=s.foreground_fraction, fill=fill)
        val_sampler = PatchSampler(val or train, s.patch_size, np.random.default_rng(s.seed + 1),
                                   foreground_fraction=s.foreground_fraction, fill=fill)
        val_items = [val_sampler.sample() for _ in range(s.validation_patches)]
        val_batches = [tuple(a.to(device) for a in _to_batch([(r.astype(np.float32) / 255, t, m)], mean, std))
                       for r, t, m in val_items]

        module = build_unet(spec).to(device)
        opt = torch.optim.AdamW(module.parameters(), lr=s.learning_rate, weight_decay=s.weight_decay)
        t0 = time.perf_counter()
        sched = _schedule(opt, s, t0)
        history = {"iteration": [], "train_loss": [], "val_loss": [], "val_f1": []}
        best = (-1.0, None, 0)
        since_best, running = 0, []
        bar = tqdm(total=s.iterations, desc=f"train {task}", unit="it", disable=not progress)
        batches = _batch_stream(sampler, s, rng, mean, std)
        for it in range(1, s.iterations + 1):
            module.train()
            x, t, m = (a.to(device, non_blocking=True) for a in next(batches))
            with _autocast(device):
                logits = module(x)
            loss = _loss(logits.float(), t, m, s.dice_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running.append(float(loss.detach()))
            bar.update(1)
            timed_out = s.max_minutes > 0 and time.perf_counter() - t0 > 60 * s.max_minutes
            if it % s.validate_every == 0 or it == s.iterations or timed_out:
                val_loss, val_f1 = _validate(module, val_batches, s.dice_weight)
                history["iteration"].append(it)
                history["train_loss"].append(float(np.mean(running)))
                history["val_loss"].append(val_loss)
                history["val_f1"].append(val_f1)
                running = []
                bar.set_postfix_str(f"loss {history['train_loss'][-1]:.3f} val F1 {np.mean(val_f1):.3f}")
                score = float(np.mean(val_f1))
                if score > best[0]:
                    best = (score, {k: v.detach().clone() for k, v in module.state_dict().items()}, it)
                    since_best = 0
                else:
                    since_best += 1
                if since_best >= s.patience or timed_out:
                    break
        bar.close()
        batches.close()
        if best[1] is not None:
            module.load_state_dict(best[1])
        module.cpu().eval()  # model files hold CPU tensors, loadable anywhere
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)
    info = ModelInfo(task=task, channels=channels, spec=spec, voxel_size_nm=list(s.voxel_size_nm),
                     patch_size=list(s.inference_patch), output_crop=list(s.output_crop), intensity_mean=mean, intensity_std=std,
                     training={"data": data_description or ", ".join(v.name for v in train),
                               "validation": ", ".join(v.name for v in val), "settings": asdict(s),
                               "iterations_run": history["iteration"][-1] if history["iteration"] else 0,
                               "best_iteration": best[2], "best_val_f1": best[0], "seconds": round(seconds, 1),
                               "metrics": {}},
                     versions=library_versions())
    if out is not None:
        save_model(out, module, info)
    if curve_png is not None:
        plot_learning_curve(history, curve_png, title=f"{task}: {info.training['data']}", channels=channels)
    return module, info, history


def _autocast(device: str):
    """bf16 mixed precision on a GPU (its tensor cores), nothing on the CPU (keeps CPU training bit-reproducible)."""
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=str(device).startswith("cuda"))


def _validate(module, batches, dice_weight: float) -> tuple[float, list[float]]:
    """Mean loss and per-channel voxel F1 (at 0.5) over fixed validation patches. A channel labelled only in
    part (syntype) is a choice between two classes on its labelled voxels, so it scores the mean F1 of both:
    predicting the class prior everywhere then scores at most 0.5, not the prior's F1."""
    import torch

    module.eval()
    tp = fp = fn = tn = 0
    partial = None
    losses = []
    with torch.inference_mode():
        for x, t, m in batches:
            with _autocast(x.device.type):
                logits = module(x).float()
            losses.append(float(_loss(logits, t, m, dice_weight)))
            mm = m[:, None] if m.dim() < t.dim() else m
            dims = (0, 2, 3, 4)
            if m.dim() == t.dim():
                p = (m < 1).flatten(2).any(2).any(0).cpu().numpy()
                partial = p if partial is None else partial | p
            pred = (logits > 0).float() * mm
            tgt = t * mm
            tp = tp + (pred * tgt).sum(dims).cpu().numpy()
            fp = fp + (pred * (1 - tgt)).sum(dims).cpu().numpy()
            fn = fn + ((1 - pred) * tgt).sum(dims).cpu().numpy()
            tn = tn + ((mm - pred) * (1 - tgt)).sum(dims).cpu().numpy()

    def f1(a, b, c):
        return np.where(2 * a + b + c > 0, 2 * a / np.maximum(2 * a + b + c, 1), 1.0)

    score = f1(tp, fp, fn)
    if partial is not None:
        score = np.where(partial, (score + f1(tn, fn, fp)) / 2, score)
    return float(np.mean(losses)), [float(v) for v in score]


def plot_learning_curve(history: dict, path, *, title: str = "", channels=()) -> Path:
    """A PNG of training and validation loss and validation F1 per channel against iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(history["iteration"], history["train_loss"], label="train")
    a.plot(history["iteration"], history["val_loss"], label="validation")
    a.set_xlabel("iteration")
    a.set_ylabel("loss (BCE + Dice)")
    a.legend()
    f1 = np.asarray(history["val_f1"]).reshape(len(history["iteration"]), -1)
    for c in range(f1.shape[1]):
        b.plot(history["iteration"], f1[:, c], label=channels[c] if c < len(channels) else str(c))
    b.set_xlabel("iteration")
    b.set_ylabel("validation voxel F1")
    b.set_ylim(0, 1)
    b.legend()
    fig.suptitle(title[:100], fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- the recipe of the bundled weights

@dataclass
class SyntheticRecipe:
    """Synthetic training data of a bundled model: tissues of these seeds (never seed 1, the tests' tissue)."""

    train_seeds: list[int] = field(default_factory=lambda: [101, 102, 103])
    val_seed: int = 104
    eval_seed: int = 1  # the test fixture's tissue: the metrics in the model file are what the tests check
    shape: list[int] = field(default_factory=lambda: [192, 192, 96])
    synapses_per_um3: float = 1.0
    myelin: bool = False  # tissues with myelinated axons (`syconn-ng synth --myelin`)
    calibration_seeds: list[int] = field(default_factory=list)  # syntype: tissues the symmetric-fraction threshold is chosen on


RECIPES: dict[str, tuple[SyntheticRecipe, TrainSettings]] = {
    "barrier": (SyntheticRecipe(), TrainSettings(iterations=600, threads=1)),
    "organelles": (SyntheticRecipe(synapses_per_um3=4.0), TrainSettings(iterations=1500, threads=1)),
    # half the width: a sheath and a junction's density are local, and the stage then costs a quarter of the others
    # a tissue holds ~10 synapses: the type channel learns from 39 of them (~400 junctions), its threshold is
    # chosen on 30 others (~270 junctions, ~70 asymmetric); it learns slowly (its validation score dips below
    # chance for the first ~1000 iterations, then climbs until the end), so no early stop, more patches on
    # junctions and more validation patches
    "myelin_syntype": (SyntheticRecipe(train_seeds=[101, 102, 103, *range(105, 141)], synapses_per_um3=4.0, myelin=True,
                                       calibration_seeds=list(range(141, 171))),
                       TrainSettings(width=8, iterations=4000, patience=4000 // 25, foreground_fraction=0.7, validation_patches=24,
                                     threads=2)),
}


def _calibrate(model_path, info, workdir, recipe: SyntheticRecipe) -> None:
    """Choose the syntype channel's symmetric-fraction threshold on the recipe's calibration tissues (neither
    trained nor validated on) and record it, with what it scores there, in the model's metadata."""
    from syconn_ng.cnn.evaluate import calibrate_symmetric_fraction, junction_fractions

    folders = synthetic_volumes(workdir, recipe.calibration_seeds, shape=recipe.shape, synapses_per_um3=recipe.synapses_per_um3,
                                myelin=recipe.myelin)
    frac, sym = junction_fractions(model_path, folders, device="cpu")
    t = calibrate_symmetric_fraction(frac, sym)
    info.training["symmetric_fraction"] = t
    info.training["calibration"] = {"seeds": list(recipe.calibration_seeds), "junctions": int(len(frac)), "symmetric": int(sym.sum()),
                                    "accuracy": round(float(np.mean((frac > t) == sym)), 4),
                                    "accuracy_at_0.5": round(float(np.mean((frac > 0.5) == sym)), 4)}


def train_on_synthetic(task: str, out, *, workdir, recipe: SyntheticRecipe | None = None, settings: TrainSettings | None = None,
                       progress: bool = True, curve_png=None) -> dict:
    """Generate (or reuse) the recipe's tissues, train, score on the evaluation tissue, save; returns the metrics."""
    from syconn_ng.cnn.evaluate import evaluate_on_tissue
    from syconn_ng.cnn.modelfile import load_model, save_model

    default_recipe, default_settings = RECIPES[task]
    recipe = recipe or default_recipe
    settings = settings or default_settings
    folders = synthetic_volumes(workdir, recipe.train_seeds + [recipe.val_seed], shape=recipe.shape,
                                synapses_per_um3=recipe.synapses_per_um3, myelin=recipe.myelin)
    volumes = [load_synthetic(f, task) for f in folders]
    description = (f"synthetic tissue, seeds {recipe.train_seeds} (validation {recipe.val_seed}), {recipe.shape} voxels, "
                   f"{recipe.synapses_per_um3:g} synapses/µm³{', myelin' if recipe.myelin else ''}")
    train_model(task, volumes[:-1], volumes[-1:], settings, out=out, data_description=description, progress=progress,
                curve_png=curve_png)
    module, info = load_model(out)
    if task == "myelin_syntype" and recipe.calibration_seeds:
        _calibrate(out, info, workdir, recipe)
        save_model(out, module, info)
    (eval_folder,) = synthetic_volumes(workdir, [recipe.eval_seed], shape=recipe.shape, myelin=recipe.myelin)
    metrics = evaluate_on_tissue(out, eval_folder, task=task, batch_size=1)
    info.training["metrics"] = {"evaluated_on": f"synthetic tissue seed {recipe.eval_seed}, {recipe.shape} voxels, "
                                                f"1 synapse/µm³{', myelin' if recipe.myelin else ''}", "scores": metrics}
    info.training["recipe"] = asdict(recipe)
    save_model(out, module, info)
    return metrics
