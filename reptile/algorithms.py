"""Meta-gradients of one task: Reptile, FOMAML, MAML and weighted inner-gradient combinations.

Index convention (REFERENCE.md section 1): "Reptile with k" takes k SGD steps; "MAML/FOMAML with
k" take k-1 steps and use the k-th minibatch for the outer loss.

* ``reptile``: ``(phi_1 - phi_{k+1}) / alpha`` (= g_1 + ... + g_k for SGD)
* ``fomaml``: ``g_k = L_k'(phi_k)``
* ``maml``: ``d/dphi_1 L_k(phi_k) = prod_{j<k} (I - alpha L_j''(phi_j)) g_k`` (exact, by
  ``torch.func.grad`` through the inner loop)
* ``combination``: ``sum_i w_i g_i`` (paper section 6.2; w = 1..1 is Reptile, e_k is FOMAML)
* ``joint``: ``gbar_1 + ... + gbar_k``, all gradients at phi_1 (joint training on the task's data)
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch.func import grad, grad_and_value

from . import tree
from .inner import SGD, Adam, State, adapt, check_batches, check_lr
from .types import Batch, LossFn, Params

ALGORITHMS = ("reptile", "fomaml", "maml", "combination", "joint")
MIN_K = {"reptile": 1, "fomaml": 2, "maml": 2, "combination": 1, "joint": 1}


def _check(name: str, batches: Batch) -> int:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {ALGORITHMS}")
    return check_batches(batches, k_min=MIN_K[name])


def check_weights(weights: Sequence[float] | None, k: int) -> list[float]:
    """The k weights w_1..w_k of ``"combination"`` as floats; ``ValueError`` unless k finite numbers."""
    if weights is None or isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise ValueError(f"'combination' needs k = {k} weights w_1..w_k (a list of numbers), got {weights!r}")
    if len(weights) != k:
        raise ValueError(f"'combination' needs k = {k} weights w_1..w_k, got {len(weights)}")
    out = []
    for i, w in enumerate(weights):
        if isinstance(w, torch.Tensor) and w.numel() == 1:
            w = w.item()
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(float(w)):
            raise ValueError(f"weight w_{i + 1} must be a finite number, got {w!r}")
        out.append(float(w))
    return out


def _head(batches: Batch, n: int) -> Batch:
    return batches[0][:n], batches[1][:n]


def _last(batches: Batch) -> Batch:
    return batches[0][-1], batches[1][-1]


def maml_outer_loss(loss_fn: LossFn, phi: Params, batches: Batch, optimizer: SGD | Adam,
                    state: State | None = None) -> torch.Tensor:
    """``L_k(phi_k(phi))``: k-1 differentiable inner steps on L_1..L_{k-1}, then the k-th minibatch."""
    return _maml_loss_and_aux(loss_fn, phi, batches, optimizer, state)[0]


def _maml_loss_and_aux(loss_fn: LossFn, phi: Params, batches: Batch, optimizer: SGD | Adam,
                       state: State | None) -> tuple[torch.Tensor, tuple[State, torch.Tensor]]:
    k = check_batches(batches, k_min=2)
    traj = adapt(loss_fn, phi, _head(batches, k - 1), optimizer, state, first_order=False)
    loss = loss_fn(traj.end, _last(batches))
    return loss, (traj.state, torch.cat([traj.losses, loss.detach()[None]]))


def meta_gradient(name: str, loss_fn: LossFn, phi: Params, batches: Batch, alpha: float, *,
                  weights: Sequence[float] | None = None, first_order: bool = False) -> Params:
    """The exact meta-gradient of one task with an SGD inner loop of step ``alpha``.

    Args:
        name: ``"reptile"``, ``"fomaml"``, ``"maml"``, ``"combination"`` or ``"joint"``.
        loss_fn: scalar loss of (params, batch).
        phi: initial parameters phi_1.
        batches: k stacked minibatches ``(x[k, b, ...], y[k, b, ...])``.
        alpha: inner SGD step size (> 0).
        weights: the k weights w_i of ``"combination"``.
        first_order: for ``"maml"``, drop the second-order terms (gives FOMAML).
    Returns:
        ``Params`` with the keys and shapes of ``phi``.
    Raises:
        ValueError: unknown name, k too small (reptile k >= 1, MAML/FOMAML k >= 2), alpha <= 0,
            weights missing or not of length k.
    """
    k = _check(name, batches)
    check_lr(alpha)
    opt = SGD(alpha)
    if name == "reptile":  # (phi_1 - phi_{k+1}) / alpha, summed as g_1 + ... + g_k: no cancellation error
        return adapt(loss_fn, phi, batches, opt).grad_sum
    if name == "fomaml" or (name == "maml" and first_order):
        phi_k = adapt(loss_fn, phi, _head(batches, k - 1), opt).end
        return grad(loss_fn)(phi_k, _last(batches))
    if name == "maml":
        return grad(maml_outer_loss, argnums=1)(loss_fn, phi, batches, opt)
    if name == "joint":
        return _joint(loss_fn, phi, batches)[0]
    weights = check_weights(weights, k)
    return tree.weighted_sum(adapt(loss_fn, phi, batches, opt, keep=True).grads, weights)


def _joint(loss_fn: LossFn, phi: Params, batches: Batch) -> tuple[Params, torch.Tensor]:
    """``gbar_1 + ... + gbar_k`` (all at phi) and the losses ``L_i(phi)``, ``[k]``."""
    x, y = batches
    out = [grad_and_value(loss_fn)(phi, (x[i], y[i])) for i in range(len(x))]
    return tree.weighted_sum([g for g, _ in out], [1.0] * len(out)), torch.stack([v.detach() for _, v in out])


def tree_detach_state(state: State) -> State:
    """Detach every tensor of an optimizer state (nested dicts of tensors)."""
    return {k: tree_detach_state(v) if isinstance(v, dict) else v.detach() for k, v in state.items()}


def meta_update(name: str, loss_fn: LossFn, phi: Params, batches: Batch, optimizer: SGD | Adam,
                state: State | None = None, *, weights: Sequence[float] | None = None,
                ) -> tuple[Params, State, torch.Tensor]:
    """One task's contribution to the outer step, for any inner optimizer (used by the trainer).

    Returns ``(u, state, losses)`` where the outer step is ``phi <- phi - eps * mean_tasks(u)``:
    ``u = phi - phi~`` for Reptile (the paper's interpolation), the last inner step's update
    ``phi_k - phi_{k+1}`` for FOMAML (as the official code), and ``lr * g`` for MAML,
    combinations and joint training. With SGD all equal ``alpha * meta_gradient``.
    ``losses[k]`` are the minibatch losses seen in the inner loop.
    """
    k = _check(name, batches)
    if name in ("reptile", "fomaml"):
        traj = adapt(loss_fn, phi, batches, optimizer, state, keep=name == "fomaml")
        start = phi if name == "reptile" else traj.params[-2]
        return tree.sub(start, traj.end), traj.state, traj.losses
    if name == "maml":
        g, (new_state, losses) = grad(_maml_loss_and_aux, argnums=1, has_aux=True)(
            loss_fn, phi, batches, optimizer, state)
        return tree.scale(g, optimizer.lr), tree_detach_state(new_state), losses
    if name == "joint":
        g, losses = _joint(loss_fn, phi, batches)
        return tree.scale(g, optimizer.lr), state if state is not None else optimizer.init(phi), losses
    weights = check_weights(weights, k)
    traj = adapt(loss_fn, phi, batches, optimizer, state, keep=True)
    return tree.scale(tree.weighted_sum(traj.grads, weights), optimizer.lr), traj.state, traj.losses
