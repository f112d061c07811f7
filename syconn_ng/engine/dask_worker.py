"""What a dask worker needs before it runs syconn_ng tasks: glibc's heap reuse for medium arrays.

Dask's nanny starts workers with `MALLOC_TRIM_THRESHOLD_` set (to return memory to the OS sooner); setting
it freezes glibc's mmap threshold at 128 KiB, so every temporary array above that is a fresh mmap whose
pages fault in again. The engine's tasks make many such temporaries: hulls' voxelisation ran 3× slower
on a dask worker than in the local pool (docs/performance.md). `HeapReuse` raises the threshold on every
worker of the client's cluster, present and future.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from distributed.diagnostics.plugin import WorkerPlugin

MMAP_THRESHOLD_BYTES = 64 << 20  # arrays up to this size come from (and return to) the heap
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def keep_medium_arrays_on_the_heap() -> bool:
    """mallopt(M_MMAP_THRESHOLD, 64 MiB) in this process (dask's trim threshold stays: freed memory at a heap's top
    still goes back to the OS); False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError, TypeError):
        return False


class HeapReuse(WorkerPlugin):
    """Runs `keep_medium_arrays_on_the_heap` on each worker as it joins."""

    name = "syconn_ng-heap-reuse"

    def setup(self, worker) -> None:
        keep_medium_arrays_on_the_heap()
