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
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch.func import grad, grad_and_value

from . import tree
from .inner import SGD, Adam, State, Step, adapt, check_batches, check_lr
from .types import Batch, LossFn, Params

#: ``gradient(loss_fn, phi, batches, sgd, weights, first_order) -> Params`` (exact, SGD inner loop)
GradientRule = Callable[[LossFn, Params, Batch, SGD, "Sequence[float] | None", bool], Params]
#: ``update(loss_fn, phi, batches, optimizer, state, weights, step) -> (u, state, losses)``
UpdateRule = Callable[[LossFn, Params, Batch, "SGD | Adam", "State | None", "Sequence[float] | None",
                       "Step | None"], tuple[Params, State, torch.Tensor]]


def check_weights(weights: Sequence[float] | None, k: int, *, optional: bool = False) -> list[float] | None:
    """The k weights w_1..w_k of ``"combination"`` as floats; ``ValueError`` unless k finite numbers.

    ``optional=True`` lets ``None`` through (returned as ``None``: "no combination asked for"), as
    the analysis functions take it; otherwise ``None`` is an error.
    """
    if weights is None and optional:
        return None
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


def head(batches: Batch, n: int) -> Batch:
    """The first ``n`` of stacked minibatches: ``(x[:n], y[:n])``."""
    return batches[0][:n], batches[1][:n]


def _last(batches: Batch) -> Batch:
    return batches[0][-1], batches[1][-1]


_head = head  # the old private name


def maml_outer_loss(loss_fn: LossFn, phi: Params, batches: Batch, optimizer: SGD | Adam,
                    state: State | None = None) -> torch.Tensor:
    """``L_k(phi_k(phi))``: k-1 differentiable inner steps on L_1..L_{k-1}, then the k-th minibatch."""
    return _maml_loss_and_aux(loss_fn, phi, batches, optimizer, state)[0]


def _maml_loss_and_aux(loss_fn: LossFn, phi: Params, batches: Batch, optimizer: SGD | Adam,
                       state: State | None) -> tuple[torch.Tensor, tuple[State, torch.Tensor]]:
    k = check_batches(batches, k_min=2)
    traj = adapt(loss_fn, phi, head(batches, k - 1), optimizer, state, first_order=False)
    loss = loss_fn(traj.end, _last(batches))
    return loss, (traj.state, torch.cat([traj.losses, loss.detach()[None]]))


def _joint(loss_fn: LossFn, phi: Params, batches: Batch) -> tuple[Params, torch.Tensor]:
    """``gbar_1 + ... + gbar_k`` (all at phi) and the losses ``L_i(phi)``, ``[k]``."""
    x, y = batches
    out = [grad_and_value(loss_fn)(phi, (x[i], y[i])) for i in range(len(x))]
    return tree.weighted_sum([g for g, _ in out], [1.0] * len(out)), torch.stack([v.detach() for _, v in out])


def tree_detach_state(state: State) -> State:
    """Detach every tensor of an optimizer state (nested dicts of tensors)."""
    return {k: tree_detach_state(v) if isinstance(v, dict) else v.detach() for k, v in state.items()}


# -- the rules, one pair (exact SGD meta-gradient, outer-step update) per algorithm ----------------
def _reptile_gradient(loss_fn, phi, batches, opt, weights, first_order):
    # (phi_1 - phi_{k+1}) / alpha, summed as g_1 + ... + g_k: no cancellation error
    return adapt(loss_fn, phi, batches, opt).grad_sum


def _fomaml_gradient(loss_fn, phi, batches, opt, weights, first_order):
    phi_k = adapt(loss_fn, phi, head(batches, len(batches[0]) - 1), opt).end
    return grad(loss_fn)(phi_k, _last(batches))


def _maml_gradient(loss_fn, phi, batches, opt, weights, first_order):
    if first_order:  # dropping the second-order terms gives FOMAML
        return _fomaml_gradient(loss_fn, phi, batches, opt, weights, first_order)
    return grad(maml_outer_loss, argnums=1)(loss_fn, phi, batches, opt)


def _combination_gradient(loss_fn, phi, batches, opt, weights, first_order):
    weights = check_weights(weights, len(batches[0]))
    return tree.weighted_sum(adapt(loss_fn, phi, batches, opt, keep=True).grads, weights)


def _joint_gradient(loss_fn, phi, batches, opt, weights, first_order):
    return _joint(loss_fn, phi, batches)[0]


def _reptile_update(loss_fn, phi, batches, optimizer, state, weights, step):
    traj = adapt(loss_fn, phi, batches, optimizer, state, step=step)
    return tree.sub(phi, traj.end), traj.state, traj.losses


def _fomaml_update(loss_fn, phi, batches, optimizer, state, weights, step):
    traj = adapt(loss_fn, phi, batches, optimizer, state, keep=True, step=step)
    return tree.sub(traj.params[-2], traj.end), traj.state, traj.losses


def _maml_update(loss_fn, phi, batches, optimizer, state, weights, step):
    g, (new_state, losses) = grad(_maml_loss_and_aux, argnums=1, has_aux=True)(
        loss_fn, phi, batches, optimizer, state)
    return tree.scale(g, optimizer.lr), tree_detach_state(new_state), losses


def _combination_update(loss_fn, phi, batches, optimizer, state, weights, step):
    weights = check_weights(weights, len(batches[0]))
    traj = adapt(loss_fn, phi, batches, optimizer, state, keep=True, step=step)
    return tree.scale(tree.weighted_sum(traj.grads, weights), optimizer.lr), traj.state, traj.losses


def _joint_update(loss_fn, phi, batches, optimizer, state, weights, step):
    g, losses = _joint(loss_fn, phi, batches)
    return tree.scale(g, optimizer.lr), state if state is not None else optimizer.init(phi), losses


@dataclass(frozen=True)
class Algorithm:
    """One row of :data:`ALGORITHMS`.

    Attributes:
        name: the algorithm's name (``--algorithm``).
        min_k: fewest minibatches it needs (MAML/FOMAML with k use the k-th for the outer loss).
        gradient: the exact meta-gradient with an SGD inner loop (:func:`meta_gradient`).
        update: one task's outer-step contribution for any inner optimizer (:func:`meta_update`).
        stepwise: ``update`` runs the inner loop step by step through ``adapt``, so a compiled
            inner step can be passed to it (MAML differentiates through the loop, joint training
            takes no steps: both are compiled whole).
        paper: one of the three algorithms the paper's analysis compares (section 5).
        inner_weights: ``(k, weights) -> [w_1..w_k]`` when the meta-gradient is a fixed linear
            combination ``sum_i w_i g_i`` of the inner gradients (for the Taylor expansion), else
            ``None``.
    """

    name: str
    min_k: int
    gradient: GradientRule
    update: UpdateRule
    stepwise: bool
    paper: bool
    inner_weights: Callable[[int, "Sequence[float] | None"], list[float]] | None


class AlgorithmTable(Mapping[str, Algorithm]):
    """name -> :class:`Algorithm`, in a fixed order. Iterating gives the names (so ``name in
    ALGORITHMS`` and ``choices=ALGORITHMS`` work), ``repr`` shows the tuple of names."""

    def __init__(self, rows: Sequence[Algorithm]) -> None:
        self._rows = {a.name: a for a in rows}

    def __getitem__(self, name: str) -> Algorithm:
        return self._rows[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return repr(tuple(self._rows))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._rows)

    def get_checked(self, name: str) -> Algorithm:
        """The row of ``name``; ``ValueError`` naming the choices for an unknown name."""
        if name not in self._rows:
            raise ValueError(f"unknown algorithm {name!r}; choose one of {self!r}")
        return self._rows[name]


#: the one algorithm table: name -> minimum k, exact SGD meta-gradient and outer-step update
ALGORITHMS = AlgorithmTable([
    Algorithm("reptile", 1, _reptile_gradient, _reptile_update, stepwise=True, paper=True,
              inner_weights=lambda k, w: [1.0] * k),
    Algorithm("fomaml", 2, _fomaml_gradient, _fomaml_update, stepwise=True, paper=True,
              inner_weights=lambda k, w: [0.0] * (k - 1) + [1.0]),
    Algorithm("maml", 2, _maml_gradient, _maml_update, stepwise=False, paper=True, inner_weights=None),
    Algorithm("combination", 1, _combination_gradient, _combination_update, stepwise=True, paper=False,
              inner_weights=lambda k, w: check_weights(w, k)),
    Algorithm("joint", 1, _joint_gradient, _joint_update, stepwise=False, paper=False, inner_weights=None),
])
#: minimum k per algorithm (derived from :data:`ALGORITHMS`)
MIN_K = {name: a.min_k for name, a in ALGORITHMS.items()}
#: the paper's three, in the order the analysis reports them (derived from :data:`ALGORITHMS`)
PAPER_ALGORITHMS = tuple(name for name in reversed(ALGORITHMS.names) if ALGORITHMS[name].paper)


def _check(name: str, batches: Batch) -> int:
    return check_batches(batches, k_min=ALGORITHMS.get_checked(name).min_k)


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
    _check(name, batches)
    check_lr(alpha)
    return ALGORITHMS[name].gradient(loss_fn, phi, batches, SGD(alpha), weights, first_order)


def meta_update(name: str, loss_fn: LossFn, phi: Params, batches: Batch, optimizer: SGD | Adam,
                state: State | None = None, *, weights: Sequence[float] | None = None,
                step: Step | None = None) -> tuple[Params, State, torch.Tensor]:
    """One task's contribution to the outer step, for any inner optimizer (used by the trainer).

    Returns ``(u, state, losses)`` where the outer step is ``phi <- phi - eps * mean_tasks(u)``:
    ``u = phi - phi~`` for Reptile (the paper's interpolation), the last inner step's update
    ``phi_k - phi_{k+1}`` for FOMAML (as the official code), and ``lr * g`` for MAML,
    combinations and joint training. With SGD all equal ``alpha * meta_gradient``.
    ``losses[k]`` are the minibatch losses seen in the inner loop. ``step`` replaces the inner
    step of the step-by-step algorithms (``Algorithm.stepwise``; see :func:`reptile.inner.adapt`).
    """
    _check(name, batches)
    return ALGORITHMS[name].update(loss_fn, phi, batches, optimizer, state, weights, step)
