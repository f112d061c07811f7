"""The whole pipeline as users run it: `syconn-ng run` / `example` in subprocesses on a small synthetic tissue
with the bundled CNNs, input checks before any work, provenance, resume after SIGKILL, Dask, and re-running
only what a changed parameter touches. See `tests/pipeline_data.py` for the shared analyses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline_data import analysis, cli, copy_inputs, output_digests, tissue
from syconn_ng.config import load_config, write_config
from syconn_ng.stages import STAGES, available

pytestmark = pytest.mark.xdist_group("pipeline")

# floors = measured on this tissue (seed 6, 128 x 128 x 64, 3 synapses / µm³, bundled models) minus 0.05;
# a stage that is not registered is not checked. See docs/pipeline.md.
FLOORS = {
    ("organelles", "mi", "f1"): 0.88,
    ("organelles", "vc", "f1"): 0.95,
    ("organelles", "sj", "f1"): 0.85,
    ("hulls", "median_iou"): 0.81,
    ("hulls", "mapping_accuracy"): 0.80,
    ("compartments", "accuracy"): 0.93,
    ("synapses", "precision"): 0.95,
    ("synapses", "recall"): 0.95,
    ("synapses", "direction_accuracy"): 0.75,
    ("celltypes", "all_cells", "accuracy"): 0.86,  # all 22 cells: only 8 are typeable in this small volume
    ("connectome", "pair_f1"): 0.75,
    ("connectome", "weight_r"): 0.88,
}
# what each stage writes (checked for the registered stages): layers, then tables with their first columns
OUTPUTS = {
    "barrier": (["barrier"], {}),
    "organelles": (["organelles"], {}),
    "myelin_syntype": (["myelin", "syntype"], {}),
    "objects": (["mi", "vc", "sj"], {f"objects_{k}.csv": ["id", "voxels", "volume_nm3"] for k in ("mi", "vc", "sj")}),
    "hulls": (["cells"], {"nodes.csv": ["cell", "node", "x", "y", "z", "radius_nm"]}),
    "mapping": ([], {f"mapping_{k}.csv": ["object", "cell", "fraction"] for k in ("mi", "vc", "sj")}),
    "compartments": ([], {"compartments.csv": ["cell", "node", "compartment", "probability"]}),
    "synapses": ([], {"synapses.csv": ["id", "pre_cell", "post_cell", "x", "y", "z"]}),
    "celltypes": ([], {"cells.csv": ["id", "type", "type_probability"]}),
    "connectome": ([], {"matrix.csv": ["post_cell"], "cell_summary.csv": ["id", "type", "n_in", "n_out"]}),
    "scales": ([], {}),  # adds scales to the layers above (none at this size: each fits one chunk); tests/test_downsample.py
}


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return analysis(tmp_path_factory, "cnn")


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    return analysis(tmp_path_factory, "oracle")


def _get(scores, key):
    for k in key:
        scores = scores[k]
    return scores


def dependants(stage: str) -> set[str]:
    """The registered stages downstream of `stage` (through `upstream()`), in any order."""
    from syconn_ng.stages import get_stage

    graph = {}
    for name in available():
        s = get_stage(name)
        graph[name] = set(s.upstream(_NoOracle()) if hasattr(s, "upstream") else [])
    out, grew = set(), True
    while grew:
        grew = False
        for name, ups in graph.items():
            if name not in out and ups & (out | {stage}):
                out.add(name)
                grew = True
    return out


class _NoOracle:
    """Just enough of an Analysis for `upstream()`: a config without oracle layers."""

    def __init__(self):
        from syconn_ng.config import Config

        self.config = Config()


# ---------------------------------------------------------------- checks before any work

def _bad_analysis(tmp_path, tissue_dir, **changes) -> Path:
    cfg = load_config(tissue_dir)
    cfg.dataset.raw = str(tissue_dir / "raw")
    cfg.dataset.skeletons = [str(tissue_dir / "skeletons" / "*.k.zip")]
    for key, value in changes.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    write_config(cfg, tmp_path)
    return tmp_path


def _run_in_process(capsys, *args) -> str:
    from syconn_ng.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["run", *map(str, args), "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")  # one clear line, no traceback
    return err


@pytest.mark.parametrize("case", ["missing raw layer", "missing oracle layer", "missing skeleton file", "voxel size mismatch",
                                  "missing synapse forest"])
def test_run_refuses_bad_config_before_any_work(case, tmp_path, tmp_path_factory, capsys):
    t = tissue(tmp_path_factory)
    changes, expected = {
        "missing raw layer": ({"dataset__raw": str(tmp_path / "no_such_raw")}, ["[dataset] raw", "no_such_raw"]),
        "missing oracle layer": ({"oracle__barrier": "truth/no_such_layer"}, ["[oracle] barrier", "no_such_layer"]),
        "missing skeleton file": ({"dataset__skeletons": [str(tmp_path / "cell_1.nml")]}, ["[dataset] skeletons", "cell_1.nml", "no such file"]),
        "voxel size mismatch": ({"dataset__voxel_size_nm": [8.0, 8.0, 30.0]}, ["raw", "voxel size [10.0, 10.0, 20.0] nm differs", "[8.0, 8.0, 30.0]"]),
        "missing synapse forest": ({"synapses__model": "models/mine.skops"}, ["mine.skops", "no such model file for the 'synapses' stage"]),
    }[case]
    ana = _bad_analysis(tmp_path, t, **changes)
    err = _run_in_process(capsys, ana)
    for text in expected:
        assert text in err, err
    assert not (ana / "state").exists() and not (ana / "layers").exists()  # nothing started


def test_run_refuses_skeletons_outside_the_volume(tmp_path, tmp_path_factory, capsys):
    from syconn_ng.io.annotation import write_annotation
    from syconn_ng.io.skeleton import Node, Parameters, Skeleton, Tree

    t = tissue(tmp_path_factory)
    tree = Tree(id=77, nodes=[Node(id=i + 1, x=5000.0 + i, y=5000.0, z=900.0) for i in range(3)])
    write_annotation(Skeleton(trees=[tree], parameters=Parameters(scale_nm=(10.0, 10.0, 20.0))), tmp_path / "far.nml")
    ana = _bad_analysis(tmp_path, t, dataset__skeletons=[str(t / "skeletons" / "*.k.zip"), str(tmp_path / "far.nml")])
    err = _run_in_process(capsys, ana)
    assert "far.nml" in err and '<thing id="77">' in err and "outside the volume" in err
    assert not (ana / "state").exists()


def test_stage_selection_follows_pipeline_order():
    from syconn_ng.errors import SyconnError
    from syconn_ng.pipeline import select_stages

    names = available()
    assert select_stages() == names
    assert select_stages(start="objects", until="mapping") == ["objects", "hulls", "mapping"]
    assert select_stages(only=["mapping", "objects"]) == ["objects", "mapping"]
    with pytest.raises(SyconnError, match="unknown or not yet available stage"):
        select_stages(only=["no_such_stage"])
    with pytest.raises(SyconnError, match="comes after"):
        select_stages(start="mapping", until="objects")


def test_forcing_a_stage_the_run_does_not_select_is_refused_before_any_work(tmp_path):
    from syconn_ng.analysis import Analysis
    from syconn_ng.config import Config, write_config
    from syconn_ng.errors import SyconnError
    from syconn_ng.pipeline import run_pipeline

    write_config(Config(), tmp_path)
    with pytest.raises(SyconnError, match="--force hulls: 'hulls' is not among the stages this run selects"):
        run_pipeline(Analysis.open(tmp_path), ["synapses"], force=["hulls"], progress=False)
    assert not (tmp_path / "state").exists() and not (tmp_path / "layers").exists()


# ---------------------------------------------------------------- the end-to-end run with the CNNs

def test_a_run_while_a_reanalysis_job_holds_the_analysis_is_refused_before_any_work(tmp_path, tmp_path_factory):
    from syconn_ng.engine.state import analysis_lock

    ana = copy_inputs(tissue(tmp_path_factory), tmp_path / "locked")
    with analysis_lock(ana / "state", "the re-analysis of cell 1"):
        r = cli("run", ana, "--quiet", check=False)
    assert r.returncode != 0
    assert "another syconn-ng run or re-analysis job is changing this analysis" in r.stdout + r.stderr
    assert not (ana / "layers").exists() or not any((ana / "layers").iterdir())


def test_end_to_end_run_with_the_cnns_meets_the_accuracy_floors(cnn):
    from syconn_ng.evaluation import evaluate_analysis, format_table

    scores = evaluate_analysis(cnn, cnn)
    table = format_table(scores)
    for key, floor in FLOORS.items():
        if key[0] in ("organelles", "hulls") or key[0] in STAGES:
            assert _get(scores, key) >= floor, f"{'.'.join(key)} below {floor}:\n{table}"
    assert scores["organelles"]["input"] == "cnn" and scores["hulls"]["input"] == "cnn"
    for stage in ("compartments", "synapses", "celltypes", "connectome"):
        if stage in STAGES:  # registered stages must be scored, not skipped
            assert "skipped" not in scores[stage] and "error" not in scores[stage], table


def test_every_output_of_the_run_exists_and_reads_back(cnn):
    from syconn_ng.layers import layer_box, open_layer, read_box

    for stage in available():
        layers, tables = OUTPUTS[stage]
        for name in layers:
            vol = open_layer(cnn / "layers" / name)
            data = read_box(vol, layer_box(vol))
            assert data.any(), f"layers/{name} is empty"
        for name, columns in tables.items():
            df = pd.read_csv(cnn / "tables" / name)
            assert list(df.columns[: len(columns)]) == columns, name
            assert len(df) > 0, name
        assert (cnn / "state" / stage / "_stage.json").is_file()
    out = (cnn / "run.out").read_text()
    assert "total" in out and "cells:" in out and "outputs:" in out
    assert ("syconn-ng serve" in out) or ("layers/cells" in out)  # the review command, or the layers' sources


def test_provenance_records_config_models_code_and_inputs(cnn):
    from syconn_ng.provenance import file_sha256

    cnn_record = json.loads((cnn / "state" / "barrier" / "provenance.json").read_text())
    model = Path(cnn_record["models"][0]["path"])
    assert model.name == "barrier.pt" and cnn_record["models"][0]["sha256"] == file_sha256(model)
    assert cnn_record["config"]["cnn"]["device"] == "auto"
    assert cnn_record["inputs"]["layers"] == [f"file://{cnn / 'raw'}"]
    hulls = json.loads((cnn / "state" / "hulls" / "provenance.json").read_text())
    assert hulls["config"]["hulls"]["rays_per_node"] == load_config(cnn).hulls.rays_per_node
    assert hulls["inputs"]["layers"] == [f"file://{cnn / 'layers' / 'barrier'}"] and hulls["inputs"]["upstream"] == ["barrier"]
    assert len(hulls["inputs"]["skeletons"]) == len(list((cnn / "skeletons").glob("*.k.zip")))
    params = json.loads((cnn / "state" / "hulls" / "_params.json").read_text())
    assert hulls["params_hash"] == params["params_hash"]
    from syconn_ng import __version__

    assert hulls["code"]["package"] == __version__
    status = cli("run", cnn, "--status").stdout
    assert "hulls: done" in status and "barrier.pt" in status


def test_pipeline_never_reads_the_truth(cnn, tmp_path_factory):
    """The same run on a copy without truth/ writes byte-identical layers and tables."""
    notruth = analysis(tmp_path_factory, "cnn_notruth")
    assert not (notruth / "truth").exists()
    assert output_digests(notruth) == output_digests(cnn)


# ---------------------------------------------------------------- executors, resume, invalidation (oracle runs: cheaper)

def test_dask_executor_on_a_local_cluster_gives_identical_outputs(oracle, tmp_path, tmp_path_factory):
    from distributed import LocalCluster

    t = tissue(tmp_path_factory)
    ana = copy_inputs(t, tmp_path / "dask")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
        cli("run", ana, "--quiet", "--scheduler", cluster.scheduler_address,
            "--oracle", f"barrier={t / 'truth' / 'barrier'},organelles={t / 'truth' / 'organelles'}")
    assert output_digests(ana) == output_digests(oracle)  # the oracle run: the CNNs are not what is tested here


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, oracle):
    """An oracle run SIGKILLed during the hulls stage, then run again to the end: (folder, output of the
    second run, the output files that differ from the uninterrupted oracle run's)."""
    t = tissue(tmp_path_factory)
    ana = copy_inputs(t, tmp_path_factory.mktemp("resume") / "ana")
    args = [sys.executable, "-m", "syconn_ng", "run", str(ana), "--quiet", "--workers", "1",
            "--oracle", f"barrier={t / 'truth' / 'barrier'},organelles={t / 'truth' / 'organelles'}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    try:
        while not list((ana / "state" / "hulls").glob("hull_*.json")):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker processes
        proc.wait()
    assert not (ana / "state" / "hulls" / "_stage.json").exists()  # it was killed mid-stage
    out = cli("run", ana, "--quiet", "--workers", "1").stdout  # no --oracle: the first run saved it in syconn.toml
    got, want = output_digests(ana), output_digests(oracle)
    return ana, out, sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))


def test_sigkill_during_run_then_rerun_gives_identical_outputs(resumed):
    ana, out, differing = resumed
    assert "objects: 0 task(s) run" in out  # finished before the kill: kept
    hulls_line = next(line for line in out.splitlines() if line.startswith("hulls:"))
    assert " 0 already done" not in hulls_line  # the killed stage resumed, not restarted
    assert differing == []


def test_changing_one_parameter_reruns_only_that_stage_and_its_dependants(resumed):
    from syconn_ng import Analysis

    ana, _, _ = resumed
    section, key, value = ("synapses", "min_probability", 0.6) if "synapses" in STAGES else ("mapping", "min_fraction_mi", 0.9)
    before = output_digests(ana)
    cfg = load_config(ana)
    setattr(getattr(cfg, section), key, value)
    write_config(cfg, ana)
    summary = Analysis(ana).run(workers=1, progress=False)
    ran = {s["stage"] for s in summary.stages if s["ran"]}
    assert ran == {section} | dependants(section), summary.stages
    untouched = [n for n in available() if n not in ran]
    assert "objects" in untouched and "hulls" in untouched
    after = output_digests(ana)
    for name in untouched:  # their outputs were not rewritten
        layers, tables = OUTPUTS[name]
        for path in [f"layers/{n}" for n in layers] + [f"tables/{n}" for n in tables]:
            if name in ("barrier", "organelles"):
                continue  # the oracle run has no CNN layers
            same = {k: v for k, v in after.items() if k.startswith(path)}
            assert same and same == {k: v for k, v in before.items() if k.startswith(path)}, path


# ---------------------------------------------------------------- the example and the Python API

def test_example_runs_the_pipeline_prints_the_accuracy_table_and_writes_a_report(tmp_path):
    out = cli("example", tmp_path / "ex", "--shape", "96,96,48", "--seed", "9", "--oracle", "barrier,organelles", "--workers", "1", "--quiet").stdout
    assert "accuracy against the tissue's ground truth" in out
    assert "mi.f1" in out and "median_iou" in out and "example finished in" in out
    report = (tmp_path / "ex" / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 3 and "<table>" in report and "median_iou" in report
    assert "src='http" not in report and 'src="http' not in report  # self-contained
    again = cli("example", tmp_path / "ex", "--shape", "96,96,48", "--seed", "9", "--oracle", "barrier,organelles", "--workers", "1", "--quiet").stdout
    assert "resuming" in again and "hulls: 0 task(s) run" in again


def test_analysis_api_reads_tables_and_names_the_missing_stage(cnn):
    from syconn_ng import Analysis
    from syconn_ng.errors import SyconnError

    a = Analysis(cnn)
    assert a.root == cnn.resolve() and a.voxel_size_nm == (10.0, 10.0, 20.0)
    cell = int(pd.read_csv(cnn / "tables" / "nodes.csv").cell.iloc[0])
    nodes = a.skeleton(cell)
    assert len(nodes) > 0 and {"x", "y", "z", "radius_nm"} <= set(nodes.columns)
    if "compartments" in STAGES:
        assert nodes.compartment.isin(["axon", "dendrite", "soma", "spine_head", "spine_neck"]).all()
    for attr, stage in (("cells", "celltypes"), ("synapses", "synapses"), ("matrix", "connectome")):
        if stage in STAGES:
            assert len(getattr(a, attr)) > 0
        else:
            with pytest.raises(SyconnError, match=f"run the '{stage}' stage"):
                getattr(a, attr)
    with pytest.raises(SyconnError, match="not among the traced cells"):
        a.skeleton(987654321)
