"""The paper's few-shot evaluation: fine-tune on each test task's K shots, classify its held-out examples."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ..data.episodes import Episode, sample_episode
from ..data.images import ImageClassDataset
from ..fast import channels_last_params, channels_last_state
from ..inner import SGD, Adam, State, adapt
from ..losses import make_loss
from ..types import LossFn, Params
from .sampler import episode_batches, to_channels_last

#: the two ways of classifying held-out examples (``modes`` of :func:`evaluate_fewshot`)
EVAL_MODES = ("non_transductive", "transductive")
MODES = EVAL_MODES  # the old name (``analysis.claims.MODES`` are verify's modes, another thing)


def predict_transductive(model: nn.Module, params: Params, train_x: Tensor, test_x: Tensor) -> Tensor:
    """Logits ``[n_test, n_way]`` of the whole test set in one forward pass (statistics shared).

    ``train_x`` is not used; it is accepted so both predictors share a signature.
    """
    with torch.no_grad():
        return functional_call(model, params, (test_x,))


def predict_non_transductive(model: nn.Module, params: Params, train_x: Tensor, test_x: Tensor) -> Tensor:
    """Logits ``[n_test, n_way]``: test example ``i`` is classified by a forward pass on
    ``cat(train_x, test_x[i:i+1])`` (its logits are the last row), so batch-norm statistics come
    from all training examples plus that single test example (official code, ``transductive=False``).

    The ``n_test`` forward passes run as one ``vmap``; the logits of an example do not depend on
    the other test examples.
    """
    def one(t: Tensor) -> Tensor:
        return functional_call(model, params, (torch.cat([train_x, t.unsqueeze(0)]),))[-1]

    with torch.no_grad():
        return vmap(one)(test_x)


PREDICTORS = {"non_transductive": predict_non_transductive, "transductive": predict_transductive}


def evaluate_task(model: nn.Module, loss_fn: LossFn, phi: Params, episode: Episode, inner_steps: int,
                  inner_batch: int, optimizer: SGD | Adam, rng: np.random.Generator, state: State | None = None,
                  schedule: str = "cycle", modes: Sequence[str] = EVAL_MODES,
                  channels_last: bool = False) -> dict[str, float]:
    """Fine-tune on one episode's training examples, then classify its held-out examples.

    ``inner_steps`` minibatches of ``inner_batch`` training examples (``schedule``; the official
    code uses ``cycle``; a batch larger than the N*K training examples is clipped to all of them)
    are taken with ``optimizer`` from ``phi`` and ``state``; neither ``phi``
    nor ``state`` is modified (the functional optimizer returns a new state, so every task starts
    from the same moments: the official code's backup and restore). Returns the fraction of
    held-out examples classified correctly, per mode in ``modes``.
    """
    for m in modes:
        if m not in PREDICTORS:
            raise ValueError(f"unknown evaluation mode {m!r}; choose from {EVAL_MODES}")
    train_x, test_x = episode.train_x, episode.test_x
    if channels_last:
        train_x, test_x = to_channels_last(train_x), to_channels_last(test_x)
    adapted = phi
    if inner_steps > 0:
        batches = episode_batches(train_x, episode.train_y, inner_steps, min(inner_batch, len(train_x)), rng,
                                  schedule)
        adapted = adapt(loss_fn, phi, batches, optimizer, state).end
    out = {}
    for m in modes:
        pred = PREDICTORS[m](model, adapted, train_x, test_x).argmax(-1)
        out[m] = float((pred == episode.test_y).float().mean())
    return out


@dataclass
class FewShotEvaluation:
    """Accuracy over test tasks: ``per_task[mode]`` holds each task's fraction correct.

    ``accuracy(mode)`` is their mean (= correct / all held-out examples, as the official code
    counts), ``ci95(mode)`` the half-width of the 95% confidence interval over tasks,
    ``1.96 * std(ddof=1) / sqrt(n_tasks)``.
    """

    per_task: dict[str, np.ndarray]
    n_way: int
    shots: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tasks(self) -> int:
        return len(next(iter(self.per_task.values())))

    def accuracy(self, mode: str = "non_transductive") -> float:
        return float(self.per_task[mode].mean())

    def ci95(self, mode: str = "non_transductive") -> float:
        a = self.per_task[mode]
        return float(1.96 * a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """``{prefix}accuracy`` (non-transductive), ``{prefix}accuracy_transductive`` and ``_ci95``s."""
        out = {}
        for m in self.per_task:
            key = f"{prefix}accuracy" + ("" if m == "non_transductive" else "_transductive")
            out[key], out[key + "_ci95"] = self.accuracy(m), self.ci95(m)
        return out


def evaluate_fewshot(model: nn.Module, phi: Params, dataset: ImageClassDataset, *, n_way: int = 5, shots: int = 1,
                     inner_steps: int = 50, inner_batch: int = 5, optimizer: SGD | Adam | None = None,
                     state: State | None = None, n_tasks: int = 100, seed: int = 12345, test_shots: int = 1,
                     schedule: str = "cycle", modes: Sequence[str] = EVAL_MODES, loss_fn: LossFn | None = None,
                     channels_last: bool = False, progress: bool = False) -> FewShotEvaluation:
    """The paper's few-shot evaluation of an initialization ``phi`` on ``n_tasks`` unseen tasks.

    Args:
        model: the network ``phi`` belongs to.
        phi: the meta-learned initialization (not modified).
        dataset: the classes to draw test tasks from (the meta-test split).
        n_way, shots: N and K of the test tasks.
        inner_steps, inner_batch: the paper's "eval inner iterations" (50) and "eval inner batch".
        optimizer: the inner optimizer (default ``Adam(0.001, beta1=0)``, Table 3).
        state: its state to start every task from (the trainer's ``inner_state``, i.e. the Adam
            moments of meta-training, as the official code; ``None``: fresh moments).
        n_tasks: test tasks (the official code uses 10000).
        seed: task ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so the first
            ``n`` tasks do not depend on ``n_tasks``.
        test_shots: held-out examples per class (official code: 1).
        schedule: minibatch schedule of the fine-tuning (official: ``cycle``).
        modes: ``"non_transductive"`` and/or ``"transductive"``; both use the same fine-tuned
            weights.
        loss_fn: the training loss (default cross-entropy of ``model``).
        channels_last: run convolutions in channels-last memory format.
        progress: show a tqdm bar over the tasks on stderr.
    Returns:
        :class:`FewShotEvaluation`.
    """
    optimizer = optimizer if optimizer is not None else Adam(0.001)
    loss_fn = loss_fn if loss_fn is not None else make_loss(model, "cross_entropy")
    like = next(iter(phi.values()))
    if channels_last:
        phi = channels_last_params(phi)
        state = channels_last_state(state) if state is not None else None
    per: dict[str, list[float]] = {m: [] for m in modes}
    it = range(n_tasks)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=f"evaluating ({inner_steps} fine-tuning steps a task)", unit="task", leave=False,
                  dynamic_ncols=True)
    for i in it:
        rng = np.random.default_rng([seed, i])
        ep = sample_episode(dataset, rng, n_way, shots, test_shots, device=like.device, dtype=like.dtype)
        res = evaluate_task(model, loss_fn, phi, ep, inner_steps, inner_batch, optimizer, rng, state, schedule,
                            modes, channels_last)
        for m in modes:
            per[m].append(res[m])
    settings = dict(inner_steps=inner_steps, inner_batch=inner_batch, n_tasks=n_tasks, seed=seed,
                    test_shots=test_shots, schedule=schedule, optimizer=repr(optimizer),
                    state="given" if state is not None else "fresh")
    return FewShotEvaluation({m: np.asarray(v) for m, v in per.items()}, n_way, shots, settings)
def summarize_seeds(accuracies: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) over independently trained seeds.

    This is the +- of the Reptile paper's own rows (3 seeds); ``nan`` std for a single seed.
    """
    a = np.asarray(accuracies, dtype=float)
    if a.size == 0:
        raise ValueError("summarize_seeds needs at least one accuracy")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan")
