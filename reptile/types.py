"""The vocabulary shared by the engine and the analysis (see DESIGN.md).

``Params`` maps parameter names to tensors (the torch.func convention), ``Batch`` is one
minibatch ``(inputs, targets)``, ``TaskSampler`` draws one task's batches from a
``numpy.random.Generator`` and ``LossFn`` is a scalar loss of parameters and a batch that
composes with ``torch.func.grad``, ``jvp`` and ``vmap``. "Batches" (plural) are k minibatches
stacked along a leading dimension: ``(inputs[k, b, ...], targets[k, b, ...])``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from torch import Tensor

Params = dict[str, Tensor]
Batch = tuple[Tensor, Tensor]
LossFn = Callable[[Params, Batch], Tensor]
#: draws one task's stacked minibatches ``(x[k, b, ...], y[k, b, ...])`` from a generator
TaskSampler = Callable[[np.random.Generator], Batch]

__all__ = ["Params", "Batch", "LossFn", "TaskSampler"]
