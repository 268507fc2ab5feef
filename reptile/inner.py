"""The inner loop as pure functions: optimizers with explicit state, and ``adapt``.

An optimizer here is a frozen dataclass with ``init(params) -> state`` and
``step(params, grads, state) -> (params, state)``; nothing is mutated, so the whole inner loop can
be differentiated (second-order MAML), vmapped over tasks and compiled.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor
from torch.func import grad_and_value

from .types import Batch, LossFn, Params

State = dict[str, Any]


@dataclass(frozen=True)
class SGD:
    """Plain gradient descent ``phi_{i+1} = phi_i - lr * g_i`` (the paper's analysis setting).

    ``lr`` is a number; inside ``vmap`` it may also be a 0-d tensor batched over the mapped
    dimension (one step size per task, as ``analysis.manifolds.reptile_vs_projection_many`` uses).
    """

    lr: float | Tensor

    def init(self, params: Params) -> State:
        return {}

    def step(self, params: Params, grads: Params, state: State) -> tuple[Params, State]:
        return {k: params[k] - self.lr * grads[k] for k in params}, state


@dataclass(frozen=True)
class Adam:
    """Adam as ``torch.optim.Adam`` computes it; the paper's inner loop uses ``beta1 = 0``.

    State ``{"m", "v", "t"}`` (``t`` a 0-d tensor so compiled code does not recompile per step).
    In meta-training the state persists across tasks unless reset (paper appendix A); evaluation
    backs it up and restores it per task.
    """

    lr: float
    beta1: float = 0.0
    beta2: float = 0.999
    eps: float = 1e-8

    def init(self, params: Params) -> State:
        ref = next(iter(params.values()))
        return {"m": {k: torch.zeros_like(v) for k, v in params.items()},
                "v": {k: torch.zeros_like(v) for k, v in params.items()},
                "t": torch.zeros((), dtype=ref.dtype, device=ref.device)}

    def step(self, params: Params, grads: Params, state: State) -> tuple[Params, State]:
        t = state["t"] + 1
        m = {k: self.beta1 * state["m"][k] + (1 - self.beta1) * grads[k] for k in params}
        v = {k: self.beta2 * state["v"][k] + (1 - self.beta2) * grads[k] ** 2 for k in params}
        c1, c2 = 1 - self.beta1 ** t, 1 - self.beta2 ** t
        # + tiny: sqrt has an infinite derivative at 0, which would turn second-order MAML through
        # Adam into NaN wherever a gradient entry is exactly 0; tiny (1e-308 / 1e-38) changes no value
        tiny = torch.finfo(t.dtype).tiny
        new = {k: params[k] - self.lr * (m[k] / c1) / (torch.sqrt(v[k] / c2 + tiny) + self.eps) for k in params}
        return new, {"m": m, "v": v, "t": t}


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def make_optimizer(name: str, lr: float, **kwargs: Any) -> SGD | Adam:
    """Inner optimizer by name (``"sgd"`` or ``"adam"``); raises ``ValueError`` on a bad name or lr."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown inner optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    check_lr(lr, "inner learning rate")
    return OPTIMIZERS[name](lr, **kwargs)


def check_lr(lr: float, what: str = "alpha") -> float:
    """A step size: a real number (Python or numpy scalar, or a one-element tensor) in (0, inf).

    Returns it as a float; raises ``ValueError`` naming ``what`` otherwise. The one step-size check
    of the toolkit (``analysis.validation.check_alpha`` is this function).
    """
    if isinstance(lr, Tensor) and lr.numel() == 1:
        lr = lr.item()
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 < float(lr) < math.inf:
        raise ValueError(f"{what} must be a positive finite number, got {lr!r}")
    return float(lr)


@dataclass
class Trajectory:
    """What the inner loop saw. ``params[i]`` is phi_{i+1} (``params[0]`` = phi_1 = the start, k+1
    entries when kept, else empty), ``grads[i]`` = g_{i+1} (k entries when kept), ``losses[i]`` =
    L_{i+1}(phi_{i+1}) (``[k]``), ``end`` = phi_{k+1}, ``state`` = the optimizer state after,
    ``grad_sum`` = g_1 + ... + g_k (always; memory independent of k)."""

    end: Params
    state: State
    losses: Tensor
    params: list[Params] = field(default_factory=list)
    grads: list[Params] = field(default_factory=list)
    grad_sum: Params | None = None


def check_batches(batches: Batch, k_min: int = 1, k: int | None = None) -> int:
    """Validate stacked minibatches ``(x[k, b, ...], y[k, b, ...])`` and return k.

    Raises:
        ValueError: not a pair of tensors, mismatched leading dims, empty batches, too few batches.
    """
    if not (isinstance(batches, (tuple, list)) and len(batches) == 2
            and all(isinstance(t, Tensor) for t in batches)):
        raise ValueError("batches must be a pair of tensors (inputs[k, b, ...], targets[k, b, ...])")
    x, y = batches
    if x.ndim < 2 or y.ndim < 2 or x.shape[:2] != y.shape[:2]:
        raise ValueError(f"inputs and targets must share their leading [k, b] dimensions, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[1] == 0:
        raise ValueError("minibatches are empty (b = 0)")
    n = x.shape[0]
    if n < k_min:
        raise ValueError(f"need at least {k_min} minibatches, got k = {n}")
    if k is not None and n != k:
        raise ValueError(f"expected k = {k} minibatches, got {n}")
    return n


#: one inner step ``(params, state, x, y) -> (params', state', loss, grad)`` (see :func:`make_step`)
Step = Callable[[Params, State, Tensor, Tensor], tuple[Params, State, Tensor, Params]]


def make_step(loss_fn: LossFn, optimizer: SGD | Adam, first_order: bool = True) -> Step:
    """One inner step on the minibatch ``(x, y)``: ``g, loss = grad_and_value(loss_fn)``, then
    ``optimizer.step``. ``first_order`` detaches ``g`` (see :func:`adapt`)."""
    step_grad = grad_and_value(loss_fn)

    def step(params: Params, state: State, x: Tensor, y: Tensor) -> tuple[Params, State, Tensor, Params]:
        g, loss = step_grad(params, (x, y))
        if first_order:
            g = {n: v.detach() for n, v in g.items()}
        new, state = optimizer.step(params, g, state)
        return new, state, loss, g

    return step


def adapt(loss_fn: LossFn, phi: Params, batches: Batch, optimizer: SGD | Adam, state: State | None = None, *,
          keep: bool = False, first_order: bool = True, step: Step | None = None) -> Trajectory:
    """Run ``k = len(batches[0])`` optimizer steps on the minibatch losses L_1..L_k from ``phi``.

    Args:
        loss_fn: scalar loss of (params, batch).
        phi: the initialization phi_1.
        batches: stacked minibatches ``(x[k, b, ...], y[k, b, ...])``.
        optimizer: :class:`SGD` or :class:`Adam`.
        state: optimizer state to continue from (``None``: a fresh ``optimizer.init``).
        keep: also return every phi_i and g_i (memory grows with k).
        first_order: detach each g_i (the default). ``False`` keeps the graph through the
            gradients, so an enclosing ``torch.func.grad`` differentiates through the inner loop
            exactly (second-order MAML).
        step: the inner step to use (default ``make_step(loss_fn, optimizer, first_order)``); the
            compiled fast path (:mod:`reptile.fast`) passes a ``torch.compile``-d one.
    Returns:
        A :class:`Trajectory`.
    """
    k = check_batches(batches)
    x, y = batches
    state = optimizer.init(phi) if state is None else state
    step = make_step(loss_fn, optimizer, first_order) if step is None else step
    params, losses, kept_p, kept_g, total = phi, [], [phi] if keep else [], [], None
    for i in range(k):
        params, state, loss, g = step(params, state, x[i], y[i])
        total = g if total is None else {n: total[n] + g[n] for n in g}
        losses.append(loss.detach())
        if keep:
            kept_p.append(params)
            kept_g.append(g)
    return Trajectory(params, state, torch.stack(losses), kept_p, kept_g, total)
