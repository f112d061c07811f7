"""Raw EM rendered from rasterised fields: stained membranes, textured cytoplasm, organelles,
then blur, noise, section-to-section intensity drift and section artefacts.

All randomness is a hash of (seed, global voxel or lattice coordinate), so a voxel renders
the same whatever the chunking and the volume can be generated in any order.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from syconn_ng.box import Box
from syconn_ng.synth.geometry import AXON
from syconn_ng.synth.raster import MEMBRANE_NM, Fields
from syconn_ng.synth.tissue import Tissue

BLUR_SIGMA_VX = (0.9, 0.9, 0.45)  # point spread (x, y, z voxels)
HALO_VX = (10, 10, 2)  # context a chunk needs: blur reach plus the largest section shift


def _hash(*keys) -> np.ndarray:
    """uint64 hash of broadcast integer arrays (splitmix64 rounds)."""
    h = np.uint64(0x9E3779B97F4A7C15)
    out = None
    with np.errstate(over="ignore"):
        for k in keys:
            v = np.asarray(k).astype(np.int64).view(np.uint64) if np.ndim(k) else np.uint64(np.int64(k).astype(np.uint64))
            x = (v + h) if out is None else (out ^ (v + h + (out << np.uint64(6)) + (out >> np.uint64(2))))
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            out = x ^ (x >> np.uint64(31))
    return out


def _uniform(*keys) -> np.ndarray:
    """Float32 in [0, 1) from a hash of the keys."""
    return ((_hash(*keys) >> np.uint64(40)).astype(np.float32)) / np.float32(1 << 24)


def white_noise(box: Box, seed: int, salt: int) -> np.ndarray:
    """(X, Y, Z) float32 standard normal noise, a function of global voxel coordinates only."""
    x, y, z = (np.arange(a, b, dtype=np.int64) for a, b in zip(box.start, box.stop))
    X, Y, Z = x[:, None, None], y[None, :, None], z[None, None, :]
    u1 = np.maximum(_uniform(seed, salt, X, Y, Z), 1e-7)
    u2 = _uniform(seed, salt + 1, X, Y, Z)
    return np.sqrt(-2 * np.log(u1)) * np.cos(np.float32(2 * np.pi) * u2)


def value_noise(box: Box, voxel_size_nm, scale_nm: float, seed: int, salt: int) -> np.ndarray:
    """(X, Y, Z) float32 smooth noise in about [-1, 1] with feature size `scale_nm`."""
    axes_w, axes_i = [], []
    for a, b, v in zip(box.start, box.stop, voxel_size_nm):
        p = np.arange(a, b) * v / scale_nm
        i0 = np.floor(p).astype(np.int64)
        f = (p - i0).astype(np.float32)
        f = f * f * (3 - 2 * f)  # smoothstep
        lo = int(i0.min())
        n = int(i0.max()) - lo + 2
        w = np.zeros((len(p), n), np.float32)
        w[np.arange(len(p)), i0 - lo] = 1 - f
        w[np.arange(len(p)), i0 - lo + 1] = f
        axes_w.append(w)
        axes_i.append(np.arange(lo, lo + n))
    lx, ly, lz = axes_i
    lattice = _uniform(seed, salt, lx[:, None, None], ly[None, :, None], lz[None, None, :]) * 2 - 1
    out = np.tensordot(axes_w[0], lattice, axes=(1, 0))
    out = np.tensordot(out, axes_w[1], axes=(1, 1)).transpose(0, 2, 1)
    return np.tensordot(out, axes_w[2], axes=(2, 1)).astype(np.float32)


def _per_cell(values_per_cell: np.ndarray, owner: np.ndarray) -> np.ndarray:
    lut = np.concatenate([[0.0], values_per_cell]).astype(np.float32)
    return lut[owner]


def render_clean(tissue: Tissue, f: Fields) -> np.ndarray:
    """Noise-free (X, Y, Z) float32 image of the fields' box, intensities 0-255 before blur."""
    seed, vs, box = tissue.seed, tissue.voxel_size_nm, f.box
    C = len(tissue.cell_ids)
    cell_u = _uniform(seed, 11, np.arange(C))
    n_axon = np.bincount(tissue.cap_cell, weights=tissue.cap_comp == AXON, minlength=C)
    is_axon = n_axon > 0.5 * np.maximum(np.bincount(tissue.cap_cell, minlength=C), 1)
    base = 166 + 34 * (cell_u - 0.5) - 14 * is_axon  # axons carry denser cytoskeleton
    img = _per_cell(base, f.owner)
    inside = f.owner > 0
    grain = value_noise(box, vs, 14.0, seed, 20)
    fine = value_noise(box, vs, 35.0, seed, 21)
    coarse = value_noise(box, vs, 160.0, seed, 22)
    img += np.where(inside, 7 * grain + 8 * fine + 7 * coarse, 0)
    # microtubule and ER cross-sections, ribosomes: small dark dots
    img -= np.where(inside & (grain > 0.72), 60 * (grain - 0.72) / 0.28, 0.0)
    # extracellular space: bright with faint texture
    img = np.where(inside, img, 178 + 8 * fine)
    # membranes: a dark line centred on each cell boundary, its stain varying along it
    b = np.abs(f.bdist)
    stain = 135 + 30 * coarse
    img -= stain * np.exp(-((b - 2.0) / (0.8 * MEMBRANE_NM)) ** 2) * (f.owner > 0)
    if tissue.has_myelin:
        img = _myelin(img, f, stain, fine)
    # nucleus: paler, with chromatin clumps and a dark double envelope
    nuc = f.nucleus_sd < 0
    chromatin = value_noise(box, vs, 60.0, seed, 24)
    img = np.where(nuc, 168 + 16 * chromatin - 30 * (chromatin > 0.45), img)
    img -= 60 * np.exp(-((f.nucleus_sd + 8) / 9.0) ** 2) * (f.owner > 0)
    # mitochondria: dark matrix, darker envelope, cristae across the long axis
    m_in = f.mi_sd < 0
    wobble = value_noise(box, vs, 70.0, seed, 25)
    cristae = np.cos(2 * np.pi * (f.mi_s / 55.0 + 0.35 * wobble))
    img = np.where(m_in, 100 + 24 * cristae + 6 * fine, img)
    img -= 55 * np.exp(-((f.mi_sd + 6) / 8.0) ** 2) * (f.mi_sd < 30)
    # vesicles: small dark rings
    img -= 125 * f.vesicle
    # synaptic junctions: thick postsynaptic density (asymmetric) or a thin one (symmetric)
    if f.psd.any():
        asym = np.concatenate([[False], tissue.syn_asym])[f.psd]
        thick = np.where(asym, 42.0, 16.0)
        img -= np.where(f.psd > 0, 70 * np.clip((thick - np.abs(f.bdist)) / 12.0, 0, 1), 0)
    img -= np.where(f.sj > 0, 25.0, 0.0)
    return img


def _myelin(img, f: Fields, stain, fine):
    """Myelin sheaths: a near-black band of compact lamellae with faint rings concentric with the
    fibre's surface (the real ~12 nm period is below the voxel size, so a 25 nm ring stands in for
    it), and the axon's own membrane as a dark line along the sheath's inner surface."""
    rings = np.cos(np.float32(2 * np.pi / 25.0) * f.bdist)
    img = np.where(f.myelin(), 42 + 7 * rings + 5 * fine, img)
    axolemma = (f.owner > 0) & (f.myelin_sd >= 0) & (f.myelin_sd < 4 * MEMBRANE_NM)
    return img - stain * np.exp(-((f.myelin_sd - 2.0) / (0.8 * MEMBRANE_NM)) ** 2) * axolemma


def finish(tissue: Tissue, clean: np.ndarray, box: Box, inner: Box, *, noise: float) -> np.ndarray:
    """Blur, section shifts and gaps, drift and noise; returns uint8 (X, Y, Z) of `inner`."""
    img = gaussian_filter(clean, BLUR_SIGMA_VX, mode="nearest")
    z0 = box.start[2]
    for z, dx, dy in tissue.shifted_sections:
        k = z - z0
        if 0 <= k < img.shape[2]:
            img[:, :, k] = np.roll(img[:, :, k], (dx, dy), axis=(0, 1))
    img = img[inner.slices(relative_to=box.start)]
    zs = np.arange(inner.start[2], inner.stop[2])
    gain = 1 + 0.06 * (_uniform(tissue.seed, 31, zs) - 0.5) + 0.05 * np.sin(zs / 23.0 + tissue.seed)
    offset = 10 * (_uniform(tissue.seed, 32, zs) - 0.5)
    img = img * gain[None, None, :] + offset[None, None, :]
    grain = white_noise(inner.grow((3, 3, 0)), tissue.seed, 42)  # 3 = the filter's reach
    grain = gaussian_filter(grain, (0.7, 0.7, 0), mode="nearest", truncate=4.0)[3:-3, 3:-3, :]
    img += noise * (12.0 * white_noise(inner, tissue.seed, 41) + 20.0 * grain)
    for z in tissue.missing_sections:  # nearly black, with faint noise
        k = z - inner.start[2]
        if 0 <= k < img.shape[2]:
            section = Box((inner.start[0], inner.start[1], z), (inner.stop[0], inner.stop[1], z + 1))
            img[:, :, k] = 25 + noise * 8 * white_noise(section, tissue.seed, 43)[:, :, 0]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
