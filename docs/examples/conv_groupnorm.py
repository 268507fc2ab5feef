"""An example user problem for ``reptile verify --problem``: a small 1-D conv net with group norm.

Nothing here comes from reptile-lab's models or task families. The task family: each task is a
random 3-tap filter ``w ~ N(0, I)`` and gain ``s ~ U[0.5, 2]``; an example is a random signal
``x ~ N(0, I_16)`` with target ``y = s * mean_t tanh((w * x)_t)`` (a filtered, squashed signal).
The k minibatches of a task draw fresh signals, i.i.d. given the task, so they are exchangeable.

Run from the repository root::

    reptile verify --problem docs.examples.conv_groupnorm:factory
    reptile verify --problem docs.examples.conv_groupnorm:factory --problem-arg channels=8 --quick

The model uses group norm and smooth activations (tanh, softplus): torch.func transforms need a
functional normalization (batch norm would need ``track_running_stats=False``), and ReLU kinks
would bend the residual slopes.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from analysis.problems import Problem
from reptile.losses import make_loss, params_of

LENGTH = 16


class ConvGN(nn.Module):
    """``[b, 1, 16] -> [b, 1]``: two (conv 3 -> group norm -> tanh) blocks, mean pool, linear."""

    def __init__(self, channels: int = 4, groups: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(1, channels, 3, padding=1), nn.GroupNorm(groups, channels), nn.Tanh(),
                                  nn.Conv1d(channels, channels, 3, padding=1), nn.GroupNorm(groups, channels),
                                  nn.Softplus())
        self.head = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(-1))


def factory(seed: int = 0, channels: int = 4, batch: int = 10) -> Problem:
    """The problem at a seeded initialization, float64 (``reptile verify`` moves it to --dtype/--device)."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = ConvGN(channels).double()
    torch.random.set_rng_state(gen_state)

    def sampler(k: int, b: int):
        def sample_batches(rng: np.random.Generator):
            w, s = rng.standard_normal(3), rng.uniform(0.5, 2.0)
            x = rng.standard_normal((k, b, 1, LENGTH))
            conv = w[0] * x[..., :-2] + w[1] * x[..., 1:-1] + w[2] * x[..., 2:]
            y = s * np.tanh(conv).mean(-1)                       # [k, b, 1]
            return torch.as_tensor(x), torch.as_tensor(y)
        return sample_batches

    return Problem(f"conv1d+GroupNorm ({channels} channels)", model, make_loss(model, "mse"), params_of(model),
                   sampler, batch_size=batch)
