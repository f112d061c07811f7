"""The stage driver: list a stage's tasks, skip the done ones, run the rest on an executor, report.

A stage is a sequence of passes (e.g. label chunks → stitch → relabel chunks). A pass's
tasks run in parallel; a pass whose `local` flag is set (a small reduce step) runs in the
driver. When any task of a pass had to run, every later pass of the stage runs again in
full, because its inputs changed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from syconn_ng.box import Box
from syconn_ng.engine.executors import make_executor
from syconn_ng.engine.state import StageState, params_hash
from syconn_ng.engine.tasks import Task, TaskResult, run_task
from syconn_ng.errors import StageError
from syconn_ng.layers import atomic_write_text

log = logging.getLogger("syconn_ng.engine")

STAGE_DONE = "_stage"  # the marker written after the last pass of a stage


@dataclass(frozen=True)
class Pass:
    """One pass of a stage: a module-level `func(analysis, task)` over `units` (Boxes, cell ids or None)."""

    name: str
    func: Callable
    units: list = field(default_factory=lambda: [None])
    local: bool = False


class Stage(Protocol):
    """What the driver needs from a stage (see `syconn_ng.stages.objects` for one)."""

    name: str

    def params(self, analysis) -> dict:
        """Every parameter the outputs depend on (their hash is stored in the done-markers)."""

    def prepare(self, analysis, *, fresh: bool) -> None:
        """Check inputs (raise InputError before any work) and create outputs; `fresh`: old ones are stale."""

    def passes(self, analysis) -> list[Pass]:
        """The passes in order, each with its units of work."""

    # optional: upstream(analysis) -> list of stage names whose re-run makes this stage stale


@dataclass
class Progress:
    """Numbers of a running stage, for the tqdm bar and for callbacks (Python API, server)."""

    stage: str
    pass_name: str
    done: int
    total: int
    skipped: int
    failed: int
    voxels: int
    elapsed_s: float

    @property
    def voxels_per_s(self) -> float:
        return self.voxels / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        ran = self.done - self.skipped
        if ran <= 0:
            return None
        return (self.total - self.done) * self.elapsed_s / ran


@dataclass
class StageReport:
    """What `run_stage` did: tasks run and skipped, voxels processed, wall time."""

    stage: str
    ran: int
    skipped: int
    voxels: int
    seconds: float
    ran_keys: list[str]


def _make_tasks(stage_name: str, p: Pass, params: dict, phash: str) -> list[Task]:
    tasks = []
    for i, unit in enumerate(p.units):
        if isinstance(unit, Box):
            tasks.append(Task(stage_name, f"{p.name}_{unit.name()}", box=unit, index=i, params=params, params_hash=phash))
        elif unit is None:
            tasks.append(Task(stage_name, p.name, index=i, params=params, params_hash=phash))
        else:
            tasks.append(Task(stage_name, f"{p.name}_{int(unit)}", cell_id=int(unit), index=i, params=params, params_hash=phash))
    return tasks


def _finished(analysis, stage_name: str) -> float | None:
    """When `stage_name` last finished (its stage marker), or None."""
    try:
        return json.loads((analysis.state_dir / stage_name / f"{STAGE_DONE}.json").read_text(encoding="utf-8"))["finished"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return None


def stage_done(stage_name: str, analysis, params: dict) -> bool:
    """True if the stage finished with exactly these parameters."""
    return StageState(analysis.state_dir, stage_name, params_hash(params)).is_done(STAGE_DONE)


def run_stage(stage: Stage, analysis, *, force: bool = False, progress: bool = True, executor=None,
              callback: Callable[[Progress], None] | None = None) -> StageReport:
    """Run the unfinished tasks of `stage`; raise StageError (after all tasks ran) if any failed.

    `force` redoes the whole stage. `executor`: a LocalExecutor or DaskExecutor; default is the
    one `[executor]` in the config describes (created only if there is work, closed at the end).
    `callback` gets a `Progress` after every finished task.
    """
    params = stage.params(analysis)
    upstream = getattr(stage, "upstream", None)
    if upstream is not None:  # a re-run upstream stage makes this one stale
        params["upstream"] = {name: _finished(analysis, name) for name in upstream(analysis)}
    phash = params_hash(params)
    state = StageState(analysis.state_dir, stage.name, phash)
    with state.lock():
        return _run_locked(stage, analysis, state, params, force, progress, executor, callback)


def _run_locked(stage, analysis, state: StageState, params: dict, force: bool, progress: bool, executor, callback) -> StageReport:
    from tqdm.auto import tqdm

    phash = state.phash
    fresh = force or not state.is_current()
    stage.prepare(analysis, fresh=fresh)
    if fresh:
        state.reset(params)
    state.sweep()

    passes = [(p, _make_tasks(stage.name, p, params, phash)) for p in stage.passes(analysis)]
    total = sum(len(t) for _, t in passes)
    retries = analysis.config.executor.retries
    own_executor = executor is None
    t0 = time.perf_counter()
    numbers = Progress(stage.name, "", 0, total, 0, 0, 0, 0.0)
    ran_keys: list[str] = []
    dirty = False  # a pass ran: everything after it is stale
    bar = tqdm(total=total, desc=stage.name, unit="task", disable=not progress, leave=True)
    try:
        for p, tasks in passes:
            todo = tasks if dirty else [t for t in tasks if not state.is_done(t.key)]
            numbers.pass_name = p.name
            skipped = len(tasks) - len(todo)
            numbers.done += skipped
            numbers.skipped += skipped
            bar.update(skipped)
            if not todo:
                continue
            log.info("%s/%s: %d of %d tasks to run", stage.name, p.name, len(todo), len(tasks))
            bar.set_description(f"{stage.name} ({p.name})")
            if not p.local and executor is None:
                executor = make_executor(analysis.config)
            failures = []
            for task, result in _run_pass(p, todo, analysis, retries, executor):
                ran_keys.append(task.key)
                numbers.done += 1
                numbers.voxels += task.voxels
                numbers.elapsed_s = time.perf_counter() - t0
                error_file = state.dir / f"{task.key}.error.txt"
                if result.ok:
                    error_file.unlink(missing_ok=True)
                    log.debug("%s: %s done in %.2f s", stage.name, task.key, result.seconds)
                else:
                    numbers.failed += 1
                    failures.append((task, result))
                    atomic_write_text(error_file, f"{task.where()}\n{result.error}\n\n{result.traceback}")
                    log.error("%s: %s (%s) failed after %d attempt(s): %s", stage.name, task.key, task.where(), result.attempts, result.error)
                bar.update(1)
                bar.set_postfix_str(f"{numbers.voxels_per_s / 1e6:.1f} Mvox/s" + (f", {numbers.failed} failed" if numbers.failed else ""))
                if callback is not None:
                    callback(numbers)
            if failures:
                raise StageError(_failure_summary(stage.name, p.name, len(todo), failures, state))
            dirty = True
        if ran_keys or not state.is_done(STAGE_DONE):  # a run that found everything done keeps its finish time,
            state.mark_done(STAGE_DONE, {"ran": len(ran_keys), "skipped": numbers.skipped})  # so dependants stay current
    finally:
        bar.close()
        if own_executor and executor is not None:
            executor.close()
    return StageReport(stage.name, len(ran_keys), numbers.skipped, numbers.voxels, time.perf_counter() - t0, ran_keys)


def _run_pass(p: Pass, todo: list[Task], analysis, retries: int, executor):
    """Yield (task, TaskResult) as tasks finish; a task whose worker died is resubmitted up to `retries` times."""
    if p.local:
        for task in todo:
            yield task, run_task(p.func, analysis, task, retries)
        return
    pending = todo
    for attempt in range(retries + 1):
        lost = []
        for i, out in executor.map_unordered(run_task, [(p.func, analysis, t, retries) for t in pending]):
            if isinstance(out, TaskResult):
                yield pending[i], out
            elif attempt < retries:
                lost.append(pending[i])
            else:
                yield pending[i], TaskResult(pending[i].key, False, attempt + 1, 0.0, pending[i].voxels,
                                             error=f"worker lost: {type(out).__name__}: {out}")
        if not lost:
            return
        log.warning("%s: %d task(s) lost with their worker; resubmitting", p.name, len(lost))
        pending = lost


def _failure_summary(stage: str, pass_name: str, n: int, failures: list, state: StageState, shown: int = 20) -> str:
    lines = [f"stage '{stage}': {len(failures)} of {n} tasks of pass '{pass_name}' failed:"]
    for task, result in sorted(failures, key=lambda f: f[0].index)[:shown]:
        lines.append(f"  {task.where()}: {result.error} (after {result.attempts} attempt(s))")
    if len(failures) > shown:
        lines.append(f"  ... and {len(failures) - shown} more")
    lines.append(f"tracebacks: {state.dir}/<task>.error.txt; fix the cause and run again (finished tasks are kept)")
    return "\n".join(lines)
