"""Benchmark: read and write a large KNOSSOS annotation, beside plain `xml.etree.ElementTree`.

Generates N nodes in T trees (chains with a branch every 50 nodes) in a temporary folder and
times, side by side in one run: our writer; ElementTree building the same XML and writing it;
our reader (.nml and .k.zip); `ElementTree.parse` of our file. Each step runs in a fresh
child process so that its peak memory (growth of the peak resident set size over the
process' level before the step) is its own and not memory freed by an earlier step.

    .venv/bin/python benchmarks/bench_knossos_io.py [--nodes 1000000] [--trees 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

import numpy as np

from syconn_ng.io.annotation import read_annotation, write_annotation
from syconn_ng.io.skeleton import Node, Parameters, Skeleton, Tree


def make_skeleton(n_nodes: int, n_trees: int, seed: int = 0) -> Skeleton:
    """Random-walk trees with integer voxel positions, comments on every 100th node."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(-3, 4, size=(n_nodes, 3))
    per_tree = np.array_split(np.arange(n_nodes), n_trees)
    trees = []
    for t, idx in enumerate(per_tree):
        pos = np.cumsum(steps[idx], axis=0) + rng.integers(1000, 9000, size=3)
        nodes = [Node(int(i) + 1, float(x), float(y), float(z), 1.5, "soma" if i % 100 == 0 else "", int(i), 0, 1)
                 for i, (x, y, z) in zip(idx.tolist(), pos.tolist())]
        edges = [(int(idx[k - 1] if k % 50 else idx[max(k - 25, 0)]) + 1, int(idx[k]) + 1) for k in range(1, len(idx))]
        trees.append(Tree(t + 1, f"cell {t + 1}", None, True, None, nodes, edges))
    return Skeleton(trees=trees, parameters=Parameters(experiment="bench", scale_nm=(10.0, 10.0, 25.0), time_ms=0))


def etree_write(skel: Skeleton, path) -> None:
    """The simple alternative: build an ElementTree of the same NML and write it."""
    root = ET.Element("things")
    params = ET.SubElement(root, "parameters")
    ET.SubElement(params, "scale", x="10", y="10", z="25")
    for t in skel.trees:
        thing = ET.SubElement(root, "thing", id=str(t.id), comment=t.comment)
        nodes = ET.SubElement(thing, "nodes")
        for n in t.nodes:
            ET.SubElement(nodes, "node", id=str(n.id), radius=str(n.radius), x=str(int(n.x) + 1),
                          y=str(int(n.y) + 1), z=str(int(n.z) + 1), inVp=str(n.in_vp), inMag=str(n.in_mag),
                          time=str(n.time))
        edges = ET.SubElement(thing, "edges")
        for s, d in t.edges:
            ET.SubElement(edges, "edge", source=str(s), target=str(d))
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)


def run_step(step: str, folder: str, n: int, trees: int) -> dict:
    """One measured step in this process: seconds and peak RSS growth in bytes."""
    paths = {k: os.path.join(folder, f) for k, f in (("nml", "a.nml"), ("plain", "plain.nml"), ("kzip", "a.k.zip"))}
    skel = make_skeleton(n, trees) if step.startswith("write") else None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if step == "write_nml":
        write_annotation(skel, paths["nml"])
    elif step == "write_etree":
        etree_write(skel, paths["plain"])
    elif step == "write_kzip":
        write_annotation(skel, paths["kzip"])
    elif step in ("read_nml", "read_kzip"):
        back = read_annotation(paths[step[5:]])
        assert back.num_nodes() == n
    elif step == "parse_etree":
        tree = ET.parse(paths["nml"])
        assert sum(1 for _ in tree.iter("node")) == n
    seconds = time.perf_counter() - t0
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024  # KiB on Linux
    return {"seconds": seconds, "peak": peak}


STEPS = [("write_nml", "write .nml (syconn_ng)", "write_etree"),
         ("write_etree", "write .nml (ElementTree build+write)", None),
         ("write_kzip", "write .k.zip (syconn_ng)", None),
         ("read_nml", "read .nml (syconn_ng -> Skeleton)", "parse_etree"),
         ("read_kzip", "read .k.zip (syconn_ng -> Skeleton)", None),
         ("parse_etree", "ElementTree.parse (elements only)", None)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--trees", type=int, default=1000)
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n, trees = args.nodes, min(args.trees, args.nodes)
    if args.step:
        print(json.dumps(run_step(args.step, args.folder, n, trees)))
        return
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for step, _, _ in STEPS:
            cmd = [sys.executable, __file__, "--step", step, "--folder", folder,
                   "--nodes", str(n), "--trees", str(trees)]
            results[step] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        size_mb = os.path.getsize(os.path.join(folder, "a.nml")) / 1e6
        kzip_mb = os.path.getsize(os.path.join(folder, "a.k.zip")) / 1e6
    print(f"{n} nodes in {trees} trees; .nml {size_mb:.0f} MB, .k.zip {kzip_mb:.0f} MB")
    for step, label, ref in STEPS:
        m = results[step]
        line = (f"{label:<38} {n / m['seconds'] / 1e6:5.2f} M nodes/s {m['seconds']:6.2f} s"
                f"  peak +{m['peak'] / 2**20:6.0f} MiB")
        if ref:
            r = results[ref]
            line += (f"   x{r['seconds'] / m['seconds']:.2f} speed, x{m['peak'] / max(r['peak'], 1):.2f} memory"
                     " vs ElementTree")
        print(line)


if __name__ == "__main__":
    main()
