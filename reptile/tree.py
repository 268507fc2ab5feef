"""Arithmetic on ``Params`` trees (name -> tensor dicts with identical keys).

Small, dependency-free helpers used everywhere: the engine's outer step, the analysis'
inner products and norms, and the flatten/unflatten pair that lets scipy see a parameter
tree as one vector.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from .types import Params


def _check_keys(a: Params, b: Params) -> None:
    if a.keys() != b.keys():
        raise ValueError(f"parameter trees differ in their keys: {sorted(a)} vs {sorted(b)}")


def add(a: Params, b: Params, alpha: float | Tensor = 1.0) -> Params:
    """Return ``a + alpha * b`` leaf by leaf."""
    _check_keys(a, b)
    return {k: a[k] + alpha * b[k] for k in a}


def sub(a: Params, b: Params) -> Params:
    """Return ``a - b`` leaf by leaf."""
    _check_keys(a, b)
    return {k: a[k] - b[k] for k in a}


def scale(a: Params, c: float | Tensor) -> Params:
    """Return ``c * a``."""
    return {k: c * v for k, v in a.items()}


def zeros_like(a: Params) -> Params:
    return {k: torch.zeros_like(v) for k, v in a.items()}


def detach(a: Params) -> Params:
    return {k: v.detach() for k, v in a.items()}


def clone(a: Params) -> Params:
    return {k: v.detach().clone() for k, v in a.items()}


def to(a: Params, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Params:
    return {k: v.to(dtype=dtype, device=device) for k, v in a.items()}


def dot(a: Params, b: Params) -> Tensor:
    """Euclidean inner product of two trees (a 0-d tensor)."""
    _check_keys(a, b)
    return sum((a[k] * b[k]).sum() for k in a)


def norm(a: Params) -> Tensor:
    """Euclidean norm of a tree, as if all leaves were one flat vector."""
    return torch.sqrt(sum((v * v).sum() for v in a.values()))


def weighted_sum(trees: Iterable[Params], weights: Iterable[float | Tensor]) -> Params:
    """Return ``sum_i w_i * trees[i]``; the trees must share keys."""
    out: Params | None = None
    for tree, w in zip(trees, weights, strict=True):
        out = scale(tree, w) if out is None else add(out, tree, w)
    if out is None:
        raise ValueError("weighted_sum needs at least one tree")
    return out


def total(trees: Iterable[Params], like: Params) -> Params:
    """``t_1 + ... + t_n`` of trees shaped like ``like``; zeros shaped like ``like`` for none."""
    out = zeros_like(like)
    for t in trees:
        out = add(out, t)
    return out


def mean(trees: list[Params]) -> Params:
    """Leafwise mean of a non-empty list of trees."""
    if not trees:
        raise ValueError("mean needs at least one tree")
    return {k: torch.stack([t[k] for t in trees]).mean(0) for k in trees[0]}


def flatten(a: Params) -> Tensor:
    """Concatenate all leaves (in key order) into one 1-d tensor of ``numel(a)`` entries."""
    return torch.cat([v.reshape(-1) for v in a.values()])


def unflatten(vec: Tensor, like: Params) -> Params:
    """Inverse of :func:`flatten`: split ``vec`` into leaves shaped like ``like``."""
    total = sum(v.numel() for v in like.values())
    if vec.ndim != 1 or vec.numel() != total:
        raise ValueError(f"expected a 1-d vector of {total} entries, got shape {tuple(vec.shape)}")
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vec[i:i + v.numel()].view_as(v)
        i += v.numel()
    return out


def numel(a: Params) -> int:
    return sum(v.numel() for v in a.values())


def all_finite(a: Params) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in a.values())


def stack(trees: list[Params]) -> Params:
    """Stack a list of trees along a new leading dimension (for vmap outputs/inputs)."""
    return {k: torch.stack([t[k] for t in trees]) for k in trees[0]}
