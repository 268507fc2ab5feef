"""Test-time adaptation and evaluation: fine-tune from a meta-learned initialization, measure.

``finetune`` is the paper's test procedure for regression (32 full-batch SGD steps at 0.02 on 10
points of an unseen sine wave); :func:`evaluate_sine` averages the grid MSE over many unseen tasks
and reports a 95% confidence interval over tasks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .inner import SGD, Adam, State, adapt
from .tasks.sine import SineTaskDistribution
from .types import LossFn, Params


def finetune(loss_fn: LossFn, phi: Params, x: torch.Tensor, y: torch.Tensor, steps: int,
             optimizer: SGD | Adam, state: State | None = None, keep: bool = False):
    """``steps`` full-batch optimizer steps on ``(x[n, ...], y[n, ...])`` from ``phi``; a Trajectory.

    ``state`` is copied by value (the functional optimizers never mutate it), so the caller's
    Adam moments are "backed up and restored" automatically.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    batches = (x.unsqueeze(0).expand(steps, *x.shape), y.unsqueeze(0).expand(steps, *y.shape))
    if steps == 0:
        from .inner import Trajectory
        return Trajectory(phi, state or {}, torch.zeros(0), [phi] if keep else [], [])
    return adapt(loss_fn, phi, batches, optimizer, state, keep=keep)


@dataclass
class Evaluation:
    """Mean test loss after each number of steps, with a 95% CI over tasks (``1.96 * sem``)."""

    steps: np.ndarray      # [s] step counts at which the loss was measured
    mean: np.ndarray       # [s]
    ci95: np.ndarray       # [s]
    per_task: np.ndarray   # [n_tasks, s]

    def final(self) -> tuple[float, float]:
        return float(self.mean[-1]), float(self.ci95[-1])


def evaluate_sine(loss_fn: LossFn, phi: Params, _old_phi: Params | None = None, *, n_tasks: int = 100,
                  shots: int = 10, steps: int = 32, lr: float = 0.02, seed: int = 1, variant: str = "reptile",
                  record: tuple[int, ...] | None = None) -> Evaluation:
    """Fine-tune on ``shots`` points of each of ``n_tasks`` unseen sine waves; grid MSE after each step.

    The test loss is the MSE on the 50-point grid of [-5, 5] (Reptile paper Figure 1). Tasks come
    from ``numpy.random.default_rng(seed)`` (use a seed other than training's).

    The old call ``evaluate_sine(model, loss_fn, phi, ...)`` (whose ``model`` was never used) still
    works: with three positional arguments the first is dropped.
    """
    if _old_phi is not None:
        loss_fn, phi = phi, _old_phi
    like = next(iter(phi.values()))
    dist = SineTaskDistribution(variant=variant, dtype=like.dtype, device=like.device)
    rng = np.random.default_rng(seed)
    record = tuple(range(steps + 1)) if record is None else record
    per_task = []
    for _ in range(n_tasks):
        task = dist.sample(rng)
        x, y = task.few_shot(shots, rng)
        gx, gy = task.grid(50)
        traj = finetune(loss_fn, phi, x, y, steps, SGD(lr), keep=True)
        per_task.append([float(loss_fn(traj.params[s], (gx, gy))) for s in record])
    arr = np.asarray(per_task)
    sem = arr.std(0, ddof=1) / np.sqrt(len(arr)) if len(arr) > 1 else np.zeros(arr.shape[1])
    return Evaluation(np.asarray(record), arr.mean(0), 1.96 * sem, arr)
