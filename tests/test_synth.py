"""The synthetic tissue generator: consistent, complete, deterministic, realistic ground truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cloudvolume import CloudVolume

from syconn_ng.cli import main
from syconn_ng.config import load_config
from syconn_ng.io.annotation import read_annotation
from syconn_ng.layers import to_cloudpath
from syconn_ng.synth.baselines import PIPELINE_TARGETS, trivial_baselines
from syconn_ng.synth.generate import generate_tissue
from syconn_ng.synth.montage import make_montage

from conftest import SYNTH_SHAPE

LAYER_KINDS = {
    "raw": ("image", "uint8", 1),
    "truth/cells": ("segmentation", "uint64", 1),
    "truth/barrier": ("image", "uint8", 1),
    "truth/mi": ("segmentation", "uint64", 1),
    "truth/vc": ("segmentation", "uint64", 1),
    "truth/sj": ("segmentation", "uint64", 1),
    "truth/organelles": ("image", "uint8", 3),
}


def _read(path):
    vol = CloudVolume(to_cloudpath(path), progress=False)
    return np.asarray(vol[:, :, :])


@pytest.fixture(scope="module")
def tissue(synth_tissue):
    """The session tissue's layers (arrays, channel axis dropped for 1-channel layers) and tables."""
    arrays = {name: _read(synth_tissue / name) for name in LAYER_KINDS}
    arrays = {k: (v[..., 0] if v.shape[-1] == 1 else v) for k, v in arrays.items()}
    tables = {name: pd.read_csv(synth_tissue / "truth" / f"{name}.csv")
              for name in ("cells", "synapses", "nodes", "organelles", "contacts")}
    return synth_tissue, arrays, tables


def _dilate(mask, steps=2):
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        for ax in range(3):
            grown |= np.roll(out, 1, ax) | np.roll(out, -1, ax)
        out = grown
    return out


def _small(tmp_path, name, **kw):
    args = dict(shape=(64, 64, 32), seed=5, chunk_size=(64, 64, 32))
    args.update(kw)
    return generate_tissue(tmp_path / name, **args), tmp_path / name


# -- layers -------------------------------------------------------------------------


def test_layers_read_back_with_cloudvolume_with_their_voxel_size_and_types(synth_tissue):
    for name, (kind, dtype, channels) in LAYER_KINDS.items():
        vol = CloudVolume(to_cloudpath(synth_tissue / name), progress=False)
        assert vol.layer_type == kind, name
        assert str(vol.dtype) == dtype, name
        assert vol.num_channels == channels, name
        assert tuple(vol.resolution) == (10, 10, 20), name
        assert tuple(vol.volume_size) == SYNTH_SHAPE, name
    assert not list(synth_tissue.rglob("*.gz"))


def test_raw_em_is_dark_on_membranes_mitochondria_and_vesicle_clouds(tissue):
    _, a, _ = tissue
    raw = a["raw"].astype(float)
    cyto = raw[(a["truth/cells"] > 0) & (a["truth/mi"] == 0) & (a["truth/vc"] == 0)].mean()
    assert raw[a["truth/barrier"] > 0].mean() < cyto - 20
    assert raw[a["truth/mi"] > 0].mean() < cyto - 25
    assert raw[a["truth/vc"] > 0].mean() < cyto - 5
    assert raw.std() > 20  # real contrast, not a flat grey


def test_organelle_layer_channels_are_sj_vc_mi_as_the_cnn_writes_them(tissue):
    _, a, _ = tissue
    org = a["truth/organelles"]
    for ch, name in enumerate(("sj", "vc", "mi")):
        assert np.array_equal(org[..., ch] == 255, a[f"truth/{name}"] > 0), name
        assert set(np.unique(org[..., ch])) <= {0, 255}


def test_barrier_separates_every_pair_of_touching_cells(tissue):
    _, a, _ = tissue
    cells = a["truth/cells"]
    for ax in range(3):
        lo = np.take(cells, range(cells.shape[ax] - 1), axis=ax)
        hi = np.take(cells, range(1, cells.shape[ax]), axis=ax)
        assert not np.any((lo > 0) & (hi > 0) & (lo != hi)), f"cells touch along axis {ax}"
    assert not np.any((a["truth/barrier"] > 0) & (cells > 0))


# -- consistency of the ground truth --------------------------------------------------


def test_every_synapse_sj_lies_between_its_pre_and_post_cell(tissue):
    _, a, t = tissue
    syn = t["synapses"]
    assert len(syn) >= 3
    for row in syn.itertuples():
        sj = a["truth/sj"] == row.sj_id
        assert sj.sum() > 0
        near = np.unique(a["truth/cells"][_dilate(sj, 2)])
        assert row.pre_cell in near and row.post_cell in near, row
        x, y, z = (int(round(v)) for v in (row.x, row.y, row.z))
        assert np.any(_dilate(sj, 3)[max(x - 1, 0):x + 2, max(y - 1, 0):y + 2, max(z - 1, 0):z + 2])


def test_every_vesicle_cloud_of_a_synapse_is_inside_the_pre_cell_next_to_its_sj(tissue):
    _, a, t = tissue
    checked = 0
    for row in t["synapses"].itertuples():
        for vc_id in str(row.vc_ids).split(";"):
            if vc_id in ("", "nan"):
                continue
            vc = a["truth/vc"] == int(vc_id)
            assert set(np.unique(a["truth/cells"][vc])) == {row.pre_cell}
            assert np.any(_dilate(vc, 6) & (a["truth/sj"] == row.sj_id))
            checked += 1
    assert checked >= len(t["synapses"]) * 0.8


def test_mitochondria_lie_inside_their_cell_and_are_elongated(tissue):
    _, a, t = tissue
    mi = t["organelles"][t["organelles"].kind == "mi"]
    assert len(mi) >= 5
    ids = a["truth/mi"]
    for row in mi.itertuples():
        assert set(np.unique(a["truth/cells"][ids == row.id])) == {row.cell}
    big = mi.sort_values("voxels").iloc[-1]
    pts = np.argwhere(ids == big.id) * np.array([10, 10, 20])
    ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T)))
    assert ev[-1] > 2 * ev[-2]  # longer than wide


def test_organelle_table_counts_match_the_layers(tissue):
    _, a, t = tissue
    for row in t["organelles"].itertuples():
        assert (a[f"truth/{row.kind}"] == row.id).sum() == row.voxels


def test_traced_skeleton_nodes_lie_inside_their_cell(tissue):
    out, a, t = tissue
    files = sorted((out / "skeletons").glob("cell_*.k.zip"))
    assert len(files) == t["cells"].traced.sum() >= 0.7 * len(t["cells"])
    inside = total = 0
    for f in files:
        skel = read_annotation(f)
        (tree,) = skel.trees
        pos = tree.positions().astype(int)
        assert np.all((pos >= 0) & (pos < np.array(SYNTH_SHAPE)))
        labels = a["truth/cells"][pos[:, 0], pos[:, 1], pos[:, 2]]
        inside += int((labels == tree.id).sum())
        total += len(pos)
    assert total > 200
    assert inside / total >= 0.95


def test_nodes_table_lists_the_skeleton_files_nodes(tissue):
    out, _, t = tissue
    nodes = t["nodes"].set_index("node")
    skel = read_annotation(out / "skeletons" / f"cell_{t['cells'][t['cells'].traced == 1].id.iloc[0]}.k.zip")
    for n in skel.trees[0].nodes:
        row = nodes.loc[n.id]
        assert (row.cell, row.x, row.y, row.z) == (skel.trees[0].id, int(n.x), int(n.y), int(n.z))
    assert set(nodes.compartment) <= {"axon", "dendrite", "soma", "spine_head", "spine_neck"}


def test_traced_nodes_are_100_to_300_nm_apart_on_average(tissue):
    out, _, _ = tissue
    lengths = []
    for f in sorted((out / "skeletons").glob("cell_*.k.zip"))[:40]:
        tree = read_annotation(f).trees[0]
        e = tree.edge_index()
        p = tree.positions() * np.array([10, 10, 20])
        lengths.extend(np.linalg.norm(p[e[:, 0]] - p[e[:, 1]], axis=1))
    assert 100 <= np.median(lengths) <= 300


def test_labelled_skeletons_carry_compartment_comments_and_the_cell_type(tissue):
    out, _, t = tissue
    types = dict(zip(t["cells"].id, t["cells"].type))
    nodes = t["nodes"].set_index("node")
    for f in sorted((out / "skeletons_labelled").glob("cell_*.k.zip"))[:30]:
        tree = read_annotation(f).trees[0]
        assert tree.comment == types[tree.id]
        for n in tree.nodes:
            assert n.comment == nodes.loc[n.id].compartment.replace("_", " ")
    plain = read_annotation(next((out / "skeletons").glob("cell_*.k.zip"))).trees[0]
    assert plain.comment == "" and all(n.comment == "" for n in plain.nodes)


def test_compartments_agree_with_geometry(tissue):
    _, _, t = tissue
    nodes = t["nodes"].merge(t["cells"], left_on="cell", right_on="id")
    soma = nodes[nodes.compartment == "soma"].radius_vx
    axon = nodes[nodes.compartment == "axon"].radius_vx
    assert len(soma) and len(axon)
    assert soma.min() > axon.median() * 3
    spines = nodes[nodes.compartment.isin(["spine_head", "spine_neck"])]
    assert len(spines) > 0 and set(spines.type) == {"MSN"}
    heads = nodes[nodes.compartment == "spine_head"].radius_vx
    necks = nodes[nodes.compartment == "spine_neck"].radius_vx
    assert heads.median() > necks.median()
    assert set(nodes[nodes.type == "EA"].compartment) == {"axon"}


def test_all_four_cell_types_are_present_with_somata_and_dense_neuropil(tissue):
    out, a, t = tissue
    assert set(t["cells"].type) == {"EA", "MSN", "GP", "INT"}
    assert t["cells"].soma_in_volume.sum() >= 1
    stats = json.loads((out / "truth" / "stats.json").read_text())
    assert stats["cell_interior_fraction"] > 0.6
    assert stats["extracellular_fraction"] < 0.15


def test_membrane_and_mitochondria_fractions_are_realistic(tissue):
    out, a, _ = tissue
    n = a["truth/cells"].size
    membrane = (a["truth/barrier"] > 0).sum() / n
    mito = (a["truth/mi"] > 0).sum() / n
    assert 0.13 <= membrane <= 0.30  # real: 20.4 % (Drosophila VNC)
    assert 0.025 <= mito <= 0.09  # real: 5.4 %
    stats = json.loads((out / "truth" / "stats.json").read_text())
    assert stats["membrane_fraction"] == pytest.approx(membrane, abs=1e-3)
    assert stats["mito_fraction"] == pytest.approx(mito, abs=1e-3)


def test_synapse_density_and_types_follow_the_cell_types(tissue):
    out, _, t = tissue
    syn = t["synapses"].merge(t["cells"], left_on="pre_cell", right_on="id")
    stats = json.loads((out / "truth" / "stats.json").read_text())
    assert 0.4 <= stats["synapses_per_um3"] <= 2.0
    assert all(syn[syn.type_y == "EA"].type_x == "asymmetric")
    assert all(syn[syn.type_y != "EA"].type_x == "symmetric")
    assert (syn.pre_cell != syn.post_cell).all()
    assert (syn.area_um2 > 0.005).all() and (syn.area_um2 < 0.5).all()


def test_close_contacts_outnumber_synapses_and_carry_no_sj_or_vc(tissue):
    _, a, t = tissue
    contacts = t["contacts"]
    assert len(contacts) >= len(t["synapses"])
    organelle = _dilate((a["truth/sj"] > 0) | (a["truth/vc"] > 0), 3)
    free = 0
    for row in contacts.itertuples():
        x, y, z = (int(round(v)) for v in (row.x, row.y, row.z))
        free += not organelle[x, y, z]
        assert row.cell_a != row.cell_b
    assert free >= 0.9 * len(contacts)


def test_analysis_config_names_only_raw_and_skeletons(synth_tissue):
    cfg = load_config(synth_tissue)
    assert cfg.dataset.raw == "raw"
    assert cfg.dataset.skeletons == ["skeletons/*.k.zip"]
    assert cfg.dataset.voxel_size_nm == [10.0, 10.0, 20.0]
    assert cfg.oracle.barrier == "" and cfg.oracle.organelles == ""
    values = [line for line in (synth_tissue / "syconn.toml").read_text().splitlines() if not line.startswith("#")]
    assert not any("truth" in line for line in values)


# -- determinism and chunking ----------------------------------------------------------


def _all_outputs(out):
    arrays = {name: _read(out / name) for name in LAYER_KINDS}
    tables = {p.name: p.read_text() for p in sorted((out / "truth").glob("*.csv"))}
    skels = {p.name: p.read_bytes() for p in sorted((out / "skeletons").glob("*.k.zip"))}
    return arrays, tables, skels


def test_same_seed_gives_identical_tissue_whatever_the_chunking_and_workers(tmp_path):
    _, a = _small(tmp_path, "a")
    _, b = _small(tmp_path, "b", chunk_size=(32, 32, 16), workers=2)
    (aa, at, _), (ba, bt, _) = _all_outputs(a), _all_outputs(b)
    for name in LAYER_KINDS:
        assert np.array_equal(aa[name], ba[name]), name
    assert at == bt
    assert sorted(p.name for p in (a / "skeletons").iterdir()) == sorted(p.name for p in (b / "skeletons").iterdir())


def test_different_seeds_give_different_tissue(tmp_path):
    _, a = _small(tmp_path, "a", seed=5)
    _, b = _small(tmp_path, "b", seed=6)
    assert not np.array_equal(_read(a / "truth/cells"), _read(b / "truth/cells"))
    assert not np.array_equal(_read(a / "raw"), _read(b / "raw"))


def test_artefact_sections_are_listed_and_visible(tissue):
    out, a, _ = tissue
    stats = json.loads((out / "truth" / "stats.json").read_text())
    assert stats["missing_sections"] and stats["shifted_sections"]
    raw = a["raw"].astype(float)
    for z in stats["missing_sections"]:
        assert raw[:, :, z].mean() < 0.5 * raw.mean()
        assert a["truth/cells"][:, :, z].any()  # the tissue is there, only the image is lost
    z, dx, dy = stats["shifted_sections"][0]
    shifted = np.roll(raw[:, :, z], (-dx, -dy), axis=(0, 1))[10:-10, 10:-10]
    neighbour = raw[:, :, z - 1][10:-10, 10:-10] if z - 1 not in stats["missing_sections"] else raw[:, :, z + 1][10:-10, 10:-10]
    assert np.corrcoef(shifted.ravel(), neighbour.ravel())[0, 1] > np.corrcoef(raw[:, :, z][10:-10, 10:-10].ravel(), neighbour.ravel())[0, 1]


def test_noise_level_zero_gives_a_cleaner_image(tmp_path):
    _, clean = _small(tmp_path, "clean", noise=0.0, artefacts=False)
    _, noisy = _small(tmp_path, "noisy", noise=2.0, artefacts=False)
    c, n = _read(clean / "raw").astype(float), _read(noisy / "raw").astype(float)
    assert np.array_equal(_read(clean / "truth/cells"), _read(noisy / "truth/cells"))
    assert np.abs(np.diff(n, axis=0)).mean() > 1.5 * np.abs(np.diff(c, axis=0)).mean()


# -- command line, baselines, picture ----------------------------------------------------


def test_cli_synth_writes_a_tissue_and_prints_a_summary(tmp_path, capsys):
    main(["synth", str(tmp_path / "t"), "--shape", "64,64,32", "--seed", "2", "--chunk-size", "64,64,32"])
    printed = capsys.readouterr().out
    assert "cells:" in printed and "synapses:" in printed and "membranes" in printed
    assert (tmp_path / "t" / "truth" / "stats.json").exists()
    assert (tmp_path / "t" / "syconn.toml").exists()
    assert CloudVolume(to_cloudpath(tmp_path / "t" / "raw"), progress=False).volume_size.tolist() == [64, 64, 32]


def test_synth_refuses_a_folder_holding_something_else_and_replaces_an_old_tissue(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit) as err:
        main(["synth", str(tmp_path / "data"), "--shape", "32,32,16"])
    assert err.value.code == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"
    _small(tmp_path, "t", seed=1)
    first = sorted(p.name for p in (tmp_path / "t" / "skeletons").iterdir())
    _small(tmp_path, "t", seed=2)
    second = sorted(p.name for p in (tmp_path / "t" / "skeletons").iterdir())
    assert set(second) == {f"cell_{i}.k.zip" for i in pd.read_csv(tmp_path / "t" / "truth" / "cells.csv").query("traced == 1").id}
    assert first != second


def test_cli_rejects_a_malformed_shape(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["synth", str(tmp_path / "t"), "--shape", "64,64"])
    assert err.value.code != 0
    assert "X,Y,Z" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_trivial_baselines_score_clearly_below_the_pipeline_targets(synth_tissue):
    b = trivial_baselines(synth_tissue)
    assert b["every_contact_is_synapse"]["precision"] <= 0.5
    assert b["every_contact_is_synapse"]["f1"] < PIPELINE_TARGETS["synapse_f1"] - 0.15
    assert b["random_direction"]["direction_accuracy"] < PIPELINE_TARGETS["direction_accuracy"] - 0.15
    assert b["majority_compartment"]["node_accuracy"] < PIPELINE_TARGETS["node_accuracy"]
    assert b["majority_cell_type"]["cell_type_accuracy"] < PIPELINE_TARGETS["cell_type_accuracy"]


def test_montage_is_a_png_of_raw_sections_with_outlines(synth_tissue, tmp_path):
    from PIL import Image

    png = make_montage(synth_tissue, tmp_path / "m.png", sections=[30, 60], size_vx=128)
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert img.shape[0] > 300 and img.shape[1] > 300
    yellow = (img[..., 0] > 200) & (img[..., 1] > 180) & (img[..., 2] < 80)
    grey = (img[..., 0] == img[..., 1]) & (img[..., 1] == img[..., 2]) & (img[..., 0] < 240)
    assert yellow.sum() > 100  # cell outlines drawn
    assert grey.sum() > 0.25 * img.shape[0] * img.shape[1]  # the plain EM panels
