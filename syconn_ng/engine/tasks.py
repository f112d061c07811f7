"""The `Task` value (one chunk box or one cell of a stage pass) and how a worker runs it with retries.

`run_task` is what every executor ships to its workers: it calls the pass function, retries
failures, writes the done-marker last, and always returns a `TaskResult` (errors included),
so one failing chunk never stops the others.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from syconn_ng.box import Box
from syconn_ng.engine.state import StageState
from syconn_ng.errors import InputError


@dataclass(frozen=True)
class Task:
    """One unit of work: a task box over the chunk grid, or a cell, of one pass of a stage.

    `key` names the task uniquely within its stage (and is its marker's file name); `params`
    are the stage parameters the pass function reads; `params_hash` goes into the marker.
    """

    stage: str
    key: str
    box: Box | None = None
    cell_id: int | None = None
    index: int = 0
    params: dict = field(default_factory=dict)
    params_hash: str = ""

    @property
    def voxels(self) -> int:
        return self.box.size if self.box is not None else 0

    def where(self) -> str:
        """Where the task works, for messages: its box or cell."""
        if self.box is not None:
            return f"chunk {self.box.name()}"
        if self.cell_id is not None:
            return f"cell {self.cell_id}"
        return "whole stage"


@dataclass
class TaskResult:
    """What came back from one task: success, attempts, time, the pass function's summary or the error."""

    key: str
    ok: bool
    attempts: int
    seconds: float
    voxels: int
    summary: Any = None
    error: str = ""
    traceback: str = ""


def run_task(func: Callable, analysis, task: Task, retries: int) -> TaskResult:
    """Run `func(analysis, task)`, retrying up to `retries` times, then write the done-marker.

    Bad input (InputError) is not retried: it would fail the same way again.
    `func` must be a module-level function so process pools and Dask can ship it by reference.
    """
    t0 = time.perf_counter()
    attempts = 0
    while True:
        attempts += 1
        try:
            summary = func(analysis, task)
            StageState(analysis.state_dir, task.stage, task.params_hash).mark_done(
                task.key, {"attempts": attempts, "seconds": round(time.perf_counter() - t0, 4), "where": task.where()}
            )
            return TaskResult(task.key, True, attempts, time.perf_counter() - t0, task.voxels, summary)
        except Exception as err:  # a task failure is data for the driver, never a crash of the pool
            if attempts > retries or isinstance(err, InputError):
                return TaskResult(
                    task.key, False, attempts, time.perf_counter() - t0, task.voxels,
                    error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(),
                )
