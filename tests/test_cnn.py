"""The CNNs: the anisotropic U-Net, model files, tiled blended inference, the `barrier` and `organelles`
stages through the engine, training, metrics, and the bundled weights' accuracy on a tissue not used in training.

Real parts throughout: real torch models, real model files on disk, real precomputed layers
read back with CloudVolume, the real engine with a process pool.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from organelle_data import read_layer
from syconn_ng.box import Box
from syconn_ng.errors import InputError

pytestmark = pytest.mark.xdist_group("cnn")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread: the test machine's cores are shared, and oversubscribed threads spin."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

VOXEL_SIZE_NM = (10.0, 10.0, 20.0)

# Floors of the bundled weights on tissues never used in training (the model trained on seeds 101-104):
# barrier voxel F1 on `synth_tissue` (seed 1) 0.924; organelle object F1 pooled over seeds 1, 6 and 7
# (`synth_tissue`, `dense_tissue`, and a third 4-synapses/µm³ tissue: 32 sj, 32 vc, 220 mi objects) with the
# default [objects] settings: sj 0.970, vc 1.000, mi 0.903 (docs/cnn.md). Floors are the measured value
# minus at most 0.05, and never under the 0.85 target.
BARRIER_F1_FLOOR = 0.90
ORGANELLE_OBJECT_F1_FLOOR = {"sj": 0.92, "vc": 0.95, "mi": 0.86}
THIRD_ORGANELLE_SEED = 7  # with seeds 1 and 6 (the fixtures) the floors rest on >= 30 sj objects


def tiny_model(task: str = "organelles", *, seed: int = 0, voxel_size_nm=VOXEL_SIZE_NM, width: int = 4):
    """A small randomly initialised U-Net and its ModelInfo (BatchNorm statistics made non-trivial)."""
    import torch

    from syconn_ng.cnn import TASK_CHANNELS
    from syconn_ng.cnn.model import UNetSpec, build_unet
    from syconn_ng.cnn.modelfile import ModelInfo, library_versions

    torch.manual_seed(seed)
    channels = list(TASK_CHANNELS[task])
    spec = UNetSpec(out_channels=len(channels), width=width, depth=3, voxel_size_nm=voxel_size_nm)
    module = build_unet(spec)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    module.eval()
    info = ModelInfo(task=task, channels=channels, spec=spec, voxel_size_nm=list(voxel_size_nm), patch_size=[40, 40, 12],
                     output_crop=[4, 4, 1], intensity_mean=0.5, intensity_std=0.2, training={"data": "none (test)"},
                     versions=library_versions())
    return module, info


def textured_volume(shape, seed: int = 0) -> np.ndarray:
    """(X, Y, Z) uint8 with structure at several scales (smoothed noise), so predictions vary in space."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    v = gaussian_filter(rng.random(shape), (3, 3, 1.5)) * 4 + rng.random(shape) * 0.3
    v = (v - v.min()) / (v.max() - v.min())
    return (v * 255).astype(np.uint8)


# ---------------------------------------------------------------- the model

def test_anisotropic_unet_starts_with_planar_kernels_and_pools_z_only_once_xy_caught_up():
    from syconn_ng.cnn.model import UNetSpec, anisotropic_layout

    kernels, pools = anisotropic_layout((10, 10, 20), 4)
    assert kernels[0] == (3, 3, 1) and pools[0] == (2, 2, 1)
    assert kernels[1:] == [(3, 3, 3)] * 3 and pools[1:] == [(2, 2, 2)] * 2
    kernels, pools = anisotropic_layout((4, 4, 50), 3)  # ssTEM: z stays planar and unpooled
    assert kernels == [(3, 3, 1)] * 3 and pools == [(2, 2, 1)] * 2
    assert UNetSpec(depth=3).divisor == (4, 4, 2)


def test_unet_gives_one_output_channel_per_class_at_the_input_size():
    import torch

    from syconn_ng.cnn.model import UNetSpec, build_unet, count_parameters, flops_per_voxel

    spec = UNetSpec(out_channels=3, width=4, depth=3)
    module = build_unet(spec).eval()
    with torch.inference_mode():
        out = module(torch.zeros(2, 1, 8, 24, 32))  # (N, C, Z, Y, X)
    assert out.shape == (2, 3, 8, 24, 32)
    assert count_parameters(module) > 0 and flops_per_voxel(spec) > 0
    assert flops_per_voxel(UNetSpec(width=8)) > 3 * flops_per_voxel(UNetSpec(width=4))  # roughly quadratic in width


# ---------------------------------------------------------------- tiled inference

def test_tiles_cover_the_volume_on_a_grid_fixed_by_the_volume_bounds():
    from syconn_ng.cnn.inference import output_tiles, tile_starts

    assert tile_starts(0, 100, 32, 24) == [0, 24, 48, 68]
    assert tile_starts(10, 20, 32, 24) == [10]  # smaller than one tile
    bounds = Box((0, 0, 0), (100, 90, 30))
    tiles = output_tiles(bounds, (32, 32, 10), (8, 8, 2))
    covered = np.zeros(bounds.shape, int)
    for t in tiles:
        covered[t.intersect(bounds).slices()] += 1
    assert covered.min() >= 1
    inner = Box((40, 40, 10), (60, 50, 20))  # a task's tiles are exactly the global tiles that meet it
    assert set(output_tiles(bounds, (32, 32, 10), (8, 8, 2), within=inner)) == {t for t in tiles if not t.intersect(inner).empty()}


def test_inference_in_one_piece_and_in_chunks_gives_the_same_probabilities():
    from syconn_ng.cnn.inference import Predictor, predict_volume

    module, info = tiny_model()
    raw = textured_volume((100, 84, 30))
    whole = predict_volume(Predictor.from_model(module, info, batch_size=3), raw)
    assert whole.shape == (100, 84, 30, 3) and whole.dtype == np.uint8
    assert whole.std() > 1  # the test volume makes the model's output vary
    one_at_a_time = Predictor.from_model(module, info, batch_size=1)
    for chunk in Box.from_shape(raw.shape).chunks((32, 48, 16)):
        part = predict_volume(one_at_a_time, raw, box=chunk)
        diff = np.abs(part.astype(int) - whole[chunk.slices()].astype(int))
        assert diff.max() <= 1, (chunk, diff.max())


def test_raw_with_nan_is_refused_and_blank_or_empty_raw_gives_valid_output():
    from syconn_ng.cnn.inference import Predictor, predict_volume

    module, info = tiny_model()
    p = Predictor.from_model(module, info)
    bad = textured_volume((40, 40, 12)).astype(np.float32)
    bad[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        predict_volume(p, bad)
    blank = predict_volume(p, np.zeros((40, 40, 12), np.uint8))  # e.g. missing chunks read as zeros
    assert blank.shape == (40, 40, 12, 3) and blank.dtype == np.uint8
    empty = predict_volume(p, np.zeros((0, 40, 12), np.uint8))
    assert empty.shape == (0, 40, 12, 3)
    with pytest.raises(InputError, match="one channel"):
        predict_volume(p, np.zeros((40, 40, 12, 2), np.uint8))


# ---------------------------------------------------------------- model files

def test_model_file_round_trip_keeps_weights_and_metadata(tmp_path):
    import torch

    from syconn_ng.cnn.modelfile import load_model, save_model

    module, info = tiny_model("barrier")
    path = save_model(tmp_path / "m.pt", module, info)
    assert (tmp_path / "m.json").is_file()  # readable metadata beside the weights
    torch.load(path, weights_only=True)  # loads without unpickling code
    loaded, info2 = load_model(path, task="barrier", voxel_size_nm=(10, 10, 20))
    assert info2.to_dict() == info.to_dict()
    x = torch.rand(1, 1, 8, 32, 32)
    with torch.inference_mode():
        assert torch.equal(module(x), loaded(x))


def test_model_for_another_task_or_voxel_size_is_refused_with_a_clear_message(tmp_path):
    from syconn_ng.cnn.modelfile import load_model, save_model

    path = save_model(tmp_path / "barrier.pt", *tiny_model("barrier"))
    with pytest.raises(InputError, match=r"for task 'barrier', but the 'organelles' stage needs") as err:
        load_model(path, task="organelles", voxel_size_nm=(10, 10, 20))
    assert str(path) in str(err.value)
    with pytest.raises(InputError, match=r"trained at voxel size \[10.0, 10.0, 20.0\] nm, the data has \[4.0, 4.0, 50.0\] nm"):
        load_model(path, task="barrier", voxel_size_nm=(4, 4, 50))
    load_model(path, task="barrier", voxel_size_nm=(9, 9, 20))  # within the tolerance


def test_a_file_that_is_not_a_model_is_refused_without_running_its_code(tmp_path):
    from syconn_ng.cnn.modelfile import load_model

    class Exploit:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": Exploit(), "metadata": "{}"}, protocol=2))
    with pytest.raises(InputError, match="not a loadable torch weights file"):
        load_model(evil)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a loadable torch weights file"):
        load_model(text)


# ---------------------------------------------------------------- the stages through the engine

def make_cnn_analysis(root, raw: np.ndarray, *, models: dict, chunk=(32, 32, 16), task=(32, 32, 16), oracle: dict | None = None,
                      raw_dtype=np.uint8, channels: int = 1):
    """An analysis dir whose raw layer holds `raw` and whose config names the given model files."""
    from syconn_ng.analysis import Analysis
    from syconn_ng.config import Config, write_config
    from syconn_ng.layers import create_layer, write_box

    vol = create_layer(root / "raw", layer_type="image", dtype=raw_dtype, voxel_size_nm=VOXEL_SIZE_NM, shape=raw.shape[:3],
                       chunk_size=chunk, num_channels=channels)
    data = raw.astype(raw_dtype)
    write_box(vol, Box.from_shape(raw.shape[:3]), np.repeat(data[..., None], channels, axis=3) if data.ndim == 3 else data)
    cfg = Config()
    cfg.dataset.raw = "raw"
    cfg.dataset.voxel_size_nm = list(VOXEL_SIZE_NM)
    cfg.chunking.chunk_size = list(chunk)
    cfg.chunking.task_size = list(task)
    cfg.executor.workers = 1
    cfg.cnn.threads = 1
    for t, path in models.items():
        setattr(cfg.cnn, f"{t}_model", str(path))
    for t, path in (oracle or {}).items():
        setattr(cfg.oracle, t, str(path))
    write_config(cfg, root)
    return Analysis.open(root)


@pytest.fixture(scope="module")
def executor():
    from syconn_ng.engine import LocalExecutor

    ex = LocalExecutor(1)
    yield ex
    ex.close()


def test_stages_write_uint8_probability_layers_equal_to_whole_volume_inference(tmp_path, executor):
    from syconn_ng.cnn.inference import Predictor, predict_volume
    from syconn_ng.cnn.modelfile import load_model, save_model
    from syconn_ng.engine import run_stage
    from syconn_ng.layers import open_layer, read_box
    from syconn_ng.stages import get_stage

    models = {t: save_model(tmp_path / f"{t}.pt", *tiny_model(t, seed=i)) for i, t in enumerate(("barrier", "organelles"))}
    raw = textured_volume((64, 56, 40), seed=5)
    a = make_cnn_analysis(tmp_path / "a", raw, models=models)
    for t, channels in (("barrier", 1), ("organelles", 3)):
        report = run_stage(get_stage(t), a, executor=executor, progress=False)
        assert report.ran == 2 * 2 * 3  # one task per 32 x 32 x 16 box
        vol = open_layer(a.layer_path(t))
        assert vol.dtype == np.uint8 and vol.num_channels == channels and vol.info["syconn_ng"]["stage"] == t
        got = read_box(vol, Box.from_shape(raw.shape))
        module, info = load_model(models[t])
        want = predict_volume(Predictor.from_model(module, info), raw)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # no seams at task borders
        again = run_stage(get_stage(t), a, executor=executor, progress=False)
        assert again.ran == 0 and again.skipped == 12  # resumable: done tasks are skipped


def test_stage_is_skipped_when_the_oracle_provides_its_layer(tmp_path, executor):
    from syconn_ng.engine import run_stage
    from syconn_ng.stages import get_stage

    a = make_cnn_analysis(tmp_path, textured_volume((32, 32, 16)), models={}, oracle={"barrier": tmp_path / "raw"})
    report = run_stage(get_stage("barrier"), a, executor=executor, progress=False)
    assert report.ran == 0 and not (tmp_path / "layers" / "barrier").exists()


def test_raw_with_two_channels_or_not_uint8_is_refused_before_any_work(tmp_path, executor):
    from syconn_ng.cnn.modelfile import save_model
    from syconn_ng.engine import run_stage
    from syconn_ng.stages import get_stage

    model = save_model(tmp_path / "b.pt", *tiny_model("barrier"))
    two = make_cnn_analysis(tmp_path / "two", textured_volume((32, 32, 16)), models={"barrier": model}, channels=2)
    with pytest.raises(InputError, match="raw EM must have 1 channel, this layer has 2"):
        run_stage(get_stage("barrier"), two, executor=executor, progress=False)
    wide = make_cnn_analysis(tmp_path / "u16", textured_volume((32, 32, 16)), models={"barrier": model}, raw_dtype=np.uint16)
    with pytest.raises(InputError, match="raw EM must be uint8, this layer is uint16"):
        run_stage(get_stage("barrier"), wide, executor=executor, progress=False)
    wrong_task = make_cnn_analysis(tmp_path / "task", textured_volume((32, 32, 16)), models={"organelles": model})
    with pytest.raises(InputError, match="for task 'barrier'"):
        run_stage(get_stage("organelles"), wrong_task, executor=executor, progress=False)
    assert not (tmp_path / "two" / "layers").exists() and not (tmp_path / "task" / "layers").exists()


# ---------------------------------------------------------------- training

def tiny_volumes():
    from syconn_ng.cnn.train import LabelledVolume

    raw = textured_volume((48, 48, 16), seed=7)
    target = (raw < 100)[..., None]
    return [LabelledVolume("a", raw[:, :, :12], target[:, :, :12]), LabelledVolume("b", raw[:, :, 12:], target[:, :, 12:])]


def test_training_on_cpu_with_a_seed_is_deterministic_and_writes_model_and_learning_curve(tmp_path):
    import torch

    from syconn_ng.cnn.modelfile import load_model
    from syconn_ng.cnn.train import TrainSettings, train_model

    vols = tiny_volumes()
    settings = TrainSettings(width=4, depth=2, patch_size=[32, 32, 8], inference_patch=[32, 32, 8], output_crop=[2, 2, 1],
                             batch_size=2, iterations=4, validate_every=2, validation_patches=2, seed=3, threads=1)
    runs = []
    for i in range(2):
        module, info, history = train_model("barrier", vols[:1], vols[1:], settings, out=tmp_path / f"m{i}.pt",
                                            curve_png=tmp_path / f"curve{i}.png", progress=False)
        runs.append(module.state_dict())
    assert history["iteration"] == [2, 4] and len(history["val_f1"][0]) == 1
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert (tmp_path / "m0.pt").read_bytes() != b"" and (tmp_path / "curve0.png").read_bytes()[:4] == b"\x89PNG"
    _, info = load_model(tmp_path / "m0.pt", task="barrier", voxel_size_nm=VOXEL_SIZE_NM)
    assert info.training["settings"]["seed"] == 3 and info.training["best_iteration"] in (2, 4)
    other, _, _ = train_model("barrier", vols[:1], vols[1:], TrainSettings(**{**settings.__dict__, "seed": 4}), progress=False)
    assert not all(torch.equal(runs[0][k], other.state_dict()[k]) for k in runs[0])


def test_training_refuses_labels_with_the_wrong_number_of_channels():
    from syconn_ng.cnn.train import TrainSettings, train_model

    with pytest.raises(InputError, match="task 'organelles' needs 3"):
        train_model("organelles", tiny_volumes(), [], TrainSettings(width=4, depth=2, iterations=1), progress=False)


def test_augmentation_keeps_raw_and_labels_aligned():
    from syconn_ng.cnn.train import augment

    rng = np.random.default_rng(0)
    raw = textured_volume((32, 32, 8), seed=1)
    target = (raw > 128)[..., None]
    for _ in range(10):
        x, t, m = augment(raw.astype(np.float32) / 255, target, np.ones(raw.shape, bool), rng, missing_section_p=0)
        # intensity changes are monotonic, so the labelled voxels are still the bright ones
        assert x[t[..., 0]].mean() > x[~t[..., 0]].mean() + 0.1
        assert x.shape == (32, 32, 8) and m.all()


def test_batches_prepared_ahead_by_threads_do_not_depend_on_the_thread_count():
    from syconn_ng.cnn.train import LabelledVolume, PatchSampler, TrainSettings, _batch_stream

    raw = textured_volume((40, 40, 8), seed=2)
    vol = LabelledVolume("t", raw, (raw > 128)[..., None])

    def first_batches(threads: int):
        s = TrainSettings(patch_size=[16, 16, 4], batch_size=3, loader_threads=threads, seed=5)
        sampler = PatchSampler([vol], s.patch_size, np.random.default_rng(0))
        stream = _batch_stream(sampler, s, np.random.default_rng(0), 0.5, 0.2)
        out = [next(stream) for _ in range(4)]
        stream.close()
        return out

    one, three = first_batches(1), first_batches(3)
    for a, b in zip(one, three):
        for ta, tb in zip(a, b):
            assert ta.shape == tb.shape and bool((ta == tb).all())
    assert not bool((one[0][0] == one[1][0]).all())  # successive batches differ


def test_time_limited_training_anneals_its_learning_rate_within_the_minutes():
    import time

    import torch

    from syconn_ng.cnn.train import TrainSettings, _schedule

    s = TrainSettings(iterations=100000, learning_rate=1.0, max_minutes=1.0)

    def lr_after(elapsed_s: float) -> float:
        """The learning rate of the first step of a run that started `elapsed_s` ago."""
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        _schedule(opt, s, time.perf_counter() - elapsed_s)
        return opt.param_groups[0]["lr"]

    assert lr_after(0) == pytest.approx(0.04, abs=0.01)  # warm-up starts at lr / 25
    assert lr_after(6) == pytest.approx(1.0, abs=0.01)  # peak after a tenth of the minutes
    assert lr_after(61) < 1e-3  # annealed when the minutes are over, although 1 of 100000 iterations ran


def test_labelled_stacks_read_from_image_slices_hdf5_and_precomputed_agree(tmp_path):
    import h5py
    from PIL import Image

    from syconn_ng.cnn.train import load_labelled
    from syconn_ng.layers import create_layer, write_box

    raw = textured_volume((40, 30, 12), seed=2)
    labels = raw > 120
    (tmp_path / "raw").mkdir()
    (tmp_path / "lab").mkdir()
    for z in range(raw.shape[2]):
        Image.fromarray(raw[:, :, z].T).save(tmp_path / "raw" / f"{z}.tif")  # 2.tif comes before 10.tif
        Image.fromarray((labels[:, :, z].T * 255).astype(np.uint8)).save(tmp_path / "lab" / f"{z}.png")
    with h5py.File(tmp_path / "cube.h5", "w") as f:
        f["raw"] = raw.transpose(2, 1, 0)
        f["mem"] = labels.transpose(2, 1, 0).astype(np.uint8)
    for name, arr in (("rawl", raw), ("labl", labels.astype(np.uint8))):
        write_box(create_layer(tmp_path / name, layer_type="image", dtype=np.uint8, voxel_size_nm=VOXEL_SIZE_NM,
                               shape=raw.shape, chunk_size=(16, 16, 4)), Box.from_shape(raw.shape), arr)
    for r, lab in ((tmp_path / "raw", tmp_path / "lab"), (f"{tmp_path}/cube.h5:raw", f"{tmp_path}/cube.h5:mem"),
                   (tmp_path / "rawl", tmp_path / "labl")):
        v = load_labelled(r, [lab])
        np.testing.assert_array_equal(v.raw, raw)
        np.testing.assert_array_equal(v.target[..., 0], labels)
    with pytest.raises(InputError, match="no .tif"):
        load_labelled(tmp_path / "lab" / "..", [tmp_path / "lab"])


# ---------------------------------------------------------------- metrics

def test_object_scores_match_objects_one_to_one_by_overlap():
    from syconn_ng.cnn.metrics import object_scores

    truth = np.zeros((20, 20, 1), int)
    truth[0:5, 0:5] = 1
    truth[10:15, 10:15] = 2
    truth[0:3, 15:18] = 3  # missed
    pred = np.zeros_like(truth)
    pred[0:5, 0:4] = 7  # IoU 0.8 with 1
    pred[10:12, 10:15] = 8  # IoU 0.4 with 2: too little at 0.5
    pred[12:15, 10:15] = 9  # IoU 0.6 with 2
    pred[18:20, 18:20] = 4  # false positive
    s = object_scores(pred, truth, min_iou=0.5)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 2, 1)
    assert s["f1"] == pytest.approx(2 * 2 / (4 + 3))
    assert object_scores(truth, truth)["f1"] == 1.0


def test_adapted_rand_error_is_zero_for_a_relabelled_copy_and_grows_with_merges():
    from syconn_ng.cnn.metrics import adapted_rand_error, cells_from_boundary, voxel_scores

    truth = np.zeros((30, 30, 2), int)
    truth[:15] = 1
    truth[15:] = 2
    assert adapted_rand_error(truth * 5 + 1, truth)["error"] == pytest.approx(0.0)
    merged = adapted_rand_error(np.ones_like(truth), truth)
    assert merged["error"] > 0.3 and merged["recall"] == pytest.approx(1.0)
    membrane = np.zeros((30, 30, 2))
    membrane[14:16] = 1.0
    cells = cells_from_boundary(membrane, threshold=0.5)
    assert adapted_rand_error(cells[:, :, 1], truth[:, :, 1])["error"] < 0.05  # 2D cells, scored per section
    v = voxel_scores(membrane > 0.5, membrane > 0.5)
    assert v["f1"] == 1.0 and v["iou"] == 1.0


# ---------------------------------------------------------------- the bundled weights on tissue they never saw

@pytest.mark.slow
def test_bundled_weights_reach_the_accuracy_floors_on_unseen_synthetic_tissues(synth_tissue, dense_tissue, tmp_path, executor):
    from conftest import SYNTH_SHAPE

    from syconn_ng.analysis import Analysis
    from syconn_ng.cnn.evaluate import evaluate_on_tissue, read_truth, score_barrier, score_organelles
    from syconn_ng.cnn.modelfile import bundled_model_path
    from syconn_ng.config import load_config, write_config
    from syconn_ng.engine import run_stage
    from syconn_ng.layers import open_layer, read_box
    from syconn_ng.stages import get_stage
    from syconn_ng.synth.generate import generate_tissue

    # seed 1 through the stages, as a run makes them
    cfg = load_config(synth_tissue)
    cfg.dataset.raw = str(synth_tissue / "raw")  # the tissue is shared and read-only: analyse it from elsewhere
    cfg.executor.workers = 1
    cfg.cnn.threads = 1
    write_config(cfg, tmp_path / "ana")
    a = Analysis.open(tmp_path / "ana")
    for t in ("barrier", "organelles"):
        run_stage(get_stage(t), a, executor=executor, progress=False)
    bounds = Box.from_shape(read_layer(synth_tissue / "raw").shape)
    barrier = read_box(open_layer(a.layer_path("barrier")), bounds)
    scores = score_barrier(barrier, read_truth(synth_tissue, "barrier"))
    assert scores["f1"] >= BARRIER_F1_FLOOR, scores
    organelles = read_box(open_layer(a.layer_path("organelles")), bounds)
    per_tissue = [score_organelles(organelles, read_truth(synth_tissue, "organelles"), a.config.objects)]
    # seeds 6 and 7 (4 synapses/µm³) for enough sj and vc objects, scored the same way
    third = tmp_path / f"seed{THIRD_ORGANELLE_SEED}"
    generate_tissue(third, shape=SYNTH_SHAPE, seed=THIRD_ORGANELLE_SEED, synapses_per_um3=4.0)
    for folder in (dense_tissue, third):
        per_tissue.append(evaluate_on_tissue(bundled_model_path("organelles"), folder, task="organelles", device="cpu"))
    for kind, floor in ORGANELLE_OBJECT_F1_FLOOR.items():
        tp, n_pred, n_true = (sum(s[kind]["object"][k] for s in per_tissue) for k in ("tp", "pred_objects", "truth_objects"))
        assert n_true >= 30, (kind, n_true)
        f1 = 2 * tp / (n_pred + n_true)
        assert f1 >= floor, (kind, f1, [s[kind]["object"] for s in per_tissue])


def test_train_cnn_command_trains_on_a_labelled_slice_stack(tmp_path):
    from PIL import Image

    from syconn_ng.cli import main
    from syconn_ng.cnn.modelfile import load_model

    raw = textured_volume((48, 48, 10), seed=4)
    for name, stack in (("raw", raw), ("membranes", np.where(raw < 100, 0, 255).astype(np.uint8))):  # 0 = membrane
        (tmp_path / name).mkdir()
        for z in range(raw.shape[2]):
            Image.fromarray(stack[:, :, z].T).save(tmp_path / name / f"{z}.png")
    out = tmp_path / "m.pt"
    main(["train", "cnn", "--task", "barrier", "--out", str(out), "--raw", str(tmp_path / "raw"), "--labels", str(tmp_path / "membranes"),
          "--invert-labels", "--val-sections", "8:10", "--voxel-size", "4,4,50", "--iterations", "2", "--width", "4", "--depth", "2",
          "--patch-size", "32,32,4", "--threads", "1", "--quiet"])
    _, info = load_model(out, task="barrier", voxel_size_nm=(4, 4, 50))
    assert info.training["data"].endswith("(validation sections 8:10)") and info.spec.kernels == [(3, 3, 1), (3, 3, 1)]
    assert out.with_suffix(".png").is_file() and out.with_suffix(".json").is_file()
    with pytest.raises(InputError, match="trained at voxel size"):
        load_model(out, task="barrier", voxel_size_nm=(10, 10, 20))
