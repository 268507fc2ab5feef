"""Sine-wave regression tasks, in the two published variants.

``f(x) = a * sin(x + b)`` with amplitude ``a ~ U[0.1, 5.0]`` and ``x in [-5, 5]``.

* ``variant="reptile"`` (Reptile paper Figure 1 and the OpenAI blog gist): phase
  ``b ~ U[0, 2 pi]``; a task's examples are the 50 equally spaced points of [-5, 5]; training
  takes one epoch over them in minibatches of 10 (5 steps); the test loss is the squared error
  on the same 50-point grid after fine-tuning on 10 of its points.
* ``variant="maml"`` (Finn et al. 2017, section 5.1): phase ``b ~ U[0, pi]``; a task's examples
  are ``K`` points drawn uniformly from [-5, 5] (and fresh points for the test loss).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .schedules import gather, minibatch_indices


@dataclass(frozen=True)
class SineTask:
    """One sine wave ``amplitude * sin(x + phase)``; ``x`` and outputs are ``[n, 1]`` tensors."""

    amplitude: float
    phase: float
    variant: str = "reptile"
    n_points: int = 50
    dtype: torch.dtype = torch.float32
    device: str | torch.device = "cpu"

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.sin(x + self.phase)

    def grid(self, n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``n`` equally spaced points of [-5, 5] and their targets, ``([n, 1], [n, 1])``."""
        x = torch.linspace(-5.0, 5.0, n, dtype=self.dtype, device=self.device).unsqueeze(1)
        return x, self.f(x)

    def examples(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The task's training examples: the 50-point grid (reptile) or ``n_points`` uniform draws (maml)."""
        if self.variant == "reptile":
            return self.grid(self.n_points)
        x = torch.as_tensor(rng.uniform(-5.0, 5.0, size=(self.n_points, 1)), dtype=self.dtype, device=self.device)
        return x, self.f(x)

    def minibatches(self, k: int, batch_size: int, rng: np.random.Generator,
                    schedule: str = "cycle") -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` minibatches ``(x[k, b, 1], y[k, b, 1])`` of the task's examples."""
        x, y = self.examples(rng)
        return gather(x, y, minibatch_indices(len(x), k, batch_size, schedule, rng))

    def few_shot(self, shots: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``shots`` training points for test-time fine-tuning: grid points (reptile) or uniform draws (maml)."""
        if self.variant == "reptile":
            x, y = self.grid(self.n_points)
            idx = torch.as_tensor(rng.choice(len(x), size=shots, replace=False), device=x.device)
            return x[idx], y[idx]
        x = torch.as_tensor(rng.uniform(-5.0, 5.0, size=(shots, 1)), dtype=self.dtype, device=self.device)
        return x, self.f(x)


@dataclass(frozen=True)
class SineTaskDistribution:
    """Distribution over :class:`SineTask`; ``sample(rng)`` draws amplitude and phase."""

    variant: str = "reptile"
    amplitude: tuple[float, float] = (0.1, 5.0)
    n_points: int | None = None
    dtype: torch.dtype = torch.float32
    device: str | torch.device = "cpu"

    def __post_init__(self) -> None:
        if self.variant not in ("reptile", "maml"):
            raise ValueError(f"unknown sine variant {self.variant!r}; choose 'reptile' (phase in [0, 2pi], "
                             f"50-point grid) or 'maml' (phase in [0, pi], K uniform points)")

    @property
    def phase(self) -> tuple[float, float]:
        return (0.0, 2 * math.pi) if self.variant == "reptile" else (0.0, math.pi)

    def sample(self, rng: np.random.Generator) -> SineTask:
        a = float(rng.uniform(*self.amplitude))
        b = float(rng.uniform(*self.phase))
        n = self.n_points or (50 if self.variant == "reptile" else 10)
        return SineTask(a, b, self.variant, n, self.dtype, self.device)
