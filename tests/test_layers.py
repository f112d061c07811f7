"""`syconn_ng.layers`: precomputed layers created, written chunk-atomically and read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cloudvolume import CloudVolume

from syconn_ng.box import Box
from syconn_ng.errors import InputError
from syconn_ng.layers import (
    atomic_write_bytes,
    atomic_write_text,
    create_layer,
    layer_box,
    open_layer,
    read_box,
    to_cloudpath,
    write_box,
)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_uint8_three_channel_image_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(96, 64, 40, 3), dtype=np.uint8)
    vol = create_layer(tmp_path / "img", layer_type="image", dtype=np.uint8, voxel_size_nm=(10, 10, 20),
                       shape=(96, 64, 40), chunk_size=(32, 32, 16), num_channels=3)
    write_box(vol, Box.from_shape((96, 64, 40)), data)  # ends at the bounds with partial z chunks
    back = CloudVolume(f"file://{tmp_path / 'img'}", progress=False)
    assert back.num_channels == 3 and list(back.resolution) == [10, 10, 20]
    np.testing.assert_array_equal(np.asarray(back[:, :, :]), data)
    np.testing.assert_array_equal(read_box(open_layer(tmp_path / "img"), Box((8, 8, 8), (40, 40, 30))), data[8:40, 8:40, 8:30])


def test_uint64_segmentation_round_trip_keeps_large_ids(tmp_path):
    rng = np.random.default_rng(1)
    ids = np.array([0, 3, 2**33 + 1, 2**63 + 5], dtype=np.uint64)
    data = ids[rng.integers(0, 4, size=(64, 64, 64))]
    vol = create_layer(tmp_path / "seg", layer_type="segmentation", dtype=np.uint64, voxel_size_nm=(8, 8, 8),
                       shape=(64, 64, 64), chunk_size=(32, 32, 32))
    assert vol.info["scales"][0]["encoding"] == "compressed_segmentation"
    write_box(vol, Box.from_shape((64, 64, 64)), data)
    back = CloudVolume(f"file://{tmp_path / 'seg'}", progress=False)
    assert back.layer_type == "segmentation"
    np.testing.assert_array_equal(np.asarray(back[:, :, :])[..., 0], data)


def test_halo_reads_outside_the_layer_are_zero_padded(tmp_path):
    data = np.full((32, 32, 32), 9, np.uint8)
    vol = create_layer(tmp_path / "l", layer_type="image", dtype=np.uint8, voxel_size_nm=(1, 1, 1),
                       shape=(32, 32, 32), chunk_size=(16, 16, 16))
    write_box(vol, Box.from_shape((32, 32, 32)), data)
    out = read_box(vol, Box((-4, -4, -4), (20, 36, 8)))
    assert out.shape == (24, 40, 12, 1)
    assert (out[4:, 4:36, 4:] == 9).all()
    assert (out[:4] == 0).all() and (out[:, :4] == 0).all() and (out[:, 36:] == 0).all() and (out[:, :, :4] == 0).all()
    assert not read_box(vol, Box((100, 100, 100), (104, 104, 104))).any()


def test_layer_with_voxel_offset_reads_and_writes_in_its_own_grid(tmp_path):
    vol = create_layer(tmp_path / "o", layer_type="image", dtype=np.uint8, voxel_size_nm=(1, 1, 1),
                       shape=(32, 32, 32), chunk_size=(16, 16, 16), voxel_offset=(100, 0, 0))
    assert layer_box(vol) == Box((100, 0, 0), (132, 32, 32))
    write_box(vol, Box((116, 0, 0), (132, 16, 16)), np.full((16, 16, 16), 5, np.uint8))
    assert (tmp_path / "o" / vol.key / "116-132_0-16_0-16").is_file()
    assert (read_box(vol, Box((116, 0, 0), (132, 16, 16))) == 5).all()


def test_unaligned_or_mismatched_write_is_refused(tmp_path):
    vol = create_layer(tmp_path / "l", layer_type="image", dtype=np.uint8, voxel_size_nm=(1, 1, 1),
                       shape=(64, 64, 64), chunk_size=(32, 32, 32))
    with pytest.raises(ValueError, match="not aligned"):
        write_box(vol, Box((8, 0, 0), (40, 32, 32)), np.zeros((32, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        write_box(vol, Box((0, 0, 0), (32, 32, 32)), np.zeros((16, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        write_box(vol, Box((0, 0, 0), (32, 32, 32)), np.zeros((32, 32, 32), np.uint16))
    assert not (tmp_path / "l" / vol.key).exists() or not any((tmp_path / "l" / vol.key).iterdir())


def test_missing_chunk_is_an_input_error_naming_the_layer(tmp_path):
    vol = create_layer(tmp_path / "holes", layer_type="image", dtype=np.uint8, voxel_size_nm=(1, 1, 1),
                       shape=(64, 32, 32), chunk_size=(32, 32, 32))
    write_box(vol, Box((0, 0, 0), (32, 32, 32)), np.ones((32, 32, 32), np.uint8))
    with pytest.raises(InputError, match="missing chunk") as err:
        read_box(open_layer(tmp_path / "holes"), Box((0, 0, 0), (64, 32, 32)))
    assert str(tmp_path / "holes") in str(err.value) and "32-64_0-32_0-32" in str(err.value)
    filled = read_box(open_layer(tmp_path / "holes", fill_missing=True), Box((0, 0, 0), (64, 32, 32)))
    assert filled[:32].all() and not filled[32:].any()


def test_open_layer_on_a_folder_without_info_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not a precomputed layer") as err:
        open_layer(tmp_path / "nothing")
    assert str(tmp_path / "nothing") in str(err.value)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "info").write_text("{not json")
    with pytest.raises(InputError, match="info"):
        open_layer(tmp_path / "broken")


def test_writes_leave_no_gz_and_no_temporary_files(tmp_path):
    for kind, dtype in (("image", np.uint8), ("segmentation", np.uint64)):
        vol = create_layer(tmp_path / kind, layer_type=kind, dtype=dtype, voxel_size_nm=(1, 1, 1),
                           shape=(64, 64, 32), chunk_size=(32, 32, 32))
        write_box(vol, Box.from_shape((64, 64, 32)), np.ones((64, 64, 32), dtype))
        write_box(vol, Box.from_shape((64, 64, 32)), np.full((64, 64, 32), 2, dtype))  # overwrite in place
    files = _files(tmp_path)
    assert "image/1_1_1/32-64_32-64_0-32" in files and "segmentation/1_1_1/0-32_0-32_0-32" in files
    assert not [f for f in files if f.endswith(".gz") or ".tmp" in f or Path(f).name.startswith(".")]
    assert (read_box(open_layer(tmp_path / "segmentation"), Box.from_shape((64, 64, 32))) == 2).all()


def test_write_box_at_a_coarser_mip(tmp_path):
    vol = create_layer(tmp_path / "m", layer_type="segmentation", dtype=np.uint64, voxel_size_nm=(4, 4, 40),
                       shape=(64, 64, 16), chunk_size=(32, 32, 16))
    vol.add_scale((2, 2, 1), chunk_size=(16, 16, 16))
    vol.commit_info()
    vol.mip = 1
    data = np.arange(32 * 32 * 16, dtype=np.uint64).reshape(32, 32, 16) + 2**40
    write_box(vol, Box.from_shape((32, 32, 16)), data)
    back = CloudVolume(f"file://{tmp_path / 'm'}", mip=1, progress=False)
    assert list(back.resolution) == [8, 8, 40]
    np.testing.assert_array_equal(np.asarray(back[:, :, :])[..., 0], data)
    assert (tmp_path / "m" / "8_8_40" / "16-32_16-32_0-16").is_file()


def test_atomic_write_replaces_whole_files_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")
    assert target.read_bytes() == b"two" and _files(tmp_path) == ["f.bin"]


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_to_cloudpath_makes_local_paths_absolute_file_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert to_cloudpath("layers/raw") == f"file://{tmp_path}/layers/raw"
    assert to_cloudpath("precomputed://gs://bucket/raw") == "gs://bucket/raw"
    assert to_cloudpath("file:///abs/raw") == "file:///abs/raw"
