"""Minibatch schedules: which examples of a task make up each of the k inner minibatches.

* ``"cycle"`` -- the official code's ``_mini_batches(replacement=False)``: shuffle the examples,
  fill batches in order, and when the examples run out reshuffle and carry on (a batch may
  straddle two shuffles). With ``n == k * b`` this is exactly one epoch.
* ``"replacement"`` -- the official ``replacement=True``: each batch is ``b`` distinct examples
  drawn afresh, independently of the other batches.
* ``"separate_tail"`` -- batches 1..k-1 cycle over the first ``n - tail`` examples of a random
  permutation, batch k is ``b`` examples of the ``tail`` reserved ones (FOMAML "separate tail",
  paper section 6.3). ``"shared_tail"`` is a synonym of ``"cycle"``.
* ``"class_tail"`` -- the official code's ``--foml-tail T`` (``FOML._mini_batches``): ``T``
  examples *of every class* are reserved, batches 1..k-1 cycle over the other examples, and the
  last batch is the whole reserved tail (``n_classes * T`` examples, so ``batch_size`` must equal
  it for the batches to stack). It needs the examples' labels: :func:`class_tail_indices`, or
  ``minibatch_indices(..., labels=y)``. It is in :data:`LABELED_SCHEDULES`, not in
  :data:`SCHEDULES` (the schedules that need only ``n``).
"""
from __future__ import annotations

import numpy as np
import torch

SCHEDULES = ("cycle", "replacement", "separate_tail", "shared_tail")
#: schedules that need the examples' class labels (``minibatch_indices(..., labels=...)``)
LABELED_SCHEDULES = ("class_tail",)


def minibatch_indices(n: int, k: int, batch_size: int, schedule: str, rng: np.random.Generator,
                      tail: int | None = None, labels: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """Indices ``[k, batch_size]`` into a task's ``n`` examples, following ``schedule``.

    Args:
        n: number of examples the task offers.
        k: number of minibatches (inner steps).
        batch_size: examples per minibatch.
        schedule: one of :data:`SCHEDULES`.
        rng: the only source of randomness.
        tail: examples reserved for the last batch (``"separate_tail"``; default ``batch_size``), or
            examples reserved *per class* (``"class_tail"``; default ``batch_size / n_classes``).
        labels: ``[n]`` class labels of the examples (``"class_tail"`` only).

    Raises:
        ValueError: unknown schedule, non-positive sizes, batches larger than the examples.
    """
    if schedule in LABELED_SCHEDULES:
        if labels is None:
            raise ValueError(f"schedule {schedule!r} reserves examples per class and needs labels=; "
                             f"pass the task's labels or use 'separate_tail'")
        if len(labels) != n:
            raise ValueError(f"labels has {len(labels)} entries for n = {n} examples")
        return class_tail_indices(labels, k, batch_size, tail, rng)
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown minibatch schedule {schedule!r}; choose one of {SCHEDULES + LABELED_SCHEDULES}")
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


def class_tail_indices(labels: np.ndarray | torch.Tensor, k: int, batch_size: int, tail_shots: int | None,
                       rng: np.random.Generator) -> np.ndarray:
    """Indices ``[k, batch_size]``: the official ``--foml-tail`` schedule (FOMAML, separate tail).

    ``tail_shots`` examples of every class (chosen at random) are reserved; batches 1..k-1 cycle
    (``"cycle"``) over the remaining examples and batch k is the whole reserved tail, in random
    order, so it never overlaps the earlier batches. As in the official code, the tail has
    ``n_classes * tail_shots`` examples whatever the other batches' size; here it must equal
    ``batch_size`` (``tail_shots`` defaults to ``batch_size / n_classes``).

    Raises:
        ValueError: the tail does not fill exactly one batch, a class has no example left for the
            earlier batches, or sizes are not positive.
    """
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    classes = np.unique(y)
    if k < 1 or batch_size < 1:
        raise ValueError(f"need k and batch_size >= 1, got k={k}, batch_size={batch_size}")
    if tail_shots is None:
        if batch_size % len(classes):
            raise ValueError(f"class_tail: batch_size {batch_size} is not a multiple of the {len(classes)} classes; "
                             f"give tail= (shots per class) with n_classes * tail = batch_size")
        tail_shots = batch_size // len(classes)
    if tail_shots < 1 or tail_shots * len(classes) != batch_size:
        raise ValueError(f"class_tail: the tail of {tail_shots} shots x {len(classes)} classes = "
                         f"{tail_shots * len(classes)} examples must fill exactly one batch of {batch_size}; "
                         f"choose tail = batch_size / n_classes")
    reserved, rest = [], []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(y == c))
        if len(idx) <= tail_shots and k > 1:
            raise ValueError(f"class_tail: class {c} has {len(idx)} examples, so reserving {tail_shots} leaves "
                             f"none for the first {k - 1} batches; give the task more shots")
        reserved.append(idx[:tail_shots])
        rest.append(idx[tail_shots:])
    last = rng.permutation(np.concatenate(reserved))[None]
    if k == 1:
        return last
    head = np.concatenate(rest)
    return np.concatenate([head[minibatch_indices(len(head), k - 1, batch_size, "cycle", rng)], last])


def _too_big(batch_size: int, n: int) -> np.ndarray:
    raise ValueError(f"inner batch size {batch_size} exceeds the {n} examples available; "
                     f"lower the batch size or give the task more examples (shots)")


def gather(x: torch.Tensor, y: torch.Tensor, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack minibatches: ``x[n, ...]``, ``y[n, ...]`` and ``idx[k, b]`` -> ``(x[k, b, ...], y[k, b, ...])``."""
    t = torch.as_tensor(idx, device=x.device)
    return x[t], y[t]
