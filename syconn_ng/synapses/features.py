"""Synapse candidates and their features: per-box voxel sums around each sj object, then one row per sj.

A box task sums, for every sj object, its voxels on each contact pair, its sj probability and
grey level, and for every cell next to it the grey level in a thin band beside the cleft (the
postsynaptic density is dark there, thick for asymmetric synapses) and in a wider band behind
it (that cell's own cytoplasm, the reference). Sums add up over boxes. The candidate table then
takes, per sj, the pair of cells whose contact voxels it overlaps most, and adds vesicle-cloud
and mitochondrion volumes near each side from the object and mapping tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SIDE_SUMS = ("band_voxels", "band_raw", "ref_voxels", "ref_raw")

# features of the synapse forest: unordered (min / max over the two sides), so the cell order is irrelevant
SYNAPSE_FEATURES = (
    "sj_voxels", "sj_prob_mean", "sj_raw_mean", "cs_overlap", "contact_area_um2", "fraction_min", "fraction_max",
    "vc_voxels_min", "vc_voxels_max", "vc_dist_min_nm", "mi_voxels_min", "mi_voxels_max",
    "band_raw_min", "band_raw_max", "band_ratio_min", "band_ratio_max",
)
# features of the type forest: ordered by direction (pre, post)
TYPE_FEATURES = ("sj_voxels", "sj_raw_mean", "band_raw_pre", "band_raw_post", "band_ratio_pre", "band_ratio_post",
                 "ref_raw_post", "vc_voxels_pre")


def _group_sum(keys: np.ndarray, values: dict[str, np.ndarray]):
    """Unique rows of `keys` (N, K) with each value summed per row: (unique keys (U, K), {name: (U,)})."""
    if len(keys) == 0:
        return keys.reshape(0, keys.shape[1]), {k: np.zeros(0) for k in values}
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.ravel()
    return uniq, {k: np.bincount(inv, weights=v, minlength=len(uniq)) for k, v in values.items()}


def sj_box_sums(sj: np.ndarray, cells: np.ndarray, raw: np.ndarray, sj_prob: np.ndarray, cell_a: np.ndarray,
                cell_b: np.ndarray, *, inner, voxel_size_nm, band_nm: float, syntype: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Sums over the inner box of one task for every sj object reaching it.

    sj, cells: (X, Y, Z) uint64 ids of a box with a halo; raw: (X, Y, Z) uint8 EM; sj_prob:
    (X, Y, Z) float sj probability in [0, 1]; syntype: (X, Y, Z) float probability of a symmetric synapse in
    [0, 1] (the myelin_syntype CNN's channel) or None; cell_a, cell_b: the contact pair per voxel
    (`contact_voxels`); inner: the slices of the task's own box in these arrays (only its voxels
    are counted, so sums over boxes count each voxel once); band_nm: width of the band beside
    the cleft (the reference band is the next `band_nm`).
    Returns flat arrays: per sj (`sj_id`, `sj_vx`, `sj_prob_sum`, `sj_raw_sum`, `sj_syntype_sum` (NaN without
    `syntype`)); per sj and
    contact pair (`ov_sj`, `ov_a`, `ov_b`, `ov_voxels`); per sj and neighbouring cell
    (`side_sj`, `side_cell` and the `SIDE_SUMS`).
    """
    from scipy import ndimage

    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    in_box = np.zeros(sj.shape, bool)
    in_box[inner] = True
    own = (sj > 0) & in_box
    ids = sj[own]
    uniq, per = _group_sum(ids[:, None], {"sj_vx": np.ones(len(ids)), "sj_prob_sum": sj_prob[own].astype(np.float64),
                                          "sj_raw_sum": raw[own].astype(np.float64),
                                          "sj_syntype_sum": np.full(len(ids), np.nan) if syntype is None else syntype[own].astype(np.float64)})
    out = {"sj_id": uniq[:, 0].astype(np.uint64), **per}
    on_contact = own & (cell_b > 0)
    keys = np.stack([sj[on_contact], cell_a[on_contact], cell_b[on_contact]], 1)
    ov, ov_sums = _group_sum(keys, {"ov_voxels": np.ones(len(keys))})
    out.update(ov_sj=ov[:, 0].astype(np.uint64), ov_a=ov[:, 1].astype(np.uint64), ov_b=ov[:, 2].astype(np.uint64), **ov_sums)

    reach = np.ceil(2 * band_nm / vs).astype(int) + 1
    side_keys, side_vals = [], {k: [] for k in SIDE_SUMS}
    for obj, sl in _objects(sj):
        lo = [max(0, s.start - r) for s, r in zip(sl, reach)]
        hi = [min(n, s.stop + r) for s, n, r in zip(sl, sj.shape, reach)]
        crop = tuple(slice(a, b) for a, b in zip(lo, hi))
        mask = sj[crop] == obj
        dist = ndimage.distance_transform_edt(~mask, sampling=vs)
        c, keep = cells[crop], in_box[crop] & (cells[crop] > 0)
        band = keep & (dist <= band_nm)
        ref = keep & (dist > band_nm) & (dist <= 2 * band_nm)
        r = raw[crop].astype(np.float64)
        for sel, n_key, r_key in ((band, "band_voxels", "band_raw"), (ref, "ref_voxels", "ref_raw")):
            cs = c[sel]
            k, s = _group_sum(cs[:, None], {"n": np.ones(len(cs)), "raw": r[sel]})
            for cell, n, rs in zip(k[:, 0], s["n"], s["raw"]):
                side_keys.append((obj, cell))
                for name in SIDE_SUMS:
                    side_vals[name].append({n_key: n, r_key: rs}.get(name, 0.0))
    sk = np.asarray(side_keys, dtype=np.uint64).reshape(-1, 2)
    sk, sv = _group_sum(sk, {k: np.asarray(v, dtype=np.float64) for k, v in side_vals.items()})
    out.update(side_sj=sk[:, 0].astype(np.uint64), side_cell=sk[:, 1].astype(np.uint64), **sv)
    return out


def _objects(sj: np.ndarray):
    """(id, bounding slices) of every sj object in the array, halo included: one just outside the task's
    box still has band voxels inside it."""
    from scipy import ndimage

    import fastremap

    if not sj.any():
        return []
    small, remap = fastremap.renumber(sj, in_place=False)
    back = {v: k for k, v in remap.items()}
    return [(back[i + 1], sl) for i, sl in enumerate(ndimage.find_objects(small)) if sl is not None]


def concat_sums(parts: list[dict]) -> dict[str, pd.DataFrame]:
    """The per-box sums of `sj_box_sums` added up: tables `sj`, `overlap` and `side`."""
    def table(cols, keys):
        frames = [pd.DataFrame({c: p[c] for c in cols}) for p in parts]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
        return df.groupby(keys, as_index=False).sum(min_count=1) if len(df) else df  # NaN stays NaN (no syntype layer)

    return {
        "sj": table(["sj_id", "sj_vx", "sj_prob_sum", "sj_raw_sum", "sj_syntype_sum"], ["sj_id"]),
        "overlap": table(["ov_sj", "ov_a", "ov_b", "ov_voxels"], ["ov_sj", "ov_a", "ov_b"]),
        "side": table(["side_sj", "side_cell", *SIDE_SUMS], ["side_sj", "side_cell"]),
    }


def choose_pairs(overlap: pd.DataFrame, mapping_sj: pd.DataFrame) -> pd.DataFrame:
    """One cell pair per sj: the contact pair its voxels overlap most (ties: the pair with larger mapping fractions).

    overlap: `ov_sj, ov_a, ov_b, ov_voxels`; mapping_sj: `object, cell, fraction` (every cell
    touching each sj). An sj on no contact pair falls back to its two cells of largest fraction
    (`on_contact` False); an sj with one cell only has no candidate. Returns `sj_id, cell_a,
    cell_b, overlap_voxels, on_contact` with cell_a < cell_b.
    """
    frac = {(int(o), int(c)): float(f) for o, c, f in mapping_sj[["object", "cell", "fraction"]].itertuples(index=False)}
    rows = {}
    if len(overlap):
        ov = overlap.copy()
        ov["score"] = [frac.get((int(s), int(a)), 0.0) + frac.get((int(s), int(b)), 0.0) for s, a, b in
                       ov[["ov_sj", "ov_a", "ov_b"]].itertuples(index=False)]
        ov = ov.sort_values(["ov_sj", "ov_voxels", "score", "ov_a", "ov_b"], ascending=[True, False, False, True, True])
        for s, a, b, n in ov.drop_duplicates("ov_sj")[["ov_sj", "ov_a", "ov_b", "ov_voxels"]].itertuples(index=False):
            rows[int(s)] = (int(a), int(b), float(n), True)
    for s, grp in mapping_sj.sort_values(["object", "fraction", "cell"], ascending=[True, False, True]).groupby("object"):
        if int(s) in rows or len(grp) < 2:
            continue
        a, b = sorted(int(c) for c in grp["cell"].iloc[:2])
        rows[int(s)] = (a, b, 0.0, False)
    df = pd.DataFrame([(s, *v) for s, v in sorted(rows.items())], columns=["sj_id", "cell_a", "cell_b", "overlap_voxels", "on_contact"])
    return df.astype({"sj_id": np.uint64, "cell_a": np.uint64, "cell_b": np.uint64, "on_contact": bool})


def nearby_volume(points_vx: np.ndarray, cells: np.ndarray, objects: pd.DataFrame, object_cell: pd.Series, *,
                  voxel_size_nm, radius_nm: float):
    """Voxels of the objects owned by `cells[i]` whose centroid lies within `radius_nm` of `points_vx[i]`, and the
    distance to the nearest such object (nm; inf if none).

    points_vx: (N, 3) voxels; cells: (N,) uint64; objects: an objects table (`id`, `voxels`,
    `centroid_x/y/z`); object_cell: cell per object id (index = object id). Returns two (N,) arrays.
    """
    from scipy.spatial import cKDTree

    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    n = len(points_vx)
    volume, nearest = np.zeros(n), np.full(n, np.inf)
    if n == 0 or len(objects) == 0:
        return volume, nearest
    owner = object_cell.reindex(objects["id"].to_numpy()).fillna(0).to_numpy(np.uint64)
    cent = objects[["centroid_x", "centroid_y", "centroid_z"]].to_numpy(np.float64) * vs
    vox = objects["voxels"].to_numpy(np.float64)
    tree = cKDTree(cent)
    for i, near in enumerate(tree.query_ball_point(np.asarray(points_vx, np.float64) * vs, r=radius_nm)):
        near = np.asarray(near, dtype=np.int64)
        mine = near[owner[near] == cells[i]]
        if len(mine):
            volume[i] = vox[mine].sum()
            nearest[i] = np.linalg.norm(cent[mine] - points_vx[i] * vs, axis=1).min()
    return volume, nearest


def candidate_table(sums: dict[str, pd.DataFrame], pairs: pd.DataFrame, tables: dict[str, pd.DataFrame], *,
                    voxel_size_nm, vc_dist_nm: float, mi_dist_nm: float, cleft_thickness_nm: float,
                    site_area_um2: dict[int, float] | None = None, sj_site: dict[int, int] | None = None) -> pd.DataFrame:
    """One row per candidate synapse with the features of both sides (`_a`, `_b`) and the unordered ones.

    sums: `concat_sums` output; pairs: `choose_pairs` output; tables: the `objects_sj`,
    `objects_vc`, `objects_mi`, `mapping_sj`, `mapping_vc`, `mapping_mi` tables; sj_site: the
    contact site each sj overlaps most, site_area_um2: each site's area. Positions are the sj
    centroids (voxels); `area_um2` = sj voxels × voxel volume / `cleft_thickness_nm`.
    """
    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    sj = tables["objects_sj"].set_index("id")
    df = pairs.copy()
    ids = df["sj_id"].to_numpy(np.uint64)
    obj = sj.reindex(ids)
    for ax in "xyz":
        df[ax] = obj[f"centroid_{ax}"].to_numpy(np.float64)
    df["sj_voxels"] = obj["voxels"].to_numpy(np.float64)
    df["area_um2"] = df["sj_voxels"] * float(np.prod(vs)) / cleft_thickness_nm / 1e6
    s = sums["sj"].set_index("sj_id").reindex(ids)
    n_seen = s["sj_vx"].fillna(0).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        df["sj_prob_mean"] = np.nan_to_num(s["sj_prob_sum"].to_numpy() / n_seen)
        df["sj_raw_mean"] = np.nan_to_num(s["sj_raw_sum"].to_numpy() / n_seen)
        # the mean symmetric probability over the junction's voxels (NaN without a syntype layer)
        df["symmetric_fraction"] = s["sj_syntype_sum"].to_numpy() / n_seen
        df["cs_overlap"] = df["overlap_voxels"].to_numpy() / np.maximum(df["sj_voxels"].to_numpy(), 1)
    sj_site = sj_site or {}
    site_area_um2 = site_area_um2 or {}
    df["contact_site"] = [int(sj_site.get(int(i), 0)) for i in ids]
    df["contact_area_um2"] = [float(site_area_um2.get(c, 0.0)) for c in df["contact_site"]]
    frac = tables["mapping_sj"].set_index(["object", "cell"])["fraction"]
    side = sums["side"].set_index(["side_sj", "side_cell"])
    pts = df[["x", "y", "z"]].to_numpy(np.float64)
    for key in ("a", "b"):
        cells = df[f"cell_{key}"].to_numpy(np.uint64)
        idx = pd.MultiIndex.from_arrays([ids, cells])
        df[f"fraction_{key}"] = frac.reindex(idx).fillna(0.0).to_numpy()
        sd = side.reindex(idx).fillna(0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            band = sd["band_raw"].to_numpy() / sd["band_voxels"].to_numpy()
            ref = sd["ref_raw"].to_numpy() / sd["ref_voxels"].to_numpy()
        df[f"band_raw_{key}"] = np.nan_to_num(band, nan=0.0)
        df[f"ref_raw_{key}"] = np.nan_to_num(ref, nan=0.0)
        df[f"band_ratio_{key}"] = np.nan_to_num(band / ref, nan=1.0, posinf=1.0)
        for kind, radius in (("vc", vc_dist_nm), ("mi", mi_dist_nm)):
            owner = tables[f"mapping_{kind}"].drop_duplicates("object").set_index("object")["cell"]
            vol, near = nearby_volume(pts, cells, tables[f"objects_{kind}"], owner, voxel_size_nm=vs, radius_nm=radius)
            df[f"{kind}_voxels_{key}"] = vol
            df[f"{kind}_dist_{key}_nm"] = np.minimum(near, radius)
    for name in ("fraction", "vc_voxels", "mi_voxels", "band_raw", "band_ratio"):
        a, b = df[f"{name}_a"].to_numpy(), df[f"{name}_b"].to_numpy()
        df[f"{name}_min"], df[f"{name}_max"] = np.minimum(a, b), np.maximum(a, b)
    df["vc_dist_min_nm"] = np.minimum(df["vc_dist_a_nm"], df["vc_dist_b_nm"])
    return df
