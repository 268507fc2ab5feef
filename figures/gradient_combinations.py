"""Inner-gradient combinations, as Figure 3 of the Reptile paper.

Learning curves (test accuracy after fine-tuning against outer iteration) of meta-training with
the outer gradient ``g_m`` alone (FOMAML with m minibatches), ``g_1 + ... + g_m`` (Reptile with m
steps) and ``(g_1 + ... + g_m) / m``, m = 1..4, on 5-shot 5-way classification of the glyph set
(the project's Omniglot stand-in). As in the paper: plain SGD in both loops, meta-batch 1, the four
inner minibatches are disjoint batches of 25 of a task's 20-shot training set (``g_m`` uses the
m-th), the outer step size is annealed linearly to 0, and evaluation fine-tunes with 5 SGD steps of
batch 25 on 5 shots.

Reduced scale on this CPU (say so wherever it is shown): a narrower CNN, hundreds instead of
40K outer iterations, and a larger inner step size than the paper's 3e-3 so that something is
learned in that time (see SETTINGS).

Run: ``python -m figures.gradient_combinations [--fast] [--out DIR]``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures import style
from figures.common import cli, note
from figures.fewshot_common import Scale, learning_curve, load_splits, make_sampler
from reptile.train import TrainConfig

NAME = "gradient_combinations"
N_WAY, TRAIN_SHOTS, EVAL_SHOTS, BATCH, MAX_M = 5, 20, 5, 25, 4
SETTINGS = {
    "full": dict(scale=Scale(filters=32, iterations=500, eval_every=125, eval_tasks=60, test_shots=5),
                 inner_lr=0.05, outer_lr=0.5, eval_steps=5),
    "fast": dict(scale=Scale(filters=8, iterations=4, eval_every=2, eval_tasks=3, test_shots=1, dataset="glyphs-small"),
                 inner_lr=0.05, outer_lr=0.5, eval_steps=2),
}
PAPER = dict(inner_lr=3e-3, outer_lr=0.25, iterations=40000, filters=64)


def combinations(max_m: int = MAX_M) -> list[tuple[str, str, int, list[float]]]:
    """``(kind, legend label, m, weights)``; kind is ``"last"`` (g_m), ``"sum"`` or ``"avg"``."""
    out = [("last", "$g_1$", 1, [1.0])]
    out += [("last", f"$g_{m}$", m, [0.0] * (m - 1) + [1.0]) for m in range(2, max_m + 1)]
    out += [("sum", "$" + "+".join(f"g_{i}" for i in range(1, m + 1)) + "$", m, [1.0] * m)
            for m in range(2, max_m + 1)]
    out += [("avg", "avg$(" + ",".join(f"g_{i}" for i in range(1, m + 1)) + ")$", m, [1.0 / m] * m)
            for m in range(2, max_m + 1)]
    return out


def run(fast: bool) -> pd.DataFrame:
    s = SETTINGS["fast" if fast else "full"]
    scale: Scale = s["scale"]
    splits = load_splits(scale.dataset)
    frames = []
    for kind, text, m, weights in combinations():
        cfg = TrainConfig("combination", inner_steps=m, inner_batch=BATCH, inner_lr=s["inner_lr"],
                          outer_lr=s["outer_lr"], iterations=scale.iterations, weights=weights)
        sampler = make_sampler(splits["train"], N_WAY, TRAIN_SHOTS, m, BATCH, "cycle")
        frames.append(learning_curve(cfg, sampler, scale, splits, n_way=N_WAY, eval_shots=EVAL_SHOTS,
                                     eval_steps=s["eval_steps"], eval_batch=BATCH, eval_lr=s["inner_lr"],
                                     kind=kind, label=text, m=m, weights=" ".join(f"{w:g}" for w in weights)))
        print(f"  {text}: final accuracy {frames[-1]['accuracy'].iloc[-1]:.3f}", flush=True)
    return pd.concat(frames, ignore_index=True)


def plot(df: pd.DataFrame, fast: bool, out: str | Path | None) -> list[Path]:
    s = SETTINGS["fast" if fast else "full"]
    scale: Scale = s["scale"]
    fig, axes = style.figure(ncols=2, width=style.PAGE, height=2.8, sharey=True)
    cmaps = {"last": plt.cm.Blues, "sum": plt.cm.Greens, "avg": plt.cm.Oranges}
    panels = [(axes[0][0], ("last", "sum"), "(a) last gradient $g_m$ (FOMAML) vs sum (Reptile)"),
              (axes[0][1], ("avg", "sum"), "(b) average $(g_1+..+g_m)/m$ vs sum")]
    for ax, kinds, title in panels:
        for (kind, text, m), g in df.groupby(["kind", "label", "m"], sort=False):
            if kind not in kinds and not (m == 1):
                continue
            c = "#000000" if m == 1 else cmaps[kind](0.35 + 0.65 * (m - 1) / (MAX_M - 1))
            faint = kind == "sum" and "avg" in kinds
            ax.plot(g["iteration"], g["accuracy"], color=c, ls="--" if kind == "last" and m > 1 else "-",
                    alpha=0.35 if faint else 1.0, lw=1.0 if faint else 1.4,
                    marker="o" if len(g) <= 12 else None, ms=2.5, label=None if faint else text)
            if not faint:
                ax.fill_between(g["iteration"], g["accuracy"] - g["ci95"], g["accuracy"] + g["ci95"],
                                color=c, alpha=0.08, lw=0)
        if df["accuracy"].min() < 0.5:  # else chance (0.2) would squash the curves
            ax.axhline(1 / N_WAY, color="#999999", lw=0.7, ls=":")
        ax.set_title(title)
        ax.set_xlabel("outer iteration")
        ax.legend(ncol=2, loc="lower right", fontsize=6.5)
    axes[0][0].set_ylabel(f"test accuracy, {N_WAY}-way {EVAL_SHOTS}-shot")
    scale_note = (f"reduced scale: glyphs, CNN with {scale.filters} filters, {scale.iterations} outer iterations, "
                  f"SGD inner step {s['inner_lr']}, outer step {s['outer_lr']} annealed "
                  f"(paper: Omniglot, 64 filters, 40K iterations, 3e-3, 0.25); "
                  f"{scale.eval_tasks} test tasks x {scale.test_shots * N_WAY} queries per point, shading: 95% CI over tasks; chance: 0.2")
    return style.save(fig, df, NAME, out, note(fast, scale_note))


def main(fast: bool = False, out: str | Path | None = None) -> list[Path]:
    return plot(run(fast), fast, out)


if __name__ == "__main__":
    cli(main, __doc__.splitlines()[0])
