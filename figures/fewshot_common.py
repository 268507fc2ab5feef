"""Few-shot classification plumbing shared by the gradient-combination and overlap figures.

Built on the few-shot family's public API (:mod:`reptile.fewshot`: dataset splits, the paper's
CNN, :class:`~reptile.fewshot.EpisodeSampler`, :func:`~reptile.fewshot.evaluate_fewshot`) and the
engine's :class:`~reptile.train.MetaTrainer`. Evaluation is the paper's transductive protocol with
an SGD inner loop: fine-tune on the K-shot training set, then classify all held-out examples of the
task in one batch (batch-norm statistics of that batch).

Data: the glyph set (the project's Omniglot stand-in) with the Omniglot protocol's rotated copies
of the training characters. Fast mode registers ``"glyphs-small"``: three scripts, built in seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from reptile import fewshot
from reptile.inner import SGD
from reptile.losses import make_loss, params_of
from reptile.models import seeded_init
from reptile.train import MetaTrainer, TrainConfig
from reptile.types import Params


@dataclass(frozen=True)
class Scale:
    """How big a run is: model width, training length, evaluation size."""

    filters: int = 32           # paper: 64
    iterations: int = 400       # paper: 40K (Figure 3) / 100K (Figure 4)
    eval_every: int = 100
    eval_tasks: int = 40        # test tasks per evaluation point
    test_shots: int = 5         # held-out examples per class of each test task (official code: 1)
    dataset: str = "glyphs"     # "glyphs-small" in fast mode


def _small_glyphs(data_dir, seed, rotations):
    from reptile.data.glyphs import load_glyphs
    return load_glyphs(seed=seed, cache_dir=data_dir, augment_rotations=rotations, scripts=("Latn", "Grek", "Cyrl"))


if "glyphs-small" not in fewshot.DATASET_LOADERS:
    fewshot.register_dataset("glyphs-small", _small_glyphs)


def load_splits(dataset: str = "glyphs", seed: int = 0):
    """``{"train", "val", "test"}`` of ``dataset`` with rotation augmentation of the training split."""
    return fewshot.load_splits(dataset, None, seed, True)


def build_model(dataset, n_way: int, filters: int, seed: int = 0):
    """The paper's Omniglot CNN (``filters`` wide), its cross-entropy LossFn and initial params."""
    model = seeded_init(seed, lambda: fewshot.build_fewshot_model(dataset, n_way, filters=filters))
    return model, make_loss(model, "cross_entropy"), params_of(model)


def make_sampler(dataset, n_way: int, shots: int, k: int, batch: int, schedule: str = "cycle",
                 tail: int | None = None) -> fewshot.EpisodeSampler:
    """Draws an ``n_way``-way ``shots``-shot task and returns its ``k`` stacked inner minibatches."""
    return fewshot.EpisodeSampler(dataset, n_way, shots, k, batch, schedule, tail)


def evaluate(model, phi: Params, dataset, *, n_way: int, shots: int, steps: int, batch: int, lr: float,
             n_tasks: int, test_shots: int, seed: int = 12345) -> tuple[float, float]:
    """Transductive accuracy after ``steps`` SGD steps of ``batch`` on ``n_tasks`` unseen tasks, and its 95% CI.

    Task ``i`` is drawn from ``default_rng([seed, i])``: the same tasks at every point and for
    every algorithm.
    """
    ev = fewshot.evaluate_fewshot(model, phi, dataset, n_way=n_way, shots=shots, inner_steps=steps,
                                  inner_batch=batch, optimizer=SGD(lr), n_tasks=n_tasks, seed=seed,
                                  test_shots=test_shots, modes=("transductive",))
    ci = ev.ci95("transductive")
    return ev.accuracy("transductive"), (0.0 if np.isnan(ci) else ci)


_START: dict = {}


def learning_curve(config: TrainConfig, sampler, scale: Scale, splits, *, n_way: int, eval_shots: int,
                   eval_steps: int, eval_batch: int, eval_lr: float, seed: int = 0, **labels) -> pd.DataFrame:
    """Meta-train with ``config``, evaluating on the test split every ``scale.eval_every`` iterations.

    Returns one row per evaluation point: ``iteration, accuracy, ci95`` plus ``labels``.
    """
    model, loss_fn, phi = build_model(splits["train"], n_way, scale.filters, seed)
    trainer = MetaTrainer(loss_fn, phi, sampler, replace(config, seed=seed, log_every=10 ** 9,
                                                         checkpoint_every=10 ** 9))
    ev = dict(n_way=n_way, shots=eval_shots, steps=eval_steps, batch=eval_batch, lr=eval_lr,
              n_tasks=scale.eval_tasks, test_shots=scale.test_shots)
    points = sorted({0, *range(scale.eval_every, config.iterations, scale.eval_every), config.iterations})
    rows = []
    for t in points:
        if t > trainer.iteration:
            trainer.run(progress=False, until=t)
        if t == 0:  # the same initialization and test tasks for every run: evaluate once per process
            key = (id(splits["test"]), scale.filters, seed, tuple(sorted(ev.items())))
            if key not in _START:
                _START[key] = evaluate(model, trainer.phi, splits["test"], **ev)
            acc, ci = _START[key]
        else:
            acc, ci = evaluate(model, trainer.phi, splits["test"], **ev)
        rows.append({**labels, "iteration": t, "accuracy": acc, "ci95": ci})
    return pd.DataFrame(rows)
