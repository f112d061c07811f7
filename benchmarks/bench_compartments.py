"""Benchmark of the compartment node features and forests on synthetic tissue (true barrier and organelles as oracles).

Prints nodes/s of the vectorised node features (all nodes of a cell at once: dijkstra with a
distance limit per block of sources, then one matrix product), of forest prediction with smoothing,
and of the simple alternative (a per-node Python loop: one dijkstra and Python sums per node),
side by side on the same cells, with peak memory. Run:
`.venv/bin/python benchmarks/bench_compartments.py [--shape 256,256,128] [--analysis DIR]`
(`--analysis`: reuse a finished objects → hulls → mapping analysis instead of generating one).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def loop_window_features(graph, window_nm: float) -> np.ndarray:
    """The simple alternative for three of the windowed features: per node, one dijkstra and Python sums.

    Returns (N, 3): path length (µm), length-weighted mean radius, mi count within `window_nm`.
    """
    from scipy.sparse.csgraph import dijkstra

    from syconn_ng.compartments.features import adjacency, node_lengths_nm

    adj = adjacency(graph.positions_nm, graph.edges)
    w = node_lengths_nm(graph.positions_nm, graph.edges)
    mi_nodes = list(graph.organelles.get("mi", (np.zeros(0, np.int64), None))[0])
    out = np.zeros((len(w), 3))
    for i in range(len(w)):
        d = dijkstra(adj, directed=False, indices=i, limit=window_nm)
        near = [j for j in range(len(w)) if np.isfinite(d[j])]
        length = sum(w[j] for j in near)
        out[i] = (length / 1000.0, sum(w[j] * graph.radius_nm[j] for j in near) / length, sum(1 for m in mi_nodes if m in near))
    return out


def oracle_analysis(tmp: Path, shape, seed: int):
    """Generate tissue and run objects → hulls → mapping with the true barrier and organelles."""
    from syconn_ng.analysis import Analysis
    from syconn_ng.config import write_config
    from syconn_ng.engine import LocalExecutor, run_stage
    from syconn_ng.stages import get_stage
    from syconn_ng.synth.generate import generate_tissue, oracle_config

    t0 = time.perf_counter()
    stats = generate_tissue(tmp / "synth", shape=shape, seed=seed)
    synth = tmp / "synth"
    write_config(oracle_config(synth), tmp / "analysis")
    analysis = Analysis.open(tmp / "analysis")
    ex = LocalExecutor(1)
    try:
        for name in ("objects", "hulls", "mapping"):
            run_stage(get_stage(name), analysis, executor=ex, progress=False)
    finally:
        ex.close()
    print(f"synthetic tissue {shape}, seed {seed}: {stats['cells']} cells, {stats['skeleton_nodes']} traced nodes "
          f"(tissue + objects/hulls/mapping {time.perf_counter() - t0:.0f} s)")
    return analysis


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="256,256,128", help="synthetic volume in voxels (x,y,z)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--analysis", default=None, help="a finished oracle analysis to reuse")
    ap.add_argument("--loop-cells", type=int, default=40, help="cells the per-node loop runs on (it is slow)")
    args = ap.parse_args()

    from syconn_ng.analysis import Analysis
    from syconn_ng.compartments.forest import load_forest
    from syconn_ng.stages.compartments import cell_graph, features_of, organelle_table, predict_compartments

    with tempfile.TemporaryDirectory() as tmp:
        if args.analysis:
            analysis = Analysis.open(args.analysis)
        else:
            analysis = oracle_analysis(Path(tmp), tuple(int(v) for v in args.shape.split(",")), args.seed)
        axoness = load_forest(Path(__file__).resolve().parent.parent / "syconn_ng" / "models" / "compartments.skops")
        spiness = load_forest(axoness.path.replace("compartments.skops", "spines.skops"))
        fp = axoness.meta["feature_params"]
        organelles = organelle_table(analysis)
        cells = sorted(int(f.stem) for f in (analysis.tables_dir / "hulls").glob("*.npz"))
        graphs = [cell_graph(analysis, c, organelles)[0] for c in cells]
        n_nodes = sum(len(g.positions_nm) for g in graphs)

        tracemalloc.start()
        t0 = time.perf_counter()
        feats = [features_of(g, fp) for g in graphs]
        t_feat = time.perf_counter() - t0
        _, peak_feat = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        for g, (X, names) in zip(graphs, feats):
            predict_compartments(X, names, g, axoness, spiness, smooth_um=analysis.config.compartments.smooth_um,
                                 spine_smooth_um=analysis.config.compartments.spine_smooth_um)
        t_pred = time.perf_counter() - t0
        _, peak_pred = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        # the per-node loop on the largest cells, against the vectorised features of the same cells
        order = np.argsort([-len(g.positions_nm) for g in graphs])[:args.loop_cells]
        sub = [graphs[i] for i in order]
        n_sub = sum(len(g.positions_nm) for g in sub)
        t0 = time.perf_counter()
        fast = [features_of(g, fp) for g in sub]
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        slow = [loop_window_features(g, fp["window_um"] * 1000.0) for g in sub]
        t_slow = time.perf_counter() - t0
        cols = ["wl_len_um", "wl_rad_mean", "wl_mi_n"]
        agree = all(np.allclose(X[:, [names.index(c) for c in cols]], s, rtol=1e-4) for (X, names), s in zip(fast, slow))

        print(f"\n{len(cells)} cells, {n_nodes} skeleton nodes (traced + interpolated every 50 nm), {len(feats[0][1])} features, "
              f"windows {fp['small_window_um']} and {fp['window_um']} µm")
        print(f"{'step':<34}{'seconds':>9}{'nodes/s':>12}{'peak MiB':>10}")
        print(f"{'node features (vectorised)':<34}{t_feat:>9.2f}{n_nodes / t_feat:>12,.0f}{peak_feat / 2**20:>10.1f}")
        print(f"{'forests + smoothing':<34}{t_pred:>9.2f}{n_nodes / t_pred:>12,.0f}{peak_pred / 2**20:>10.1f}")
        print(f"\nper-node loop vs vectorised on the {len(sub)} largest cells ({n_sub} nodes; loop computes only 3 of the features): "
              f"vectorised {n_sub / t_fast:,.0f} nodes/s (all features), loop {n_sub / t_slow:,.0f} nodes/s, "
              f"ratio {t_slow / t_fast:.0f}x (same values: {agree})")
        import resource

        print(f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
