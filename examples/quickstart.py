"""A notebook-style tour of the Python API on a small synthetic tissue.

Run: .venv/bin/python examples/quickstart.py [OUT_DIR]
Makes a 128×128×64 tissue, reads one traced cell's skeleton, and extracts organelle objects
from the tissue's true organelle layer (an oracle run of the `objects` stage).
"""

import sys
from pathlib import Path

import pandas as pd

from syconn_ng.analysis import Analysis
from syconn_ng.config import load_config, write_config
from syconn_ng.engine import run_stage
from syconn_ng.io.annotation import read_annotation
from syconn_ng.stages import get_stage
from syconn_ng.synth.generate import generate_tissue


def main(out: Path) -> None:
    generate_tissue(out, shape=(128, 128, 64), seed=7)
    cells = pd.read_csv(out / "truth" / "cells.csv")
    print(cells.groupby("type").size().rename("cells"))

    skeleton = read_annotation(next(iter(sorted((out / "skeletons").glob("*.k.zip")))))
    tree = skeleton.trees[0]
    print(f"cell {tree.id}: {len(tree.nodes)} nodes, {tree.path_length_um((10, 10, 20)):.2f} µm of skeleton")

    config = load_config(out)
    config.oracle.organelles = "truth/organelles"  # score the objects stage alone
    write_config(config, out)
    report = run_stage(get_stage("objects"), Analysis.open(out), progress=False)
    print(report)
    for kind in ("sj", "vc", "mi"):
        table = pd.read_csv(out / "tables" / f"objects_{kind}.csv")
        print(f"{kind}: {len(table)} objects, median {table.voxels.median():.0f} voxels")


if __name__ == "__main__":  # the local executor spawns worker processes that import this file
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "quickstart_tissue"))
