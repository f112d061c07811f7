"""The chunked execution engine: done-markers, re-runs, retries, failure reports, progress, executors.

The engine runs for real: spawn process pools, a `distributed.LocalCluster` on 127.0.0.1, and the
`syconn-ng run` command in a subprocess that the test SIGKILLs mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from organelle_data import make_analysis, output_files, random_probabilities, read_layer
from syconn_ng.box import Box
from syconn_ng.config import load_config
from syconn_ng.engine import DaskExecutor, LocalExecutor, Pass, run_stage
from syconn_ng.errors import StageError
from syconn_ng.stages.objects import ORGANELLES, STAGE

pytestmark = pytest.mark.xdist_group("engine")


# ---------------------------------------------------------------- a small stage for the engine alone

def tally_task(analysis, task) -> int:
    """Writes `out/<key>.txt`; fails while `out/<key>.broken` exists, or on the attempts the params ask for."""
    out = analysis.root / "out"
    with open(out / f"{task.key}.attempts", "a") as f:
        f.write("x")
    attempt = (out / f"{task.key}.attempts").stat().st_size
    p = task.params
    if (out / f"{task.key}.broken").exists():
        raise RuntimeError("this chunk is broken")
    if task.key in p["fail_first"] and attempt == 1:
        raise RuntimeError("transient failure")
    if task.key in p["crash_first"] and attempt == 1:
        os._exit(1)  # the worker process dies, as if killed or out of memory
    (out / f"{task.key}.txt").write_text(str(task.box))
    return task.box.size


class TallyStage:
    name = "tally"

    def __init__(self, n=6, *, fail_first=(), crash_first=()):
        self.n, self.fail_first, self.crash_first = n, list(fail_first), list(crash_first)

    def params(self, analysis):
        return {"n": self.n, "fail_first": self.fail_first, "crash_first": self.crash_first}

    def prepare(self, analysis, *, fresh):
        (analysis.root / "out").mkdir(exist_ok=True)

    def passes(self, analysis):
        return [Pass("count", tally_task, Box.from_shape((16 * self.n, 16, 16)).chunks((16, 16, 16)))]


def key(i):
    return f"count_{16 * i}-{16 * i + 16}_0-16_0-16"


@pytest.fixture(scope="module")
def executor():
    ex = LocalExecutor(2)
    yield ex
    ex.close()


@pytest.fixture
def analysis(tmp_path):
    return make_analysis(tmp_path, None, executor={"retries": 2})


def attempts(analysis, i):
    return (analysis.root / "out" / f"{key(i)}.attempts").stat().st_size


# ---------------------------------------------------------------- markers, re-runs, parameters

def test_rerun_skips_tasks_whose_done_marker_is_current(analysis, executor):
    first = run_stage(TallyStage(), analysis, executor=executor, progress=False)
    assert first.ran == 6 and first.skipped == 0
    marker = json.loads((analysis.state_dir / "tally" / f"{key(0)}.json").read_text())
    assert marker["task"] == key(0) and len(marker["params_hash"]) == 16
    second = run_stage(TallyStage(), analysis, executor=executor, progress=False)
    assert second.ran == 0 and second.skipped == 6
    assert all(attempts(analysis, i) == 1 for i in range(6))


def test_missing_marker_reruns_only_that_task(analysis, executor):
    run_stage(TallyStage(), analysis, executor=executor, progress=False)
    (analysis.state_dir / "tally" / f"{key(3)}.json").unlink()
    report = run_stage(TallyStage(), analysis, executor=executor, progress=False)
    assert report.ran_keys == [key(3)]
    assert [attempts(analysis, i) for i in range(6)] == [1, 1, 1, 2, 1, 1]


def test_force_redoes_the_whole_stage(analysis, executor):
    run_stage(TallyStage(), analysis, executor=executor, progress=False)
    report = run_stage(TallyStage(), analysis, executor=executor, progress=False, force=True)
    assert report.ran == 6
    assert all(attempts(analysis, i) == 2 for i in range(6))


def test_changing_a_stage_parameter_makes_its_markers_stale(tmp_path, executor):
    prob = random_probabilities((64, 64, 32), seed=4, density=0.05)
    a = make_analysis(tmp_path, prob, objects={"min_voxels_mi": 1})
    run_stage(STAGE, a, executor=executor, progress=False)
    n_before = read_layer(a.layer_path("mi")).max()
    cfg_text = (tmp_path / "syconn.toml").read_text().replace("min_voxels_mi = 1", "min_voxels_mi = 4")
    (tmp_path / "syconn.toml").write_text(cfg_text)
    a2 = type(a).open(tmp_path)
    assert a2.config.objects.min_voxels_mi == 4
    report = run_stage(STAGE, a2, executor=executor, progress=False)
    assert report.skipped == 0 and report.ran == 4 + 1 + 4
    n_after = read_layer(a2.layer_path("mi")).max()
    assert 0 < n_after < n_before
    assert run_stage(STAGE, a2, executor=executor, progress=False).ran == 0


# ---------------------------------------------------------------- failures

def test_failing_task_is_retried_then_reported_without_stopping_the_others(analysis, executor):
    stage = TallyStage(fail_first=[key(4)])
    (analysis.root / "out").mkdir()
    (analysis.root / "out" / f"{key(2)}.broken").touch()
    with pytest.raises(StageError) as err:
        run_stage(stage, analysis, executor=executor, progress=False)
    msg = str(err.value)
    assert "1 of 6 tasks of pass 'count' failed" in msg
    assert "chunk 32-48_0-16_0-16" in msg and "RuntimeError: this chunk is broken" in msg and "after 3 attempt(s)" in msg
    assert attempts(analysis, 2) == 3  # 1 + retries
    assert attempts(analysis, 4) == 2  # recovered on its retry
    done = {p.stem for p in (analysis.state_dir / "tally").glob("count_*.json")}
    assert done == {key(i) for i in (0, 1, 3, 4, 5)}
    assert "this chunk is broken" in (analysis.state_dir / "tally" / f"{key(2)}.error.txt").read_text()
    (analysis.root / "out" / f"{key(2)}.broken").unlink()  # the cause is fixed: only that task runs again
    report = run_stage(stage, analysis, executor=executor, progress=False)
    assert report.ran_keys == [key(2)] and not (analysis.state_dir / "tally" / f"{key(2)}.error.txt").exists()


def test_task_lost_with_its_worker_is_resubmitted(analysis):
    ex = LocalExecutor(1)
    try:
        report = run_stage(TallyStage(crash_first=[key(1)]), analysis, executor=ex, progress=False)
    finally:
        ex.close()
    assert report.ran == 6
    assert attempts(analysis, 1) == 2
    assert all((analysis.root / "out" / f"{key(i)}.txt").exists() for i in range(6))


def test_stage_fails_with_retries_zero_on_first_error(tmp_path, executor):
    a = make_analysis(tmp_path, None, executor={"retries": 0})
    with pytest.raises(StageError, match="after 1 attempt"):
        run_stage(TallyStage(fail_first=[key(0)]), a, executor=executor, progress=False)


def cell_task(analysis, task) -> int:
    (analysis.root / "out" / f"cell_{task.cell_id}.txt").write_text(task.where())
    return task.cell_id


class PerCellStage(TallyStage):
    name = "percell"

    def passes(self, analysis):
        return [Pass("cell", cell_task, [5, 7, 9])]


def test_per_cell_tasks_run_once_per_cell_with_their_own_markers(analysis, executor):
    report = run_stage(PerCellStage(), analysis, executor=executor, progress=False)
    assert sorted(report.ran_keys) == ["cell_5", "cell_7", "cell_9"]
    assert (analysis.root / "out" / "cell_7.txt").read_text() == "cell 7"
    assert {p.stem for p in (analysis.state_dir / "percell").glob("cell_*.json")} == {"cell_5", "cell_7", "cell_9"}
    assert run_stage(PerCellStage(), analysis, executor=executor, progress=False).skipped == 3


# ---------------------------------------------------------------- progress

def test_progress_callback_reports_tasks_voxels_and_eta(analysis, executor):
    (analysis.state_dir / "tally").mkdir(parents=True)
    seen = []
    run_stage(TallyStage(), analysis, executor=executor, progress=False, callback=lambda p: seen.append((p.done, p.total, p.voxels, p.eta_s, p.voxels_per_s)))
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5, 6]
    assert all(s[1] == 6 for s in seen)
    assert [s[2] for s in seen] == [16**3 * i for i in range(1, 7)]
    assert seen[-1][3] == 0 and seen[0][3] > 0 and seen[-1][4] > 0
    seen.clear()
    run_stage(TallyStage(), analysis, executor=executor, progress=False, force=True, callback=lambda p: seen.append(p.done))
    assert seen == [1, 2, 3, 4, 5, 6]


def test_progress_bar_shows_tasks_and_voxel_rate(analysis, executor, capsys):
    run_stage(TallyStage(), analysis, executor=executor, progress=True)
    err = capsys.readouterr().err
    assert "tally" in err and "6/6" in err and "Mvox/s" in err


# ---------------------------------------------------------------- executors give identical results

def test_local_and_dask_executors_give_byte_identical_outputs(tmp_path, executor):
    from distributed import LocalCluster

    prob = random_probabilities((64, 64, 64), seed=8, density=0.06)
    local = make_analysis(tmp_path / "local", prob)
    dask = make_analysis(tmp_path / "dask", prob)
    run_stage(STAGE, local, executor=executor, progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
        from distributed import Client

        with Client(cluster) as client:
            report = run_stage(STAGE, dask, executor=DaskExecutor(client), progress=False)
            assert report.ran == 8 + 1 + 8
            assert len(client.scheduler_info()["workers"]) == 2
            cli = make_analysis(tmp_path / "cli", prob)  # the command line, on the same cluster
            proc = subprocess.run([sys.executable, "-m", "syconn_ng", "run", str(cli.root), "--executor", "dask",
                                   "--scheduler", cluster.scheduler_address, "--only", "objects", "--quiet"], capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
    a, b, c = output_files(local.root), output_files(dask.root), output_files(cli.root)
    assert len(a) > 3 * 8 and a.keys() == b.keys() == c.keys()
    assert [k for k in a if a[k] != b[k] or a[k] != c[k]] == []


def _page_faults_of_medium_temporaries(n: int = 50) -> int:
    """Minor page faults while making and dropping `n` 4 MiB arrays in the calling thread, with a live array above
    the first one's freed memory (as in a task that holds its inputs while it makes temporaries)."""
    import resource

    import numpy as np

    first = np.ones(1 << 19)
    live = np.ones(1 << 19)
    del first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        np.ones(1 << 19).sum()  # 4 MiB of float64, written then freed
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del live
    return faults


def test_dask_workers_reuse_heap_memory_for_medium_arrays_under_dasks_malloc_setting():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
        with Client(cluster) as client:
            assert set(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {"65536"}  # dask's default
            untuned = client.submit(_page_faults_of_medium_temporaries, pure=False).result()
            DaskExecutor(client)
            tuned = client.submit(_page_faults_of_medium_temporaries, pure=False).result()
    pages = 50 * (4 << 20) // 4096
    assert untuned > pages // 4  # each array was a fresh mmap, faulted in page by page (measured: about half the pages)
    assert tuned < pages // 50  # each reused the freed memory below the live array (measured: none)


# ---------------------------------------------------------------- kill and resume through the CLI

def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "syconn_ng", *args], **kw)


def _decodes(layer_dir: Path) -> int:
    """Decode every chunk file of a layer (a half-written chunk would not); returns how many."""
    from cloudvolume import chunks

    info = json.loads((layer_dir / "info").read_text())
    scale = info["scales"][0]
    n = 0
    for f in (layer_dir / scale["key"]).iterdir():
        if f.name.startswith("."):
            continue
        (x0, x1), (y0, y1), (z0, z1) = [map(int, r.split("-")) for r in f.name.split("_")]
        shape = (x1 - x0, y1 - y0, z1 - z0, info["num_channels"])
        arr = chunks.decode(f.read_bytes(), scale["encoding"], shape=shape, dtype=np.dtype(info["data_type"]),
                            block_size=scale.get("compressed_segmentation_block_size"))
        assert arr.shape == shape
        n += 1
    return n


def test_killed_run_resumes_only_unfinished_tasks_with_identical_result(tmp_path, executor):
    prob = random_probabilities((64, 64, 96), seed=9, density=0.06)
    small = dict(chunk=(16, 16, 16), task=(16, 16, 16))  # 96 tasks per pass, so the kill lands mid-pass
    whole = make_analysis(tmp_path / "whole", prob, **small)
    run_stage(STAGE, whole, executor=executor, progress=False)

    a = make_analysis(tmp_path / "killed", prob, **small)
    state = a.state_dir / "objects"
    with open(tmp_path / "first.log", "w") as log:
        proc = _cli("run", str(a.root), "--only", "objects", "--workers", "1", stdout=log, stderr=log, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not any(state.glob("label_*.json")) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker, mid-task
            proc.wait()
    done_before = {p.stem: p.read_bytes() for p in state.glob("*_*.json") if not p.stem.startswith("_")}
    assert 0 < len(done_before) < 96, (tmp_path / "first.log").read_text()
    assert not (state / "_stage.json").exists()
    for kind in ORGANELLES:  # whatever chunk files exist are complete
        _decodes(a.scratch_dir("objects") / f"local_{kind}")

    started = time.time()
    rerun = _cli("run", str(a.root), "--only", "objects", "--workers", "1", "--quiet", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"objects: {2 * 96 + 1 - len(done_before)} task(s) run, {len(done_before)} already done" in out
    markers = {p.stem: p for p in state.glob("*_*.json") if not p.stem.startswith("_")}
    assert len(markers) == 2 * 96
    for k, p in markers.items():
        if k in done_before:
            assert p.read_bytes() == done_before[k]  # finished tasks did not run again
        else:
            assert json.loads(p.read_text())["finished"] >= started
    assert output_files(a.root) == output_files(whole.root)
    assert not list(a.root.rglob("*.tmp"))  # temporary files of killed writers are swept
    for kind in ORGANELLES:
        assert _decodes(a.root / "layers" / kind) == 4 * 4 * 6


# ---------------------------------------------------------------- commands

def test_init_writes_a_commented_config_that_loads(tmp_path):
    raw = tmp_path / "raw"
    from syconn_ng.layers import create_layer

    create_layer(raw, layer_type="image", dtype=np.uint8, voxel_size_nm=(8, 8, 30), shape=(64, 64, 64), chunk_size=(32, 32, 32))
    proc = subprocess.run([sys.executable, "-m", "syconn_ng", "init", str(tmp_path / "ana"), "--raw", str(raw),
                           "--skeletons", str(tmp_path / "sk/*.nml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "ana/syconn.toml").read_text()
    assert "# mi threshold as a fraction of full scale" in text
    cfg = load_config(tmp_path / "ana")
    assert cfg.dataset.voxel_size_nm == [8, 8, 30] and cfg.dataset.raw == str(raw)
    assert cfg.dataset.skeletons == [str(tmp_path / "sk/*.nml")]
    again = subprocess.run([sys.executable, "-m", "syconn_ng", "init", str(tmp_path / "ana"), "--raw", str(raw),
                            "--skeletons", "x.nml", "--voxel-size", "8,8,31", "--force"], capture_output=True, text=True)
    assert again.returncode == 2 and "resolution" in again.stderr and "8,8,31" not in again.stderr.split("error:")[0]


def test_run_exits_nonzero_with_the_failure_summary(tmp_path):
    prob = random_probabilities((32, 32, 64), seed=2, density=0.05)
    a = make_analysis(tmp_path, prob)
    (tmp_path / "layers/organelles/10_10_20/0-32_0-32_32-64").unlink()
    proc = subprocess.run([sys.executable, "-m", "syconn_ng", "run", str(a.root), "--only", "objects", "--workers", "1", "--quiet"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "error: stage 'objects': 1 of 2 tasks of pass 'label' failed" in proc.stderr
    assert "0-32_0-32_32-64" in proc.stderr
    unknown = subprocess.run([sys.executable, "-m", "syconn_ng", "run", str(a.root), "--only", "nonsense"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown or not yet available stage 'nonsense'" in unknown.stderr and "objects" in unknown.stderr


def test_second_concurrent_run_of_a_stage_is_refused(analysis, executor):
    from syconn_ng.engine.state import StageState, params_hash
    from syconn_ng.errors import SyconnError

    with StageState(analysis.state_dir, "tally", params_hash({})).lock():
        with pytest.raises(SyconnError, match="another run is working on stage 'tally'"):
            run_stage(TallyStage(), analysis, executor=executor, progress=False)
    assert run_stage(TallyStage(), analysis, executor=executor, progress=False).ran == 6
