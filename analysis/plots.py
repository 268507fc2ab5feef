"""Figures of the theory check, built on ``matplotlib.figure.Figure`` (no pyplot, no global
backend switch). Each function takes the DataFrame produced by the analysis and returns a Figure."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

NAMES = {"maml": "MAML", "fomaml": "FOMAML", "reptile": "Reptile", "combination": "combination"}


def residual_figure(sweep: pd.DataFrame) -> Figure:
    """|measured - prediction| against alpha (log-log), one panel per algorithm, one line per
    (k, order), with dashed slope-2 and dotted slope-3 guides through the data."""
    algs = [a for a in NAMES if a in set(sweep.algorithm)]
    fig = Figure(figsize=(4.4 * len(algs), 4.0), layout="constrained")
    axes = fig.subplots(1, len(algs), squeeze=False)[0]
    ks = sorted(sweep.k.unique())
    colors = {k: c for k, c in zip(ks, ["C0", "C1", "C2", "C3", "C4", "C5", "C6"])}
    markers = {0: "s", 1: "o", 2: "^"}
    for ax, alg in zip(axes, algs):
        d = sweep[sweep.algorithm == alg]
        for (k, order), g in d.groupby(["k", "order"]):
            g = g.sort_values("alpha")
            ax.loglog(g.alpha, g.residual, marker=markers.get(order, "o"), ms=3.5, color=colors[k],
                      ls="-" if order == 1 else "--", label=f"k={k}, order {order} (slope {g.slope.iloc[0]:.2f})")
        a = np.array([d.alpha.min(), d.alpha.max()])
        for order, p, ls in [(1, 2, ":"), (2, 3, "-.")]:
            g = d[d.order == order]
            if len(g):
                anchor = g[g.alpha == g.alpha.min()].residual.median()
                ax.loglog(a, anchor * (a / a[0]) ** p, color="gray", ls=ls, lw=1, label=f"slope {p} guide")
        ax.set_title(NAMES[alg])
        ax.set_xlabel("inner step size alpha")
        ax.set_ylabel("|measured - predicted|")
        ax.legend(fontsize=6)
        ax.grid(True, which="both", alpha=0.2)
    fig.suptitle("Residuals of the Taylor predictions (leading order: slope 2, second order: slope 3)")
    return fig


def breakdown_figure(sweep: pd.DataFrame, threshold: float = 0.1) -> Figure:
    """Relative error of the leading-order prediction against alpha * k, with the threshold line."""
    d = sweep[sweep.order == 1]
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    styles = {"maml": "-", "fomaml": "--", "reptile": ":"}
    for (alg, k), g in d.groupby(["algorithm", "k"]):
        g = g.groupby("alpha_k", as_index=False).relative_error.median().sort_values("alpha_k")
        ax.loglog(g.alpha_k, g.relative_error, ls=styles.get(alg, "-"), color=f"C{int(k) - 2}",
                  label=f"{NAMES.get(alg, alg)} k={k}")
    ax.axhline(threshold, color="red", lw=1, label=f"{threshold:.0%}")
    ax.set_xlabel("alpha * k")
    ax.set_ylabel("relative error of the leading order (median over tasks)")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(True, which="both", alpha=0.2)
    return fig


def coefficient_figure(table: pd.DataFrame) -> Figure:
    """Measured against predicted coefficients (AvgGrad, and AvgGradInner / alpha) with
    error bars of 3 standard errors, one marker per (problem, algorithm, k)."""
    fig = Figure(figsize=(10, 4.3), layout="constrained")
    axes = fig.subplots(1, 2)
    marks = {"maml": "o", "fomaml": "s", "reptile": "^"}
    problems = list(dict.fromkeys(table.get("problem", pd.Series(["?"] * len(table)))))
    for ax, (col, title) in zip(axes, [("avg_grad_coef", "coefficient of AvgGrad"),
                                       ("inner_coef", "coefficient of alpha * AvgGradInner")]):
        lo, hi = np.inf, -np.inf
        for r in table.itertuples():
            pi = problems.index(getattr(r, "problem", "?"))
            x, y, e = getattr(r, col + "_paper"), getattr(r, col), 3 * getattr(r, col + "_se")
            ax.errorbar(x + 0.06 * (pi - (len(problems) - 1) / 2), y, yerr=e, fmt=marks.get(r.algorithm, "o"),
                        color=f"C{pi}", ms=4, capsize=2)
            lo, hi = min(lo, x, y - e), max(hi, x, y + e)
        pad = 0.05 * (hi - lo + 1e-12)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="gray", lw=1)
        ax.set_xlabel("paper")
        ax.set_ylabel("measured (error bars: 3 s.e.)")
        ax.set_title(title)
        ax.grid(True, alpha=0.2)
    handles = [axes[0].plot([], [], marks[a], color="k")[0] for a in marks]
    handles += [axes[0].plot([], [], "o", color=f"C{i}")[0] for i in range(len(problems))]
    axes[0].legend(handles, [NAMES[a] for a in marks] + problems, fontsize=7)
    fig.suptitle("Expected meta-gradient = c1 AvgGrad + c2 alpha AvgGradInner: measured vs paper")
    return fig
