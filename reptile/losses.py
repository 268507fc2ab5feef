"""Turn any ``nn.Module`` into a pure ``LossFn`` with ``torch.func.functional_call``."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .types import Batch, LossFn, Params


def mse(out: Tensor, y: Tensor) -> Tensor:
    """Mean squared error ``mean((out - y)^2)``.

    Written out rather than ``F.mse_loss``: the latter fails under ``jvp(grad(...))`` in torch
    2.13 ("ZeroTensors are immutable"). Shapes must match exactly (no silent broadcasting).
    """
    if out.shape != y.shape:
        raise ValueError(f"model output shape {tuple(out.shape)} does not match target shape "
                         f"{tuple(y.shape)}; targets must be shaped like the model's output")
    return ((out - y) ** 2).mean()


def cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of logits ``out[b, n]`` against integer labels ``y[b]``."""
    if out.ndim != 2 or y.shape != out.shape[:1]:
        raise ValueError(f"cross_entropy expects logits [b, n] and labels [b], got {tuple(out.shape)} "
                         f"and {tuple(y.shape)}")
    return F.cross_entropy(out, y)


CRITERIA: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": mse, "cross_entropy": cross_entropy}


def make_loss(model: nn.Module, criterion: str | Callable[[Tensor, Tensor], Tensor] = "mse") -> LossFn:
    """Return ``loss_fn(params, (x, y)) = criterion(model(x; params), y)``, a pure scalar function.

    ``params`` holds the model's parameters by name (see :func:`params_of`); buffers, if the model
    has any, are taken from the module as constants. The result composes with ``grad``, ``jvp``,
    ``vjp`` and ``vmap``.

    Raises:
        ValueError: unknown criterion name; at call time, inputs that do not fit the model.
    """
    if isinstance(criterion, str):
        if criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {criterion!r}; choose one of {sorted(CRITERIA)} or pass a callable")
        crit = CRITERIA[criterion]
    elif callable(criterion):
        crit = criterion
    else:
        raise TypeError(f"criterion must be a name or a callable(out, y), got {type(criterion).__name__}")
    buffers = dict(model.named_buffers())

    def loss_fn(params: Params, batch: Batch) -> Tensor:
        x, y = batch
        try:
            out = functional_call(model, (params, buffers) if buffers else params, (x,))
        except RuntimeError as e:
            _explain(model, params, x, e)
            if "shape" in str(e) or "size" in str(e) or "channels" in str(e):
                raise ValueError(f"inputs of shape {tuple(x.shape)} do not fit the model "
                                 f"{type(model).__name__}: {e}") from e
            raise
        return crit(out, y)

    loss_fn.model = model  # type: ignore[attr-defined]
    return loss_fn


def _explain(model: nn.Module, params: Params, x: Tensor, err: RuntimeError) -> None:
    """After a failed forward pass, raise a ``ValueError`` naming a parameter of the wrong shape or a
    dtype mismatch, if that is the cause (checked only on the error path: free when all is well)."""
    expected = dict(model.named_parameters())
    for name, v in params.items():
        if name in expected and isinstance(v, Tensor) and tuple(v.shape) != tuple(expected[name].shape):
            raise ValueError(f"params[{name!r}] has shape {tuple(v.shape)}, the model {type(model).__name__} "
                             f"expects {tuple(expected[name].shape)}; pass parameters of this model "
                             f"(reptile.params_of(model))") from err
    dtypes = {v.dtype for v in params.values() if isinstance(v, Tensor)}
    if x.is_floating_point() and dtypes and x.dtype not in dtypes:
        raise ValueError(f"inputs are {x.dtype} but the parameters are {', '.join(map(str, sorted(dtypes, key=str)))}; "
                         f"convert one to the other (e.g. x.to({next(iter(dtypes))}))") from err


def params_of(model: nn.Module) -> Params:
    """A detached copy of the model's parameters, same dtype and device, as a ``Params`` dict."""
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def predict(model: nn.Module, params: Params, x: Tensor) -> Tensor:
    """The model's output on ``x`` with parameters ``params`` (no gradient)."""
    with torch.no_grad():
        return functional_call(model, params, (x,))
