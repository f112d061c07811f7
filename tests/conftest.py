"""Session fixtures shared by every test module.

`synth_tissue`: ONE small synthetic tissue (192 x 192 x 96 voxels, seed 1) per test session,
generated once and shared by all pytest-xdist workers (a file lock and a completion marker);
treat it as read-only. `dense_tissue`: the same size, seed 6, with as many synapses as the
tissue's boutons allow (13 synapses and vesicle clouds instead of 7), for stage floors that
need more synapses.
"""

from __future__ import annotations

import os
import shutil

import pytest

SYNTH_SHAPE = (192, 192, 96)
SYNTH_SEED = 1
DENSE_SEED = 6
DENSE_SYNAPSES_PER_UM3 = 4.0


def shared_tissue(tmp_path_factory, seed: int, **kwargs):
    """A synthetic tissue generated once per test session and shared by its xdist workers."""
    from filelock import FileLock

    from syconn_ng.synth.generate import generate_tissue

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # shared by this session's workers
    out = root / f"synth_seed{seed}"
    done = out / ".complete"
    with FileLock(str(root / f"synth_seed{seed}.lock")):
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)
            generate_tissue(out, shape=SYNTH_SHAPE, seed=seed, **kwargs)
            done.write_text("ok\n")
    return out


@pytest.fixture(scope="session")
def synth_tissue(tmp_path_factory):
    """Path of the session's synthetic tissue folder (raw/, truth/, skeletons/, syconn.toml)."""
    return shared_tissue(tmp_path_factory, SYNTH_SEED)


@pytest.fixture(scope="session")
def dense_tissue(tmp_path_factory):
    """A second session tissue (seed 6) with the most synapses its boutons allow."""
    return shared_tissue(tmp_path_factory, DENSE_SEED, synapses_per_um3=DENSE_SYNAPSES_PER_UM3)
