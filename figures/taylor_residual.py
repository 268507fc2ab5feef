"""Taylor residual against the inner step size alpha (the toolkit's check of paper section 5.1).

For one sine-wave task and its k minibatches, at a fixed initialization of the 1-64-64-1 tanh MLP
(float64), the exact meta-gradients of MAML, FOMAML and Reptile are compared with the paper's
leading-order (alpha^1) predictions and with the second-order predictions of
:mod:`analysis.taylor`. The residual ``|measured - predicted|`` must fall like alpha^2 (order 1)
and alpha^3 (order 2) while alpha k is small; dashed guides show those slopes, and the legend
gives the slope fitted on the small-alpha end. Everything comes from
:func:`analysis.taylor.alpha_sweep`.

Run: ``python -m figures.taylor_residual [--fast] [--out DIR]``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from figures import style
from figures.common import cli, note
from analysis.problems import sine_problem
from analysis.taylor import alpha_sweep, fit_slope

NAME = "taylor_residual"
SETTINGS = {
    "full": dict(sizes=(1, 64, 64, 1), ks=(2, 4, 8), batch=10, alphas=np.logspace(-4, -1, 13), fit_max=1e-2),
    "fast": dict(sizes=(1, 8, 8, 1), ks=(2, 3), batch=5, alphas=np.logspace(-3, -1, 4), fit_max=1e-1),
}
TITLES = {"maml": "MAML", "fomaml": "FOMAML", "reptile": "Reptile"}


def run(fast: bool) -> pd.DataFrame:
    s = SETTINGS["fast" if fast else "full"]
    prob = sine_problem(seed=0, sizes=s["sizes"])
    batches = prob.sampler(max(s["ks"]), s["batch"])(np.random.default_rng(7))
    return alpha_sweep(prob.loss_fn, prob.phi, batches, s["alphas"], ks=s["ks"], orders=(1, 2),
                       fit_range=(0.0, s["fit_max"]))


def plot(df: pd.DataFrame, fast: bool, out: str | Path | None) -> list[Path]:
    s = SETTINGS["fast" if fast else "full"]
    fig, axes = style.figure(ncols=3, width=style.PAGE, height=2.6, sharey=True)
    ks = sorted(df["k"].unique())
    shades = {k: 0.45 + 0.55 * i / max(len(ks) - 1, 1) for i, k in enumerate(ks)}
    for ax, name in zip(axes[0], ("maml", "fomaml", "reptile")):
        d = df[df["algorithm"] == name]
        for (k, order), g in d.groupby(["k", "order"]):
            g = g.sort_values("alpha")
            keep = g["residual"] > 0
            slope, _ = fit_slope(g.alpha[g.alpha <= s["fit_max"]], g.residual[g.alpha <= s["fit_max"]])
            ax.plot(g["alpha"][keep], g["residual"][keep], color=style.color(name), alpha=shades[k],
                    ls="-" if order == 1 else ":", marker="o" if order == 1 else "s", ms=2.5,
                    label=f"k={k}, order {order} (slope {slope:.2f})")
        a = np.asarray(sorted(d["alpha"].unique()))
        lo = a[: max(3, len(a) // 2)]
        ref1 = d[(d.order == 1) & (d.alpha == lo[0])]["residual"].max()
        ref2 = d[(d.order == 2) & (d.alpha == lo[0])]["residual"].max()
        if ref1 > 0:
            style.log_slope_guide(ax, lo, ref1 * 3, 2, "slope 2")
        if ref2 > 0:
            style.log_slope_guide(ax, lo, ref2 / 3, 3, "slope 3")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(TITLES[name])
        ax.set_xlabel(r"inner step size $\alpha$")
        ax.legend(fontsize=5.6, loc="lower right", frameon=True, framealpha=0.85, edgecolor="none")
    axes[0][0].set_ylabel(r"residual $\|g_{\mathrm{measured}} - g_{\mathrm{predicted}}\|$")
    text = (f"sine-wave MLP {'-'.join(map(str, s['sizes']))} tanh, float64, one task, minibatches of {s['batch']}; "
            f"solid: paper's leading order, dotted: with alpha^2 terms; slopes fitted for alpha <= {s['fit_max']:g}")
    return style.save(fig, df, NAME, out, note(fast, text))


def main(fast: bool = False, out: str | Path | None = None) -> list[Path]:
    return plot(run(fast), fast, out)


if __name__ == "__main__":
    cli(main, __doc__.splitlines()[0])
