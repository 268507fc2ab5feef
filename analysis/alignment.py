"""Gradient alignment: inner products of minibatch gradients within and across tasks.

The Taylor analysis (REFERENCE.md section 2) says the meta-gradients of MAML, FOMAML and Reptile
all contain ``-c * alpha * AvgGradInner`` with ``AvgGradInner = 1/2 d/dphi E_{tau,1,2}[gbar_1 . gbar_2]``,
so an outer step ``phi <- phi - eps * g`` *raises* ``E[gbar_1 . gbar_2]``, the inner product of the
gradients of two different minibatches of the same task at ``phi`` (generalization within a task).
Joint training follows ``AvgGrad`` alone and has no such term.

Quantities, for ``n`` tasks with ``k`` minibatch gradients ``gbar_{t,i} = L_{t,i}'(phi)`` each
(flattened to ``[P]``):

* ``within_dot``  = mean over tasks t and ordered pairs ``i != j`` of ``gbar_{t,i} . gbar_{t,j}``
  -- the estimate of ``E_{tau,1,2}[gbar_1 . gbar_2]``;
* ``within_cos``  = the same mean of cosines ``gbar_i . gbar_j / (|gbar_i| |gbar_j|)``;
* ``across_dot`` / ``across_cos`` = the same over pairs from two different tasks ``t != s``
  (all ``i, j``) -- the baseline the within-task numbers should be compared with;
* ``sq_norm``     = mean of ``|gbar_{t,i}|^2`` (the gradient-norm term; ``E[|gbar_1|^2]``);
* ``within_ratio`` = ``within_dot / sq_norm`` (scale-free: 1 when all minibatch gradients of a
  task coincide, about 0 when they are unrelated);
* ``mean_grad_sq_norm`` = ``|mean_{t,i} gbar_{t,i}|^2``, the squared norm of the AvgGrad estimate.

:class:`AlignmentCallback` measures these on fixed probe tasks during meta-training
(``MetaTrainer(callbacks=[...])``); it logs them as ``align_<name>`` metrics.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.func import grad

from reptile import tree
from reptile.inner import check_batches
from reptile.types import Batch, LossFn, Params

__all__ = ["Alignment", "minibatch_gradients", "alignment_from_gradients", "gradient_alignment",
           "AlignmentCallback"]


@dataclass(frozen=True)
class Alignment:
    """Alignment statistics at one ``phi`` (see the module docstring for the definitions)."""

    within_dot: float
    within_cos: float
    across_dot: float
    across_cos: float
    sq_norm: float
    within_ratio: float
    mean_grad_sq_norm: float
    n_tasks: int
    k: int

    def as_dict(self, prefix: str = "align_") -> dict[str, float]:
        """The statistics as ``{prefix + name: value}`` (counts excluded), for the metrics CSV."""
        return {prefix + k: float(v) for k, v in asdict(self).items() if k not in ("n_tasks", "k")}


def minibatch_gradients(loss_fn: LossFn, phi: Params, batches: Batch) -> Tensor:
    """``gbar_i = L_i'(phi)`` for each of the k stacked minibatches, flattened: ``[k, P]``.

    Args:
        loss_fn: scalar loss of (params, batch).
        phi: the point at which all gradients are taken (no inner steps).
        batches: ``(x[k, b, ...], y[k, b, ...])``.
    """
    k = check_batches(batches)
    x, y = batches
    g = grad(loss_fn)
    return torch.stack([tree.flatten(g(phi, (x[i], y[i]))).detach() for i in range(k)])


def _pair_means(g: Tensor) -> tuple[float, float]:
    """(within-task mean, across-task mean) of ``g[t, i] . g[s, j]`` over the pair sets of the docstring."""
    n, k, _ = g.shape
    per_task_sum = g.sum(1)                                # [n, P]: S_t = sum_i g_{t,i}
    sq = (g * g).sum(-1)                                   # [n, k]: |g_{t,i}|^2
    within_sum = ((per_task_sum * per_task_sum).sum(-1) - sq.sum(-1))  # [n]: sum_{i != j} g_i . g_j
    within = float(within_sum.sum() / (n * k * (k - 1))) if k > 1 else float("nan")
    total = per_task_sum.sum(0)
    across_sum = (total @ total) - (per_task_sum * per_task_sum).sum()  # sum over t != s, all i, j
    across = float(across_sum / (n * (n - 1) * k * k)) if n > 1 else float("nan")
    return within, across


def alignment_from_gradients(grads: Tensor) -> Alignment:
    """Alignment statistics of the gradients ``grads[n_tasks, k, P]`` (float64 internally).

    Raises:
        ValueError: not a 3-d tensor, or fewer than 2 minibatches per task (no within-task pairs),
            or a zero gradient (its cosine is undefined).
    """
    if grads.ndim != 3:
        raise ValueError(f"expected gradients [n_tasks, k, P], got shape {tuple(grads.shape)}")
    n, k, _ = grads.shape
    if k < 2:
        raise ValueError(f"within-task alignment needs k >= 2 minibatches per task, got {k}")
    g = grads.to(torch.float64)
    norms = torch.linalg.vector_norm(g, dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("a minibatch gradient is exactly zero: its cosine with others is undefined")
    within_dot, across_dot = _pair_means(g)
    within_cos, across_cos = _pair_means(g / norms)
    sq_norm = float((norms ** 2).mean())
    mean_grad = g.reshape(n * k, -1).mean(0)
    return Alignment(within_dot, within_cos, across_dot, across_cos, sq_norm, within_dot / sq_norm,
                     float(mean_grad @ mean_grad), n, k)


def gradient_alignment(loss_fn: LossFn, phi: Params, task_batches: Sequence[Batch]) -> Alignment:
    """Alignment statistics at ``phi`` for tasks given as stacked minibatches (same k for all).

    Args:
        loss_fn: scalar loss of (params, batch).
        phi: parameters at which every ``gbar`` is taken.
        task_batches: one ``(x[k, b, ...], y[k, b, ...])`` per task; the k minibatches of a task
            should be distinct (e.g. the ``"cycle"`` schedule with ``k * b`` <= the task's examples)
            for ``within_*`` to estimate ``E[gbar_1 . gbar_2]`` over pairs of *different* minibatches.
    Raises:
        ValueError: no tasks, or tasks with different k.
    """
    if not task_batches:
        raise ValueError("need at least one task")
    grads = [minibatch_gradients(loss_fn, phi, b) for b in task_batches]
    if len({g.shape for g in grads}) != 1:
        raise ValueError("all tasks must have the same number of minibatches k")
    return alignment_from_gradients(torch.stack(grads))


class AlignmentCallback:
    """A :class:`reptile.train.Callback` logging gradient alignment on fixed probe tasks.

    The probe tasks are drawn once, at construction, from ``sampler`` with generators
    ``numpy.random.default_rng([seed, j])`` (``seed`` should differ from training's), so every
    call measures the same minibatches and the curves over iterations are comparable.

    Args:
        loss_fn: scalar loss of (params, batch).
        sampler: draws one task's k stacked minibatches from a numpy Generator (the trainer's sampler).
        every: measure every ``every`` outer iterations.
        n_tasks: number of probe tasks (>= 2 for the across-task numbers).
        seed: seed of the probe tasks.
        prefix: metric-name prefix.
        dtype: compute in this dtype (default: ``torch.float64``; ``phi`` and batches are converted).
    Returns (when called):
        ``{prefix + name: value}`` for the fields of :class:`Alignment`.
    """

    def __init__(self, loss_fn: LossFn, sampler: Callable[[np.random.Generator], Batch], every: int,
                 n_tasks: int = 10, seed: int = 2**20, prefix: str = "align_",
                 dtype: torch.dtype = torch.float64) -> None:
        if every < 1 or n_tasks < 1:
            raise ValueError(f"every and n_tasks must be >= 1, got every={every}, n_tasks={n_tasks}")
        self.loss_fn, self.every, self.prefix, self.dtype = loss_fn, int(every), prefix, dtype
        self.batches = [tuple(t.to(dtype) if t.is_floating_point() else t for t in sampler(np.random.default_rng([seed, j])))
                        for j in range(n_tasks)]

    def measure(self, phi: Params) -> Alignment:
        return gradient_alignment(self.loss_fn, tree.to(tree.detach(phi), dtype=self.dtype), self.batches)  # type: ignore[arg-type]

    def __call__(self, iteration: int, phi: Params) -> dict[str, float]:
        return self.measure(phi).as_dict(self.prefix)
