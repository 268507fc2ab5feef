"""One CPU-thread policy for every command (``reptile train``, ``eval``, ``verify``, ...).

The models of this toolkit are small (the sine MLP has 4,353 parameters, the Omniglot CNN
about 110K, applied to batches of 5-50 images), so an operation takes microseconds to a few
milliseconds and more intra-op threads mostly add synchronization. On a shared, loaded CPU a
second thread makes a run many times slower: ``python -m benchmarks.bench_threads --repeats 3``
(one process, interleaved rounds) on the 2-core machine at load average 8-15 measured
2-thread/1-thread ratios of 37 (wall) / 37 (CPU) for sine meta-training, 21 / 35 for the sine
evaluation, 20 / 21 for the few-shot evaluation and 13 / 13 for few-shot meta-training (an
earlier run: 21 / 21, 22 / 31, 20 / 21, 12 / 12); issue #15 saw 33.6 s against 8.1 s
for ``reptile train sine --iterations 500``. No workload here was found to gain from a second
thread, so the default is :data:`DEFAULT_THREADS` = 1 for every command and every model, unless
the user chose a count through ``OMP_NUM_THREADS`` (then torch's own count, which follows it, is
kept); ``--threads N`` overrides both (on an idle machine with many cores, larger few-shot
batches may gain from it: measure with the benchmark above).

This module imports torch only inside :func:`apply_threads`, so argument parsers can use
:func:`check_threads` without loading torch.
"""
from __future__ import annotations

import os

__all__ = ["DEFAULT_THREADS", "THREADS_HELP", "apply_threads", "available_cpus", "check_threads"]

#: intra-op threads when neither ``--threads`` nor ``OMP_NUM_THREADS`` says otherwise
DEFAULT_THREADS = 1

#: the ``--threads`` help text every subcommand shows (one wording, one policy)
THREADS_HELP = ("torch CPU threads, 1..the CPUs available (default 1, or $OMP_NUM_THREADS when set: "
                "this toolkit's models are small, so more threads mostly add overhead; 2 threads were "
                "12-37x slower on a busy 2-core CPU, see benchmarks/bench_threads.py)")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_threads(n: int) -> int:
    """``n`` if it is a usable thread count (1..:func:`available_cpus`), else ``ValueError`` saying
    what range is allowed. More threads than CPUs is refused rather than clamped: it can only
    oversubscribe the machine, and a silent change would hide a typo."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"threads must be a whole number, got {n!r}")
    cpus = available_cpus()
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    if n > cpus:
        raise ValueError(f"{n} threads is more than the {cpus} CPUs available to this process; "
                         f"choose 1..{cpus} (1 is fastest for this toolkit's small models)")
    return n


def apply_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count by the policy above and return the count in effect.

    Args:
        n: the count asked for (``--threads``), checked by :func:`check_threads`; ``None``: the
            default, :data:`DEFAULT_THREADS` unless ``OMP_NUM_THREADS`` is set (then torch's
            count, which follows that variable, is kept).
    Raises:
        ValueError: ``n`` outside 1..:func:`available_cpus`.
    """
    import torch

    if n is not None:
        torch.set_num_threads(check_threads(n))
    elif not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(DEFAULT_THREADS)
    return torch.get_num_threads()
