"""`syconn-ng import-knossos`: KNOSSOS cube datasets of every config flavour → precomputed layers.

The datasets are written by `tests/knossos_cubes.py` in the real cube layout; the layers are
read back with CloudVolume and compared voxel for voxel with the arrays put into the cubes.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cloudvolume import CloudVolume

from syconn_ng.commands.import_knossos import import_dataset
from syconn_ng.errors import InputError, SyconnError
from syconn_ng.io.knossos_dataset import decode_cube, read_dataset_config

sys.path.insert(0, str(Path(__file__).parent))
from knossos_cubes import (  # noqa: E402
    cube_file,
    encode_cube,
    expected,
    make_dataset,
    write_k_toml,
    write_knossos_conf,
    write_pyk_conf,
)

CHUNK = (128, 128, 64)
SYCONN_NG = Path(sys.executable).parent / "syconn-ng"


def read_layer(path, mip=0) -> tuple[np.ndarray, CloudVolume]:
    vol = CloudVolume(f"file://{path}", mip=mip, fill_missing=False, progress=False)
    return np.asarray(vol[:, :, :])[..., 0], vol


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    """A knossos.conf dataset with raw + overlay cubes at mag 1 and 2, converted once."""
    tmp = tmp_path_factory.mktemp("legacy")
    ds = make_dataset(tmp / "ds", "knossos.conf")
    layers = import_dataset(ds.config, tmp / "out", chunk_size=CHUNK, progress=False)
    return ds, tmp / "out", layers


# ---------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------


def test_legacy_conf_raw_cubes_arrive_voxel_exact_at_every_mag(legacy):
    ds, out, _ = legacy
    for mip, mag in enumerate((1, 2)):
        got, vol = read_layer(out / "raw", mip)
        assert vol.dtype == np.uint8 and vol.layer_type == "image"
        np.testing.assert_array_equal(got, expected(ds, "raw", mag))


def test_mag2_scale_has_twice_the_voxel_size_and_half_the_extent(legacy):
    ds, out, _ = legacy
    _, vol = read_layer(out / "raw", 1)
    assert list(vol.resolution) == [2 * v for v in ds.voxel_size_nm]
    assert list(vol.volume_size) == [128, 128, 64]
    assert list(vol.voxel_offset) == [0, 0, 0]
    _, vol0 = read_layer(out / "raw", 0)
    assert list(vol0.resolution) == list(ds.voxel_size_nm) and list(vol0.volume_size) == [256, 256, 128]


def test_missing_cube_reads_as_zeros(legacy):
    ds, out, layers = legacy
    got, _ = read_layer(out / "raw", 0)
    assert ds.raw[1][128:256, 0:128, :].any()  # the cube had data before it went missing
    assert not got[128:256, 0:128, :].any()
    assert got[0:128, 0:128, :].any()
    assert layers[0].cubes_found == 4 and layers[0].cubes_expected == 5


def test_overlay_cubes_become_uint64_segmentation_with_ids_above_2_32(legacy):
    ds, out, _ = legacy
    for mip, mag in enumerate((1, 2)):
        got, vol = read_layer(out / "seg", mip)
        assert vol.layer_type == "segmentation" and vol.dtype == np.uint64
        assert vol.encoding == "compressed_segmentation"
        np.testing.assert_array_equal(got, expected(ds, "seg", mag))
    got, _ = read_layer(out / "seg", 0)
    assert got.max() > 2**63 and np.any((got > 2**32) & (got < 2**63))


def test_output_has_no_gz_or_temporary_files(legacy):
    _, out, _ = legacy
    names = [p.name for p in out.rglob("*") if p.is_file()]
    assert "0-128_0-128_0-64" in names
    assert not [n for n in names if n.endswith((".gz", ".tmp"))]


@pytest.mark.parametrize("flavour, ext", [("k.toml", ".png"), ("pyk.conf", ".jpg"), ("knossos.conf", ".png"), ("k.toml", ".jpg")])
def test_every_config_flavour_and_cube_encoding_converts_voxel_exact(tmp_path, flavour, ext):
    ds = make_dataset(tmp_path / "ds", flavour, ext=ext, with_seg=flavour == "k.toml")
    layers = import_dataset(ds.config, tmp_path / "out", chunk_size=CHUNK, progress=False)
    assert [la.name for la in layers] == (["raw", "seg"] if ds.seg else ["raw"])
    assert (tmp_path / "out" / "seg").exists() == bool(ds.seg)
    for mip, mag in enumerate((1, 2)):
        got, vol = read_layer(tmp_path / "out" / "raw", mip)
        np.testing.assert_array_equal(got, expected(ds, "raw", mag))
        factor = (2, 2, 1) if flavour == "pyk.conf" and mag == 2 else (mag,) * 3
        assert list(vol.resolution) == [v * f for v, f in zip(ds.voxel_size_nm, factor)]


def test_pyk_conf_ordinal_mag2_is_anisotropic(tmp_path):
    ds = make_dataset(tmp_path / "ds", "pyk.conf", with_seg=False)
    import_dataset(ds.config, tmp_path / "out", chunk_size=CHUNK, progress=False)
    got, vol = read_layer(tmp_path / "out" / "raw", 1)
    assert list(vol.resolution) == [20, 20, 25] and list(vol.volume_size) == [128, 128, 128]
    np.testing.assert_array_equal(got, ds.raw[2])


def test_chunk_size_that_does_not_divide_the_cubes_still_converts_exactly(tmp_path):
    ds = make_dataset(tmp_path / "ds", "k.toml")
    import_dataset(ds.config, tmp_path / "out", chunk_size=(96, 80, 48), progress=False)
    for kind in ("raw", "seg"):
        for mip, mag in enumerate((1, 2)):
            got, vol = read_layer(tmp_path / "out" / kind, mip)
            assert list(vol.chunk_size) == [96, 80, 48]
            np.testing.assert_array_equal(got, expected(ds, kind, mag))


def test_rerun_rewrites_identical_chunks_and_repairs_a_deleted_one(tmp_path):
    ds = make_dataset(tmp_path / "ds", "knossos.conf")
    out = tmp_path / "out"
    import_dataset(ds.config, out, chunk_size=CHUNK, progress=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "seg" / "10_10_25" / "0-128_0-128_0-64").unlink()
    import_dataset(ds.config, out, chunk_size=CHUNK, progress=False)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_destination_holding_a_different_layer_is_refused(tmp_path):
    ds = make_dataset(tmp_path / "ds", "knossos.conf", with_seg=False)
    import_dataset(ds.config, tmp_path / "out", chunk_size=CHUNK, progress=False)
    with pytest.raises(InputError, match="different layer") as err:
        import_dataset(ds.config, tmp_path / "out", chunk_size=(64, 64, 64), progress=False)
    assert "raw/info" in str(err.value)


def test_dataset_folder_is_accepted_in_place_of_its_config(tmp_path):
    ds = make_dataset(tmp_path / "ds", "knossos.conf", with_seg=False)
    layers = import_dataset(tmp_path / "ds", tmp_path / "out", chunk_size=CHUNK, progress=False)
    assert layers[0].source.config == ds.config


# ---------------------------------------------------------------------------------------
# Config parsing and cube decoding
# ---------------------------------------------------------------------------------------


def test_cube_files_are_x_fastest():
    cube = np.arange(128**3, dtype=np.uint64).reshape(128, 128, 128, order="F")  # value = x + 128 y + 128² z
    got = decode_cube(encode_cube(cube, ".seg.sz.zip"), ".seg.sz.zip", (128, 128, 128))
    assert got[5, 0, 0] == 5 and got[0, 5, 0] == 5 * 128 and got[0, 0, 5] == 5 * 128**2
    raw = np.zeros((128, 128, 128), np.uint8)
    raw[3, 1, 2] = 200
    assert decode_cube(encode_cube(raw, ".raw"), ".raw", (128,) * 3)[3, 1, 2] == 200


@pytest.mark.parametrize("ext", [".raw", ".png", ".j2k", ".seg", ".seg.sz", ".seg.sz.zip"])
def test_every_cube_encoding_decodes_losslessly(ext):
    rng = np.random.default_rng(3)
    if ext.startswith(".seg"):
        cube = rng.integers(0, 2**64, size=(128, 128, 128), dtype=np.uint64)
    else:
        cube = rng.integers(0, 256, size=(128, 128, 128), dtype=np.uint8)
    np.testing.assert_array_equal(decode_cube(encode_cube(cube, ext), ext, (128, 128, 128)), cube)


def test_legacy_conf_in_mag_folder_strips_mag_suffix_and_honours_magnification(tmp_path):
    conf = write_knossos_conf(tmp_path / "mag2" / "knossos.conf", "j0126", (128, 64, 32), (20, 20, 50), magnification=2)
    (layer,) = read_dataset_config(conf)
    assert layer.root == tmp_path and layer.name == "j0126" and layer.extension == ".raw"
    assert [m.folder for m in layer.mags] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert layer.mags[0].voxel_size_nm == (10.0, 10.0, 25.0) and layer.mags[0].shape == (256, 128, 64)
    assert layer.mags[1].voxel_size_nm == (20.0, 20.0, 50.0) and layer.mags[1].shape == (128, 64, 32)


def test_pyk_conf_with_trailing_commas_and_non_integer_mag_factors(tmp_path):
    # Shaped like PyKNOSSOS' own wanner16.conf: mag 3 goes from 25 to 37.008 nm in z.
    conf = write_pyk_conf(tmp_path / "w.pyk.conf", "E085L01", (13440, 14976, 5504),
                          [(9.252, 9.252, 25), (18.504, 18.504, 25), (37.008, 37.008, 37.008)], ext=".jpg")
    (layer,) = read_dataset_config(conf)
    assert [m.folder for m in layer.mags] == [1, 2, 3]  # ordinal mag folders
    assert [m.shape for m in layer.mags] == [(13440, 14976, 5504), (6720, 7488, 5504), (3360, 3744, 3719)]


def test_pyk_conf_file_type_decides_the_extension_when_base_ext_is_absent(tmp_path):
    conf = write_pyk_conf(tmp_path / "k.pyk.conf", "k", (256, 256, 128), [(4, 4, 30)], file_type=2)
    assert read_dataset_config(conf)[0].extension == ".png"


def test_k_toml_server_format_decides_power_of_two_or_ordinal_mag_folders(tmp_path):
    sizes = [(4, 4, 40), (8, 8, 40), (16, 16, 40)]
    pow2 = write_k_toml(tmp_path / "a.k.toml", "a", (1024, 1024, 64), sizes, server_format="knossos")
    ordinal = write_k_toml(tmp_path / "b.k.toml", "b", (1024, 1024, 64), sizes, server_format=None)
    assert [m.folder for m in read_dataset_config(pow2)[0].mags] == [1, 2, 4]
    assert [m.folder for m in read_dataset_config(ordinal)[0].mags] == [1, 2, 3]
    assert read_dataset_config(pow2)[0].mags[2].shape == (256, 256, 64)


def test_k_toml_with_two_image_extensions_uses_the_first_that_has_cubes(tmp_path):
    ds = make_dataset(tmp_path / "ds", "k.toml", ext=".png", with_seg=False)
    write_k_toml(ds.config, "testds", (256, 256, 128), [(10, 10, 25), (20, 20, 50)], exts=(".jpg", ".png"))
    layers = import_dataset(ds.config, tmp_path / "out", chunk_size=CHUNK, progress=False)
    assert layers[0].source.extension == ".png"
    got, _ = read_layer(tmp_path / "out" / "raw")
    np.testing.assert_array_equal(got, expected(ds, "raw", 1))


# ---------------------------------------------------------------------------------------
# Bad input: one SyconnError naming the file
# ---------------------------------------------------------------------------------------


def _raises(config, out, *fragments):
    with pytest.raises(SyconnError) as err:
        import_dataset(config, out, chunk_size=CHUNK, progress=False)
    msg = str(err.value)
    for f in fragments:
        assert str(f) in msg, msg
    return msg


def test_truncated_raw_cube_names_the_cube_and_the_byte_counts(tmp_path):
    ds = make_dataset(tmp_path / "ds", "knossos.conf", with_seg=False)
    cube = cube_file(ds.root, "testds", 1, (0, 1, 0), ".raw")
    cube.write_bytes(cube.read_bytes()[:1000])
    _raises(ds.config, tmp_path / "out", cube, "2097152", "1000")
    assert not (tmp_path / "out" / "raw" / "10_10_25").exists()  # found before any chunk was written


def test_corrupt_snappy_stream_names_the_overlay_cube(tmp_path):
    ds = make_dataset(tmp_path / "ds", "knossos.conf")
    cube = cube_file(ds.root, "testds", 1, (1, 1, 0), ".seg.sz.zip")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.seg.sz", b"\xff\xff\xff\xff\x0fnot snappy at all")
    cube.write_bytes(buf.getvalue())
    _raises(ds.config, tmp_path / "out", cube, "snappy")


def test_overlay_cube_that_is_not_a_zip_names_the_cube(tmp_path):
    ds = make_dataset(tmp_path / "ds", "knossos.conf")
    cube = cube_file(ds.root, "testds", 2, (0, 0, 0), ".seg.sz.zip")
    cube.write_bytes(b"PK but not really a zip")
    _raises(ds.config, tmp_path / "out", cube, "not a zip")


def test_image_cube_of_wrong_size_names_the_cube_and_the_sizes(tmp_path):
    ds = make_dataset(tmp_path / "ds", "knossos.conf", ext=".png", with_seg=False)
    cube = cube_file(ds.root, "testds", 1, (0, 0, 0), ".png")
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 128), np.uint8)).save(buf, format="PNG")
    cube.write_bytes(buf.getvalue())
    _raises(ds.config, tmp_path / "out", cube, "128×16384", "128×64")


def test_no_cubes_at_all_names_the_config_and_the_expected_file(tmp_path):
    conf = write_knossos_conf(tmp_path / "ds" / "mag1" / "knossos.conf", "empty", (256, 256, 128), (10, 10, 25))
    _raises(conf, tmp_path / "out", conf, "no cubes found", "empty_mag1_x0000_y0000_z0000.raw")


def test_conf_naming_a_missing_dataset_folder_names_the_key(tmp_path):
    conf = write_k_toml(tmp_path / "a.k.toml", "a", (256, 256, 128), [(10, 10, 25)], url="does/not/exist")
    _raises(conf, tmp_path / "out", conf, "URL", "does/not/exist")
    pyk = write_pyk_conf(tmp_path / "b.pyk.conf", "b", (256, 256, 128), [(10, 10, 25)], base_url="/nowhere/at/all")
    _raises(pyk, tmp_path / "out", pyk, "_BaseURL", "/nowhere/at/all")


def test_remote_dataset_url_is_refused_with_the_key(tmp_path):
    conf = write_k_toml(tmp_path / "a.k.toml", "a", (256, 256, 128), [(10, 10, 25)], url="https://example.org/a/")
    _raises(conf, tmp_path / "out", conf, "URL", "remote")


def test_unparseable_legacy_conf_names_the_line_and_key(tmp_path):
    conf = tmp_path / "mag1" / "knossos.conf"
    conf.parent.mkdir()
    conf.write_text('experiment name "x";\nboundary x 256;\nboundary y twelve;\nboundary z 5;\n')
    _raises(conf, tmp_path / "out", f"{conf}:3", "boundary y", "twelve")
    conf.write_text('experiment name "x";\nboundary x 256\n')
    _raises(conf, tmp_path / "out", f"{conf}:2", "';'")
    conf.write_text('experiment name "x";\nboundary x 256;\nboundary y 256;\nboundary z 5;\nscale x 1;\nscale y 1;\n')
    _raises(conf, tmp_path / "out", conf, "scale z")


def test_unparseable_toml_and_pyk_conf_name_the_problem(tmp_path):
    bad = tmp_path / "a.k.toml"
    bad.write_text('[[Layer]]\nName = "a"\nExtent_px = 1 2\n')
    _raises(bad, tmp_path / "out", bad, "line 3")
    wrong = write_k_toml(tmp_path / "b.k.toml", "b", (256, 256, 128), [(10, 10, 25)])
    wrong.write_text(wrong.read_text().replace("Extent_px = [256, 256, 128]", 'Extent_px = [256, "x", 128]'))
    _raises(wrong, tmp_path / "out", wrong, "Extent_px")
    pyk = write_pyk_conf(tmp_path / "c.pyk.conf", "c", (256, 256, 128), [(10, 10, 25)])
    pyk.write_text(pyk.read_text().replace("_DataScale = 10.000000,10.000000,25.000000,", "_DataScale = 10,10"))
    _raises(pyk, tmp_path / "out", f"{pyk}:6", "_DataScale")


def test_unknown_cube_extension_is_refused(tmp_path):
    conf = write_k_toml(tmp_path / "a.k.toml", "a", (256, 256, 128), [(10, 10, 25)], exts=(".tif",))
    _raises(conf, tmp_path / "out", conf, "FileExtension", ".tif")


def test_missing_config_file_is_named(tmp_path):
    _raises(tmp_path / "nope" / "knossos.conf", tmp_path / "out", tmp_path / "nope")


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def test_cli_imports_a_dataset_and_reports_the_layers(tmp_path):
    ds = make_dataset(tmp_path / "ds", "k.toml")
    out = tmp_path / "out"
    r = subprocess.run([str(SYCONN_NG), "import-knossos", str(ds.config), str(out), "--chunk-size", "64,64,64"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "raw: file://" in r.stdout and "seg: file://" in r.stdout and "4/5 present" in r.stdout
    got, vol = read_layer(out / "seg", 1)
    assert list(vol.chunk_size) == [64, 64, 64]
    np.testing.assert_array_equal(got, expected(ds, "seg", 2))


def test_cli_bad_input_exits_2_with_one_error_line(tmp_path):
    ds = make_dataset(tmp_path / "ds", "knossos.conf", with_seg=False)
    cube = cube_file(ds.root, "testds", 2, (0, 0, 0), ".raw")
    cube.write_bytes(b"\0" * 17)
    r = subprocess.run([str(SYCONN_NG), "import-knossos", str(ds.config), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(cube) in lines[0]
    assert "Traceback" not in r.stderr

