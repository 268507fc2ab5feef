"""A user problem defined outside the package, for ``reptile verify --problem tests.user_problem:factory``.

The model is not one of reptile-lab's: a 3-16-16-1 MLP with GELU and softplus (the issue's
example), on tanh regression tasks ``y = tanh(w . x + c)`` with ``w ~ N(0, I_3)``, ``c ~ N(0, 1)``;
each minibatch draws fresh inputs ``x ~ N(0, I_3)`` (i.i.d. given the task, so exchangeable).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from analysis.problems import Problem
from reptile.losses import make_loss, params_of


class GeluSoftplusMLP(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(3, width), nn.Linear(width, width), nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l3(nn.functional.softplus(self.l2(nn.functional.gelu(self.l1(x)))))


def factory(seed: int = 0, width: int = 16, batch: int = 8) -> Problem:
    """The problem at a seeded initialization (float64)."""
    torch.manual_seed(seed)
    model = GeluSoftplusMLP(width).double()

    def sampler(k: int, b: int):
        def sample_batches(rng: np.random.Generator):
            w, c = rng.standard_normal(3), rng.standard_normal()
            x = rng.standard_normal((k, b, 3))
            y = np.tanh(x @ w + c)[..., None]
            return torch.as_tensor(x), torch.as_tensor(y)
        return sample_batches

    return Problem(f"GELU/softplus MLP 3-{width}-{width}-1, tanh tasks", model, make_loss(model, "mse"),
                   params_of(model), sampler, batch_size=batch)


def batch_norm_factory() -> Problem:
    """Wrong on purpose: batch norm with running statistics."""
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).double()
    base = factory()
    return Problem("bn", model, make_loss(model, "mse"), params_of(model), base.sampler)


def wrong_factory() -> dict:
    """Wrong on purpose: returns a dict."""
    return {"loss": None}
