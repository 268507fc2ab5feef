"""Solution manifolds in the plane: a computed version of the Reptile paper's Figure 2.

Five least-squares tasks on a 2-parameter linear model ``y = a . w``, one example each; the
solution set of task ``tau`` is the line ``W_tau = {w : a_tau . w = y_tau}`` (paper section 5.2).
Two lines have ``|a| = 1``, three ``|a| = 0.5``. Shown:

* the minimizer of the mean squared distance ``1/2 mean_tau D(w, W_tau)^2`` (closed form,
  :func:`analysis.manifolds.ls_distance_minimizer`) -- the point "nearest all of them";
* the minimizer of the joint-training loss ``mean_tau (a_tau . w - y_tau)^2``
  (:func:`analysis.manifolds.ls_joint_minimizer`), which weights squared distances by ``|a_tau|^2``
  and so sits nearer the two steep lines;
* serial Reptile iterates (the engine's :class:`reptile.train.MetaTrainer`, k = 30 SGD steps of
  ``alpha = 0.5``, outer step 0.1 annealed linearly to 0, one random task per iteration) and
  joint-training iterates (algorithm ``"joint"``, same schedule) from the same start;
* Reptile's fixed point for k = 1, 2, 3, ... (:func:`analysis.manifolds.ls_reptile_fixed_point`):
  k = 1 is joint training, k -> infinity the distance minimizer.

The second panel is the same question on a network (:mod:`analysis.manifold_nets`): the mean
squared distance ``E D(phi, W_tau)^2`` from the sine MLP's parameters (1-64-64-1 tanh) to 4 fixed
unseen tasks' solution sets (``f(x_i) = y_i`` on 10 grid points; certified projections) against
meta-training iterations, for Reptile, FOMAML, MAML and joint training from the same init with the
same budget (1500 iterations, the blog's settings). That run takes tens of minutes on 2 cores: its
numbers are kept in ``<out>/manifolds_networks_curve.csv`` and reused when present (delete the file
to recompute); fast mode uses a 1-32-32-1 MLP, Reptile only, 20 iterations.

Writes ``solution_manifolds.{png,pdf,csv}`` (the CSV holds every plotted point) and prints the
distances of the final iterates to both minimizers.

Run: ``python -m figures.solution_manifolds [--fast] [--out DIR]``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from figures import style
from figures.common import cli, note
from analysis.manifold_checks import PLANE_ALPHA, plane_tasks
from analysis.manifolds import ls_distance_minimizer, ls_joint_minimizer, ls_reptile_fixed_point
from reptile.losses import make_loss
from reptile.models import LinearModel
from reptile.tasks import LeastSquaresTask
from reptile.train import MetaTrainer, TrainConfig

NAME = "solution_manifolds"
START = (-2.5, 3.0)
ALPHA, K, OUTER_LR = PLANE_ALPHA, 30, 0.1
SETTINGS = {"full": dict(iterations=500, k=K), "fast": dict(iterations=20, k=5)}
NETWORK = {"full": dict(iterations=1500, every=500, n_probe=4, n_eval=12),
           "fast": dict(iterations=20, every=20, n_probe=1, n_eval=1, algorithms=("reptile",), hidden=(32, 32))}


def tasks() -> list[LeastSquaresTask]:
    """The five one-example tasks (float64), shared with ``reptile verify`` (analysis.manifold_checks)."""
    return plane_tasks()


def train(algorithm: str, k: int, iterations: int, seed: int = 0) -> np.ndarray:
    """Serial meta-training from :data:`START`; returns the iterates ``[iterations + 1, 2]``."""
    ts = tasks()
    model = LinearModel(2).double()
    loss_fn = make_loss(model, "mse")

    def sampler(rng: np.random.Generator):
        t = ts[int(rng.integers(len(ts)))]
        return t.inputs.unsqueeze(0).expand(k, 1, 2), t.targets.unsqueeze(0).expand(k, 1, 1)

    cfg = TrainConfig(algorithm=algorithm, inner_steps=k, inner_batch=1, inner_lr=ALPHA, outer_lr=OUTER_LR,
                      iterations=iterations, seed=seed, checkpoint_every=iterations, log_every=iterations)
    trainer = MetaTrainer(loss_fn, {"linear.weight": torch.tensor([START], dtype=torch.float64)}, sampler, cfg)
    path = [np.array(START)]
    for _ in range(iterations):
        trainer.step()
        path.append(trainer.phi["linear.weight"][0].numpy().copy())
    return np.stack(path)


def run(fast: bool) -> tuple[pd.DataFrame, dict[str, float]]:
    s = SETTINGS["fast" if fast else "full"]
    ts = tasks()
    w_dist, w_joint = ls_distance_minimizer(ts), ls_joint_minimizer(ts)
    rows = []
    for i, t in enumerate(ts):
        a, y = t.inputs[0].numpy(), float(t.targets[0, 0])
        rows.append(dict(kind="line", label=f"task {i}", k=np.nan, iteration=np.nan, w1=a[0], w2=a[1], value=y))
    rows.append(dict(kind="minimizer", label="distance", k=np.inf, iteration=np.nan, w1=w_dist[0], w2=w_dist[1], value=np.nan))
    rows.append(dict(kind="minimizer", label="joint", k=1, iteration=np.nan, w1=w_joint[0], w2=w_joint[1], value=np.nan))
    for k in range(1, 61):
        fp = ls_reptile_fixed_point(ts, k, ALPHA)
        rows.append(dict(kind="fixed_point", label="reptile", k=k, iteration=np.nan, w1=fp[0], w2=fp[1], value=np.nan))
    runs = {"reptile": train("reptile", s["k"], s["iterations"]), "joint": train("joint", 1, s["iterations"])}
    for name, path in runs.items():
        k = s["k"] if name == "reptile" else 1
        for it, w in enumerate(path):
            rows.append(dict(kind="iterate", label=name, k=k, iteration=it, w1=w[0], w2=w[1], value=np.nan))
    end_r, end_j = runs["reptile"][-1], runs["joint"][-1]
    fp_k = ls_reptile_fixed_point(ts, s["k"], ALPHA)
    summary = {
        "distance_between_minimizers": float(np.linalg.norm(w_dist - w_joint)),
        "reptile_end_to_distance_minimizer": float(np.linalg.norm(end_r - w_dist)),
        "reptile_end_to_joint_minimizer": float(np.linalg.norm(end_r - w_joint)),
        "reptile_end_to_fixed_point_k": float(np.linalg.norm(end_r - fp_k)),
        "fixed_point_k_to_distance_minimizer": float(np.linalg.norm(fp_k - w_dist)),
        "joint_end_to_joint_minimizer": float(np.linalg.norm(end_j - w_joint)),
        "joint_end_to_distance_minimizer": float(np.linalg.norm(end_j - w_dist)),
    }
    return pd.DataFrame(rows), summary


def network_curve(fast: bool, out: str | Path | None) -> pd.DataFrame:
    """The network panel's numbers: ``algorithm, iteration, mean_sq, mean, certified`` rows
    (reused from ``<out>/manifolds_networks_curve.csv`` in full mode when present)."""
    from analysis.manifold_nets import run_network_experiment
    out = Path(out) if out is not None else style.DEFAULT_OUT
    cached = out / "manifolds_networks_curve.csv"
    if not fast and cached.exists():
        return pd.read_csv(cached)
    curve, _ = run_network_experiment(**NETWORK["fast" if fast else "full"], out_dir=None if fast else out)
    return pd.DataFrame(curve)


def plot_network(ax, curve: pd.DataFrame) -> None:
    for alg, g in curve.groupby("algorithm", sort=False):
        g = g.sort_values("iteration")
        ax.plot(g.iteration, g.mean_sq, marker="o", markersize=2.5, linewidth=1.0, color=style.color(alg),
                label=style.label(alg))
    ax.set_xlabel("meta-training iteration")
    ax.set_ylabel(r"mean $D(\phi, W_\tau)^2$ over probe tasks")
    ax.set_title("sine MLP: distance to unseen tasks' solution sets")
    ax.legend(fontsize=6.5)


def plot(df: pd.DataFrame, s: dict, fast: bool, out: str | Path | None, curve: pd.DataFrame | None = None) -> list[Path]:
    ncols = 1 if curve is None else 2
    fig, axes = style.figure(ncols=ncols, width=style.COLUMN * 1.35 * ncols, height=style.COLUMN * 1.25)
    ax = axes[0][0]
    if curve is not None:
        plot_network(axes[0][1], curve)
        df = pd.concat([df, curve.assign(kind="network", label=curve.algorithm)], ignore_index=True)
    lo, hi = -3.2, 3.6
    xs = np.linspace(lo, hi, 2)
    lines = df[df.kind == "line"]
    for j, (_, r) in enumerate(lines.iterrows()):
        a1, a2, y = r.w1, r.w2, r.value
        steep = np.hypot(a1, a2) > 0.75
        kw = dict(color="#555555", linewidth=1.3 if steep else 0.9, linestyle="-" if steep else "--")
        lab = None
        if j == 0:
            lab = r"solution sets $W_\tau$, $|a_\tau| = 1$"
        elif j == 2:
            lab = r"solution sets $W_\tau$, $|a_\tau| = 0.5$"
        if abs(a2) > 1e-9:
            ax.plot(xs, (y - a1 * xs) / a2, label=lab, **kw)
        else:
            ax.axvline(y / a1, label=lab, **kw)
    for name, marker in (("joint", "."), ("reptile", ".")):
        it = df[(df.kind == "iterate") & (df.label == name)]
        k = int(it.k.iloc[0])
        ax.plot(it.w1, it.w2, marker=marker, markersize=1.6, linewidth=0.4, alpha=0.7, color=style.color(name),
                label=f"{style.label(name, k=k)} iterates")
        ax.plot([it.w1.iloc[-1]], [it.w2.iloc[-1]], marker="X", markersize=4.5, color=style.color(name),
                markeredgecolor="white", markeredgewidth=0.5, linestyle="none", zorder=6,
                label=f"{style.label(name)}: last iterate")
    fp = df[df.kind == "fixed_point"]
    ax.plot(fp.w1, fp.w2, color="#000000", linewidth=1.0, linestyle=":", label="Reptile fixed point, k = 1 .. 60")
    for k in (1, 2, 3, 5, 10):
        r = fp[fp.k == k].iloc[0]
        ax.annotate(f"k={k}", (r.w1, r.w2), fontsize=6, xytext=(6, -3), textcoords="offset points")
    start = df[(df.kind == "iterate") & (df.iteration == 0)].iloc[0]
    ax.plot([start.w1], [start.w2], "o", color="#000000", markersize=3.5, label="start")
    wd = df[(df.kind == "minimizer") & (df.label == "distance")].iloc[0]
    wj = df[(df.kind == "minimizer") & (df.label == "joint")].iloc[0]
    ax.plot([wd.w1], [wd.w2], "*", color=style.color("reptile"), markersize=11, markeredgecolor="black",
            markeredgewidth=0.5, label=r"argmin $\frac{1}{2}E_\tau D(w, W_\tau)^2$", zorder=7)
    ax.plot([wj.w1], [wj.w2], "s", color=style.color("joint"), markersize=6, markeredgecolor="black",
            markeredgewidth=0.5, label=r"argmin $E_\tau L_\tau(w)$ (joint training)", zorder=7)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(r"$w_1$")
    ax.set_ylabel(r"$w_2$")
    ax.set_title("Reptile approaches the point nearest all solution sets")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, fontsize=6.5)
    extra = (f"|Reptile end - distance argmin| = {s['reptile_end_to_distance_minimizer']:.3f}, "
             f"|joint end - joint argmin| = {s['joint_end_to_joint_minimizer']:.3f}, "
             f"minimizers {s['distance_between_minimizers']:.2f} apart")
    return style.save(fig, df, NAME, out, note(fast, extra))


def main(fast: bool = False, out: str | Path | None = None) -> list[Path]:
    df, summary = run(fast)
    for k, v in summary.items():
        print(f"{k}: {v:.4f}")
    curve = network_curve(fast, out)
    paths = plot(df, summary, fast, out, curve)
    pd.Series(summary).rename("value").to_csv(Path(paths[2]).with_name(f"{NAME}_summary.csv"), header=True)
    return paths + [Path(paths[2]).with_name(f"{NAME}_summary.csv")]


if __name__ == "__main__":
    cli(main, __doc__.split("\n\n")[0])
