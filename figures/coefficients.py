"""Measured against predicted coefficients of AvgGrad and AvgGradInner (paper section 5.1).

The expected meta-gradients of MAML, FOMAML and Reptile, estimated by Monte Carlo over tasks and
minibatches, are regressed on the estimated AvgGrad and AvgGradInner
(:func:`analysis.expectations.monte_carlo` and :func:`~analysis.expectations.coefficient_table`);
the paper predicts the coefficients (1, -2(k-1) alpha), (1, -(k-1) alpha), (k, -k(k-1)/2 alpha)
to leading order in alpha. Panel (a): measured against predicted at the smallest alpha (identity
line = agreement; bars = jackknife standard errors). Panel (b): the measured AvgGradInner
coefficient over the paper's, against alpha, for the largest k: it tends to 1 as alpha -> 0 and
drifts away as alpha k grows (the O(alpha^2) terms the paper drops).

Problems (:mod:`analysis.problems`, float64): least squares (d = 10, 20 examples per task, a
linear model: constant Hessians) and the sine-wave MLP (a narrower 1-32-32-1 tanh), minibatches of
10 drawn with replacement (exchangeable, as the derivation assumes).

Run: ``python -m figures.coefficients [--fast] [--out DIR]``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from figures import style
from figures.common import cli, note
from analysis.expectations import coefficient_table, monte_carlo
from analysis.problems import least_squares_problem, sine_problem

NAME = "coefficients"
SETTINGS = {
    "full": dict(ks=(2, 4), alphas=(1e-3, 3e-3, 1e-2, 3e-2), n={"least squares": 400, "sine MLP": 400},
                 sine_sizes=(1, 32, 32, 1)),
    "fast": dict(ks=(2,), alphas=(1e-2, 3e-2), n={"least squares": 6, "sine MLP": 4}, sine_sizes=(1, 4, 4, 1)),
}
MARKERS = {"least squares": "o", "sine MLP": "^"}
#: horizontal offsets in panel (a), so that equal predictions (FOMAML and Reptile with k = 2) stay visible
JITTER = {"maml": -0.15, "fomaml": 0.0, "reptile": 0.15, "least squares": -0.04, "sine MLP": 0.04}


def run(fast: bool) -> pd.DataFrame:
    s = SETTINGS["fast" if fast else "full"]
    problems = {"least squares": least_squares_problem(seed=0), "sine MLP": sine_problem(seed=0, sizes=s["sine_sizes"])}
    frames = []
    for pname, prob in problems.items():
        for k in s["ks"]:
            mc = monte_carlo(prob.loss_fn, prob.phi, prob.sampler(k, 10), s["n"][pname], k=k, alphas=s["alphas"])
            t = coefficient_table(mc)
            t.insert(0, "problem", pname)
            frames.append(t)
    return pd.concat(frames, ignore_index=True)


def plot(df: pd.DataFrame, fast: bool, out: str | Path | None) -> list[Path]:
    fig, axes = style.figure(ncols=2, width=style.PAGE, height=2.9)
    ax = axes[0][0]
    a0 = df["alpha"].min()
    d0 = df[df["alpha"] == a0]
    for (pname, name), g in d0.groupby(["problem", "algorithm"], sort=False):
        c, m, dx = style.color(name), MARKERS[pname], JITTER[name] + JITTER[pname]
        ax.errorbar(g["avg_grad_coef_paper"] + dx, g["avg_grad_coef"], yerr=g["avg_grad_coef_se"], fmt=m, color=c,
                    ms=4, capsize=2, elinewidth=0.7)
        ax.errorbar(g["inner_coef_paper"] + dx, g["inner_coef"], yerr=g["inner_coef_se"], fmt=m, color=c, mfc="white",
                    ms=4, capsize=2, elinewidth=0.7)
    lim = [min(df["inner_coef_paper"].min(), df["avg_grad_coef_paper"].min()) - 1,
           max(df["inner_coef_paper"].max(), df["avg_grad_coef_paper"].max()) + 1]
    ax.plot(lim, lim, color="#999999", lw=0.8, ls="--", zorder=0)
    ax.set_xlabel("coefficient predicted by the paper")
    ax.set_ylabel("coefficient measured")
    ax.set_title(rf"(a) measured vs predicted, $\alpha$ = {a0:g}")
    handles = [ax.plot([], [], "s", color=style.color(n), label=style.NAMES[n])[0] for n in ("maml", "fomaml", "reptile")]
    handles += [ax.plot([], [], MARKERS[p], color="#555555", label=p)[0] for p in MARKERS]
    handles += [ax.plot([], [], "o", color="#555555", label="AvgGrad")[0],
                ax.plot([], [], "o", color="#555555", mfc="white", label=r"AvgGradInner / $\alpha$")[0]]
    ax.legend(handles=handles, loc="upper left", fontsize=6.5)
    ax.text(0.98, 0.03, "k = " + ", ".join(str(k) for k in sorted(df["k"].unique())), transform=ax.transAxes,
            ha="right", va="bottom", fontsize=7)

    ax = axes[0][1]
    kmax = df["k"].max()
    for (pname, name), g in df[df["k"] == kmax].groupby(["problem", "algorithm"], sort=False):
        g = g.sort_values("alpha")
        ratio, se = g["inner_coef"] / g["inner_coef_paper"], g["inner_coef_se"] / g["inner_coef_paper"].abs()
        ax.errorbar(g["alpha"], ratio, yerr=se, color=style.color(name), marker=MARKERS[pname], ms=3.5, capsize=2,
                    elinewidth=0.7, ls="-" if pname == "least squares" else "--",
                    label=f"{style.label(name, kmax)}, {pname}")
    ax.axhline(1.0, color="#999999", lw=0.8, ls="--", zorder=0)
    ax.set_xscale("log")
    ax.set_xlabel(r"inner step size $\alpha$")
    ax.set_ylabel("AvgGradInner coefficient, measured / paper")
    ax.set_title(f"(b) AvgGradInner coefficient against alpha, k = {kmax}")
    ax.legend(fontsize=6, loc="lower left")
    n = ", ".join(f"{p}: {int(g['n'].iloc[0])}" for p, g in df.groupby("problem"))
    return style.save(fig, df, NAME, out, note(fast, f"Monte-Carlo samples (task + k minibatches of 10): {n}; "
                                                     "bars: jackknife standard errors"))


def main(fast: bool = False, out: str | Path | None = None) -> list[Path]:
    return plot(run(fast), fast, out)


if __name__ == "__main__":
    cli(main, __doc__.splitlines()[0])
