"""The synthetic training recipe of the bundled forests: tissues of seeds 11-19 run through the pipeline
with the true barrier and organelles as oracles; labels are their `skeletons_labelled/` files."""

from __future__ import annotations

from pathlib import Path

SEEDS = tuple(range(11, 20))  # never seed 1 (tests) nor 2-5 (evaluation reports)
SHAPES = ((192, 192, 96), (256, 256, 128))  # the test tissue's size, and larger cells (longer fragments)


def synthetic_training_set(workdir, *, stages=("objects", "hulls", "mapping"), seeds=SEEDS, shapes=SHAPES,
                           progress: bool = True) -> list[tuple[Path, list[str]]]:
    """(analysis dir, [labels glob]) per tissue under `workdir`, generated and run where missing (resumable)."""
    from syconn_ng.analysis import Analysis
    from syconn_ng.config import write_config
    from syconn_ng.engine import LocalExecutor, run_stage
    from syconn_ng.stages import get_stage
    from syconn_ng.synth.generate import generate_tissue, oracle_config

    workdir = Path(workdir)
    out = []
    executor = LocalExecutor(1)
    try:
        for shape in shapes:
            for seed in seeds:
                tag = f"seed{seed}_{'x'.join(map(str, shape))}"
                synth, root = workdir / f"tissue_{tag}", workdir / f"analysis_{tag}"
                if not (synth / ".complete").exists():
                    generate_tissue(synth, shape=shape, seed=seed)
                    (synth / ".complete").write_text("ok\n")
                if not (root / "syconn.toml").exists():
                    write_config(oracle_config(synth), root)
                analysis = Analysis.open(root)
                for name in stages:  # finished stages are skipped by the driver
                    run_stage(get_stage(name), analysis, executor=executor, progress=progress)
                out.append((root, [str(synth / "skeletons_labelled" / "*.k.zip")]))
    finally:
        executor.close()
    return out
