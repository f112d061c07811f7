"""Candidates → synapses: compartments of both partners, direction, the forest's synapse probability and the type.

Synapse probability comes from a random forest on the unordered features (`SYNAPSE_FEATURES`);
`model = "none"` replaces it by a rule (1 for an sj on a contact site with a vesicle cloud on
one side, else 0). The type comes from a second forest on the oriented features
(`TYPE_FEATURES`: grey levels of the bands beside the cleft, sj size and darkness);
`type_model = "threshold"` calls a synapse symmetric when its postsynaptic band is nearly as
bright as the post cell's cytoplasm (ratio above `symmetric_band_ratio`: a thin density). Where
the myelin_syntype CNN wrote a syntype layer, the type comes from it instead: the mean symmetric
probability over the junction's voxels against `symmetric_fraction` (SyConn's fraction rule).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from syconn_ng.synapses.direction import nearest_compartments, orient
from syconn_ng.synapses.features import SYNAPSE_FEATURES, TYPE_FEATURES


def load_synapse_forest(value: str, name: str, root=None, *, rule: str = "none"):
    """The forest a config value names ('' = the bundled `<name>.skops`), or None where it says `rule`."""
    from syconn_ng.compartments.forest import load_forest, resolve_model

    if value.strip().lower() == rule:
        return None
    return load_forest(resolve_model(value, name, root))


def synapse_probability(cand: pd.DataFrame, forest) -> np.ndarray:
    """(N,) probability that each candidate is a synapse: the forest's, or the rule's 0/1 if `forest` is None."""
    if len(cand) == 0:
        return np.zeros(0)
    if forest is None:
        return (cand["on_contact"].astype(bool) & (cand["vc_voxels_max"] > 0)).to_numpy(np.float64)
    names = list(SYNAPSE_FEATURES)
    proba = forest.predict_proba(cand[names].to_numpy(np.float32), names)
    return proba[:, forest.classes.index("synapse")]


def synapse_type(cand: pd.DataFrame, forest, *, symmetric_band_ratio: float, symmetric_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(N,) 'asymmetric' / 'symmetric' and (N,) probability of symmetric.

    With a `symmetric_fraction` column (the syntype CNN channel's mean over the junction's voxels):
    symmetric where it exceeds `symmetric_fraction`. Otherwise from the type forest, or if `forest`
    is None from the postsynaptic band's darkness relative to the post cell's cytoplasm
    (`band_ratio_post` above `symmetric_band_ratio`: symmetric, probability 0 or 1).
    """
    if len(cand) == 0:
        return np.zeros(0, dtype=object), np.zeros(0)
    if "symmetric_fraction" in cand and cand["symmetric_fraction"].notna().all():
        p_sym = cand["symmetric_fraction"].to_numpy(np.float64)
        return np.where(p_sym > symmetric_fraction, "symmetric", "asymmetric"), p_sym
    if forest is None:
        p_sym = (cand["band_ratio_post"].to_numpy(np.float64) > symmetric_band_ratio).astype(np.float64)
    else:
        names = list(TYPE_FEATURES)
        p_sym = forest.predict_proba(cand[names].to_numpy(np.float32), names)[:, forest.classes.index("symmetric")]
    return np.where(p_sym > 0.5, "symmetric", "asymmetric"), p_sym


def classify_candidates(cand: pd.DataFrame, nodes: pd.DataFrame, *, voxel_size_nm, params: dict, root=None,
                        forest="config", type_forest="config") -> pd.DataFrame:
    """Candidates with compartments (`compartment_a/b`, `p_axon_a/b`), direction, `probability` and `type`.

    nodes: `tables/nodes.csv` rows (with `compartment`, `p_axon` if compartments ran); params: the
    `[synapses]` section; forest: a loaded forest, None (the rule) or 'config' (load what params name).
    """
    out = cand.copy()
    pts = out[["x", "y", "z"]].to_numpy(np.float64) if len(out) else np.zeros((0, 3))
    for key in ("a", "b"):
        comp, p_axon = nearest_compartments(pts, out[f"cell_{key}"].to_numpy(np.uint64), nodes, voxel_size_nm=voxel_size_nm)
        out[f"compartment_{key}"] = comp
        out[f"p_axon_{key}"] = p_axon
    out = orient(out)
    if isinstance(forest, str):
        forest = load_synapse_forest(params["model"], "synapses", root)
    if isinstance(type_forest, str):
        type_forest = load_synapse_forest(params["type_model"], "synapse_types", root, rule="threshold")
    out["probability"] = np.round(synapse_probability(out, forest), 4)
    out["type"], p_sym = synapse_type(out, type_forest, symmetric_band_ratio=params["symmetric_band_ratio"],
                                      symmetric_fraction=params["symmetric_fraction"])
    out["p_symmetric"] = np.round(p_sym, 4)
    return out
