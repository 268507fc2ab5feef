"""Minibatch overlap, as Figure 4 (a, b, c) of the Reptile paper.

Shared-tail FOMAML (the last inner minibatch is drawn from the same examples as the earlier ones,
cycling through them), separate-tail FOMAML (the last minibatch comes from examples reserved for
it) and Reptile, on 5-way classification of the glyph set (the project's Omniglot stand-in), with
20 training shots per class (100 examples per task). Final test accuracy (5-shot, after fine-tuning)
against (a) the number of inner minibatches k (batch 25: with 100 examples the last batch overlaps
the earlier ones once k > 4), (b) the inner batch size (k = 4: overlap once 4 b > 100), (c) the
outer step size, with full batches (every minibatch is the whole training set; Reptile only at
the default outer step, as a reference).

"FOMAML with k" takes k-1 steps and uses the k-th minibatch's gradient; "Reptile with k" takes k
steps (REFERENCE.md section 1). Outer step: ``phi <- phi - eps * u`` with ``u = phi_k - phi_{k+1}``
(FOMAML) or ``phi - phi~`` (Reptile), eps annealed to 0; plain SGD in the inner loop.

Reduced scale on this CPU: a narrower CNN, a few hundred outer iterations instead of 100K, fewer
points on each axis, and a larger inner step size (see SETTINGS); say so wherever it is shown.

Run: ``python -m figures.minibatch_overlap [--fast] [--out DIR]``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from figures import style
from figures.common import cli, note
from figures.fewshot_common import Scale, learning_curve, load_splits, make_sampler
from reptile.train import TrainConfig

NAME = "minibatch_overlap"
N_WAY, TRAIN_SHOTS, EVAL_SHOTS = 5, 20, 5
N_EXAMPLES = N_WAY * TRAIN_SHOTS
SETTINGS = {
    "full": dict(scale=Scale(filters=24, iterations=400, eval_every=400, eval_tasks=60, test_shots=5),
                 inner_lr=0.05, outer_lr=0.5, eval_steps=5, eval_batch=25,
                 ks=(2, 4, 6, 8), batches=(10, 25, 50), outer_lrs=(0.25, 0.5, 1.0), full_k=3),
    "fast": dict(scale=Scale(filters=8, iterations=2, eval_every=2, eval_tasks=2, test_shots=1, dataset="glyphs-small"),
                 inner_lr=0.05, outer_lr=0.5, eval_steps=2, eval_batch=25,
                 ks=(2, 6), batches=(50,), outer_lrs=(1.0,), full_k=2),
}
VARIANTS = {  # name -> (algorithm, schedule)
    "fomaml_shared": ("fomaml", "shared_tail"),
    "fomaml_separate": ("fomaml", "separate_tail"),
    "reptile": ("reptile", "cycle"),
}

MARKERS = {"fomaml_shared": "o", "fomaml_separate": "s", "reptile": "^"}


def one_run(variant: str, k: int, batch: int, outer_lr: float, s: dict, splits) -> dict:
    algorithm, schedule = VARIANTS[variant]
    scale: Scale = s["scale"]
    cfg = TrainConfig(algorithm, inner_steps=k, inner_batch=batch, inner_lr=s["inner_lr"], outer_lr=outer_lr,
                      iterations=scale.iterations)
    tail = batch if schedule == "separate_tail" else None
    sampler = make_sampler(splits["train"], N_WAY, TRAIN_SHOTS, k, batch, schedule, tail=tail)
    curve = learning_curve(cfg, sampler, scale, splits, n_way=N_WAY, eval_shots=EVAL_SHOTS,
                           eval_steps=s["eval_steps"], eval_batch=s["eval_batch"], eval_lr=s["inner_lr"])
    last = curve.iloc[-1]
    overlap = schedule == "shared_tail" and k * batch > N_EXAMPLES
    return {"variant": variant, "k": k, "inner_batch": batch, "outer_lr": outer_lr,
            "last_batch_overlaps": overlap, "accuracy": last["accuracy"], "ci95": last["ci95"],
            "accuracy_at_start": curve.iloc[0]["accuracy"], "iterations": scale.iterations}


def run(fast: bool) -> pd.DataFrame:
    s = SETTINGS["fast" if fast else "full"]
    splits = load_splits(s["scale"].dataset)
    done: dict[tuple, dict] = {}

    def get(panel: str, variant: str, k: int, batch: int, eps: float) -> dict:
        key = (variant, k, batch, eps)
        if key not in done:
            done[key] = one_run(variant, k, batch, eps, s, splits)
            r = done[key]
            print(f"  {variant} k={k} b={batch} eps={eps}: {r['accuracy']:.3f}", flush=True)
        return {"panel": panel, **done[key]}

    rows = []
    for variant in VARIANTS:
        rows += [get("a", variant, k, 25, s["outer_lr"]) for k in s["ks"]]
        for b in s["batches"]:
            if variant == "fomaml_separate" and b >= N_EXAMPLES:
                continue
            rows.append(get("b", variant, 4, b, s["outer_lr"]))
    # full batches (no separate tail is possible): shared-tail FOMAML at every outer step size,
    # Reptile at the default one as the reference
    rows += [get("c", "fomaml_shared", s["full_k"], N_EXAMPLES, eps) for eps in s["outer_lrs"]]
    rows.append(get("c", "reptile", s["full_k"], N_EXAMPLES, s["outer_lr"]))
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, fast: bool, out: str | Path | None) -> list[Path]:
    s = SETTINGS["fast" if fast else "full"]
    scale: Scale = s["scale"]
    fig, axes = style.figure(ncols=3, width=style.PAGE, height=2.5, sharey=True)
    specs = [("a", "k", "inner minibatches k (batch 25)", "(a) inner iterations"),
             ("b", "inner_batch", "inner batch size (k = 4)", "(b) inner batch size"),
             ("c", "outer_lr", "outer step size (initial, annealed to 0)", f"(c) full batches, k = {s['full_k']}")]
    for ax, (panel, x, xlabel, title) in zip(axes[0], specs):
        d = df[df["panel"] == panel]
        for variant, g in d.groupby("variant", sort=False):
            g = g.sort_values(x)
            ax.errorbar(g[x], g["accuracy"], yerr=g["ci95"], color=style.color(variant), marker=MARKERS[variant],
                        ls="--" if variant == "fomaml_separate" else "-", capsize=2, lw=1.3, elinewidth=0.7,
                        label=style.NAMES[variant])
            hit = g[g["last_batch_overlaps"]]
            ax.plot(hit[x], hit["accuracy"], "x", color="#000000", ms=5, mew=1.0,
                    label="last batch overlaps" if variant == "fomaml_shared" else None)
        ax.axhline(d["accuracy_at_start"].iloc[0], color="#999999", lw=0.7, ls="--")
        if df["accuracy"].min() < 0.5:  # else chance (0.2) would squash the points
            ax.axhline(1 / N_WAY, color="#999999", lw=0.7, ls=":")
        if panel == "a":
            ax.axvline(N_EXAMPLES / 25 + 0.5, color="#cccccc", lw=0.7)
        if panel == "b":
            ax.set_xscale("log")
            ax.set_xticks(sorted(set(d["inner_batch"])), [str(v) for v in sorted(set(d["inner_batch"]))])
            ax.minorticks_off()
        if panel == "c":
            ax.set_xscale("log")
            ax.set_xticks(sorted(set(d["outer_lr"])), [f"{v:g}" for v in sorted(set(d["outer_lr"]))])
            ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_title(title)
    axes[0][0].set_ylabel(f"test accuracy, {N_WAY}-way {EVAL_SHOTS}-shot")
    axes[0][1].legend(loc="lower right", fontsize=6.5)
    scale_note = (f"reduced scale: glyphs, 20 shots x 5 classes per training task, CNN with {scale.filters} filters, "
                  f"{scale.iterations} outer iterations per point (paper: 100K), SGD inner step {s['inner_lr']}, "
                  f"outer step {s['outer_lr']} annealed; {scale.eval_tasks} test tasks per point, bars: 95% CI; "
                  f"dashed: before meta-training; chance: 0.2")
    return style.save(fig, df, NAME, out, note(fast, scale_note))


def main(fast: bool = False, out: str | Path | None = None) -> list[Path]:
    return plot(run(fast), fast, out)


if __name__ == "__main__":
    cli(main, __doc__.splitlines()[0])
