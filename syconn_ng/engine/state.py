"""Done-markers: `state/<stage>/<task>.json`, written last and atomically, holding the parameter hash.

A task counts as done only if its marker exists and holds the hash of the stage's current
parameters, so changing a parameter makes every marker of that stage stale.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from syconn_ng.errors import SyconnError
from syconn_ng.layers import atomic_write_text, remove_temp_files


def params_hash(params: dict) -> str:
    """A short stable hash of a JSON-serialisable parameter dict (key order does not matter)."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class StageState:
    """The done-markers of one stage under `state_dir/<stage>/`."""

    PARAMS = "_params.json"

    def __init__(self, state_dir, stage: str, phash: str):
        self.dir = Path(state_dir) / stage
        self.stage = stage
        self.phash = phash

    def marker(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def read(self, key: str) -> dict | None:
        """The marker of `key` if it is current (same parameter hash), else None."""
        try:
            data = json.loads(self.marker(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data if data.get("params_hash") == self.phash else None

    def is_done(self, key: str) -> bool:
        return self.read(key) is not None

    def mark_done(self, key: str, info: dict) -> None:
        """Write the marker of `key` (the last thing a task does)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {"stage": self.stage, "task": key, "params_hash": self.phash, "finished": time.time(), **info}
        atomic_write_text(self.marker(key), json.dumps(data, indent=1, sort_keys=True))

    def is_current(self) -> bool:
        """True if the stage's markers were made with the current parameters."""
        try:
            data = json.loads((self.dir / self.PARAMS).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        return data.get("params_hash") == self.phash

    def reset(self, params: dict) -> None:
        """Forget every marker and record the parameters the next markers will be made with."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / self.PARAMS, json.dumps({"params_hash": self.phash, "params": params}, indent=1, sort_keys=True, default=str))

    @contextmanager
    def lock(self):
        """Hold the stage's lock file for a run; a second concurrent run of the stage fails at once."""
        import fcntl

        self.dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.dir.parent / f".{self.stage}.lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SyconnError(f"another run is working on stage '{self.stage}' of this analysis ({self.dir.parent})") from None
            yield

    def sweep(self) -> None:
        """Remove temporary files a killed writer left behind."""
        if self.dir.is_dir():
            remove_temp_files(self.dir)


@contextmanager
def analysis_lock(state_dir: Path, what: str):
    """Hold the analysis-wide lock while `what` (a pipeline run, a re-analysis job) changes its outputs; a second
    holder fails at once with a message instead of both writing the same tables."""
    import fcntl

    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".analysis.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SyconnError(f"cannot start {what}: another syconn-ng run or re-analysis job is changing this analysis "
                              f"({state_dir.parent}); wait for it to finish") from None
        yield
