"""Peak memory of a computation on the CPU, as torch's allocator sees it.

``tracemalloc`` does not see torch's CPU allocator and resident-set size mixes in the Python heap
and freed-but-cached pages, so the figure used for "memory against k" (benchmarks and the cost
figure) is the peak of the running sum of allocations minus frees recorded by ``torch.profiler``.
"""
from __future__ import annotations

from typing import Callable

from torch.profiler import ProfilerActivity, profile


def peak_alloc_bytes(fn: Callable[[], object]) -> int:
    """Peak of the running sum of allocations minus frees that ``torch.profiler`` records during ``fn``
    (bytes, relative to the memory allocated when ``fn`` starts)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += e.self_cpu_memory_usage
        peak = max(peak, current)
    return int(peak)
