"""Myelin in the synthetic tissue (opt-in): sheaths in the raw EM, `truth/myelin`, the `myelinated`
node flag, nodes of Ranvier, and default tissues left byte-identical."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from cloudvolume import CloudVolume
from scipy.ndimage import binary_dilation

from syconn_ng.cli import main
from syconn_ng.io.annotation import read_annotation
from syconn_ng.layers import to_cloudpath
from syconn_ng.synth.generate import LAYERS, generate_tissue

MYELIN_SHAPE, MYELIN_SEED = (128, 128, 64), 1  # a seed whose volume shows two nodes of Ranvier
VOXEL_NM = np.array([10.0, 10.0, 20.0])

# Digests (first 16 hex of sha256) of the decoded layers and the truth tables of default tissues,
# taken with the generator as it was before myelin existed; the tissue generator is deterministic.
# contacts.csv is compared by value (DEFAULT_CONTACTS): its centres are float means written to 0.01 voxel,
# whose last digit follows numpy's summation order, so neither its bytes nor a rounding of them are stable.
DEFAULT_DIGESTS = {
    ((64, 64, 32), 5): {
        "raw": "7fb5bdc6de899b9b", "truth/cells": "101b1f903d0337a0", "truth/barrier": "ed2a39c25d219e26",
        "truth/mi": "acfe284d47cac1c1", "truth/vc": "30e14955ebf13522", "truth/sj": "30e14955ebf13522",
        "truth/organelles": "711bf3180e96ef14", "cells.csv": "038fdc16e2b35f3a",
        "nodes.csv": "5b54603be8ed4373", "organelles.csv": "6a5267908b47b95d", "synapses.csv": "51fa0d4f288cf1d5",
    },
    ((96, 96, 48), 3): {
        "raw": "f54a3f0751ef0f32", "truth/cells": "f8aa986425da64b6", "truth/barrier": "c7c0a4580191f3d5",
        "truth/mi": "512d1d56e02377b0", "truth/vc": "12913acbe970f83c", "truth/sj": "4b0b67fb69076e9f",
        "truth/organelles": "f83746e15f951434", "cells.csv": "d7d0ff4f28a3efdd",
        "nodes.csv": "59ffaf072637935e", "organelles.csv": "5856ba1c768445fc", "synapses.csv": "c5a3b1f804ce99d7",
    },
}
# (cell_a, cell_b, x, y, z, compartment_b) of the same tissues' truth/contacts.csv, before myelin existed
DEFAULT_CONTACTS = {
    ((64, 64, 32), 5): [],
    ((96, 96, 48), 3): [
        (38537, 22753, 56.15, 81.31, 39.50, "dendrite"), (14898, 11483, 45.92, 40.80, 24.94, "soma"),
        (30930, 11483, 76.32, 82.95, 18.80, "dendrite"), (26529, 22753, 9.61, 93.26, 38.38, "dendrite"),
        (14898, 11483, 54.94, 7.24, 22.68, "soma"),
    ],
}


def _read(path):
    a = np.asarray(CloudVolume(to_cloudpath(path), progress=False)[:, :, :])
    return a[..., 0] if a.shape[-1] == 1 else a


def _digests(out) -> dict[str, str]:
    h = {name: hashlib.sha256(np.ascontiguousarray(_read(out / name)).tobytes()).hexdigest()[:16] for name in LAYERS}
    h.update({p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in sorted((out / "truth").glob("*.csv"))
              if p.name != "contacts.csv"})
    return h


@pytest.fixture(scope="module")
def myelin_tissue(tmp_path_factory):
    out = tmp_path_factory.mktemp("myelin") / "t"
    stats = generate_tissue(out, shape=MYELIN_SHAPE, seed=MYELIN_SEED, chunk_size=(64, 64, 32), myelin=True)
    a = {name: _read(out / name) for name in ("raw", "truth/myelin", "truth/barrier", "truth/cells", "truth/vc", "truth/sj")}
    tables = {name: pd.read_csv(out / "truth" / f"{name}.csv") for name in ("cells", "nodes")}
    return out, stats, a, tables


def _gap_nodes(out, nodes, max_gap_nm=500.0):
    """Unflagged axon nodes with flagged nodes on two sides within `max_gap_nm` of skeleton path:
    where the tracer crossed a node of Ranvier (bare stretches between internodes are >= 800 nm)."""
    flag = dict(zip(nodes.node, nodes.myelinated))
    comp = dict(zip(nodes.node, nodes.compartment))
    found = []
    for cid in sorted(nodes[nodes.myelinated == 1].cell.unique()):
        tree = read_annotation(out / "skeletons" / f"cell_{cid}.k.zip").trees[0]
        pos = {n.id: np.array([n.x, n.y, n.z]) * VOXEL_NM for n in tree.nodes}
        nb = {n.id: [] for n in tree.nodes}
        for a, b in tree.edges:
            nb[a].append(b)
            nb[b].append(a)
        for u in nb:
            if flag[u] or comp[u] != "axon":
                continue
            sides = 0
            for first in nb[u]:
                stack, seen, hit = [(first, np.linalg.norm(pos[first] - pos[u]))], {u}, False
                while stack and not hit:
                    v, d = stack.pop()
                    if v in seen or d > max_gap_nm:
                        continue
                    seen.add(v)
                    hit = bool(flag[v])
                    stack.extend((w, d + np.linalg.norm(pos[w] - pos[v])) for w in nb[v])
                sides += hit
            if sides >= 2:
                found.append((cid, u))
    return found


def _around(mask, x, y, z, r):
    """`mask` in a box of half-size r voxels in x and y, r // 2 in z (20 nm sections) around (x, y, z)."""
    return mask[max(x - r, 0):x + r + 1, max(y - r, 0):y + r + 1, max(z - r // 2, 0):z + r // 2 + 1]


# -- default tissues stay as the bundled models were trained on ----------------------------


@pytest.mark.parametrize("shape,seed", list(DEFAULT_DIGESTS))
def test_default_tissue_is_byte_identical_to_the_tissue_before_myelin(tmp_path, shape, seed):
    out = tmp_path / "t"
    stats = generate_tissue(out, shape=shape, seed=seed, chunk_size=shape)
    assert _digests(out) == DEFAULT_DIGESTS[(shape, seed)]
    contacts = pd.read_csv(out / "truth" / "contacts.csv")
    expected = DEFAULT_CONTACTS[(shape, seed)]
    assert [(int(r.cell_a), int(r.cell_b), r.compartment_b) for r in contacts.itertuples()] == [(a, b, c) for a, b, *_, c in expected]
    assert np.allclose(contacts[["x", "y", "z"]].to_numpy(float).reshape(-1, 3), np.array([e[2:5] for e in expected], float).reshape(-1, 3), atol=0.02)
    assert not (out / "truth" / "myelin").exists() and "myelin" not in stats
    assert "myelinated" not in pd.read_csv(out / "truth" / "nodes.csv").columns


def test_cli_myelin_with_no_myelinated_type_gives_the_default_tissue_and_an_empty_layer(tmp_path, capsys):
    out = tmp_path / "t"
    main(["synth", str(out), "--shape", "64,64,32", "--seed", "5", "--chunk-size", "64,64,32", "--myelin",
          "--myelin-fraction", "EA=0", "--myelin-fraction", "INT=0"])
    assert "myelin: 0.0 %" in capsys.readouterr().out
    digests = _digests(out)
    assert {k: v for k, v in digests.items() if k != "nodes.csv"} == {
        k: v for k, v in DEFAULT_DIGESTS[((64, 64, 32), 5)].items() if k != "nodes.csv"}
    assert not _read(out / "truth" / "myelin").any()
    nodes = pd.read_csv(out / "truth" / "nodes.csv")
    assert (nodes.myelinated == 0).all()


def test_cli_rejects_myelin_fractions_for_unmyelinated_types_or_without_myelin(tmp_path, capsys):
    for args, words in ((["--myelin", "--myelin-fraction", "MSN=0.5"], "only"),
                        (["--myelin", "--myelin-fraction", "INT=two"], "TYPE=SHARE"),
                        (["--myelin-fraction", "INT=0.5"], "only with --myelin")):
        with pytest.raises(SystemExit) as err:
            main(["synth", str(tmp_path / "t"), "--shape", "32,32,16", *args])
        assert err.value.code == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


# -- with myelin -----------------------------------------------------------------------------


def test_myelin_layer_is_dark_barrier_outside_every_cell(myelin_tissue):
    out, stats, a, _ = myelin_tissue
    my, raw = a["truth/myelin"] > 0, a["raw"].astype(float)
    vol = CloudVolume(to_cloudpath(out / "truth" / "myelin"), progress=False)
    assert (vol.layer_type, str(vol.dtype), tuple(vol.volume_size)) == ("image", "uint8", MYELIN_SHAPE)
    assert set(np.unique(a["truth/myelin"])) == {0, 255}
    assert 0.01 < my.mean() < 0.15
    assert stats["myelin"]["myelin_fraction"] == pytest.approx(my.mean(), abs=1e-4)
    assert np.all(a["truth/barrier"][my] == 255)  # the sheath separates the axon from its neighbours
    assert not np.any(a["truth/cells"][my])  # and is glia, not part of the axon's cell
    assert not np.any(((a["truth/vc"] > 0) | (a["truth/sj"] > 0)) & my)
    membranes = (a["truth/barrier"] > 0) & ~my
    assert raw[my].mean() < raw[membranes].mean() - 15  # thick, darker than single membranes
    assert raw[my].mean() < raw[a["truth/cells"] > 0].mean() - 80


def test_only_ea_and_int_axons_are_wrapped_in_myelin(myelin_tissue):
    _, stats, a, t = myelin_tissue
    cells, types = a["truth/cells"], dict(zip(t["cells"].id, t["cells"].type))
    near = binary_dilation(a["truth/myelin"] > 0, iterations=2)
    surface = (cells > 0) & binary_dilation(cells == 0)
    ids, inv = np.unique(cells[surface], return_inverse=True)
    wrapped = ids[np.bincount(inv, weights=near[surface]) / np.bincount(inv) > 0.45]
    flagged = t["nodes"][t["nodes"].myelinated == 1]
    assert len(wrapped) >= 3
    assert {types[c] for c in wrapped} <= {"EA", "INT"}
    assert set(wrapped) <= set(flagged.cell)  # what the layer wraps, the table calls myelinated
    assert {types[c] for c in flagged.cell} <= {"EA", "INT"} and set(flagged.compartment) == {"axon"}
    by_type = stats["myelin"]["myelinated_cells_by_type"]
    assert by_type["EA"] >= 3 and by_type["MSN"] == by_type["GP"] == 0


def test_flagged_nodes_lie_in_myelin_and_unflagged_axon_nodes_do_not(myelin_tissue):
    _, _, a, t = myelin_tissue
    my, nodes = a["truth/myelin"] > 0, t["nodes"]
    axon = nodes[(nodes.compartment == "axon") & nodes.cell.isin(nodes[nodes.myelinated == 1].cell)]
    flagged, bare = axon[axon.myelinated == 1], axon[axon.myelinated == 0]
    assert len(flagged) >= 20 and len(bare) >= 5
    sheath_nearby = [_around(my, n.x, n.y, n.z, int(np.ceil(n.radius_vx)) + 2).any() for n in flagged.itertuples()]
    assert np.mean(sheath_nearby) >= 0.95
    assert np.mean([_around(my, n.x, n.y, n.z, 4).mean() for n in flagged.itertuples()]) > 0.05
    assert np.mean([_around(my, n.x, n.y, n.z, 4).mean() for n in bare.itertuples()]) < 0.02


def test_nodes_of_ranvier_are_short_bare_gaps_between_internodes(myelin_tissue):
    out, _, a, t = myelin_tissue
    gaps = _gap_nodes(out, t["nodes"])
    assert len({c for c, _ in gaps}) >= 2
    nodes = t["nodes"].set_index("node")
    for cid, u in gaps:
        n = nodes.loc[u]
        assert a["truth/cells"][n.x, n.y, n.z] == cid  # the bare axon itself, in its cell
        assert not _around(a["truth/myelin"] > 0, n.x, n.y, n.z, 3).any()


def test_same_seed_gives_the_same_myelin_whatever_the_chunking(tmp_path):
    kw = dict(shape=(96, 96, 48), seed=4, myelin=True)
    generate_tissue(tmp_path / "a", chunk_size=(96, 96, 48), **kw)
    stats = generate_tissue(tmp_path / "b", chunk_size=(48, 48, 24), workers=2, **kw)
    assert stats["myelin"]["myelin_fraction"] > 0
    for name in ("raw", "truth/myelin", "truth/cells", "truth/barrier"):
        assert np.array_equal(_read(tmp_path / "a" / name), _read(tmp_path / "b" / name)), name
    for table in ("nodes.csv", "synapses.csv", "stats.json"):
        assert (tmp_path / "a" / "truth" / table).read_text() == (tmp_path / "b" / "truth" / table).read_text()
    assert json.loads((tmp_path / "b" / "truth" / "stats.json").read_text())["myelin"]["g_ratio"] == 0.7
