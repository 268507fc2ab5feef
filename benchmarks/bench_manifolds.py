"""Projection onto a task's solution set: the certified projection against the L-BFGS route.

Model: the sine MLP 1-64-64-1 tanh (4353 parameters, float64, ``analysis.problems.sine_problem``
initialization, seed 0); tasks: sine waves on ``n`` equally spaced points of [-5, 5], n = 10 and
50. Per task, in the same process, interleaved (``benchmarks.common.compare``, medians over rounds
after one warm-up round, which also pays torch.func's first-call cost):

* ``lbfgs`` (the baseline): ``analysis.manifolds.approximate_projection`` -- L-BFGS on the task loss
  from phi until ``|grad| <= 1e-10`` or 3000 iterations; its end point is feasible but is not a
  projection, so its distance is an upper bound on ``D(phi, W_tau)``;
* ``certified``: ``analysis.manifolds.certified_projection`` (restoration, then Riemannian Newton on
  the constraint manifold ``f(x_i) = y_i``) with its default tolerances; for the 50-point tasks
  ``fallback=False`` (the L-BFGS fallback start would make it L-BFGS plus more), so the row shows
  what the method itself reaches.

Each row: CPU and wall time ratio to L-BFGS, milliseconds, both distances, their ratio (how much
farther the L-BFGS end point lands), and whether the certified point is certified (constraint
violation <= 1e-9, KKT residual <= 1e-7).

Run: ``python -m benchmarks.bench_manifolds [--quick] [--repeats N] [--out FILE]`` (or ``python -m
benchmarks --only manifolds [--out DIR]``, which writes ``DIR/bench_manifolds.csv``); writes
``benchmarks/results/bench_manifolds.csv`` (the committed results), with ``--quick``
``benchmarks/results/quick/bench_manifolds.csv`` (git-ignored scratch), or ``--out``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from analysis import artifacts
from analysis.manifolds import approximate_projection, certified_projection
from analysis.problems import sine_problem
from benchmarks.common import QUICK_RESULTS, RESULTS, compare
from reptile.cli.argtypes import add_threads_flag, positive_int
from reptile.threads import apply_threads

CSV_NAME = "bench_manifolds.csv"

POINTS = (10, 50)
TASK_SEEDS = (0, 1, 2)


def run(repeats: int, quick: bool = False, log: Callable[[str], None] = print) -> list[dict]:
    """One row per (task, candidate); see the module docstring."""
    prob = sine_problem(0)
    rows = []
    seeds = TASK_SEEDS[:1] if quick else TASK_SEEDS
    for n in POINTS:
        for seed in seeds:
            task = prob.distribution.sample(np.random.default_rng(seed))
            x = torch.linspace(-5.0, 5.0, n, dtype=torch.float64)[:, None]
            data = (x, task.f(x))
            fallback = n <= 10
            res: dict[str, object] = {}
            cands = {
                "lbfgs": lambda: res.__setitem__("lbfgs", approximate_projection(prob.loss_fn, prob.phi, data,
                                                                                  gtol=1e-10, max_iter=3000)),
                "certified": lambda: res.__setitem__("certified", certified_projection(prob.loss_fn, prob.phi, data,
                                                                                       fallback=fallback)),
            }
            timings = compare(cands, "lbfgs", repeats, warmup=1)
            lb, ce = res["lbfgs"], res["certified"]
            for name, t in timings.items():
                p = res[name]
                rows.append({"suite": "manifolds", "setting": f"sine MLP 1-64-64-1, {n} points, task {seed}",
                             "algorithm": "projection", "candidate": name, "baseline": "lbfgs",
                             "ratio_cpu": t.ratio_cpu, "ratio_wall": t.ratio_wall, "cpu_ms": t.cpu_s * 1e3,
                             "wall_ms": t.wall_s * 1e3, "distance": p.distance, "loss": p.loss,
                             "certified": bool(ce.converged) if name == "certified" else False,
                             "violation": ce.certificate.violation if name == "certified" else float("nan"),
                             "kkt_residual": ce.certificate.kkt_residual if name == "certified" else float("nan"),
                             "lbfgs_over_certified_distance": lb.distance / ce.distance if ce.distance > 0 else
                             float("nan"), "repeats": repeats})
            log(f"  {n:>2} points, task {seed}: certified {timings['certified'].cpu_s * 1e3:7.0f} ms cpu "
                f"({timings['certified'].ratio_cpu:.2f}x L-BFGS's {timings['lbfgs'].cpu_s * 1e3:.0f} ms), "
                f"distance {ce.distance:.4f} ({'certified' if ce.converged else 'NOT certified'}: violation "
                f"{ce.certificate.violation:.1e}, KKT {ce.certificate.kkt_residual:.1e}); L-BFGS end point "
                f"{lb.distance:.4f} = {lb.distance / ce.distance:.2f}x farther, loss {lb.loss:.1e}")
    return rows


def write(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write the rows of :func:`run` to the CSV ``path`` (atomically; folders created)."""
    return artifacts.write_csv(path, pd.DataFrame(rows))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``out`` defaults to the committed results' CSV, or the scratch folder's
    with ``--quick`` (``benchmarks.common.RESULTS`` / ``QUICK_RESULTS``), never over committed results."""

    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_manifolds", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one task per size, 2 rounds")
    p.add_argument("--repeats", type=positive_int, default=None, help="rounds (default 3, quick 2)")
    add_threads_flag(p)
    p.add_argument("--out", type=Path, default=None,
                   help=f"CSV file (default {RESULTS / CSV_NAME}; with --quick {QUICK_RESULTS / CSV_NAME})")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = (QUICK_RESULTS if args.quick else RESULTS) / CSV_NAME
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    apply_threads(args.threads)
    rows = run(args.repeats or (2 if args.quick else 3), args.quick)
    print(f"wrote {write(rows, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
