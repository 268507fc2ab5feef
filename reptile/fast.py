"""Fast paths of one task's meta-update, each selectable and each checked against the eager path.

:func:`make_meta_update` returns a drop-in replacement of :func:`reptile.algorithms.meta_update`
(same arguments after the first three, same results up to floating-point rounding):

* ``channels_last=True``: image minibatches ``x[k, b, C, H, W]`` and 4-d parameters are laid out
  channels-last (NHWC), which oneDNN's convolutions run faster on a CPU.
* ``compile=True``: ``torch.compile`` of one inner step (gradient and optimizer update in one
  graph, so batch norm, ReLU and the optimizer's elementwise work are fused) for Reptile, FOMAML,
  combinations and joint training; for MAML of the whole differentiable inner loop and its outer
  gradient. The Adam step counter is a 0-d tensor, so steps do not recompile; one graph is built
  per input shape and dtype (``dynamic=False``) and reused for every task and iteration.

Neither path changes the mathematics; they change the order of floating-point operations, so
results agree with the eager path to rounding (``tests/test_fast.py`` checks this in float64 and
float32). Beware when comparing Adam runs: a parameter whose exact gradient is zero (e.g. a conv
bias followed by batch norm) receives ``lr * g / (|g| + eps)`` from Adam, which turns rounding
noise of size 1e-9 into steps of size ``lr``; such parameters differ between any two
implementations, and none of the others is affected.

Measured on the 2-core CPU of this project (``docs/benchmarks.md``); on a GPU, batching the tasks
of a meta-batch with ``batching="vmap"`` is the expected win instead.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .algorithms import ALGORITHMS, _check, meta_update
from .inner import SGD, Adam, State, make_step
from .types import Batch, LossFn, Params

MetaUpdate = Callable[..., tuple[Params, State, Tensor]]

__all__ = ["make_meta_update", "channels_last_images", "channels_last_batches", "channels_last_params", "contiguous_params"]


def channels_last_images(x: Tensor) -> Tensor:
    """Images ``[..., C, H, W]`` stored channels-last, so that every ``[b, C, H, W]`` slice is."""
    n = x.ndim
    perm = (*range(n - 3), n - 2, n - 1, n - 3)
    inv = (*range(n - 3), n - 1, n - 3, n - 2)
    return x.permute(perm).contiguous().permute(inv)


def channels_last_batches(batches: Batch) -> Batch:
    """Lay stacked image minibatches ``x[k, b, C, H, W]`` out so that every ``x[i]`` is channels-last.

    Other shapes are returned unchanged. The values (and the targets) are not touched.
    """
    x, y = batches
    return (channels_last_images(x) if x.ndim == 5 else x), y


def channels_last_params(params: Params) -> Params:
    """4-d leaves (convolution weights) in channels-last memory format; other leaves unchanged."""
    return {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in params.items()}


def channels_last_state(state: State) -> State:
    """An optimizer state (nested dicts of tensors) with its 4-d leaves channels-last."""
    return {k: channels_last_state(v) if isinstance(v, dict)
            else v.contiguous(memory_format=torch.channels_last) if isinstance(v, Tensor) and v.ndim == 4 else v
            for k, v in state.items()}


def contiguous_params(params: Params) -> Params:
    """Every leaf in the default (row-major) memory format."""
    return {k: v.contiguous() for k, v in params.items()}


def make_meta_update(name: str, loss_fn: LossFn, optimizer: SGD | Adam, *, compile: bool = False,
                     channels_last: bool = False, compile_options: dict[str, Any] | None = None) -> MetaUpdate:
    """A function ``f(phi, batches, state=None, *, weights=None) -> (u, state, losses)`` equal to
    ``reptile.algorithms.meta_update(name, loss_fn, phi, batches, optimizer, state, weights=weights)``.

    Args:
        name: algorithm (``"reptile"``, ``"fomaml"``, ``"maml"``, ``"combination"``, ``"joint"``).
        loss_fn: scalar loss of (params, batch); one compiled graph per ``loss_fn``.
        optimizer: the inner optimizer (its hyper-parameters are baked into the compiled graph).
        compile: use ``torch.compile`` (see the module docstring); the first call of each input
            shape compiles (tens of seconds on a small CPU).
        channels_last: lay image batches and convolution weights out channels-last.
        compile_options: extra keyword arguments of ``torch.compile`` (e.g. ``{"backend": "eager"}``).
    Returns:
        The meta-update function; ``u`` comes back in the default memory format.
    Raises:
        ValueError: unknown algorithm name.
    """
    _check(name, (torch.zeros(2, 1), torch.zeros(2, 1)))  # validates the name only
    opts = {"dynamic": False, **(compile_options or {})}

    if not compile:
        def eager(phi: Params, batches: Batch, state: State | None = None, *,
                  weights: Sequence[float] | None = None) -> tuple[Params, State, Tensor]:
            if channels_last:
                phi, batches = channels_last_params(phi), channels_last_batches(batches)
                state = None if state is None else channels_last_state(state)
            u, state, losses = meta_update(name, loss_fn, phi, batches, optimizer, state, weights=weights)
            return (contiguous_params(u) if channels_last else u), state, losses
        return eager

    if not ALGORITHMS[name].stepwise:
        # the whole update in one graph (MAML differentiates through the inner loop)
        def whole(phi: Params, x: Tensor, y: Tensor, state: State | None) -> tuple[Params, State, Tensor]:
            return meta_update(name, loss_fn, phi, (x, y), optimizer, state)
        compiled_whole = torch.compile(whole, **opts)

        def run_whole(phi: Params, batches: Batch, state: State | None = None, *,
                      weights: Sequence[float] | None = None) -> tuple[Params, State, Tensor]:
            _check(name, batches)
            if channels_last:
                phi, batches = channels_last_params(phi), channels_last_batches(batches)
                state = None if state is None else channels_last_state(state)
            state = optimizer.init(phi) if state is None else state
            u, state, losses = compiled_whole(phi, batches[0], batches[1], state)
            return (contiguous_params(u) if channels_last else u), state, losses
        return run_whole

    # step by step: the engine's own update rule, with one compiled inner step
    step = torch.compile(make_step(loss_fn, optimizer), **opts)

    def run_steps(phi: Params, batches: Batch, state: State | None = None, *,
                  weights: Sequence[float] | None = None) -> tuple[Params, State, Tensor]:
        if channels_last:
            phi, batches = channels_last_params(phi), channels_last_batches(batches)
            state = None if state is None else channels_last_state(state)
        state = optimizer.init(phi) if state is None else state
        u, state, losses = meta_update(name, loss_fn, phi, batches, optimizer, state, weights=weights, step=step)
        return (contiguous_params(u) if channels_last else u), state, losses
    return run_steps
