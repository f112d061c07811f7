"""Background jobs of the review server: re-analysis of one cell from an uploaded skeleton (`syconn_ng.reanalyse`).

One worker thread runs the jobs one after another (the per-cell stages of two cells would both rewrite the
shared tables); a job is `queued`, `running`, `done` or `failed`, with the engine's progress and a message.
When a job is done the server reloads the analysis' tables, so every API answer shows the new cell.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import traceback

from syconn_ng.errors import SyconnError

STATES = ("queued", "running", "done", "failed")


class JobRunner:
    """Queue and run re-analysis jobs for one server (`ctx`: the server's Context)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.jobs: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None

    def submit(self, upload) -> dict:
        """Queue the re-analysis of `upload` (a checked `syconn_ng.reanalyse.Upload`); returns the job's JSON."""
        with self._lock:
            job_id = str(next(self._ids))
            job = {"id": job_id, "cell": str(upload.cell_id), "state": "queued", "message": "waiting for earlier jobs",
                   "progress": {"pass": "", "done": 0, "total": 0, "fraction": 0.0}, "submitted": time.time(),
                   "started": None, "finished": None, "result": None, "nodes": len(upload.skeleton.node_ids)}
            self.jobs[job_id] = job
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, daemon=True, name="syconn-jobs")
                self._thread.start()
        self._queue.put((job_id, upload))
        return self.get(job_id)

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            job = self.jobs.get(str(job_id))
            return None if job is None else {**job, "progress": dict(job["progress"])}

    def list(self) -> list[dict]:
        with self._lock:
            return [self.get_unlocked(j) for j in self.jobs]

    def get_unlocked(self, job_id: str) -> dict:
        job = self.jobs[job_id]
        return {**job, "progress": dict(job["progress"])}

    def _update(self, job_id: str, **changes):
        with self._lock:
            self.jobs[job_id].update(changes)
        job = self.get(job_id)
        self.ctx.hub.broadcast({"type": "job", "job": job})

    def _work(self):
        while True:
            job_id, upload = self._queue.get()
            self._run(job_id, upload)
            self._queue.task_done()

    def _run(self, job_id: str, upload):
        from syconn_ng.reanalyse import reanalyse_cell

        analysis = self.ctx.reviewed.analysis
        self._update(job_id, state="running", started=time.time(), message=f"re-analysing cell {upload.cell_id}")

        def progress(p):
            with self._lock:
                self.jobs[job_id]["progress"] = {"pass": p.pass_name, "done": p.done, "total": p.total,
                                                 "fraction": round(p.done / p.total, 3) if p.total else 0.0}
                self.jobs[job_id]["message"] = f"{p.pass_name} done ({p.done} of {p.total} passes)"

        work_dir = analysis.scratch_dir("reanalyse") / f"job_{job_id}"
        try:
            result = reanalyse_cell(analysis, upload, work_dir=work_dir, callback=progress)
            self.ctx.reload()
        except Exception as err:  # bad input, a bug or an unreadable layer: the job fails, the server keeps serving
            text = str(err) if isinstance(err, SyconnError) else f"{type(err).__name__}: {err}"
            # name the analysis' files, not their staged copies (which are gone)
            text = text.replace(str(work_dir / "tables"), str(analysis.tables_dir)).replace(str(work_dir), str(analysis.root))
            text = "\n".join(line for line in text.splitlines() if not line.startswith("tracebacks: "))  # staged, removed
            self._update(job_id, state="failed", finished=time.time(), message=text,
                         traceback=None if isinstance(err, SyconnError) else traceback.format_exc())
            return
        self._update(job_id, state="done", finished=time.time(), result=result,
                     message=f"cell {upload.cell_id} re-analysed in {result['seconds']:.1f} s")
