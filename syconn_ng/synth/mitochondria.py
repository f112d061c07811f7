"""Mitochondria: elongated capsule chains inside neurites (along the neurite's axis), in boutons
and in the soma cytoplasm, up to each cell type's volume fraction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from syconn_ng.synth.geometry import AXON, CELL_TYPE_SPECS, DENDRITE, CapsuleIndex, Grower, random_unit
from syconn_ng.synth.synapses import Bouton


@dataclass
class Mito:
    cell: int
    points_nm: np.ndarray  # (K, 3) centre line
    radius_nm: float


MIN_NEURITE_RADIUS_NM = 55.0  # thinner neurites hold no mitochondrion (the thinnest axons: only boutons)


def place_mitochondria(g: Grower, rng: np.random.Generator, boutons: list[Bouton]) -> list[Mito]:
    """Mitochondria for every cell of `g`, filling its type's `mito_fraction` of neurite volume."""
    m = g.m
    pos = np.asarray(m.node_pos)
    rad = np.asarray(m.node_radius)
    comp = np.asarray(m.node_comp)
    cell = np.asarray(m.node_cell)
    parent = np.asarray(m.node_parent)
    placed = CapsuleIndex()
    mitos: list[Mito] = []
    ix = g.index
    cap_len = np.linalg.norm(ix.b[: ix.n] - ix.a[: ix.n], axis=1)
    cap_vol = np.pi * ((ix.ra[: ix.n] + ix.rb[: ix.n]) / 2) ** 2 * cap_len
    cap_in = g.region.inside_volume((ix.a[: ix.n] + ix.b[: ix.n]) / 2)
    for ci, c in enumerate(m.cells):
        spec = CELL_TYPE_SPECS[c.type]
        neurite = (ix.cell[: ix.n] == ci) & np.isin(ix.comp[: ix.n], [AXON, DENDRITE]) & cap_in
        target = spec.mito_fraction * cap_vol[neurite].sum()
        ok = np.flatnonzero((cell == ci) & np.isin(comp, [AXON, DENDRITE]) & (rad >= MIN_NEURITE_RADIUS_NM)
                            & (parent >= 0) & g.region.inside_volume(pos))
        volume = 0.0
        tries = 0
        while volume < target and len(ok) and tries < 400:
            tries += 1
            start = ok[rng.choice(len(ok), p=rad[ok] ** 2 / (rad[ok] ** 2).sum())]
            mito = _along_neurite(rng, start, pos, rad, comp, parent, spec.mito_length_nm, ci, placed)
            if mito is not None:
                mitos.append(mito)
                volume += _volume(mito)
        if c.soma_centre_nm is not None and np.linalg.norm(
                c.soma_centre_nm - np.clip(c.soma_centre_nm, g.region.lo, g.region.hi)) < c.soma_radius_nm:
            _soma_mitos(rng, c, ci, spec.mito_fraction, placed, mitos)
    for b in boutons:
        if CELL_TYPE_SPECS[m.cells[b.cell].type].synapse_type == "asymmetric" and rng.random() < 0.55:
            _bouton_mito(rng, b, placed, mitos)
    return mitos


def _volume(mito: Mito) -> float:
    seg = np.linalg.norm(np.diff(mito.points_nm, axis=0), axis=1).sum()
    return np.pi * mito.radius_nm**2 * seg + 4 / 3 * np.pi * mito.radius_nm**3


def _fits(placed: CapsuleIndex, points, r) -> bool:
    return bool(placed.overlap(points, r + 15.0).max() <= 0.0)


def _register(placed: CapsuleIndex, mito: Mito, ci: int):
    p = mito.points_nm
    for a, b in zip(p[:-1], p[1:]):
        placed.add(a, b, mito.radius_nm, mito.radius_nm, ci, 0)


def _along_neurite(rng, start, pos, rad, comp, parent, length_nm, ci, placed):
    """A mitochondrion following the neurite from node `start` towards its root, off-centre."""
    length = rng.uniform(*length_nm)
    chain = [start]
    walked = 0.0
    while walked < length:
        p = parent[chain[-1]]
        if p < 0 or comp[p] != comp[start]:
            break
        walked += float(np.linalg.norm(pos[p] - pos[chain[-1]]))
        chain.append(p)
    if len(chain) < 2:
        return None
    r_min = rad[chain].min()
    r = float(np.clip(rng.uniform(0.4, 0.6) * r_min, 30.0, 170.0))
    room = r_min - r - 18.0
    if room < 0:
        return None
    axis = pos[chain[-1]] - pos[chain[0]]
    axis /= max(np.linalg.norm(axis), 1e-9)
    off = np.cross(axis, random_unit(rng))
    off *= rng.uniform(0, room) / max(np.linalg.norm(off), 1e-9)
    points = pos[chain] + off
    if not _fits(placed, points, r):
        return None
    mito = Mito(ci, points, r)
    _register(placed, mito, ci)
    return mito


def _soma_mitos(rng, c, ci, fraction, placed, mitos):
    R, rn = c.soma_radius_nm, c.nucleus_radius_nm
    target = fraction * 4 / 3 * np.pi * (R**3 - rn**3)
    volume, tries = 0.0, 0
    while volume < target and tries < 120:
        tries += 1
        u = random_unit(rng)
        centre = c.soma_centre_nm + u * rng.uniform(rn + 150, R - 130)
        t = np.cross(u, random_unit(rng))
        t /= max(np.linalg.norm(t), 1e-9)
        half = rng.uniform(150, 350)
        r = rng.uniform(55, 95)
        points = np.array([centre - t * half, centre, centre + t * half])
        if (np.linalg.norm(points - c.soma_centre_nm, axis=1) > R - r - 40).any():
            continue
        if (np.linalg.norm(points - c.nucleus_centre_nm, axis=1) < rn + r + 40).any():
            continue
        if not _fits(placed, points, r):
            continue
        mito = Mito(ci, points, r)
        _register(placed, mito, ci)
        mitos.append(mito)
        volume += _volume(mito)


def _bouton_mito(rng, b: Bouton, placed, mitos):
    """A short mitochondrion at the back of a bouton, across its axis."""
    r = rng.uniform(40, 60)
    centre = b.centre_nm - b.normal * (b.radius_nm - r - 45.0) * 0.8
    t = np.cross(b.normal, random_unit(rng))
    t /= max(np.linalg.norm(t), 1e-9)
    half = min(rng.uniform(60, 140), b.radius_nm - r - 50)
    if half <= 0:
        return
    points = np.array([centre - t * half, centre + t * half])
    if (np.linalg.norm(points - b.centre_nm, axis=1) > b.radius_nm - r - 30).any() or not _fits(placed, points, r):
        return
    mito = Mito(b.cell, points, r)
    _register(placed, mito, b.cell)
    mitos.append(mito)
