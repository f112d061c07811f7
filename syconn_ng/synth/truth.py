"""Ground truth of one chunk (label arrays and counts) and the tables and statistics of a tissue.

Per chunk: the label layers' arrays and, per object, voxel counts and coordinate sums, so that
object tables (voxels, centroids, synapse areas) come out exact however the volume is chunked.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from syconn_ng.layers import atomic_write_text
from syconn_ng.synth.geometry import CELL_TYPES, COMPARTMENTS
from syconn_ng.synth.raster import SJ_HALF_THICKNESS_NM, Fields
from syconn_ng.synth.tissue import Tissue

# Measured on the labelled Drosophila VNC stack in shared/realdata (Gerhard et al. 2013, README).
REAL_DATA = {"membrane_fraction": 0.204, "mito_fraction": 0.054, "synapse_voxel_fraction": 0.0056}


def truth_arrays(tissue: Tissue, f: Fields) -> dict[str, np.ndarray]:
    """The label layers of the fields' box: cells, barrier, mi, vc, sj (uint64 ids) and organelles."""
    interior = f.interior()
    cell_lut = np.concatenate([[0], tissue.cell_ids]).astype(np.uint64)
    organelles = np.stack([f.sj > 0, f.vc > 0, f.mi > 0], axis=-1).astype(np.uint8) * np.uint8(255)
    out = {
        "cells": np.where(interior, cell_lut[f.owner], np.uint64(0)),
        "barrier": (f.membrane().astype(np.uint8) * np.uint8(255)),
        "mi": f.mi.astype(np.uint64),
        "vc": f.vc.astype(np.uint64),
        "sj": f.sj.astype(np.uint64),
        "organelles": organelles,
    }
    if tissue.has_myelin:  # 255 on sheaths, like the barrier, so it can stand in for a probability map
        out["myelin"] = f.myelin().astype(np.uint8) * np.uint8(255)
    return out


@dataclass
class ChunkCounts:
    """Voxel counts of one chunk: totals, per cell (index + 1) and per object (id) with coordinate sums."""

    voxels: int
    membrane: int
    extracellular: int
    cell: np.ndarray  # (C + 1,) interior voxels per cell index + 1
    mi: np.ndarray  # (M + 1, 4): count, sum x, sum y, sum z (voxels)
    vc: np.ndarray
    sj: np.ndarray
    myelin: int = 0

    def __add__(self, o: "ChunkCounts") -> "ChunkCounts":
        return ChunkCounts(self.voxels + o.voxels, self.membrane + o.membrane, self.extracellular + o.extracellular,
                           self.cell + o.cell, self.mi + o.mi, self.vc + o.vc, self.sj + o.sj, self.myelin + o.myelin)


def count_chunk(tissue: Tissue, f: Fields) -> ChunkCounts:
    """Counts over the fields' whole box (call it on the chunk itself, not a halo)."""
    start = np.asarray(f.box.start, dtype=np.float64)

    def objects(labels, n):
        nz = np.nonzero(labels)
        lab = labels[nz]
        out = np.zeros((n + 1, 4))
        out[:, 0] = np.bincount(lab, minlength=n + 1)
        for k in range(3):
            out[:, k + 1] = np.bincount(lab, weights=nz[k] + start[k], minlength=n + 1)
        return out

    interior = f.interior()
    return ChunkCounts(
        voxels=int(f.owner.size),
        membrane=int(f.membrane().sum()),
        extracellular=int((f.owner == 0).sum()),
        cell=np.bincount(f.owner[interior].ravel(), minlength=len(tissue.cell_ids) + 1),
        mi=objects(f.mi, len(tissue.mito_cell)),
        vc=objects(f.vc, len(tissue.vc_cell)),
        sj=objects(f.sj, len(tissue.syn_pre)),
        myelin=int(f.myelin().sum()) if tissue.has_myelin else 0,
    )


def _write_csv(path: Path, header: list[str], rows) -> None:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _centroid(row) -> tuple[float, float, float]:
    return tuple(round(float(v) / row[0], 2) for v in row[1:4])


def write_tables(tissue: Tissue, counts: ChunkCounts, traced: dict[int, list], truth_dir: Path) -> dict:
    """cells, synapses, organelles, contacts and nodes CSVs under `truth_dir`; returns statistics."""
    vs = np.asarray(tissue.voxel_size_nm)
    ids, types = tissue.cell_ids, tissue.cell_types
    present = counts.cell[1:] > 0
    _write_csv(truth_dir / "cells.csv", ["id", "type", "voxels", "soma_in_volume", "traced"],
               [(int(ids[c]), types[c], int(counts.cell[c + 1]), int(_soma_in_volume(tissue, c)), int(c in traced))
                for c in np.flatnonzero(present)])

    syn_rows, syn_voxels, areas = [], 0, []
    voxel_nm3 = float(np.prod(vs))
    kept_syn = np.zeros(len(tissue.syn_pre), dtype=bool)
    for i in range(len(tissue.syn_pre)):
        n = counts.sj[i + 1, 0]
        if n == 0:
            continue
        kept_syn[i] = True
        syn_voxels += n
        x, y, z = _centroid(counts.sj[i + 1])
        area = n * voxel_nm3 / (2 * SJ_HALF_THICKNESS_NM) / 1e6
        areas.append(area)
        vc_id = int(tissue.syn_vc[i]) + 1
        vc_ids = str(vc_id) if counts.vc[vc_id, 0] > 0 else ""
        syn_rows.append((i + 1, int(ids[tissue.syn_pre[i]]), int(ids[tissue.syn_post[i]]), x, y, z, round(area, 5),
                         "asymmetric" if tissue.syn_asym[i] else "symmetric", i + 1, vc_ids,
                         COMPARTMENTS[tissue.syn_post_comp[i]]))
    _write_csv(truth_dir / "synapses.csv",
               ["id", "pre_cell", "post_cell", "x", "y", "z", "area_um2", "type", "sj_id", "vc_ids", "post_compartment"],
               syn_rows)

    org_rows = []
    for kind, table, owner in (("sj", counts.sj, tissue.syn_pre), ("vc", counts.vc, tissue.vc_cell),
                               ("mi", counts.mi, tissue.mito_cell)):
        for k in np.flatnonzero(table[1:, 0] > 0):
            if kind == "sj" and not kept_syn[k]:
                continue
            org_rows.append((k + 1, kind, int(ids[owner[k]]), int(table[k + 1, 0])) + _centroid(table[k + 1]))
    _write_csv(truth_dir / "organelles.csv", ["id", "kind", "cell", "voxels", "x", "y", "z"], org_rows)

    contact_rows = []
    for a, b, c, comp in zip(tissue.contact_a, tissue.contact_b, tissue.contact_centre_nm, tissue.contact_comp_b):
        if present[a] and present[b]:
            contact_rows.append((int(ids[a]), int(ids[b])) + tuple(round(float(v), 2) for v in c / vs) + (COMPARTMENTS[comp],))
    _write_csv(truth_dir / "contacts.csv", ["cell_a", "cell_b", "x", "y", "z", "compartment_b"], contact_rows)

    node_rows = []
    for ci, nodes in traced.items():
        for n in nodes:
            node_rows.append((int(ids[ci]), n.node_id, *(int(v) for v in n.pos_vx), COMPARTMENTS[n.comp], round(n.radius_vx, 3))
                             + ((int(in_internode(tissue, ci, n.arc_nm)),) if tissue.has_myelin else ()))
    _write_csv(truth_dir / "nodes.csv", ["cell", "node", "x", "y", "z", "compartment", "radius_vx"]
               + (["myelinated"] if tissue.has_myelin else []), node_rows)

    vol_um3 = tissue.volume_um3
    total = counts.voxels
    stats = {
        "shape_vx": list(tissue.shape_vx),
        "voxel_size_nm": list(tissue.voxel_size_nm),
        "seed": tissue.seed,
        "volume_um3": round(vol_um3, 3),
        "cells": int(present.sum()),
        "cells_traced": len(traced),
        "cells_by_type": {t: int(sum(1 for c in np.flatnonzero(present) if types[c] == t)) for t in CELL_TYPES},
        "somata_in_volume": int(sum(_soma_in_volume(tissue, c) for c in np.flatnonzero(present))),
        "synapses": len(syn_rows),
        "synapses_by_type": {t: sum(1 for r in syn_rows if r[7] == t) for t in ("asymmetric", "symmetric")},
        "synapses_per_um3": round(len(syn_rows) / vol_um3, 3),
        "synapse_area_um2_median": round(float(np.median(areas)), 4) if areas else 0.0,
        "close_contacts": len(contact_rows),
        "mitochondria": int((counts.mi[1:, 0] > 0).sum()),
        "vesicle_clouds": int((counts.vc[1:, 0] > 0).sum()),
        "skeleton_nodes": len(node_rows),
        "membrane_fraction": round(counts.membrane / total, 4),
        "extracellular_fraction": round(counts.extracellular / total, 4),
        "cell_interior_fraction": round(int(counts.cell[1:].sum()) / total, 4),
        "mito_fraction": round(int(counts.mi[1:, 0].sum()) / total, 4),
        "vc_fraction": round(int(counts.vc[1:, 0].sum()) / total, 5),
        "synapse_voxel_fraction": round(int(syn_voxels) / total, 5),
        "missing_sections": list(tissue.missing_sections),
        "shifted_sections": [list(s) for s in tissue.shifted_sections],
        "real_data_reference": {"source": "shared/realdata/drosophila_vnc_gerhard2013 (ssTEM, 4.6x4.6x50 nm)", **REAL_DATA},
    }
    if tissue.has_myelin:
        stats["myelin"] = _myelin_stats(tissue, counts, present, node_rows)
    return stats


def in_internode(tissue: Tissue, ci: int, arc_nm: float) -> bool:
    """Whether arc length `arc_nm` (nm, NaN: not on a myelinated axon) of cell `ci` lies in one of its internodes."""
    mine = tissue.my_cell == ci
    return bool(np.any((tissue.my_s0[mine] <= arc_nm) & (arc_nm < tissue.my_s1[mine])))


def _myelin_stats(tissue: Tissue, counts: ChunkCounts, present: np.ndarray, node_rows: list) -> dict:
    """Myelinated cells by type, sheath voxel fraction, and the traced axon nodes in internodes."""
    cells = [c for c in np.unique(tissue.my_cell) if present[c]]
    axon = [r for r in node_rows if r[5] == "axon"]
    return {
        "g_ratio": tissue.g_ratio,
        "myelinated_cells_by_type": {t: sum(1 for c in cells if tissue.cell_types[c] == t) for t in CELL_TYPES},
        "myelin_fraction": round(counts.myelin / counts.voxels, 5),
        "myelinated_nodes": sum(r[-1] for r in node_rows),
        "myelinated_axon_node_fraction": round(sum(r[-1] for r in axon) / len(axon), 4) if axon else 0.0,
    }


def _soma_in_volume(tissue: Tissue, ci: int) -> bool:
    c = tissue.soma_centre_nm[ci]
    if not np.isfinite(c[0]):
        return False
    hi = (np.asarray(tissue.shape_vx) - 1) * np.asarray(tissue.voxel_size_nm)
    return bool(np.linalg.norm(c - np.clip(c, 0, hi)) < tissue.soma_radius_nm[ci])
