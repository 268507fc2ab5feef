"""One against two torch intra-op threads on this toolkit's workloads (the measurement behind
:data:`reptile.threads.DEFAULT_THREADS`, issue #15).

In one process, interleaved (:func:`reptile.profiling.compare`): 50 Reptile iterations on the sine
MLP (1-64-64-1 tanh, k = 5, batch 10), the sine evaluation of 10 tasks (32 SGD steps each), the
few-shot evaluation of 1 glyph task (5-way 1-shot, 50 Adam steps, OmniglotCNN with 64 filters)
and 2 few-shot meta-training iterations (meta-batch 5, k = 5, batch 10). Prints the median wall
and CPU seconds per setting and the paired 2-thread / 1-thread ratios. Writes nothing.

Run: ``python -m benchmarks.bench_threads [--repeats 5]`` (needs the glyph cache or builds it).
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch

from reptile.families import build_saved
from reptile.profiling import compare
from reptile.setups import EvalOptions
from reptile.train import MetaTrainer, TrainConfig


def workloads() -> dict[str, Callable[[], object]]:
    sine = build_saved("sine", {})
    sine_trainer = MetaTrainer(sine.loss_fn, sine.phi, sine.sampler,
                               TrainConfig(algorithm="reptile", inner_steps=5, inner_batch=10, inner_lr=0.02,
                                           outer_lr=0.1, meta_batch=1, iterations=10**6, seed=0), None)
    fs = build_saved("fewshot", {"dataset": "glyphs"})
    fs_trainer = MetaTrainer(fs.loss_fn, fs.phi, fs.sampler,
                             TrainConfig(algorithm="reptile", inner_steps=5, inner_batch=10, inner_lr=0.001,
                                         inner_optimizer="adam", outer_lr=1.0, meta_batch=5, iterations=10**6), None)
    return {
        "sine train, 50 iterations": lambda: [sine_trainer.step() for _ in range(50)],
        "sine eval, 10 tasks": lambda: sine.evaluate(sine.phi, EvalOptions(n_tasks=10, seed=1)),
        "few-shot eval, 1 task x 50 steps": lambda: fs.evaluate(fs.phi, EvalOptions(n_tasks=1, seed=1)),
        "few-shot train, 2 iterations": lambda: [fs_trainer.step() for _ in range(2)],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_threads", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds per workload (default 5)")
    args = p.parse_args(argv)
    for name, fn in workloads().items():
        def with_threads(n: int, fn: Callable[[], object] = fn) -> Callable[[], object]:
            return lambda: (torch.set_num_threads(n), fn())
        res = compare({"1": with_threads(1), "2": with_threads(2)}, "1", repeats=args.repeats)
        one, two = res["1"], res["2"]
        print(f"{name}: 1 thread {one.wall_s:.2f} s wall {one.cpu_s:.2f} s CPU; 2 threads {two.wall_s:.2f} s wall "
              f"{two.cpu_s:.2f} s CPU; 2-thread/1-thread ratio {two.ratio_wall:.2f} wall, {two.ratio_cpu:.2f} CPU",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
