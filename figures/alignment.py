"""Gradient alignment during meta-training: Reptile, FOMAML, MAML and joint training.

The Taylor analysis (paper section 5.1) says that MAML, FOMAML and Reptile all follow
``-AvgGradInner``, i.e. raise ``E[gbar_1 . gbar_2]``, the inner product of the gradients of two
different minibatches of the same task, while joint training follows ``AvgGrad`` alone. Here the
four are trained on sine waves from the same initialization and
:class:`analysis.alignment.AlignmentCallback` measures, on fixed probe tasks (5 disjoint
minibatches of 10 grid points each): (a) the within-task inner product, (b) the within-task
cosine, (c) the across-task cosine (pairs of minibatches of different tasks, the baseline).

Setup: MLP 1-64-64-1 tanh, k = 5 minibatches of 10 points, SGD inner step 0.02. To compare the
directions and not the step lengths (FOMAML's update is one inner step, Reptile's k), every
algorithm hands its update to the same outer optimizer (Adam, 2e-3 annealed to 0), meta-batch 1.
MAML is exact second order through its 4 inner steps; joint training takes the gradient of the
task's loss at phi (``reptile.algorithms`` "joint").

Run: ``python -m figures.alignment [--fast] [--out DIR]``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from figures import style
from figures.common import cli, note
from analysis.alignment import AlignmentCallback
from reptile.losses import make_loss, params_of
from reptile.models import MLP, seeded_init
from reptile.tasks import SineTaskDistribution
from reptile.train import MetaTrainer, TrainConfig

NAME = "alignment"
ALGORITHMS = ("reptile", "fomaml", "maml", "joint")
SETTINGS = {
    "full": dict(sizes=(1, 64, 64, 1), iterations=1000, every=50, probe_tasks=20),
    "fast": dict(sizes=(1, 8, 8, 1), iterations=6, every=3, probe_tasks=3),
}
K, BATCH, INNER_LR, OUTER_LR = 5, 10, 0.02, 2e-3
PANELS = [("align_within_dot", r"within task: $E[\bar g_1 \cdot \bar g_2]$", "(a) within-task inner product"),
          ("align_within_cos", "within task: mean cosine", "(b) within-task cosine"),
          ("align_across_cos", "across tasks: mean cosine", "(c) across-task cosine (baseline)")]


def run(fast: bool) -> pd.DataFrame:
    s = SETTINGS["fast" if fast else "full"]
    model = seeded_init(0, lambda: MLP(s["sizes"], "tanh"))
    loss_fn = make_loss(model, "mse")
    dist = SineTaskDistribution("reptile")

    def sampler(rng: np.random.Generator):
        return dist.sample(rng).minibatches(K, BATCH, rng, "cycle")

    probe = AlignmentCallback(loss_fn, sampler, every=s["every"], n_tasks=s["probe_tasks"])
    phi0 = params_of(model)
    start = {"iteration": 0, **probe(0, phi0)}
    rows = []
    for name in ALGORITHMS:
        cfg = TrainConfig(name, inner_steps=K, inner_batch=BATCH, inner_lr=INNER_LR, outer_optimizer="adam",
                          outer_lr=OUTER_LR, iterations=s["iterations"], log_every=10 ** 9,
                          checkpoint_every=10 ** 9)
        result = MetaTrainer(loss_fn, phi0, sampler, cfg, callbacks=[probe]).run(progress=False)
        hist = [start] + [r for r in result.history if "align_within_dot" in r]
        rows += [{"algorithm": name, "k": K, **{key: float(v) for key, v in r.items()}} for r in hist]
        print(f"  {name}: within cos {hist[0]['align_within_cos']:.3f} -> {hist[-1]['align_within_cos']:.3f}",
              flush=True)
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, fast: bool, out: str | Path | None) -> list[Path]:
    s = SETTINGS["fast" if fast else "full"]
    fig, axes = style.figure(ncols=3, width=style.PAGE, height=2.5)
    for ax, (col, ylabel, title) in zip(axes[0], PANELS):
        for name, g in df.groupby("algorithm", sort=False):
            ax.plot(g["iteration"], g[col], color=style.color(name), label=style.label(name, None if name == "joint" else K),
                    marker="o" if len(g) <= 12 else None, ms=2.5)
        ax.set_xlabel("outer iteration")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    axes[0][0].legend(fontsize=6.5)
    text = (f"sine waves, MLP {'-'.join(map(str, s['sizes']))} tanh, k = {K} minibatches of {BATCH}, inner SGD {INNER_LR}, "
            f"outer Adam {OUTER_LR} annealed, {s['iterations']} iterations; {s['probe_tasks']} fixed probe tasks")
    return style.save(fig, df, NAME, out, note(fast, text))


def main(fast: bool = False, out: str | Path | None = None) -> list[Path]:
    return plot(run(fast), fast, out)


if __name__ == "__main__":
    cli(main, __doc__.splitlines()[0])
