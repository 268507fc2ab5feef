"""Few-shot classification plumbing shared by the gradient-combination and overlap figures.

Built only from the engine's public API (models, losses, inner loop, minibatch schedules,
MetaTrainer) and ``reptile.data`` (the glyph set and N-way K-shot episodes). Evaluation follows
the paper's transductive protocol: fine-tune on the K-shot training set with SGD minibatches,
then classify all held-out examples of the task in one batch (batch-norm statistics of that
batch; the model never keeps running statistics).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pandas as pd
import torch

from reptile.data import sample_episode
from reptile.inner import SGD, adapt
from reptile.losses import make_loss, params_of, predict
from reptile.models import OmniglotCNN
from reptile.tasks import gather, minibatch_indices
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
    glyphs: str = "full"        # "full": the default glyph set; "small": three scripts (fast mode)


@functools.lru_cache(maxsize=4)
def load_splits(size: str = "full", seed: int = 0):
    """``{"train", "val", "test"}`` glyph datasets; ``"small"`` restricts to three scripts (seconds to build)."""
    from reptile.data.glyphs import load_glyphs

    if size == "small":
        return load_glyphs(seed=seed, scripts=("Latn", "Grek", "Cyrl"))
    return load_glyphs(seed=seed)


def build_model(n_way: int, filters: int, seed: int = 0):
    """The paper's Omniglot CNN (``filters`` wide), its cross-entropy LossFn and initial params."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = OmniglotCNN(n_way=n_way, filters=filters)
    return model, make_loss(model, "cross_entropy"), params_of(model)


def make_sampler(dataset, n_way: int, shots: int, k: int, batch: int, schedule: str = "cycle",
                 tail: int | None = None) -> Callable[[np.random.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """Draws an ``n_way``-way ``shots``-shot task and returns its ``k`` stacked inner minibatches."""
    def sampler(rng: np.random.Generator):
        ep = sample_episode(dataset, rng, n_way, shots, test_shots=0)
        idx = minibatch_indices(len(ep.train_y), k, batch, schedule, rng, tail=tail)
        return gather(ep.train_x, ep.train_y, idx)
    return sampler


def evaluate(model, loss_fn, phi: Params, dataset, *, n_way: int, shots: int, steps: int, batch: int, lr: float,
             n_tasks: int, test_shots: int, seed: int = 1) -> tuple[float, float]:
    """Mean accuracy after fine-tuning on ``n_tasks`` unseen tasks and its 95% CI over tasks (1.96 sem).

    Each task: ``steps`` SGD steps of ``batch`` examples (cycling through the ``n_way * shots``
    training examples), then one transductive batch of the ``n_way * test_shots`` held-out examples.
    The same ``seed`` gives the same tasks at every evaluation point and for every algorithm.
    """
    rng = np.random.default_rng(seed)
    accs = []
    for _ in range(n_tasks):
        ep = sample_episode(dataset, rng, n_way, shots, test_shots=test_shots)
        b = min(batch, len(ep.train_y))
        idx = minibatch_indices(len(ep.train_y), steps, b, "cycle", rng)
        end = adapt(loss_fn, phi, gather(ep.train_x, ep.train_y, idx), SGD(lr)).end
        pred = predict(model, end, ep.test_x).argmax(1)
        accs.append(float((pred == ep.test_y).double().mean()))
    a = np.asarray(accs)
    ci = 1.96 * a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else 0.0
    return float(a.mean()), float(ci)


def learning_curve(config: TrainConfig, sampler, scale: Scale, splits, *, n_way: int, eval_shots: int,
                   eval_steps: int, eval_batch: int, eval_lr: float, seed: int = 0, **labels) -> pd.DataFrame:
    """Meta-train with ``config``, evaluating on the test split every ``scale.eval_every`` iterations.

    Returns one row per evaluation point: ``iteration, accuracy, ci95`` plus ``labels``.
    """
    model, loss_fn, phi = build_model(n_way, scale.filters, seed)
    trainer = MetaTrainer(loss_fn, phi, sampler, replace(config, seed=seed, log_every=10 ** 9,
                                                         checkpoint_every=10 ** 9))
    rows = []
    points = sorted({0, *range(scale.eval_every, config.iterations, scale.eval_every), config.iterations})
    ev = dict(n_way=n_way, shots=eval_shots, steps=eval_steps, batch=eval_batch, lr=eval_lr,
              n_tasks=scale.eval_tasks, test_shots=scale.test_shots)
    for t in points:
        if t > trainer.iteration:
            trainer.run(progress=False, until=t)
        if t == 0:  # the same initialization and test tasks for every run: evaluate once per process
            key = (id(splits["test"]), scale.filters, seed, tuple(sorted(ev.items())))
            if key not in _START:
                _START[key] = evaluate(model, loss_fn, trainer.phi, splits["test"], **ev)
            acc, ci = _START[key]
        else:
            acc, ci = evaluate(model, loss_fn, trainer.phi, splits["test"], **ev)
        rows.append({**labels, "iteration": t, "accuracy": acc, "ci95": ci})
    return pd.DataFrame(rows)


_START: dict = {}
