"""Minibatch overlap, as Figure 4 (a, b, c) of the Reptile paper, over training seeds.

Shared-tail FOMAML (the last inner minibatch is drawn from the same examples as the earlier ones,
cycling through them), separate-tail FOMAML (the official ``--foml-tail``: ``T = b / N`` examples
of every class are reserved and the whole tail is the last minibatch; schedule ``class_tail``) and
Reptile, on 5-way tasks of the glyph set with 20 training shots per class (100 examples per task).
Final test accuracy against (a) the number of inner minibatches k (batch 25: with 100 examples the
shared last batch overlaps the earlier ones once k > 4), (b) the inner batch size (k = 4: overlap
once 4 b > 100), (c) the outer step size with full batches (every minibatch is the whole task;
no separate tail is possible; Reptile at the default outer step as the reference).

"FOMAML with k" takes k-1 steps and uses the k-th minibatch; "Reptile with k" takes k steps
(REFERENCE.md section 1). Inner loop: the official code's default, Adam with beta1 = 0, lr 1e-3,
moments kept across tasks; the FOMAML update is the last inner step ``phi_k - phi_{k+1}`` and
Reptile's ``phi - phi~``, as the official code; outer step 1.0 annealed linearly to 0, meta-batch
1 (official default). Evaluation: 1-shot 5-way test tasks (the paper: 5-shot; at 5 shots an
untrained network already scores 0.78 here, which compresses every difference), 50 Adam steps of
batch 5 from the moments meta-training ended with, one held-out example per class,
non-transductive (Table 3's evaluation).

The paper's Table 6 (this figure's hyper-parameters) could not be consulted in this session; the
values above are the official code's defaults and Table 3's; docs/figures.md lists them.

Lines: mean over training seeds; bars: +- one sample standard deviation over seeds. Scale:
``SETTINGS`` (the caption says how it differs from the paper).

Run: ``python -m figures.minibatch_overlap [--fast | --mode full|reduced] [--out DIR]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from figures import style
from figures.common import note
from figures.fewshot_common import (Evaluator, Scale, add_provenance, build_model, ci95, figure_cli, load_splits,
                                    output_folder)
from reptile.data.episodes import sample_episode
from reptile.inner import Adam
from reptile.tasks.schedules import gather, minibatch_indices
from reptile.train import MetaTrainer, TrainConfig

NAME = "minibatch_overlap"
N_WAY, TRAIN_SHOTS, EVAL_SHOTS = 5, 20, 1
N_EXAMPLES = N_WAY * TRAIN_SHOTS
INNER_LR, OUTER_LR, META_BATCH, EVAL_STEPS, EVAL_BATCH = 1e-3, 1.0, 1, 50, 5
SETTINGS = {
    # sized to about 30 CPU-minutes here: 144 inner steps of batch 25 per outer iteration in panel (a)
    # (3 variants, sum of k), ~3 ms each compiled at 16 filters, x 800 iterations x 3 seeds, plus (b), (c)
    "full": dict(scale=Scale(filters=16, iterations=800, eval_tasks=150), ks=(2, 3, 4, 6, 8, 10, 15),
                 batches=(5, 10, 25, 50), outer_lrs=(0.25, 0.5, 1.0, 2.0), full_k=4),
    # what was run for the committed figure (CPU shared by several sessions): see the caption
    "reduced": dict(scale=Scale(filters=16, iterations=300, eval_tasks=80), ks=(2, 4, 8, 15),
                    batches=(10, 25, 50), outer_lrs=(0.25, 1.0, 4.0), full_k=4),
    "fast": dict(scale=Scale(filters=4, iterations=2, eval_tasks=2, dataset="glyphs-small", seeds=(0, 1),
                             compile=False),
                 ks=(2, 6), batches=(50,), outer_lrs=(1.0,), full_k=2),
}
DEFAULT_MODE = "reduced"
VARIANTS = {  # name -> (algorithm, schedule)
    "fomaml_shared": ("fomaml", "cycle"),
    "fomaml_separate": ("fomaml", "class_tail"),
    "reptile": ("reptile", "cycle"),
}
MARKERS = {"fomaml_shared": "o", "fomaml_separate": "s", "reptile": "^"}


class TailSampler:
    """An N-way episode of ``train_shots`` per class, cut into ``k`` minibatches by ``schedule``.

    Like :class:`reptile.fewshot.EpisodeSampler`, but also for the per-class ``class_tail``
    schedule, which needs the episode's labels.
    """

    def __init__(self, dataset, ways: int, train_shots: int, k: int, batch: int, schedule: str) -> None:
        self.dataset, self.ways, self.train_shots, self.k, self.batch, self.schedule = (
            dataset, ways, train_shots, k, batch, schedule)
        if schedule == "class_tail" and batch % ways:
            raise ValueError(f"a separate tail of whole classes needs the batch ({batch}) to be a multiple of {ways}")

    def __call__(self, rng: np.random.Generator):
        ep = sample_episode(self.dataset, rng, self.ways, self.train_shots, test_shots=0)
        tail = self.batch // self.ways if self.schedule == "class_tail" else None
        idx = minibatch_indices(len(ep.train_y), self.k, self.batch, self.schedule, rng, tail=tail, labels=ep.train_y)
        return gather(ep.train_x, ep.train_y, idx)


def one_run(variant: str, k: int, batch: int, outer_lr: float, seed: int, s: dict, splits, evaluator: Evaluator,
            init: dict) -> dict[str, Any]:
    algorithm, schedule = VARIANTS[variant]
    scale: Scale = s["scale"]
    cfg = TrainConfig(algorithm, inner_steps=k, inner_batch=batch, inner_optimizer="adam", inner_lr=INNER_LR,
                      outer_lr=outer_lr, meta_batch=META_BATCH, iterations=scale.iterations, seed=seed,
                      log_every=10 ** 9, checkpoint_every=10 ** 9, compile=scale.compile,
                      channels_last=scale.compile)
    sampler = TailSampler(splits["train"], N_WAY, TRAIN_SHOTS, k, batch, schedule)
    trainer = MetaTrainer(evaluator.loss_fn, init[seed], sampler, cfg)
    trainer.run(progress=False)
    acc = evaluator(trainer.phi, splits["test"], n_way=N_WAY, shots=EVAL_SHOTS, steps=EVAL_STEPS, batch=EVAL_BATCH,
                    n_tasks=scale.eval_tasks, state=trainer.inner_state, modes=("non_transductive",))["non_transductive"]
    overlap = schedule == "cycle" and algorithm == "fomaml" and k * batch > N_EXAMPLES
    return {"variant": variant, "k": k, "inner_batch": batch, "outer_lr": outer_lr, "seed": seed,
            "last_batch_overlaps": overlap, "accuracy": float(acc.mean()), "ci95_tasks": ci95(acc),
            "iterations": scale.iterations}


def _context(mode: str) -> tuple[dict, Any, Evaluator, dict]:
    """``(settings, splits, evaluator, {seed: initial params})`` of a mode."""
    s = SETTINGS[mode]
    scale: Scale = s["scale"]
    splits = load_splits(scale.dataset)
    model, loss_fn, _ = build_model(splits["train"], N_WAY, scale.filters)
    evaluator = Evaluator(model, loss_fn, Adam(INNER_LR), compile=scale.compile)
    init = {seed: build_model(splits["train"], N_WAY, scale.filters, seed)[2] for seed in scale.seeds}
    return s, splits, evaluator, init


def regenerate(row: dict[str, Any]) -> float:
    """Recompute one point of a written CSV (a row: ``mode, variant, k, inner_batch, outer_lr, seed``).

    Returns its accuracy, computed exactly as :func:`run` did (same seeds, tasks and code path).
    """
    mode = str(row["mode"])
    s, splits, evaluator, init = _context(mode)
    return one_run(str(row["variant"]), int(row["k"]), int(row["inner_batch"]), float(row["outer_lr"]),
                   int(row["seed"]), s, splits, evaluator, init)["accuracy"]


def run(mode: str) -> pd.DataFrame:
    s, splits, evaluator, init = _context(mode)
    scale: Scale = s["scale"]
    # the untrained initializations, evaluated the same way (the dashed reference line)
    start = [float(evaluator(init[seed], splits["test"], n_way=N_WAY, shots=EVAL_SHOTS, steps=EVAL_STEPS,
                             batch=EVAL_BATCH, n_tasks=scale.eval_tasks, state=None,
                             modes=("non_transductive",))["non_transductive"].mean()) for seed in scale.seeds]
    done: dict[tuple, dict] = {}

    def get(panel: str, variant: str, k: int, batch: int, eps: float) -> list[dict]:
        rows = []
        for seed in scale.seeds:
            key = (variant, k, batch, eps, seed)
            if key not in done:
                done[key] = one_run(variant, k, batch, eps, seed, s, splits, evaluator, init)
            rows.append({"panel": panel, **done[key]})
        acc = [r["accuracy"] for r in rows]
        print(f"  {panel} {variant} k={k} b={batch} eps={eps}: {np.mean(acc):.3f} +- {np.std(acc, ddof=1):.3f}",
              flush=True)
        return rows

    rows: list[dict] = []
    for variant in VARIANTS:
        for k in s["ks"]:
            rows += get("a", variant, k, 25, OUTER_LR)
        for b in s["batches"]:
            rows += get("b", variant, 4, b, OUTER_LR)
    # full batches (no separate tail is possible): shared-tail FOMAML at every outer step size,
    # Reptile at the default one as the reference
    for eps in s["outer_lrs"]:
        rows += get("c", "fomaml_shared", s["full_k"], N_EXAMPLES, eps)
    rows += get("c", "reptile", s["full_k"], N_EXAMPLES, OUTER_LR)
    df = pd.DataFrame(rows)
    df["accuracy_at_start"] = float(np.mean(start))
    df["filters"] = scale.filters
    return df


def caption(mode: str) -> str:
    s = SETTINGS[mode]
    scale: Scale = s["scale"]
    return (f"glyphs, 5-way, 20 train shots/class; Adam (beta1 0) lr {INNER_LR:g}, moments kept; outer step "
            f"{OUTER_LR:g} annealed, meta-batch {META_BATCH}; test: 1-shot 5-way, {EVAL_STEPS} Adam steps, non-transductive, "
            f"{scale.eval_tasks} tasks; scale: CNN {scale.filters} filters (paper 64), {scale.iterations} outer "
            f"iterations per point (paper 100K: {100000 / scale.iterations:.0f}x fewer); mean of {len(scale.seeds)} "
            f"seeds, bars +- 1 std over seeds; dashed: untrained initialization")


def plot(df: pd.DataFrame, mode: str, out: str | Path | None) -> list[Path]:
    s = SETTINGS[mode]
    fig, axes = style.figure(ncols=3, width=style.PAGE, height=2.5, sharey=True)
    specs = [("a", "k", "inner minibatches k (batch 25)", "(a) inner iterations"),
             ("b", "inner_batch", "inner batch size (k = 4)", "(b) inner batch size"),
             ("c", "outer_lr", "outer step size (initial, annealed to 0)", f"(c) full batches, k = {s['full_k']}")]
    for ax, (panel, x, xlabel, title) in zip(axes[0], specs):
        d = df[df["panel"] == panel]
        stats = d.groupby(["variant", x], sort=False).agg(mean=("accuracy", "mean"), std=("accuracy", "std"),
                                                          overlaps=("last_batch_overlaps", "first")).reset_index()
        stats["std"] = stats["std"].fillna(0.0)
        for variant, g in stats.groupby("variant", sort=False):
            g = g.sort_values(x)
            ax.errorbar(g[x], g["mean"], yerr=g["std"], color=style.color(variant), marker=MARKERS[variant],
                        ls="--" if variant == "fomaml_separate" else "-", capsize=2, lw=1.3, elinewidth=0.7,
                        label=style.NAMES[variant])
            hit = g[g["overlaps"]]
            ax.plot(hit[x], hit["mean"], "x", color="#000000", ms=5, mew=1.0,
                    label="last batch overlaps" if variant == "fomaml_shared" else None)
        ax.axhline(df["accuracy_at_start"].iloc[0], color="#999999", lw=0.7, ls="--")
        ax.axhline(1 / N_WAY, color="#999999", lw=0.7, ls=":")
        if panel == "a":
            ax.axvline(N_EXAMPLES / 25 + 0.5, color="#cccccc", lw=0.7)
        if panel in ("b", "c"):
            ax.set_xscale("log")
            vals = sorted(set(d[x]))
            ax.set_xticks(vals, [f"{v:g}" for v in vals])
            ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_title(title)
    axes[0][0].set_ylabel(f"test accuracy, {N_WAY}-way {EVAL_SHOTS}-shot")
    axes[0][1].legend(loc="lower left", fontsize=6.5)
    return style.save(fig, df, NAME, out, note(mode == "fast", caption(mode)))


def main(fast: bool = False, out: str | Path | None = None, mode: str | None = None) -> list[Path]:
    mode = "fast" if fast else (mode or DEFAULT_MODE)
    df = add_provenance(run(mode), SETTINGS[mode]["scale"].seeds, mode)
    return plot(df, mode, output_folder(fast, out))


if __name__ == "__main__":
    figure_cli(main, __doc__.splitlines()[0], list(SETTINGS))
