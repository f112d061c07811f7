"""Downsampled scales (`syconn_ng.downsample`, `syconn-ng downsample`, the `scales` stage): real layers on disk,
written by real engine tasks on the local process pool, read back at every scale with CloudVolume and compared
with a reference computed here with numpy (floor of the mean / the most frequent id of each coarse voxel's block)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cloudvolume import CloudVolume

from syconn_ng.box import Box
from syconn_ng.downsample import DownsampleStage, DownsampleTarget, check_scales, plan_scales, rounds, scales_from_info, target_box
from syconn_ng.engine import LocalExecutor, run_stage
from syconn_ng.errors import InputError
from syconn_ng.layers import create_layer, layer_box, to_cloudpath, write_box

SHAPE = (70, 45, 33)  # odd on every axis: edge blocks everywhere
CHUNK = (16, 16, 8)
BIG_ID = np.uint64(2**60)  # ids beyond float precision: any averaging would change them
SENTINEL = np.iinfo(np.uint64).max


@pytest.fixture(scope="module")
def executor():
    ex = LocalExecutor(1)
    yield ex
    ex.close()


def _image(path: Path, seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).integers(0, 256, SHAPE + (3,), dtype=np.uint8)
    vol = create_layer(path, layer_type="image", dtype=np.uint8, voxel_size_nm=(10, 10, 20), shape=SHAPE, chunk_size=CHUNK, num_channels=3)
    write_box(vol, layer_box(vol), data)
    return data


def _segmentation(path: Path, seed: int = 1) -> np.ndarray:
    """Blobs of a few big ids (coarse random labels, upsampled, with a sprinkle of single-voxel noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 6, (18, 12, 9)).astype(np.uint64)
    labels = np.repeat(np.repeat(np.repeat(coarse, 4, 0), 4, 1), 4, 2)[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    noise = rng.random(SHAPE) < 0.1
    labels[noise] = rng.integers(0, 6, int(noise.sum()))
    labels = np.where(labels > 0, labels + BIG_ID, 0).astype(np.uint64)[..., None]
    vol = create_layer(path, layer_type="segmentation", dtype=np.uint64, voxel_size_nm=(10, 10, 20), shape=SHAPE, chunk_size=CHUNK)
    write_box(vol, layer_box(vol), labels)
    return labels


def _run(path: Path, executor, *, mips=-1, min_size_vx=8, max_task_bytes=2**28, force=False):
    stage = DownsampleStage(to_cloudpath(path), max_mips=mips, min_size_vx=min_size_vx, max_task_bytes=max_task_bytes)
    from syconn_ng.config import Config

    target = DownsampleTarget(Config(), path.parent / f"{path.name}.state")
    return run_stage(stage, target, force=force, progress=False, executor=executor)


def _mip(path: Path, mip: int) -> np.ndarray:
    return np.asarray(CloudVolume(to_cloudpath(path), mip=mip, progress=False)[:, :, :])


def _blocks(prev: np.ndarray, factor, fill) -> np.ndarray:
    """(X', Y', Z', C, fx*fy*fz): the children of each coarse voxel, `fill` where the block passes the edge."""
    f = np.asarray(factor)
    shape = -(-np.asarray(prev.shape[:3]) // f)
    padded = np.full(tuple(shape * f) + prev.shape[3:], fill, dtype=prev.dtype)
    padded[: prev.shape[0], : prev.shape[1], : prev.shape[2]] = prev
    r = padded.reshape(shape[0], f[0], shape[1], f[1], shape[2], f[2], prev.shape[3])
    return r.transpose(0, 2, 4, 6, 1, 3, 5).reshape(*shape, prev.shape[3], -1)


def _reference_mean(prev: np.ndarray, factor) -> np.ndarray:
    children = _blocks(prev.astype(np.float64), factor, np.nan)
    return np.floor(np.nanmean(children, axis=-1)).astype(np.uint8)


def _assert_mode(prev: np.ndarray, got: np.ndarray, factor) -> None:
    """Every coarse id is one of the most frequent ids among its (existing) children."""
    children = _blocks(prev, factor, SENTINEL)
    counts = (children[..., :, None] == children[..., None, :]).sum(-1)
    counts[children == SENTINEL] = 0
    chosen = (children == got[..., None]).sum(-1)
    assert np.all(got != SENTINEL)
    assert np.array_equal(chosen, counts.max(-1)), "a coarse voxel's id is not a most frequent id of its block"


def _chunk_files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")
            and ".state" not in str(p)}


# ---------------------------------------------------------------- the plan

def test_plan_halves_xy_until_voxels_are_isotropic_then_all_three_and_stops_at_one_chunk():
    plan = plan_scales((1024, 1024, 512), (0, 0, 0), (10, 10, 20), (128, 128, 64))
    assert [s.resolution_nm for s in plan] == [(10, 10, 20), (20, 20, 20), (40, 40, 40), (80, 80, 80), (160, 160, 160)]
    assert [s.factor for s in plan[1:]] == [(2, 2, 1)] + [(2, 2, 2)] * 3
    assert [s.size for s in plan][-1] == (64, 64, 64)  # fits one chunk: the last scale
    assert plan[1].chunk_size == (64, 64, 64)  # the mip-0 chunk's voxel budget, a cube in nm
    thin = plan_scales((4096, 4096, 100), (0, 0, 0), (4, 4, 40), (128, 128, 32), max_mips=5)
    assert [s.factor for s in thin[1:]] == [(2, 2, 1)] * 3 + [(2, 2, 2)] * 2  # 4 → 32 nm in x/y, then 64x64x80 ...
    assert len(plan_scales((1024, 1024, 512), (0, 0, 0), (10, 10, 20), (128, 128, 64), max_mips=2)) == 3
    assert len(plan_scales((100, 100, 50), (0, 0, 0), (10, 10, 20), (128, 128, 64))) == 1  # already one chunk
    odd_offset = plan_scales((1024, 1024, 512), (3, 0, 0), (10, 10, 20), (128, 128, 64))
    assert len(odd_offset) == 1  # an offset the factor does not divide: the grids would not line up


def test_rounds_keep_task_memory_bounded_and_blocks_aligned_to_every_chunk_grid_they_write():
    plan = plan_scales((1024, 1024, 512), (0, 0, 0), (10, 10, 20), (128, 128, 64))
    for itemsize in (1, 8):
        rs = rounds(plan, itemsize, 1)
        assert rs[0][0] == 0 and rs[-1][1] == len(plan) - 1
        assert all(a[1] == b[0] for a, b in zip(rs, rs[1:]))  # each round starts where the last ended
        for src, last, block in rs:
            assert np.prod(block) * itemsize <= 2**28
            for m in range(src + 1, last + 1):
                cum = np.prod([plan[k].factor for k in range(src + 1, m + 1)], axis=0)
                assert np.all(np.asarray(block) % (np.asarray(plan[m].chunk_size) * cum) == 0)
    assert rounds(plan, 8, 1)[0][1] < rounds(plan, 1, 1)[0][1]  # uint64 takes smaller steps than uint8


# ---------------------------------------------------------------- every scale, read back

def test_every_scale_of_a_3_channel_image_reads_back_as_the_floor_of_the_block_mean(tmp_path, executor):
    path = tmp_path / "organelles"
    data = _image(path)
    report = _run(path, executor)
    info = json.loads((path / "info").read_text())
    assert len(info["scales"]) == 5 and report.ran > 0
    check_scales(info, to_cloudpath(path))
    prev = data
    for mip, scale in enumerate(scales_from_info(info)[1:], start=1):
        got = _mip(path, mip)
        assert got.shape == scale.size + (3,) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, _reference_mean(prev, scale.factor), err_msg=f"mip {mip}")
        prev = got
    np.testing.assert_array_equal(_mip(path, 1), _reference_mean(data, (2, 2, 1)))  # mip 1 straight from the data


def test_every_scale_of_a_segmentation_keeps_a_most_frequent_id_never_a_mixture(tmp_path, executor):
    path = tmp_path / "cells"
    labels = _segmentation(path)
    _run(path, executor)
    info = json.loads((path / "info").read_text())
    assert all(s["encoding"] == "compressed_segmentation" for s in info["scales"])
    ids = set(np.unique(labels).tolist())
    prev = labels
    for mip, scale in enumerate(scales_from_info(info)[1:], start=1):
        got = _mip(path, mip)
        assert got.shape == scale.size + (1,) and got.dtype == np.uint64
        assert set(np.unique(got).tolist()) <= ids  # no averaged ids
        _assert_mode(prev, got, scale.factor)
        prev = got
    assert len(set(np.unique(_mip(path, 2)).tolist())) >= 4  # the blobs survive two scales


def test_one_task_and_many_small_tasks_in_several_rounds_write_identical_chunks(tmp_path, executor):
    for name, maker in (("img", _image), ("seg", _segmentation)):
        one, many = tmp_path / f"{name}_one", tmp_path / f"{name}_many"
        maker(one)
        shutil.copytree(one, many)
        r1 = _run(one, executor)
        r2 = _run(many, executor, max_task_bytes=2**12)  # blocks of a few chunks: seams would show
        info = json.loads((many / "info").read_text())
        assert r2.ran > 4 * r1.ran and len(rounds(scales_from_info(info), 1, 1, max_bytes=2**12)) > 1
        assert _chunk_files(one) == _chunk_files(many), name


def test_a_rerun_skips_finished_blocks_and_resumes_an_interrupted_run(tmp_path, executor):
    path = tmp_path / "img"
    _image(path)
    first = _run(path, executor, max_task_bytes=2**13)
    complete = _chunk_files(path)
    again = _run(path, executor, max_task_bytes=2**13)
    assert again.ran == 0 and again.skipped == first.ran
    # as a kill would leave it: two first-round tasks unfinished (no marker, chunks gone, a temporary file left)
    state = tmp_path / "img.state" / "downsample"
    scales = scales_from_info(json.loads((path / "info").read_text()))
    lost = sorted(state.glob("layer_mip0_*.json"))[:2]
    for marker in lost:
        marker.unlink()
        lo, hi = zip(*(map(int, r.split("-")) for r in marker.stem.removeprefix("layer_mip0_").split("_")))
        for chunk in target_box(scales, 0, 1, Box(lo, hi)).chunks(scales[1].chunk_size):
            (path / "20_20_20" / chunk.name()).unlink()
    (path / "20_20_20" / ".0-8_0-8_0-8.abc.tmp").write_bytes(b"partial")
    later_rounds = sum(1 for m in state.glob("*.json") if not m.name.startswith(("_", "layer_mip0_")))
    resumed = _run(path, executor, max_task_bytes=2**13)
    assert resumed.ran == len(lost) + later_rounds  # the lost tasks, then every later round (its input changed)
    assert _chunk_files(path) == complete
    assert not list(path.rglob("*.tmp"))
    forced = _run(path, executor, max_task_bytes=2**13, force=True)
    assert forced.ran == first.ran and _chunk_files(path) == complete


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("case", ["size", "offset", "resolution", "chunk off the grid"])
def test_a_layer_whose_scales_disagree_is_refused_naming_the_layer_and_the_scale(case, tmp_path, executor, capsys):
    from syconn_ng.cli import main

    path = tmp_path / "raw"
    _image(path)
    _run(path, executor, mips=2)
    info = json.loads((path / "info").read_text())
    if case == "size":
        info["scales"][2]["size"][0] += 1
    elif case == "offset":
        info["scales"][1]["voxel_offset"] = [1, 0, 0]
    elif case == "resolution":
        info["scales"][1]["resolution"] = [5, 5, 20]
    else:
        (path / info["scales"][1]["key"] / "3-11_0-8_0-8").write_bytes(b"x")
    (path / "info").write_text(json.dumps(info))
    with pytest.raises(InputError) as err:
        check_scales(info, to_cloudpath(path))
    assert str(path) in str(err.value) and "scales[" in str(err.value)
    with pytest.raises(SystemExit) as exit_info:
        main(["downsample", str(path), "--quiet"])
    assert exit_info.value.code == 2
    out = capsys.readouterr().err
    assert out.count("\n") == 1 and str(path) in out and "scales[" in out, out


# ---------------------------------------------------------------- the command and the pipeline stage

def test_cli_adds_scales_to_raw_em_resumes_and_leaves_existing_scales_alone(tmp_path, capsys):
    from syconn_ng.cli import main

    path = tmp_path / "raw"
    data = _image(path)
    main(["downsample", str(path), "--mips", "2", "--min-size", "8", "--workers", "1", "--quiet"])
    out = capsys.readouterr().out
    assert "3 scales (10_10_20, 20_20_20, 40_40_40)" in out and "already done" in out
    np.testing.assert_array_equal(_mip(path, 1), _reference_mean(data, (2, 2, 1)))
    main(["downsample", str(path), "--mips", "2", "--min-size", "8", "--workers", "1", "--quiet"])
    assert "0 task(s) run" in capsys.readouterr().out
    other = tmp_path / "other"  # scales made elsewhere: checked, kept
    shutil.copytree(path, other, ignore=shutil.ignore_patterns(".syconn-ng-state"))
    main(["downsample", str(other), "--quiet"])
    assert "already has 3 scales" in capsys.readouterr().out
    main(["downsample", "--help"])
    help_text = capsys.readouterr().out
    assert "--executor" in help_text and "segmentations take the most frequent id" in help_text


def test_scales_stage_downsamples_the_pipelines_layers_by_their_type(tmp_path, executor):
    from syconn_ng.analysis import Analysis
    from syconn_ng.config import Config, write_config
    from syconn_ng.stages import available, get_stage

    cfg = Config()
    cfg.chunking.chunk_size = list(CHUNK)
    cfg.scales.min_size_vx = 16
    write_config(cfg, tmp_path)
    data = _image(tmp_path / "layers" / "organelles")
    labels = _segmentation(tmp_path / "layers" / "cells")
    assert available()[-1] == "scales"
    report = run_stage(get_stage("scales"), Analysis.open(tmp_path), progress=False, executor=executor)
    assert report.ran > 0
    org, cells = _mip(tmp_path / "layers" / "organelles", 1), _mip(tmp_path / "layers" / "cells", 1)
    np.testing.assert_array_equal(org, _reference_mean(data, (2, 2, 1)))
    _assert_mode(labels, cells, (2, 2, 1))
    n = len(json.loads((tmp_path / "layers" / "cells" / "info").read_text())["scales"])
    assert n == len(plan_scales(SHAPE, (0, 0, 0), (10, 10, 20), CHUNK, min_size_vx=16)) > 2
    assert run_stage(get_stage("scales"), Analysis.open(tmp_path), progress=False, executor=executor).ran == 0
    cfg.scales.mips = 1  # a changed parameter rebuilds: now one scale each
    write_config(cfg, tmp_path)
    run_stage(get_stage("scales"), Analysis.open(tmp_path), progress=False, executor=executor)
    assert len(json.loads((tmp_path / "layers" / "cells" / "info").read_text())["scales"]) == 2
    assert not (tmp_path / "layers" / "cells" / "80_80_80").exists()  # the old scales' chunks are gone


def test_export_copies_every_scale_plain_and_masked(tmp_path, executor):
    from syconn_ng.export.volumes import copy_volume

    src = tmp_path / "cells"
    _segmentation(src)
    _run(src, executor, mips=2)
    keep = np.unique(_mip(src, 0))[1:3]
    plain, masked = tmp_path / "out_plain", tmp_path / "out_masked"
    copy_volume(to_cloudpath(src), plain)
    copy_volume(to_cloudpath(src), masked, keep_ids=keep)
    for mip in range(3):
        want = _mip(src, mip)
        np.testing.assert_array_equal(_mip(plain, mip), want)
        np.testing.assert_array_equal(_mip(masked, mip), np.where(np.isin(want, keep), want, 0))


def test_the_review_server_serves_every_scale_to_cloudvolume_over_http(tmp_path, executor):
    from serve_data import synthetic_analysis
    from syconn_ng.serve.app import ReviewServer

    ana = synthetic_analysis(tmp_path / "ana", n_cells=4, n_synapses=4)
    _segmentation(ana / "layers" / "cells")
    _run(ana / "layers" / "cells", executor, mips=3)
    srv = ReviewServer(ana, port=0).start()
    try:
        for mip in range(4):
            remote = CloudVolume(f"{srv.url}/layers/cells", mip=mip, parallel=1, progress=False)
            np.testing.assert_array_equal(np.asarray(remote[:, :, :]), _mip(ana / "layers" / "cells", mip), err_msg=f"mip {mip}")
    finally:
        srv.stop()


def test_export_refuses_a_layer_whose_info_lists_a_scale_it_does_not_have(tmp_path, executor):
    from syconn_ng.export.volumes import copy_volume

    src = tmp_path / "cells"
    _segmentation(src)
    _run(src, executor, mips=2)
    shutil.rmtree(src / "40_40_40")
    with pytest.raises(InputError, match=r"scales\[2\].*40_40_40/ is missing"):
        copy_volume(to_cloudpath(src), tmp_path / "out")
