"""Peak memory of a computation on the CPU, as torch's allocator sees it.

``tracemalloc`` does not see torch's CPU allocator and resident-set size mixes in the Python heap
and freed-but-cached pages, so the figure used for "memory against k" (benchmarks and the cost
figure) is the peak of the running sum of allocations minus frees recorded by ``torch.profiler``.

torch's profiler back end (kineto) writes ``USDT: ... profiler_start`` / ``profiler_stop`` lines
straight to file descriptor 2 whatever ``KINETO_LOG_LEVEL`` says; :func:`peak_alloc_bytes` sends
that descriptor to ``/dev/null`` while the profiler starts and stops (not while ``fn`` runs, so
errors and warnings of ``fn`` still show).
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterator

from torch.profiler import ProfilerActivity, profile


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Point file descriptor 2 (stderr, C and Python alike) at ``/dev/null`` for the block.

    Process-wide while it lasts: another thread's stderr writes in that window are lost too, which
    is why it wraps only the profiler's start and stop calls. Does nothing if fd 2 is not open.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to silence
        yield
        return
    try:
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_alloc_bytes(fn: Callable[[], object]) -> int:
    """Peak of the running sum of allocations minus frees that ``torch.profiler`` records during ``fn``
    (bytes, relative to the memory allocated when ``fn`` starts)."""
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_fd2():
        prof.start()
    try:
        fn()
    finally:
        with _quiet_fd2():
            prof.stop()
    current = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += e.self_cpu_memory_usage
        peak = max(peak, current)
    return int(peak)
