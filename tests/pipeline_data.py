"""End-to-end analyses for the pipeline tests: ONE small synthetic tissue (its own seed, never used in
training) run through `syconn-ng run` in subprocesses, built once per test session and shared by the
xdist workers (a file lock and a completion marker per variant, like `synth_tissue`); read-only.

Variants:
* `cnn`: the tissue folder itself (truth/ beside it), the whole pipeline with the bundled models;
* `cnn_notruth`: a copy of the tissue WITHOUT truth/, the same run (the pipeline must not read answers);
* `oracle`: a copy with `--oracle barrier,organelles` (cheap runs for executor and resume tests).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

PIPELINE_SHAPE = (128, 128, 64)
PIPELINE_SEED = 6  # not a training seed (11-19), not the test tissue (1), not an evaluation seed (2-5)
SYNAPSES_PER_UM3 = 3.0  # 5 synapses in this small volume (1 per µm³ gives 1 or 2): something for the synapse scores
INPUTS = ("raw", "skeletons", "syconn.toml")
OUTPUTS = ("layers", "tables")


def shared_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def cli(*args, cwd=None, timeout=900, check=True) -> subprocess.CompletedProcess:
    """`syconn-ng ARGS` in a subprocess (the installed entry point's module); output captured."""
    proc = subprocess.run([sys.executable, "-m", "syconn_ng", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"syconn-ng {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def copy_inputs(tissue: Path, out: Path) -> Path:
    """A new analysis folder holding the tissue's inputs (raw EM, skeletons, syconn.toml) and NOT its truth/."""
    out.mkdir(parents=True)
    for name in INPUTS:
        src = tissue / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, out / name)
    return out


def output_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under layers/ and tables/ (relative path → digest)."""
    out = {}
    for sub in OUTPUTS:
        for p in sorted((Path(root) / sub).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _shared(tmp_path_factory, name: str, build) -> Path:
    from filelock import FileLock

    root = shared_root(tmp_path_factory)
    out = root / f"pipeline_{name}"
    done = out / ".complete"
    with FileLock(str(root / f"pipeline_{name}.lock")):
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)
            build(out)
            done.write_text("ok\n")
    return out


def tissue(tmp_path_factory) -> Path:
    """The generated tissue (raw/, truth/, skeletons/, syconn.toml), not yet run."""
    def build(out):
        from syconn_ng.synth.generate import generate_tissue

        generate_tissue(out, shape=PIPELINE_SHAPE, seed=PIPELINE_SEED, synapses_per_um3=SYNAPSES_PER_UM3)

    return _shared(tmp_path_factory, "tissue", build)


def analysis(tmp_path_factory, variant: str) -> Path:
    """An analysis folder of `variant` ('cnn', 'cnn_notruth', 'oracle') after a complete `syconn-ng run`;
    `run.out` holds the command's stdout."""
    source = tissue(tmp_path_factory)

    def build(out):
        if variant == "cnn":
            shutil.copytree(source, out, ignore=shutil.ignore_patterns(".complete"))
        else:
            copy_inputs(source, out)
        args = ["run", out, "--quiet", "--workers", "1"]  # one worker: the least CPU on a small tissue
        if variant == "oracle":
            # the oracle layers come from the tissue's truth/ by explicit path (this copy has none)
            args += ["--oracle", f"barrier={source / 'truth' / 'barrier'},organelles={source / 'truth' / 'organelles'}"]
        (out / "run.out").write_text(cli(*args).stdout)

    return _shared(tmp_path_factory, variant, build)
