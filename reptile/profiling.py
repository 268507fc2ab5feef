"""Measuring a computation on a shared CPU: interleaved paired timing, and peak memory.

Timing (:func:`compare`) measures a candidate *beside its baseline in the same process*: each
round runs every candidate once, in a rotating order, and records both wall-clock time and the
process's CPU time. A candidate's figure is the median over rounds of ``t_candidate / t_baseline``
of the same round (a paired ratio), so slow drifts of the machine's load cancel. Warm-up rounds
(compilation, allocator growth, oneDNN primitive caches) are run and discarded first.

Wall time is what a user waits; CPU time (``time.process_time``) is what the process itself
consumed, which other users' jobs on the same cores do not inflate. With one intra-op thread (the
suite's default) the two ratios agree when the machine is quiet; on a loaded machine trust the
CPU ratio more.

Peak memory (:func:`peak_alloc_bytes`), as torch's allocator sees it:

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
import statistics
import sys
import time
from dataclasses import dataclass, field
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


@dataclass
class Timing:
    """Per-round times (seconds) of one candidate and its paired ratios to the baseline."""

    name: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    wall_ratio: list[float] = field(default_factory=list)
    cpu_ratio: list[float] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_s(self) -> float:
        return statistics.median(self.cpu)

    @property
    def ratio_wall(self) -> float:
        return statistics.median(self.wall_ratio)

    @property
    def ratio_cpu(self) -> float:
        return statistics.median(self.cpu_ratio)

    def spread(self) -> float:
        """Half the interquartile range of the CPU-time ratio (a rough +- of the median)."""
        r = sorted(self.cpu_ratio)
        if len(r) < 4:
            return float("nan")
        q = statistics.quantiles(r, n=4)
        return (q[2] - q[0]) / 2


def compare(candidates: dict[str, Callable[[], object]], baseline: str, repeats: int, warmup: int = 1,
            log: Callable[[str], None] | None = None) -> dict[str, Timing]:
    """Time every candidate ``repeats`` times, interleaved with the baseline; see the module docstring.

    Raises:
        ValueError: ``baseline`` not among the candidates, or ``repeats < 1``.
    """
    if baseline not in candidates:
        raise ValueError(f"baseline {baseline!r} is not among the candidates {sorted(candidates)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(candidates)
    for w in range(warmup):
        for n in names:
            tic = time.perf_counter()
            candidates[n]()
            if log:
                log(f"    warm-up {w + 1}/{warmup} {n}: {time.perf_counter() - tic:.2f} s")
    out = {n: Timing(n) for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        this: dict[str, tuple[float, float]] = {}
        for n in order:
            c0, w0 = time.process_time(), time.perf_counter()
            candidates[n]()
            this[n] = (time.perf_counter() - w0, time.process_time() - c0)
        bw, bc = this[baseline]
        for n, (w, c) in this.items():
            t = out[n]
            t.wall.append(w)
            t.cpu.append(c)
            t.wall_ratio.append(w / bw)
            t.cpu_ratio.append(c / bc if bc > 0 else float("nan"))
    return out
