"""`syconn-ng bench`: a tiny real run (64³ tissue, CNNs included, one worker) through the CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SHAPE = (64, 64, 64)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "syconn_ng", "bench", "--shape", ",".join(map(str, SHAPE)), "--workers", "1",
                           "--out-dir", str(out / "results")], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = list((out / "results").glob("*.json"))
    assert len(files) == 1
    return out, proc.stdout, json.loads(files[0].read_text())


def test_bench_json_has_every_stage_with_positive_times_and_sane_throughput(bench_run):
    from syconn_ng.stages import available

    _, stdout, result = bench_run
    assert result["kind"] == "pipeline" and result["shape"] == list(SHAPE) and result["voxels"] == 64**3
    assert result["oracle"] is False and result["workers"] == 1
    assert [r["stage"] for r in result["stages"]] == available()  # every registered stage, CNNs included, in order
    for r in result["stages"]:
        if r["stage"] == "scales":
            assert r["tasks"] == 0, r  # at 64³ every layer fits one chunk: no coarser scale to build
            continue
        assert r["tasks"] >= 1, r
        assert r["seconds"] > 0 and r["cpu_s"] > 0, r
        assert 0 < r["mvox_s_per_core"] < 1000, r  # 64³ = 0.26 Mvox: a stage cannot take less than 0.26 µs
        assert r["peak_rss_worker_mib"] >= r["idle_rss_worker_mib"] > 20, r  # a real Python worker was measured
        assert r["peak_rss_driver_mib"] > 20
        assert len(r["load_average"]) == 2 and len(r["load_average"][0]) == 3
    totals = result["totals"]
    assert totals["all"]["seconds"] == pytest.approx(sum(r["seconds"] for r in result["stages"]), abs=0.05)
    assert 0 < totals["without_cnn"]["seconds"] < totals["all"]["seconds"]
    assert totals["cnn"]["gvox_h_per_core"] > 0 and totals["all"]["ratio_to_syconn2_cpu"] > 0
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["ram_gib"] > 0 and machine["torch"] and machine["cpu"]
    assert len(machine["load_average"]) == 3
    assert result["counts"]["cells"] > 0
    assert "whole pipeline" in stdout and "Mvox/h per core" in stdout and "barrier" in stdout


def test_bench_report_writes_tables_and_scaling_plot_from_saved_results(bench_run):
    out, _, result = bench_run
    plot = out / "scaling.png"
    proc = subprocess.run([sys.executable, "-m", "syconn_ng", "bench", "--report", "--out-dir", str(out / "results"),
                           "--plot", str(plot)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert "| stage |" in proc.stdout and "64×64×64" in proc.stdout
    for r in result["stages"]:
        assert f"| {r['stage']} |" in proc.stdout


def test_bench_on_a_local_dask_cluster_measures_its_worker_processes(tmp_path):
    """`--executor dask`: every stage on a fresh distributed.LocalCluster; the worker processes' memory is what is measured."""
    from syconn_ng.stages import available

    proc = subprocess.run([sys.executable, "-m", "syconn_ng", "bench", "--shape", "64,64,32", "--oracle", "--executor", "dask",
                           "--workers", "1", "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    assert path.name.endswith("_64x64x32_oracle_dask.json") and "LocalCluster" in proc.stdout
    result = json.loads(path.read_text())
    assert result["executor"] == "dask" and result["oracle"] is True
    assert [r["stage"] for r in result["stages"]] == [s for s in available() if s not in ("barrier", "organelles", "myelin_syntype")]
    for r in result["stages"]:
        assert r["peak_rss_worker_mib"] >= r["idle_rss_worker_mib"] > 20, r  # the LocalCluster's worker, not nothing
        assert r["tasks"] >= 1 or r["stage"] == "scales", r
