"""Minibatch schedules: which examples of a task make up each of the k inner minibatches.

* ``"cycle"`` -- the official code's ``_mini_batches(replacement=False)``: shuffle the examples,
  fill batches in order, and when the examples run out reshuffle and carry on (a batch may
  straddle two shuffles). With ``n == k * b`` this is exactly one epoch.
* ``"replacement"`` -- the official ``replacement=True``: each batch is ``b`` distinct examples
  drawn afresh, independently of the other batches.
* ``"separate_tail"`` -- batches 1..k-1 cycle over the first ``n - tail`` examples of a random
  permutation, batch k is ``b`` examples of the ``tail`` reserved ones (FOMAML "separate tail",
  paper section 6.3). ``"shared_tail"`` is a synonym of ``"cycle"``.
"""
from __future__ import annotations

import numpy as np
import torch

SCHEDULES = ("cycle", "replacement", "separate_tail", "shared_tail")


def minibatch_indices(n: int, k: int, batch_size: int, schedule: str, rng: np.random.Generator,
                      tail: int | None = None) -> np.ndarray:
    """Indices ``[k, batch_size]`` into a task's ``n`` examples, following ``schedule``.

    Args:
        n: number of examples the task offers.
        k: number of minibatches (inner steps).
        batch_size: examples per minibatch.
        schedule: one of :data:`SCHEDULES`.
        rng: the only source of randomness.
        tail: examples reserved for the last batch (``"separate_tail"`` only; default ``batch_size``).

    Raises:
        ValueError: unknown schedule, non-positive sizes, batches larger than the examples.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown minibatch schedule {schedule!r}; choose one of {SCHEDULES}")
    if k < 1 or batch_size < 1 or n < 1:
        raise ValueError(f"need n, k and batch_size >= 1, got n={n}, k={k}, batch_size={batch_size}")
    if schedule == "separate_tail":
        tail = batch_size if tail is None else tail
        if not batch_size <= tail < n:
            raise ValueError(f"a separate tail needs batch_size <= tail < n, got batch_size={batch_size}, "
                             f"tail={tail}, n={n}; give the task more examples or a smaller tail")
        perm = rng.permutation(n)
        head, reserved = perm[: n - tail], perm[n - tail:]
        last = rng.choice(reserved, size=batch_size, replace=False)[None]
        if k == 1:
            return last
        return np.concatenate([head[minibatch_indices(len(head), k - 1, batch_size, "cycle", rng)], last])
    if batch_size > n:
        _too_big(batch_size, n)
    if schedule == "replacement":
        return np.stack([rng.choice(n, size=batch_size, replace=False) for _ in range(k)])
    flat = np.concatenate([rng.permutation(n) for _ in range(-(-k * batch_size // n))])
    return flat[: k * batch_size].reshape(k, batch_size)


def _too_big(batch_size: int, n: int) -> np.ndarray:
    raise ValueError(f"inner batch size {batch_size} exceeds the {n} examples available; "
                     f"lower the batch size or give the task more examples (shots)")


def gather(x: torch.Tensor, y: torch.Tensor, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack minibatches: ``x[n, ...]``, ``y[n, ...]`` and ``idx[k, b]`` -> ``(x[k, b, ...], y[k, b, ...])``."""
    t = torch.as_tensor(idx, device=x.device)
    return x[t], y[t]
