"""Executors: where tasks run. `local` = a process pool on this machine; `dask` = a distributed cluster.

Both take the same module-level function and picklable arguments, and yield results as they
finish, so the driver and the task code are identical on a laptop and on a cluster.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Callable, Iterable, Iterator

from syconn_ng.errors import ConfigError


class LocalExecutor:
    """A `ProcessPoolExecutor` with the spawn start method (CloudVolume and torch do not survive fork)."""

    name = "local"

    def __init__(self, workers: int = 0):
        self.workers = workers or os.cpu_count() or 1
        self._pool = None

    def _get_pool(self):
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def map_unordered(self, func: Callable, items: Iterable[tuple]) -> Iterator[tuple[int, object]]:
        """Run `func(*args)` for each args tuple; yield (position, result or exception) as they finish."""
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        pool = self._get_pool()
        futures = {pool.submit(func, *args): i for i, args in enumerate(items)}
        for fut in as_completed(futures):
            try:
                yield futures[fut], fut.result()
            except BrokenProcessPool as err:  # a worker died (killed, out of memory): start a fresh pool next time
                if self._pool is pool:
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = None
                yield futures[fut], err
            except Exception as err:
                yield futures[fut], err

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor:
    """Tasks on a `distributed` cluster: an existing Client, a scheduler address, or a jobqueue cluster.

    Its workers get the `HeapReuse` plugin (`dask_worker.py`): dask's malloc setting slows numpy-heavy tasks 3×."""

    name = "dask"

    def __init__(self, client=None, *, address: str = "", cluster=None):
        from distributed import Client

        self._own = client is None
        self._cluster = cluster
        if client is None:
            try:
                client = Client(cluster) if cluster is not None else Client(address, timeout="20s")
            except (OSError, TimeoutError) as err:
                raise ConfigError("syconn.toml", f"cannot reach the dask scheduler {address!r}: {err}", element="[executor] scheduler") from err
        self.client = client
        from syconn_ng.engine.dask_worker import HeapReuse

        client.register_plugin(HeapReuse())  # idempotent: a plugin of the same name is replaced

    def map_unordered(self, func: Callable, items: Iterable[tuple]) -> Iterator[tuple[int, object]]:
        from distributed import as_completed

        # pure=False: a retried or re-run stage must run again, not reuse a cached result
        futures = {self.client.submit(func, *args, pure=False): i for i, args in enumerate(items)}
        for fut in as_completed(list(futures)):
            try:
                yield futures[fut], fut.result()
            except Exception as err:  # KilledWorker, a lost scheduler connection ...
                yield futures[fut], err
            finally:
                fut.release()

    def close(self) -> None:
        if self._own:
            self.client.close()
            if self._cluster is not None:
                self._cluster.close()


def make_executor(config, *, kind: str | None = None, workers: int | None = None, scheduler: str | None = None):
    """The executor the `[executor]` section asks for, with command-line overrides."""
    ex = config.executor
    kind = kind or ex.kind
    workers = ex.workers if workers is None else workers
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "dask":
        address = scheduler or ex.scheduler
        if not address:
            raise ConfigError("syconn.toml", "kind = 'dask' needs a scheduler address (tcp://host:8786)", element="[executor] scheduler")
        return DaskExecutor(address=address)
    if kind in ("slurm", "sge"):
        import dask_jobqueue

        cls = dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.SGECluster
        cluster = cls(**ex.jobqueue)
        cluster.scale(jobs=workers or 1)
        return DaskExecutor(cluster=cluster)
    raise ConfigError("syconn.toml", f"unknown executor {kind!r} (local, dask, slurm, sge)", element="[executor] kind")
