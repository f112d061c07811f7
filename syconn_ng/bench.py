"""Pipeline benchmark: synthetic tissue of given sizes through every stage, timed the same way every time.

Per stage: wall time, megavoxels/s per core, CPU seconds of the workers and the driver (robust on a
shared machine), peak RSS per worker process and that of an idle worker; for the whole pipeline
gigavoxels/h per core, with and without the CNN stages, and the ratio to SyConn2's published rates.
Used by `syconn-ng bench`; `report` turns saved results into tables and the scaling plot.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from pathlib import Path

CNN_STAGES = ("barrier", "organelles", "myelin_syntype")
# SyConn2 (Schubert et al. 2022): whole pipeline ~34 Mvox/h per CPU core; CNN inference ~4.4 Gvox/h per GPU
SYCONN2_MVOX_H_PER_CORE = 34.0
SYCONN2_CNN_GVOX_H_PER_GPU = 4.4
BENCH_SEED = 3  # an evaluation seed: no bundled model was trained on it


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages of this machine (what else was running)."""
    return [round(v, 2) for v in os.getloadavg()]


def machine_info() -> dict:
    """CPU model, cores, RAM, Python / torch versions, load average."""
    import psutil

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        torch_version, cuda = torch.__version__, torch.cuda.is_available()
    except ImportError:
        torch_version, cuda = None, False
    from syconn_ng import __version__

    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "torch": torch_version, "cuda": cuda, "platform": platform.platform(),
            "syconn_ng": __version__, "load_average": load_average()}


class ProcessSampler:
    """Samples RSS and CPU time of this process and its children (the pool's workers) every `interval_s`.

    `.workers` maps pid → {"peak_rss", "cpu_s"} (cpu_s counted from the start of sampling);
    `.driver_peak_rss` and `.driver_cpu_s` are this process's.
    """

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.workers: dict[int, dict] = {}
        self._cpu0: dict[int, float] = {}

    def __enter__(self):
        import psutil

        self._me = psutil.Process()
        for child in self._me.children(recursive=True):  # workers already running: count CPU from now
            try:
                self._cpu0[child.pid] = sum(child.cpu_times()[:2])
            except psutil.Error:
                pass
        self._driver_cpu0 = sum(self._me.cpu_times()[:2])
        self.driver_peak_rss = self._me.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        import psutil

        self.driver_peak_rss = max(self.driver_peak_rss, self._me.memory_info().rss)
        for child in self._me.children(recursive=True):
            try:
                rss, cpu = child.memory_info().rss, sum(child.cpu_times()[:2])
            except psutil.Error:
                continue
            w = self.workers.setdefault(child.pid, {"peak_rss": 0, "cpu_s": 0.0})
            w["peak_rss"] = max(w["peak_rss"], rss)
            w["cpu_s"] = cpu - self._cpu0.get(child.pid, 0.0)

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval_s)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        self.driver_cpu_s = sum(self._me.cpu_times()[:2]) - self._driver_cpu0


def idle_probe(stage_name: str, hold_s: float) -> tuple[int, int]:
    """Run in a pool worker: import the libraries every task of `stage_name` uses (the stage module, CloudVolume;
    torch for the CNN stages), wait, return (pid, RSS bytes): the memory of an idle worker."""
    import cloudvolume  # noqa: F401
    import psutil

    import syconn_ng.engine.tasks  # noqa: F401
    from syconn_ng.stages import get_stage

    get_stage(stage_name)
    if stage_name in CNN_STAGES:
        import torch  # noqa: F401
    time.sleep(hold_s)  # so that each worker of the pool takes one probe
    return os.getpid(), psutil.Process().memory_info().rss


def bench_stage(analysis, name: str, workers: int, voxels: int, *, executor: str = "local") -> dict:
    """Run stage `name` on a fresh pool of `workers` processes; its times, CPU and memory (see module docstring).

    executor: "local" (the process pool) or "dask" (a `distributed.LocalCluster` of `workers` single-threaded
    worker processes on 127.0.0.1). The pool or cluster is started (and each worker's idle RSS measured) before
    the clock starts, so the time is the stage's own work; a fresh one per stage keeps one stage's memory out of
    the next one's peak.
    """
    from syconn_ng.pipeline import run_pipeline

    ex, idle = _fresh_executor(executor, workers, name)
    try:
        load0 = load_average()
        with ProcessSampler() as s:
            summary = run_pipeline(analysis, [name], executor=ex, progress=False)
    finally:
        ex.close()
    seconds = summary.stages[0]["seconds"]
    worker_cpu = sum(w["cpu_s"] for w in s.workers.values())
    busy = {pid: w for pid, w in s.workers.items() if pid in idle}
    peak = max((w["peak_rss"] for w in busy.values()), default=0)
    idle_rss = max(idle.values(), default=0)
    cpu_s = worker_cpu + s.driver_cpu_s
    return {"stage": name, "tasks": summary.stages[0]["ran"], "seconds": round(seconds, 3),
            "cpu_s": round(cpu_s, 2), "worker_cpu_s": round(worker_cpu, 2), "driver_cpu_s": round(s.driver_cpu_s, 2),
            "mvox_s_per_core": round(voxels / 1e6 / seconds / workers, 4) if seconds > 0 else None,
            "mvox_per_cpu_s": round(voxels / 1e6 / cpu_s, 4) if cpu_s > 0 else None,
            "peak_rss_worker_mib": round(peak / 2**20, 1), "idle_rss_worker_mib": round(idle_rss / 2**20, 1),
            "above_idle_worker_mib": round(max(peak - idle_rss, 0) / 2**20, 1),
            "peak_rss_driver_mib": round(s.driver_peak_rss / 2**20, 1),
            "load_average": [load0, load_average()]}


def _fresh_executor(kind: str, workers: int, stage_name: str):
    """(executor, {worker pid: idle RSS bytes}) for one benchmarked stage."""
    if kind == "dask":
        from distributed import LocalCluster

        from syconn_ng.engine.executors import DaskExecutor

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
        ex = DaskExecutor(cluster=cluster)
        return ex, dict(ex.client.run(idle_probe, stage_name, 0.0).values())
    from syconn_ng.engine import LocalExecutor

    ex = LocalExecutor(workers)
    return ex, dict(r for _, r in ex.map_unordered(idle_probe, [(stage_name, 0.5)] * workers) if isinstance(r, tuple))


class InlineExecutor:
    """Runs every task in this process, one after another: the engine's own code path, visible to a profiler."""

    name = "inline"

    def map_unordered(self, func, items):
        for i, args in enumerate(items):
            try:
                yield i, func(*args)
            except Exception as err:  # the driver reports it, as for a pool
                yield i, err

    def close(self) -> None:
        pass


def profile_stage(analysis, name: str, *, top: int = 15) -> dict:
    """Redo stage `name` in this process under cProfile; the functions with the most own time and most cumulative time.

    Rows: [function (file:line), calls, own seconds, cumulative seconds]. The stage is forced, so it is redone.
    """
    import cProfile
    import pstats

    from syconn_ng.engine import run_stage
    from syconn_ng.stages import get_stage

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    try:
        run_stage(get_stage(name), analysis, force=True, progress=False, executor=InlineExecutor())
    finally:
        prof.disable()
    seconds = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats  # (file, line, func) -> (primitive calls, calls, own s, cumulative s, callers)

    def rows(col):
        best = sorted(stats.items(), key=lambda kv: kv[1][col], reverse=True)[:top]
        return [[f"{Path(f).name}:{line}({fn})", calls, round(own, 3), round(cum, 3)] for (f, line, fn), (_, calls, own, cum, _) in best]

    return {"stage": name, "seconds": round(seconds, 2), "by_own_time": rows(2), "by_cumulative_time": rows(3)}


def profile_lines(profile: dict) -> list[str]:
    """A cProfile summary as aligned text."""
    lines = [f"profile of {profile['stage']} (in one process, {profile['seconds']:.1f} s under cProfile)"]
    for key, title in (("by_own_time", "own time"), ("by_cumulative_time", "cumulative time")):
        lines.append(f"  by {title}:  {'calls':>9s} {'own s':>8s} {'cum s':>8s}")
        lines += [f"    {fn[:60]:60s} {calls:9d} {own:8.2f} {cum:8.2f}" for fn, calls, own, cum in profile[key]]
    return lines


def _counts(root: Path) -> dict:
    """Cells, traced nodes, contact candidates and synapses of a finished run."""
    import pandas as pd

    t = root / "tables"
    out = {}
    if (t / "nodes.csv").is_file():
        nodes = pd.read_csv(t / "nodes.csv", usecols=["cell"])
        out.update(cells=int(nodes.cell.nunique()), nodes=len(nodes))
    for name, key in (("synapse_candidates.csv", "contact_candidates"), ("synapses.csv", "synapses")):
        if (t / name).is_file():
            out[key] = len(pd.read_csv(t / name, usecols=[0]))
    return out


def pipeline_totals(stages: list[dict], voxels: int, workers: int) -> dict:
    """Whole-pipeline throughput (with and without the CNN stages) and the ratios to SyConn2's published rates."""
    def rate(rows):
        s = sum(r["seconds"] for r in rows)
        cpu = sum(r["cpu_s"] for r in rows)
        if s <= 0:
            return None
        gvox_h_core = voxels / 1e9 / (s / 3600) / workers
        return {"seconds": round(s, 2), "cpu_s": round(cpu, 2), "gvox_h_per_core": round(gvox_h_core, 5),
                "gvox_per_cpu_h": round(voxels / 1e9 / (cpu / 3600), 5) if cpu > 0 else None,
                "ratio_to_syconn2_cpu": round(gvox_h_core * 1e3 / SYCONN2_MVOX_H_PER_CORE, 3)}

    cnn = [r for r in stages if r["stage"] in CNN_STAGES and r["tasks"]]
    out = {"all": rate(stages), "without_cnn": rate([r for r in stages if r["stage"] not in CNN_STAGES])}
    if cnn:
        c = rate(cnn)
        c["ratio_to_syconn2_gpu_per_core"] = round(c["gvox_h_per_core"] / SYCONN2_CNN_GVOX_H_PER_GPU, 5)
        out["cnn"] = c
    return out


def bench_shape(shape, *, workdir: Path, workers: int, oracle: bool, seed: int = BENCH_SEED,
                task_size=(128, 128, 128), stages: list[str] | None = None, profile: str | None = None, executor: str = "local",
                echo=print) -> dict:
    """Generate a tissue of `shape` in `workdir` and run the pipeline (`stages`, default all) stage by stage.

    `oracle`: the true barrier and organelle layers replace the CNN stages (which are then not run).
    `profile`: afterwards redo this stage in one process under cProfile (`profile_stage`).
    Returns the result record (JSON-able).
    """
    from syconn_ng.analysis import Analysis
    from syconn_ng.config import load_config, write_config
    from syconn_ng.pipeline import apply_overrides, select_stages
    from syconn_ng.synth.generate import generate_tissue

    shape = tuple(int(v) for v in shape)
    voxels = shape[0] * shape[1] * shape[2]
    workdir = Path(workdir)
    t0 = time.perf_counter()
    stats = generate_tissue(workdir, shape=shape, seed=seed, workers=workers)
    generation_s = time.perf_counter() - t0
    cfg = load_config(workdir)
    cfg.chunking.task_size = [max(t, c) for t, c in zip(task_size, cfg.chunking.chunk_size)]
    cfg.executor.workers = workers  # the CNN stages share the cores among this many workers
    write_config(cfg, workdir)
    analysis, _ = apply_overrides(Analysis.open(workdir), oracle="barrier,organelles" if oracle else "none")
    names = [n for n in (stages or select_stages()) if not (oracle and n in CNN_STAGES)]
    echo(f"{'x'.join(map(str, shape))}: {voxels / 1e6:.1f} Mvox, {stats['cells']} cells, generated in {generation_s:.1f} s; "
         f"stages {', '.join(names)} on {workers} {'LocalCluster ' if executor == 'dask' else ''}worker(s)"
         f"{' (oracle barrier, organelles)' if oracle else ''}")
    from syconn_ng.errors import SyconnError

    rows, error = [], None
    for name in names:
        try:
            row = bench_stage(analysis, name, workers, voxels, executor=executor)
        except SyconnError as err:  # later stages need this one's outputs: keep what was measured, say why it stopped
            error = {"stage": name, "error": str(err)[:2000]}
            echo(f"  {name}: failed, the later stages are not run: {str(err).splitlines()[0]}")
            break
        rows.append(row)
        echo("  " + format_row(row))
    result = {"kind": "pipeline", "shape": list(shape), "voxels": voxels, "seed": seed, "oracle": oracle,
              "workers": workers, "executor": executor, "task_size": list(cfg.chunking.task_size), "chunk_size": list(cfg.chunking.chunk_size),
              "generation_s": round(generation_s, 2), "counts": _counts(workdir), "stages": rows,
              "totals": pipeline_totals(rows, voxels, workers), "machine": machine_info(),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if error:
        result["failed"] = error
    elif profile:
        result["profile"] = profile_stage(analysis, profile)
    return result


HEADER = (f"{'stage':13s} {'tasks':>5s} {'wall s':>8s} {'CPU s':>8s} {'Mvox/s/core':>11s} {'Mvox/CPU-s':>10s} "
          f"{'peak MiB/wkr':>12s} {'idle MiB':>8s} {'driver MiB':>10s}")


def format_row(r: dict) -> str:
    """One stage as an aligned text line (the columns of HEADER)."""
    f = lambda v, w, p: f"{v:{w}.{p}f}" if v is not None else f"{'-':>{w}s}"  # noqa: E731
    return (f"{r['stage']:13s} {r['tasks']:5d} {f(r['seconds'], 8, 2)} {f(r['cpu_s'], 8, 2)} {f(r['mvox_s_per_core'], 11, 3)} "
            f"{f(r['mvox_per_cpu_s'], 10, 3)} {f(r['peak_rss_worker_mib'], 12, 0)} {f(r['idle_rss_worker_mib'], 8, 0)} "
            f"{f(r['peak_rss_driver_mib'], 10, 0)}")


def summary_lines(result: dict) -> list[str]:
    """The per-stage table and the whole-pipeline figures of one result record."""
    lines = [f"{'x'.join(map(str, result['shape']))} ({result['voxels'] / 1e6:.1f} Mvox, {result['workers']} worker(s)"
             f"{', oracle' if result['oracle'] else ', CNNs on ' + ('GPU' if result['machine']['cuda'] else 'CPU')}), "
             f"load average {result['machine']['load_average']}", HEADER]
    lines += [format_row(r) for r in result["stages"]]
    for key, label in (("all", "whole pipeline"), ("without_cnn", "without CNNs"), ("cnn", "CNN stages")):
        t = result["totals"].get(key)
        if t:
            anchor = (f"x{t['ratio_to_syconn2_gpu_per_core']:.4f} of SyConn2's {SYCONN2_CNN_GVOX_H_PER_GPU:g} Gvox/h per GPU "
                      "(one CPU core against one GPU)" if key == "cnn" else
                      f"x{t['ratio_to_syconn2_cpu']:.3f} of SyConn2's {SYCONN2_MVOX_H_PER_CORE:g} Mvox/h per core")
            lines.append(f"{label:15s} {t['seconds']:8.1f} s  {t['gvox_h_per_core'] * 1e3:8.2f} Mvox/h per core "
                         f"({t['gvox_per_cpu_h'] * 1e3:.2f} Mvox per CPU-hour); {anchor}")
    return lines


def result_path(out_dir: Path, result: dict) -> Path:
    """`<out_dir>/<date>_<X>x<Y>x<Z>[_oracle][_dask].json`."""
    shape = "x".join(map(str, result["shape"]))
    dask = "_dask" if result.get("executor") == "dask" else ""
    return Path(out_dir) / f"{result['date'][:10]}_{shape}{'_oracle' if result['oracle'] else ''}{dask}.json"


def save_result(result: dict, path: Path) -> Path:
    from syconn_ng.layers import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    return path


def load_results(paths) -> list[dict]:
    """Pipeline result records from JSON files (others, e.g. side-by-side collections, are skipped)."""
    out = []
    for p in sorted(map(Path, paths)):
        data = json.loads(p.read_text(encoding="utf-8"))
        for rec in data if isinstance(data, list) else [data]:
            if isinstance(rec, dict) and rec.get("kind") == "pipeline":
                out.append(rec)
    return out


def plot_scaling(results: list[dict], path: Path) -> Path:
    """Time per voxel vs volume size, one line per stage: wall core-seconds and CPU seconds per Mvox (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    stages = list(dict.fromkeys(r["stage"] for res in results for r in res["stages"]))
    for stage in stages:
        runs = [res for res in results if any(r["stage"] == stage and r["tasks"] for r in res["stages"])]
        if stage not in CNN_STAGES and len({res["voxels"] for res in runs if res["oracle"]}) >= 2:
            runs = [res for res in runs if res["oracle"]]  # the cheaper oracle runs reach larger volumes: one line per stage
        pts = sorted((res["voxels"], r["seconds"] * res["workers"] * 1e6 / res["voxels"], r["cpu_s"] * 1e6 / res["voxels"])
                     for res in runs for r in res["stages"] if r["stage"] == stage and r["tasks"])
        if not pts:
            continue
        x = [p[0] / 1e6 for p in pts]
        for ax, col in zip(axes, (1, 2)):
            ax.plot(x, [p[col] for p in pts], "o-", label=stage)
    for ax, title in zip(axes, ("wall time x workers per Mvox", "CPU seconds per Mvox")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("volume (Mvox)")
        ax.set_ylabel("seconds per Mvox")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle("syconn_ng stages: cost per voxel vs volume size (flat = linear)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown_tables(results: list[dict]) -> str:
    """Markdown: one table per result (per stage), then the whole-pipeline rates against SyConn2."""
    out = []
    for res in sorted(results, key=lambda r: (r["oracle"], r["voxels"])):
        m = res["machine"]
        out.append(f"**{'×'.join(map(str, res['shape']))}** ({res['voxels'] / 1e6:.1f} Mvox, {res['counts'].get('cells', '?')} cells, "
                   f"{res['counts'].get('synapses', '?')} synapses; {res['workers']} workers; "
                   f"{'true barrier and organelles (no CNN)' if res['oracle'] else 'CNNs on CPU'}; {res['date'][:16]} UTC, "
                   f"load average {m['load_average'][0]})\n")
        out.append("| stage | tasks | wall s | CPU s | Mvox/s per core | Mvox per CPU-s | peak RSS per worker MiB (idle) | driver MiB |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in res["stages"]:
            out.append(f"| {r['stage']} | {r['tasks']} | {r['seconds']:.1f} | {r['cpu_s']:.1f} | {r['mvox_s_per_core'] or 0:.2f} | "
                       f"{r['mvox_per_cpu_s'] or 0:.2f} | {r['peak_rss_worker_mib']:.0f} ({r['idle_rss_worker_mib']:.0f}) | "
                       f"{r['peak_rss_driver_mib']:.0f} |")
        out.append("")
    out.append("| volume | run | seconds | Mvox/h per core (wall) | × SyConn2 (34 Mvox/h per core; CNNs: 4.4 Gvox/h per GPU) "
               "| Mvox per CPU-hour | × SyConn2 by CPU time |")
    out.append("|---|---|---|---|---|---|---|")
    for res in sorted(results, key=lambda r: (r["oracle"], r["voxels"])):
        for key, label in (("all", "whole pipeline" + (" (no CNN: oracle)" if res["oracle"] else " (CNNs on CPU)")),
                           ("without_cnn", "without the CNN stages"), ("cnn", "CNN stages only")):
            t = res["totals"].get(key)
            if not t or (res["oracle"] and key == "without_cnn"):
                continue
            ratio = (f"{t['ratio_to_syconn2_gpu_per_core']:.4f} of {SYCONN2_CNN_GVOX_H_PER_GPU:g} Gvox/h per GPU" if key == "cnn"
                     else f"{t['ratio_to_syconn2_cpu']:.2f}")
            out.append(f"| {'×'.join(map(str, res['shape']))} | {label} | {t['seconds']:.1f} | {t['gvox_h_per_core'] * 1e3:.1f} | "
                       f"{ratio} | {t['gvox_per_cpu_h'] * 1e3:.1f} | "
                       f"{t['gvox_per_cpu_h'] * 1e3 / (SYCONN2_CNN_GVOX_H_PER_GPU * 1e3 if key == 'cnn' else SYCONN2_MVOX_H_PER_CORE):.{4 if key == 'cnn' else 2}f} |")
    return "\n".join(out) + "\n"
