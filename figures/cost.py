"""Time and peak memory of one meta-gradient of MAML, FOMAML and Reptile against k.

One task's meta-gradient (``reptile.algorithms.meta_gradient``, SGD inner loop) on the paper's
Omniglot CNN (64 filters, 5-way, 28x28 inputs, minibatches of 10 as in Table 3), for k minibatches
(MAML/FOMAML: k-1 inner steps and the k-th batch for the outer loss; Reptile: k steps). MAML
differentiates through the inner loop, so it keeps every inner step's activations alive: its
memory grows linearly with k while FOMAML's and Reptile's stay flat.

Measures (CPU, one thread) with the library's :func:`reptile.profiling.compare` (the benchmarks
use it too): interleaved rounds after a warm-up, medians of CPU time ``time.process_time`` --
which other users' jobs on a shared machine do not inflate -- and of the paired ratio to Reptile
at the same k. Memory is the peak of
the running total of tensor allocations and frees recorded by ``torch.profiler``
(``profile_memory=True``) during one meta-gradient, in time order -- memory the computation
itself allocates, not the process's resident set (parameters and inputs that exist beforehand
are not counted). ``python -m benchmarks`` also reports the resident-set growth.

Run: ``python -m figures.cost [--fast] [--out DIR]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from figures import style
from figures.common import cli, note
from reptile.algorithms import PAPER_ALGORITHMS, meta_gradient
from reptile.losses import make_loss, params_of
from reptile.models import OmniglotCNN
from reptile.profiling import compare, peak_alloc_bytes as peak_allocated_bytes

NAME = "cost"
ALGORITHMS = PAPER_ALGORITHMS
MARKERS = {"maml": "o", "fomaml": "s", "reptile": "^"}
SETTINGS = {
    "full": dict(filters=64, batch=10, ks=(2, 4, 8, 16), reps=5),
    "fast": dict(filters=8, batch=5, ks=(2, 3), reps=1),
}


def timings(cands: dict[str, Callable[[], object]], reps: int) -> dict[str, tuple[float, float, float]]:
    """``{name: (median wall s, median cpu s, median cpu ratio to reptile)}`` by :func:`reptile.profiling.compare`."""
    res = compare(cands, "reptile", reps, warmup=1)
    return {n: (t.wall_s, t.cpu_s, t.ratio_cpu) for n, t in res.items()}


SOURCE = "reptile.profiling.compare + reptile.profiling.peak_alloc_bytes"


def run(fast: bool) -> pd.DataFrame:
    s = SETTINGS["fast" if fast else "full"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = OmniglotCNN(n_way=5, filters=s["filters"])
        xs = torch.rand(max(s["ks"]), s["batch"], 1, 28, 28)
        ys = torch.randint(0, 5, (max(s["ks"]), s["batch"]))
    loss_fn, phi = make_loss(model, "cross_entropy"), params_of(model)
    rows = []
    for k in s["ks"]:
        batches = (xs[:k], ys[:k])
        cands = {n: (lambda n=n: meta_gradient(n, loss_fn, phi, batches, 0.01)) for n in ALGORITHMS}
        times = timings(cands, s["reps"])
        for name in ALGORITHMS:
            wall, cpu, ratio = times[name]
            rows.append({"algorithm": name, "k": k, "cpu_seconds": cpu, "wall_seconds": wall,
                         "cpu_ratio_to_reptile": ratio, "peak_bytes": peak_allocated_bytes(cands[name]),
                         "filters": s["filters"], "batch": s["batch"], "threads": torch.get_num_threads(),
                         "measured_with": SOURCE})
            print(f"  {name} k={k}: {cpu * 1e3:.0f} ms CPU ({ratio:.2f}x Reptile), "
                  f"{rows[-1]['peak_bytes'] / 2**20:.1f} MiB", flush=True)
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, fast: bool, out: str | Path | None) -> list[Path]:
    s = SETTINGS["fast" if fast else "full"]
    fig, axes = style.figure(ncols=2, width=style.PAGE * 0.75, height=2.4)
    for name, g in df.groupby("algorithm", sort=False):
        kw = dict(color=style.color(name), marker=MARKERS[name], ls="--" if name == "fomaml" else "-",
                  label=style.NAMES[name])
        axes[0][0].plot(g["k"], g["cpu_seconds"] * 1e3, **kw)
        axes[0][1].plot(g["k"], g["peak_bytes"] / 2 ** 20, **kw)
    for ax in axes[0]:
        ax.set_xticks(sorted(df["k"].unique()), [str(k) for k in sorted(df["k"].unique())])
        ax.set_xlabel("k (minibatches per task)")
    axes[0][0].set_ylabel("CPU time per meta-gradient (ms)")
    axes[0][1].set_ylabel("peak allocated memory (MiB)")
    axes[0][0].set_title("(a) CPU time, 1 thread")
    axes[0][1].set_title("(b) peak memory (torch.profiler)")
    axes[0][0].legend()
    text = (f"one task, Omniglot CNN with {s['filters']} filters, 5-way, minibatches of {s['batch']} 28x28 images; "
            f"median of {s['reps']} interleaved rounds after a warm-up ({df['measured_with'].iloc[0]})")
    return style.save(fig, df, NAME, out, note(fast, text))


def main(fast: bool = False, out: str | Path | None = None) -> list[Path]:
    return plot(run(fast), fast, out)


if __name__ == "__main__":
    cli(main, __doc__.splitlines()[0])
