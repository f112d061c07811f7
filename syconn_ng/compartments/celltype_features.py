"""Per-cell features for the cell-type forest: path length per compartment, radius and varicosity
statistics, spine density, organelle densities per compartment, synapse counts, areas and types,
soma size. One cell at a time; its nodes are the hull stage's (traced and interpolated). Also which
cells show enough of themselves to be typed (`typeability`)."""

from __future__ import annotations

import numpy as np

from syconn_ng.compartments.features import CellGraph, node_lengths_nm

AXON, DENDRITE, SOMA, HEAD, NECK = range(5)  # compartment codes (syconn_ng.compartments.outputs)
VARICOSITY_RATIO = 1.3  # a bouton: a local radius maximum this much above the axon's median radius


def _radius_stats(prefix: str, r: np.ndarray) -> dict:
    if len(r) == 0:
        return {f"{prefix}_rad_mean": 0.0, f"{prefix}_rad_std": 0.0, f"{prefix}_rad_median": 0.0, f"{prefix}_rad_p90": 0.0}
    return {f"{prefix}_rad_mean": float(r.mean()), f"{prefix}_rad_std": float(r.std()),
            f"{prefix}_rad_median": float(np.median(r)), f"{prefix}_rad_p90": float(np.percentile(r, 90))}


def _components(edges: np.ndarray, mask: np.ndarray) -> int:
    """Connected pieces of the nodes in `mask` (N,) bool, joined by the edges among them."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return 0
    remap = np.full(len(mask), -1)
    remap[idx] = np.arange(len(idx))
    e = edges[mask[edges[:, 0]] & mask[edges[:, 1]]] if len(edges) else edges
    adj = coo_matrix((np.ones(len(e)), (remap[e[:, 0]], remap[e[:, 1]])), shape=(len(idx), len(idx)))
    return int(connected_components(adj, directed=False)[0])


def _turning_deg_per_um(pos: np.ndarray, edges: np.ndarray, degree: np.ndarray, length_um: float) -> float:
    """Summed turning angle (degrees) at the nodes with two edges, per µm of path: how tortuous the neurites are."""
    mid = np.flatnonzero(degree == 2)
    if len(mid) == 0 or length_um <= 0:
        return 0.0
    nb = np.full((len(pos), 2), -1)
    fill = np.zeros(len(pos), dtype=np.int64)
    for a, b in ((edges[:, 0], edges[:, 1]), (edges[:, 1], edges[:, 0])):
        for i, j in zip(a, b):  # at most two per node of interest; the graph is small
            if degree[i] == 2:
                nb[i, fill[i]] = j
                fill[i] += 1
    u = pos[mid] - pos[nb[mid, 0]]
    v = pos[nb[mid, 1]] - pos[mid]
    cos = np.einsum("ij,ij->i", u, v) / np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-9)
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))).sum() / length_um)


def _varicosities(edges: np.ndarray, r: np.ndarray, axon: np.ndarray) -> int:
    """Axon nodes whose radius is above all their neighbours' and `VARICOSITY_RATIO` × the axon median."""
    if not axon.any() or len(edges) == 0:
        return 0
    nb_max = np.zeros(len(r))
    np.maximum.at(nb_max, edges[:, 0], r[edges[:, 1]])
    np.maximum.at(nb_max, edges[:, 1], r[edges[:, 0]])
    return int(np.sum(axon & (r > nb_max) & (r > VARICOSITY_RATIO * np.median(r[axon]))))


def cell_features(graph: CellGraph, code: np.ndarray, synapses_out: dict, synapses_in: dict,
                  mi_length_nm: np.ndarray | None = None) -> dict[str, float]:
    """Features of one cell as {name: float} (the names are the same for every cell).

    graph: the cell's nodes (nm), edges, radii and mapped organelles; code (N,) uint8 compartment per
    node; synapses_out / synapses_in: {"area_um2": (K,), "asymmetric": (K,) bool, "spine": (K,) bool
    (post side on a spine)} of the synapses where the cell is pre- / postsynaptic; mi_length_nm (M,)
    the lengths of the cell's mitochondria (bounding-box diagonals), which differ most between the
    types' axons (synthetic EA 200-400 nm, MSN 400-1100 nm).
    """
    pos, edges = graph.positions_nm, np.asarray(graph.edges, dtype=np.int64).reshape(-1, 2)
    r = np.asarray(graph.radius_nm, dtype=np.float64)
    r = np.where(np.isfinite(r), r, np.nanmedian(r) if np.isfinite(r).any() else 0.0)
    w = node_lengths_nm(pos, edges) / 1000.0  # µm per node
    axon, soma = code == AXON, code == SOMA
    dend = (code == DENDRITE) | (code == HEAD) | (code == NECK)
    spine = (code == HEAD) | (code == NECK)
    length = {"all": w.sum(), "axon": w[axon].sum(), "dendrite": w[dend].sum()}
    f = {"path_um": length["all"], "axon_um": length["axon"], "dendrite_um": length["dendrite"], "soma_um": float(w[soma].sum()),
         "frac_axon": length["axon"] / length["all"], "frac_dendrite": length["dendrite"] / length["all"],
         "frac_soma": float(w[soma].sum()) / length["all"], "soma_nodes": float(soma.sum()),
         "soma_rad_max": float(r[soma].max()) if soma.any() else 0.0, "rad_max": float(r.max()) if len(r) else 0.0}
    degree = np.bincount(edges.ravel(), minlength=len(r)) if len(edges) else np.zeros(len(r))
    f["ends_per_um"] = float(np.sum(degree <= 1)) / length["all"]
    f["branches_per_um"] = float(np.sum(degree >= 3)) / length["all"]
    for name, mask in (("all", np.ones(len(r), bool)), ("axon", axon), ("dendrite", dend & ~spine)):
        f.update(_radius_stats(name, r[mask]))
    f["axon_varicosities_per_um"] = _varicosities(edges, r, axon) / max(length["axon"], 0.1)
    f["axon_rad_p10"] = float(np.percentile(r[axon], 10)) if axon.any() else 0.0
    f["axon_rad_max"] = float(r[axon].max()) if axon.any() else 0.0
    f["turning_deg_per_um"] = _turning_deg_per_um(pos, edges, degree, length["all"])
    f["axon_rad_cv"] = f["axon_rad_std"] / max(f["axon_rad_mean"], 1.0)
    f["spines_per_um"] = _components(edges, spine) / max(length["dendrite"], 0.1)
    hull_um3 = np.pi * (r / 1000.0) ** 2 * w
    for kind in ("mi", "vc", "sj"):
        node_idx, volume = graph.organelles.get(kind, (np.zeros(0, np.int64), np.zeros(0)))
        vol_um3 = np.asarray(volume, dtype=np.float64) / 1e9
        f[f"{kind}_per_um"] = len(node_idx) / length["all"]
        f[f"{kind}_vol_frac"] = float(vol_um3.sum() / max(hull_um3.sum(), 1e-6))
        f[f"{kind}_mean_um3"] = float(vol_um3.mean()) if len(vol_um3) else 0.0
        f[f"{kind}_max_um3"] = float(vol_um3.max()) if len(vol_um3) else 0.0
        for name, mask in (("axon", axon), ("dendrite", dend)):
            f[f"{kind}_per_{name}_um"] = float(np.sum(mask[node_idx])) / max(length[name], 0.1)
    mi_len = np.asarray(mi_length_nm if mi_length_nm is not None else [], dtype=np.float64)
    f["mi_len_mean"] = float(mi_len.mean()) if len(mi_len) else 0.0
    f["mi_len_median"] = float(np.median(mi_len)) if len(mi_len) else 0.0
    f["mi_len_max"] = float(mi_len.max()) if len(mi_len) else 0.0
    f["mi_len_frac"] = float(mi_len.sum()) / 1000.0 / length["all"]  # µm of mitochondrion per µm of skeleton
    for side, syn, per in (("out", synapses_out, length["axon"]), ("in", synapses_in, length["dendrite"] + f["soma_um"])):
        area = np.asarray(syn.get("area_um2", []), dtype=np.float64)
        asym = np.asarray(syn.get("asymmetric", []), dtype=bool)
        f[f"n_{side}"] = float(len(area))
        f[f"{side}_per_um"] = len(area) / max(per, 0.1)
        f[f"{side}_area_mean"] = float(area.mean()) if len(area) else 0.0
        f[f"{side}_asym_frac"] = float(asym.mean()) if len(asym) else -1.0
    spine_in = np.asarray(synapses_in.get("spine", []), dtype=bool)
    f["in_spine_frac"] = float(spine_in.mean()) if len(spine_in) else -1.0
    return {k: float(v) for k, v in f.items()}


def typeability(features, *, min_typeable_um: float, bare_axons_typeable: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Which cells carry enough of themselves to be typed: (typeable (N,) bool, reason (N,) str).

    features: `cell_features` rows (a DataFrame or a dict of (N,) arrays). A cell is untypeable when its
    skeleton is shorter than `min_typeable_um` (reason "short"), or when it is a bare axon: only axon
    nodes, and no mitochondrion, vesicle cloud, synaptic junction or synapse mapped to it (reason
    "bare_axon"; the axon shafts of the synthetic types share a radius range, so such a piece shows
    nothing that tells them apart). The reason is "" for typeable cells.
    """
    def col(name):
        return np.asarray(features[name], dtype=np.float64)

    short = col("path_um") < min_typeable_um
    bare = (col("dendrite_um") == 0) & (col("soma_nodes") == 0) & (col("n_in") == 0) & (col("n_out") == 0)
    for kind in ("mi", "vc", "sj"):
        bare &= col(f"{kind}_per_um") == 0
    bare &= not bare_axons_typeable
    reason = np.where(short, "short", np.where(bare, "bare_axon", ""))
    return reason == "", reason


def cell_signs(synapses, cell_ids, *, inhibitory_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per cell (in `cell_ids` order): the synaptic-area-weighted share of symmetric synapses among its outgoing
    ones (NaN with none) and its sign, 'inhibitory' where that share exceeds `inhibitory_fraction`,
    'excitatory' below it, '' without outgoing synapses (symmetric synapses are GABAergic, asymmetric glutamatergic).

    synapses: DataFrame with `pre_cell`, `area_um2` and `type`.
    """
    import pandas as pd

    area = synapses["area_um2"].to_numpy(np.float64)
    sym = (synapses["type"] == "symmetric").to_numpy()
    per = pd.DataFrame({"cell": synapses["pre_cell"].to_numpy(np.uint64), "area": area, "sym": area * sym}).groupby("cell").sum()
    per = per.reindex(np.asarray(cell_ids, dtype=np.uint64))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (per["sym"] / per["area"]).to_numpy(np.float64)
    sign = np.where(np.isnan(share), "", np.where(share > inhibitory_fraction, "inhibitory", "excitatory"))
    return share, sign
