"""Benchmark helpers: what the numbers were measured on, and plain-text tables.

The timing itself (interleaved rounds, paired ratios, medians: :func:`compare`, :class:`Timing`)
lives in :mod:`reptile.profiling`, so that the figures use it too; it is re-exported here.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

#: the committed results of the full benchmark suite, and the git-ignored scratch folder of ``--quick``
RESULTS = Path(__file__).resolve().parent / "results"
QUICK_RESULTS = RESULTS / "quick"

from reptile.profiling import Timing, compare  # noqa: F401  (the benchmarks' timing, re-exported)


def first_calls(candidates: dict[str, Callable[[], object]], log: Callable[[str], None],
                prefix: str = "") -> dict[str, float]:
    """Call every candidate once and return its wall time (seconds), logging ``"{prefix}{name}: first call"``.

    For a compiled path the first call of an input shape is mostly compilation (the "time to first
    iteration"), so it is timed apart, before :func:`compare`'s warm-up and rounds.
    """
    first = {}
    for name, f in candidates.items():
        tic = time.perf_counter()
        f()
        first[name] = time.perf_counter() - tic
        log(f"  {prefix}{name}: first call {first[name]:.1f} s")
    return first


def machine() -> dict[str, object]:
    """What the numbers were measured on (written beside every result)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "loadavg_1_5_15": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def fmt_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A plain-text table of ``rows`` (missing cells blank)."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.4g}"
        return "" if v is None else str(v)
    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, body)])
