"""Input checks shared by the analysis modules: one place for the error messages.

Every public analysis function validates its inputs here and raises ``ValueError`` (or
``TypeError``) with a message that says what was expected; nothing is printed.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from torch import Tensor

from reptile.algorithms import check_weights as _check_weights
from reptile.inner import check_batches, check_lr
from reptile.types import Batch, LossFn, Params


def scalar_loss(loss_fn: LossFn) -> LossFn:
    """Wrap ``loss_fn`` so that a non-scalar result raises a clear ``ValueError``.

    The check reads only the output's shape, so it costs nothing and works under ``grad``,
    ``jvp``, ``vjp`` and ``vmap`` (where per-example shapes are what the check sees).
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable(params, batch) -> scalar tensor, got {type(loss_fn).__name__}")

    def checked(params: Params, batch: Batch) -> Tensor:
        out = loss_fn(params, batch)
        if not isinstance(out, Tensor):
            raise ValueError(f"loss_fn must return a scalar tensor, got {type(out).__name__}")
        if out.ndim != 0:
            raise ValueError(f"loss_fn must return a scalar (0-d) tensor, got shape {tuple(out.shape)}; "
                             f"reduce it, e.g. with .mean()")
        if not out.is_floating_point():
            raise ValueError(f"loss_fn must return a floating-point scalar, got dtype {out.dtype}")
        return out

    checked.__wrapped__ = loss_fn  # type: ignore[attr-defined]
    return checked


def check_params(phi: Params) -> None:
    """``phi`` must be a non-empty dict of floating-point tensors."""
    if not isinstance(phi, dict) or not phi:
        raise TypeError("phi must be a non-empty dict name -> tensor (reptile.params_of(model))")
    for name, v in phi.items():
        if not isinstance(v, Tensor) or not v.is_floating_point():
            raise TypeError(f"phi[{name!r}] must be a floating-point tensor, got "
                            f"{type(v).__name__ if not isinstance(v, Tensor) else v.dtype}")


def check_like(v: Params, phi: Params, what: str = "v") -> None:
    """``v`` must have exactly the keys and shapes of ``phi``."""
    if not isinstance(v, dict) or v.keys() != phi.keys():
        got = sorted(v) if isinstance(v, dict) else type(v).__name__
        raise ValueError(f"{what} must have the keys of phi {sorted(phi)}, got {got}")
    for name in phi:
        if tuple(v[name].shape) != tuple(phi[name].shape):
            raise ValueError(f"{what}[{name!r}] has shape {tuple(v[name].shape)}, phi[{name!r}] has "
                             f"{tuple(phi[name].shape)}")


def check_batch(batch: Batch) -> None:
    """One minibatch: a pair of tensors ``(inputs[b, ...], targets[b, ...])`` with ``b >= 1``."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, Tensor) for t in batch)):
        raise ValueError("batch must be a pair of tensors (inputs[b, ...], targets[b, ...])")
    x, y = batch
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"inputs and targets must share a non-empty leading batch dimension, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")


def check_k(batches: Batch, k: int | None = None, k_min: int = 2) -> int:
    """Stacked minibatches ``(x[k, b, ...], y[k, b, ...])``; returns k.

    Raises ``ValueError`` if there are fewer than ``k_min`` minibatches or, when ``k`` is given,
    a different number than asked.
    """
    if k is not None and (not isinstance(k, (int, np.integer)) or k < k_min):
        raise ValueError(f"k must be an integer >= {k_min}, got {k!r}")
    return check_batches(batches, k_min=k_min, k=k)


def check_alpha(alpha: float, what: str = "alpha") -> float:
    """A single positive finite step size, as a float: the engine's :func:`reptile.inner.check_lr`."""
    return check_lr(alpha, what)


def check_alphas(alphas: Iterable[float], min_count: int = 1) -> np.ndarray:
    """A sweep of step sizes: all positive and finite, at least ``min_count`` distinct values.

    Returns them as a sorted float64 array.
    """
    arr = np.asarray(list(alphas), dtype=float)
    if arr.ndim != 1 or arr.size < min_count:
        raise ValueError(f"an alpha sweep needs at least {min_count} values, got {arr.size}")
    bad = arr[~(np.isfinite(arr) & (arr > 0))]
    if bad.size:
        raise ValueError(f"alpha values must be positive and finite, got {bad.tolist()} in the sweep")
    if np.unique(arr).size < min_count:
        raise ValueError(f"an alpha sweep needs at least {min_count} distinct values, got {np.unique(arr).tolist()}")
    return np.sort(arr)


def check_weights(weights: Sequence[float] | None, k: int) -> list[float] | None:
    """Combination weights: ``None`` (no combination asked for) or k finite numbers; the engine's
    :func:`reptile.algorithms.check_weights` with ``optional=True``."""
    return _check_weights(weights, k, optional=True)
