"""Timing that survives a shared, loaded machine: interleaved rounds, paired ratios, medians.

Every benchmark here measures a candidate *beside its baseline in the same process*: each round
runs every candidate once, in a rotating order, and records both wall-clock time and the
process's CPU time. A candidate's figure is the median over rounds of ``t_candidate / t_baseline``
of the same round (a paired ratio), so slow drifts of the machine's load cancel. Warm-up rounds
(compilation, allocator growth, oneDNN primitive caches) are run and discarded first.

Wall time is what a user waits; CPU time (``time.process_time``) is what the process itself
consumed, which other users' jobs on the same cores do not inflate. With one intra-op thread (the
suite's default) the two ratios agree when the machine is quiet; on a loaded machine trust the
CPU ratio more.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


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
