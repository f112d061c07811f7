"""Run every `benchmarks/bench_*.py` (each in its own process) and collect their output into one JSON file.

Each script prints its own side-by-side ratio against the simple alternative; this collects the
full output, the headline lines, wall time, exit status and the load average before and after,
with the machine's description, into `benchmarks/results/<date>_side_by_side.json`.

    .venv/bin/python benchmarks/run_all.py              # quick arguments (minutes on 2 cores)
    .venv/bin/python benchmarks/run_all.py --full       # each script's own defaults (larger volumes)
    .venv/bin/python benchmarks/run_all.py --only bench_cnn --only bench_hulls
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# smaller inputs than the scripts' defaults, so that all of them run in a few minutes on a small machine
QUICK_ARGS = {
    "bench_annotations": ["--n", "50000"],
    "bench_annotations_sharded": ["--n", "100000", "--cells", "10000"],
    "bench_cnn": ["--shape", "192", "192", "64"],
    "bench_compartments": ["--shape", "192,192,96", "--loop-cells", "20"],
    "bench_downsample": ["--shape", "256,256,128"],
    "bench_hotspots": ["--rounds", "2"],
    "bench_hulls": ["--shape", "192,192,96"],
    "bench_import_knossos": [],
    "bench_knossos_io": ["--nodes", "200000", "--trees", "200"],
    "bench_multires_mesh": ["--shape", "192,192,96", "--length-um", "50"],
    "bench_objects": ["--sizes", "256", "512", "--workers", "2"],
    "bench_synapses": ["--workdir", "/tmp/bench_synapses", "--pairs", "200"],
    "bench_synth": ["--sizes", "256,256,128", "--no-unchunked"],
}
# the side-by-side ratios the performance page quotes first, then the rest in name order
ORDER = ("bench_cnn", "bench_objects", "bench_hulls", "bench_knossos_io", "bench_synapses", "bench_annotations", "bench_hotspots")
# lines holding each script's side-by-side ratio (or its main figure), for the summary
HEADLINE = re.compile(r"ratio|hot spot|CNN forward|voxelisation|speed-up|/ naive|vs scipy|alternative|loop|streamed /|\bx\b.*\bsyconn|scipy in memory|objects, \d wkr|"
                      r"rays/s|etree|ElementTree|per core|tinybrain", re.I)


def run_script(path: Path, args: list[str], timeout_s: float) -> dict:
    """Run one benchmark script in a fresh interpreter; its output, time, status and the load around it."""
    load0 = [round(v, 2) for v in os.getloadavg()]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=timeout_s,
                              cwd=HERE.parent)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = "timeout", exc.stdout or "", exc.stderr or ""
        out, err = (s.decode() if isinstance(s, bytes) else s for s in (out, err))
    seconds = time.perf_counter() - t0
    return {"args": args, "rc": rc, "seconds": round(seconds, 1), "load_average": [load0, [round(v, 2) for v in os.getloadavg()]],
            "headline": [line.strip() for line in out.splitlines() if HEADLINE.search(line)],
            "stdout": out, "stderr_tail": err[-2000:] if rc != 0 else ""}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="use each script's default arguments instead of the quick ones")
    ap.add_argument("--only", action="append", default=[], help="run only this script (name without .py; repeatable)")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per script")
    ap.add_argument("--out", default=None, help="JSON file (default benchmarks/results/<date>_side_by_side.json)")
    args = ap.parse_args()

    sys.path.insert(0, str(HERE.parent))
    from syconn_ng.bench import machine_info
    from syconn_ng.layers import atomic_write_text

    scripts = sorted((p for p in HERE.glob("bench_*.py") if not args.only or p.stem in args.only),
                     key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else len(ORDER), p.stem))
    results = {"kind": "side_by_side", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "full": args.full,
               "machine": machine_info(), "scripts": {}}
    out = Path(args.out) if args.out else HERE / "results" / f"{results['date'][:10]}_side_by_side.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for path in scripts:
        script_args = [] if args.full else QUICK_ARGS.get(path.stem, [])
        print(f"== {path.name} {' '.join(script_args)}", flush=True)
        r = run_script(path, script_args, args.timeout)
        results["scripts"][path.stem] = r
        print(r["stdout"].rstrip() or r["stderr_tail"], flush=True)
        print(f"-- {path.name}: exit {r['rc']}, {r['seconds']:.0f} s, load {r['load_average'][0][0]} -> {r['load_average'][1][0]}\n",
              flush=True)
        atomic_write_text(out, json.dumps(results, indent=1) + "\n")  # after each script: a partial run keeps what it measured
    print(f"results: {out}")
    failed = [k for k, v in results["scripts"].items() if v["rc"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
