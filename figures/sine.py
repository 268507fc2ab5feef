"""Sine-wave regression, as Figure 1 of the Reptile paper.

Three panels: the network before meta-training, after MAML, after Reptile. Each shows one unseen
task: the true function, the 10 sampled points, the network's curve before adaptation and after
32 SGD steps (step 0.02) on those points. Titles give the grid MSE after 32 steps averaged over
unseen tasks (95% confidence interval over tasks).

Setup (REFERENCE.md section 4): tasks ``a sin(x + b)``, ``a ~ U[0.1, 5]``, ``b ~ U[0, 2 pi]``,
a task's examples are the 50-point grid of [-5, 5]; MLP 1-64-64-1 tanh. Reptile follows the blog
gist (5 SGD steps of 10 points at 0.02, outer step 0.1 annealed to 0, one task per iteration) for
fewer iterations than the gist's 30000. MAML uses k = 2 (one inner step at 0.02 on 10 points,
outer loss on 10 other points of the same task), Adam meta-optimizer (1e-3, MAML's), meta-batch 5;
it is trained on the same tasks (the Reptile paper does not state its MAML settings).

Run: ``python -m figures.sine [--fast] [--out DIR]``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from figures import style
from figures.common import cli, note
from reptile.evaluate import evaluate_sine, finetune
from reptile.inner import SGD
from reptile.losses import make_loss, params_of, predict
from reptile.models import MLP, seeded_init
from reptile.tasks import SineTaskDistribution
from reptile.train import MetaTrainer, TrainConfig

NAME = "sine"
SETTINGS = {
    # iterations of each algorithm, unseen tasks for the MSE in the titles
    "full": dict(reptile_iters=8000, maml_iters=2000, eval_tasks=100),
    "fast": dict(reptile_iters=20, maml_iters=10, eval_tasks=3),
}
TEST_STEPS, TEST_LR, SHOTS = 32, 0.02, 10


def train(algorithm: str, iterations: int, seed: int = 0) -> tuple[torch.nn.Module, dict, dict]:
    """Meta-train from the same initialization; returns ``(model, phi_init, phi_trained)``."""
    model = seeded_init(seed, lambda: MLP((1, 64, 64, 1), "tanh"))
    loss_fn = make_loss(model, "mse")
    dist = SineTaskDistribution("reptile")
    if algorithm == "reptile":
        k, cfg = 5, TrainConfig("reptile", inner_steps=5, inner_batch=10, inner_lr=0.02, outer_lr=0.1,
                                iterations=iterations, seed=seed, log_every=10 ** 9, checkpoint_every=10 ** 9)
    elif algorithm == "maml":
        k, cfg = 2, TrainConfig("maml", inner_steps=2, inner_batch=10, inner_lr=0.02, outer_lr=1e-3,
                                outer_optimizer="adam", anneal=False, meta_batch=5, iterations=iterations,
                                seed=seed, log_every=10 ** 9, checkpoint_every=10 ** 9)
    else:
        raise ValueError(f"unknown algorithm {algorithm!r}")

    def sampler(rng: np.random.Generator):
        return dist.sample(rng).minibatches(k, 10, rng)

    phi0 = params_of(model)
    result = MetaTrainer(loss_fn, phi0, sampler, cfg).run(progress=False)
    return model, phi0, result.params


def run(fast: bool) -> pd.DataFrame:
    """Train both algorithms, fine-tune on one unseen task, evaluate; the long-format numbers."""
    s = SETTINGS["fast" if fast else "full"]
    model, phi0, phi_reptile = train("reptile", s["reptile_iters"])
    _, _, phi_maml = train("maml", s["maml_iters"])
    loss_fn = make_loss(model, "mse")
    panels = [("before training", phi0), ("after MAML", phi_maml), ("after Reptile", phi_reptile)]

    # one unseen task and its 10 points, the same in every panel
    rng = np.random.default_rng(12345)
    task = SineTaskDistribution("reptile").sample(rng)
    while not 2.5 <= task.amplitude <= 4.5:  # a clearly visible wave, drawn from the same law
        task = SineTaskDistribution("reptile").sample(rng)
    x_few, y_few = task.few_shot(SHOTS, rng)
    x_plot = torch.linspace(-5, 5, 200).unsqueeze(1)
    y_true = task.f(x_plot)

    rows = []
    for title, phi in panels:
        traj = finetune(loss_fn, phi, x_few, y_few, TEST_STEPS, SGD(TEST_LR), keep=True)
        y0 = predict(model, phi, x_plot)[:, 0]
        y32 = predict(model, traj.params[TEST_STEPS], x_plot)[:, 0]
        ev = evaluate_sine(loss_fn, phi, n_tasks=s["eval_tasks"], shots=SHOTS, steps=TEST_STEPS, lr=TEST_LR,
                           seed=1, record=(0, TEST_STEPS))
        mse, ci = ev.final()
        for curve, ys in (("true", y_true[:, 0]), ("before_adaptation", y0), (f"after_{TEST_STEPS}_steps", y32)):
            rows += [{"panel": title, "curve": curve, "x": float(a), "y": float(b)}
                     for a, b in zip(x_plot[:, 0], ys)]
        rows += [{"panel": title, "curve": "sampled_points", "x": float(a), "y": float(b)}
                 for a, b in zip(x_few[:, 0], y_few[:, 0])]
        rows.append({"panel": title, "curve": f"grid_mse_{TEST_STEPS}_steps_mean", "x": np.nan, "y": mse})
        rows.append({"panel": title, "curve": f"grid_mse_{TEST_STEPS}_steps_ci95", "x": np.nan, "y": ci})
        rows.append({"panel": title, "curve": "grid_mse_0_steps_mean", "x": np.nan, "y": float(ev.mean[0])})
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, fast: bool, out: str | Path | None) -> list[Path]:
    s = SETTINGS["fast" if fast else "full"]
    keys = {"before training": "before", "after MAML": "maml", "after Reptile": "reptile"}
    fig, axes = style.figure(ncols=3, width=style.PAGE, height=2.5, sharey=True)
    for ax, (title, key) in zip(axes[0], keys.items()):
        d = df[df["panel"] == title]
        c = {name: g for name, g in d.groupby("curve")}
        ax.plot(c["true"]["x"], c["true"]["y"], color=style.color("true"), lw=1.2, label="true function")
        ax.plot(c["before_adaptation"]["x"], c["before_adaptation"]["y"], color=style.color(key), ls="--", lw=1.1,
                alpha=0.8, label="before adaptation")
        after = c[f"after_{TEST_STEPS}_steps"]
        ax.plot(after["x"], after["y"], color=style.color(key), lw=1.6, label=f"after {TEST_STEPS} steps")
        pts = c["sampled_points"]
        ax.plot(pts["x"], pts["y"], "o", color="#000000", mfc="white", ms=4, mew=1.0, zorder=5,
                label=f"{SHOTS} sampled points")
        mse = float(c[f"grid_mse_{TEST_STEPS}_steps_mean"]["y"].iloc[0])
        ci = float(c[f"grid_mse_{TEST_STEPS}_steps_ci95"]["y"].iloc[0])
        ax.set_title(f"{title}\nMSE after {TEST_STEPS} steps: {mse:.3g} ± {ci:.2g}")
        ax.set_xlabel("x")
        ax.set_xlim(-5, 5)
    axes[0][0].set_ylabel("f(x)")
    axes[0][0].legend(loc="lower left", fontsize=6, frameon=True, framealpha=0.85, edgecolor="none")
    scale = (f"Reptile {s['reptile_iters']} iterations (k=5), MAML {s['maml_iters']} iterations (k=2, meta-batch 5); "
             f"MSE on the 50-point grid over {s['eval_tasks']} unseen tasks, ± 95% CI")
    return style.save(fig, df, NAME, out, note(fast, scale))


def main(fast: bool = False, out: str | Path | None = None) -> list[Path]:
    return plot(run(fast), fast, out)


if __name__ == "__main__":
    cli(main, __doc__.splitlines()[0])
