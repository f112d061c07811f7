"""Session fixtures shared by every test module.

`synth_tissue`: ONE small synthetic tissue (192 x 192 x 96 voxels, seed 1) per test session,
generated once and shared by all pytest-xdist workers (a file lock and a completion marker);
treat it as read-only.
"""

from __future__ import annotations

import os
import shutil

import pytest

SYNTH_SHAPE = (192, 192, 96)
SYNTH_SEED = 1


@pytest.fixture(scope="session")
def synth_tissue(tmp_path_factory):
    """Path of the session's synthetic tissue folder (raw/, truth/, skeletons/, syconn.toml)."""
    from filelock import FileLock

    from syconn_ng.synth.generate import generate_tissue

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # shared by this session's workers
    out = root / f"synth_seed{SYNTH_SEED}"
    done = out / ".complete"
    with FileLock(str(root / f"synth_seed{SYNTH_SEED}.lock")):
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)
            generate_tissue(out, shape=SYNTH_SHAPE, seed=SYNTH_SEED)
            done.write_text("ok\n")
    return out
