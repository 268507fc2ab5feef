"""The embedded problems the theory check runs on, built from explicit seeds (no global RNG).

* :func:`sine_problem` -- the sine-wave MLP 1-64-64-1 tanh (Reptile paper Figure 1, OpenAI
  blog), float64, tasks ``a sin(x + b)`` with a ~ U[0.1, 5], b ~ U[0, 2 pi] on the 50-point grid
  of [-5, 5]; minibatches drawn with the "replacement" schedule (each batch b distinct grid points,
  independently of the other batches), so the k minibatches of a task are exchangeable.
* :func:`least_squares_problem` -- a linear model ``y = x . w`` on Gaussian least-squares tasks
  (:class:`reptile.tasks.LeastSquaresTaskDistribution`), float64; Hessians are constant, so the
  expansions and expectations have closed forms (:mod:`analysis.closed_forms`).

A :class:`Problem` bundles the ``LossFn``, the initialization ``phi`` and a task sampler.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from reptile.losses import make_loss
from reptile.models import MLP, LinearModel
from reptile.tasks import LeastSquaresTaskDistribution, SineTaskDistribution
from reptile.types import Batch, LossFn, Params

Sampler = Callable[[np.random.Generator], Batch]


@dataclass(frozen=True)
class Problem:
    """A loss, a point phi and a task distribution.

    Attributes:
        name: short label used in reports.
        model: the ``nn.Module`` behind ``loss_fn``.
        loss_fn: ``LossFn``.
        phi: the initialization (``Params``, float64).
        sampler: ``sampler(k, b)`` returns ``sample_batches(rng) -> (x[k, b, ...], y[k, b, ...])``:
            one task drawn from the distribution, then k exchangeable minibatches of size b.
        distribution: the task distribution object.
        info: problem-specific constants (least squares: ``input_scales``).
    """

    name: str
    model: nn.Module
    loss_fn: LossFn
    phi: Params
    sampler: Callable[[int, int], Sampler]
    distribution: object
    info: dict = field(default_factory=dict)


def init_params(model: nn.Module, seed: int, dtype: torch.dtype = torch.float64) -> Params:
    """PyTorch's default ``nn.Linear`` initialization, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
    weights and biases, drawn from ``torch.Generator().manual_seed(seed)`` (the global RNG is
    untouched). Only ``nn.Linear`` layers are supported (the MLP and the linear model)."""
    gen = torch.Generator().manual_seed(int(seed))
    out: Params = {}
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            bound = 1.0 / math.sqrt(mod.in_features)
            prefix = f"{mod_name}." if mod_name else ""
            out[prefix + "weight"] = (torch.rand(mod.weight.shape, generator=gen, dtype=dtype) * 2 - 1) * bound
            if mod.bias is not None:
                out[prefix + "bias"] = (torch.rand(mod.bias.shape, generator=gen, dtype=dtype) * 2 - 1) * bound
    names = [n for n, _ in model.named_parameters()]
    if sorted(names) != sorted(out):
        raise ValueError(f"init_params supports models made of nn.Linear only; {type(model).__name__} has {names}")
    return {n: out[n] for n in names}


def sine_problem(seed: int = 0, sizes: tuple[int, ...] = (1, 64, 64, 1), activation: str = "tanh") -> Problem:
    """The sine-wave MLP (default 1-64-64-1 tanh, float64) at a seeded initialization."""
    model = MLP(sizes, activation).double()
    dist = SineTaskDistribution(variant="reptile", dtype=torch.float64)

    def sampler(k: int, b: int) -> Sampler:
        return lambda rng: dist.sample(rng).minibatches(k, b, rng, "replacement")

    return Problem(f"sine MLP {'-'.join(map(str, sizes))} {activation}", model, make_loss(model, "mse"),
                   init_params(model, seed), sampler, dist)


def least_squares_problem(seed: int = 0, dim: int = 10, n_points: int = 20, noise: float = 0.1,
                          scale: float = 0.5, input_scales: tuple[float, float] = (0.5, 1.5)) -> Problem:
    """Linear least squares in ``dim`` weights, tasks with ``n_points`` examples (float64).

    Tasks come from :class:`reptile.tasks.LeastSquaresTaskDistribution` (inputs ``a ~ N(0, I)``,
    targets ``a . w_tau + noise``, ``w_tau ~ N(1, I)``); the sampler then multiplies input column
    c by ``D_c``, geometrically spaced over ``input_scales`` (the model sees ``x = D a``). With
    isotropic inputs (``input_scales=(1, 1)``) AvgGrad and AvgGradInner are parallel (both
    multiples of ``phi - 1``), so no regression can separate their coefficients; the spread of
    scales makes them independent directions. Closed forms: :mod:`analysis.closed_forms`.
    ``phi`` is ``scale`` times a standard normal vector from ``numpy.random.default_rng(seed)``.
    """
    model = LinearModel(dim).double()
    dist = LeastSquaresTaskDistribution(dim=dim, n_points=n_points, noise=noise, dtype=torch.float64)
    w = scale * np.random.default_rng(seed).standard_normal((1, dim))
    phi = {"linear.weight": torch.as_tensor(w, dtype=torch.float64)}
    d = torch.as_tensor(np.geomspace(input_scales[0], input_scales[1], dim), dtype=torch.float64)

    def sampler(k: int, b: int) -> Sampler:
        def sample_batches(rng: np.random.Generator) -> Batch:
            x, y = dist.sample(rng).minibatches(k, b, rng, "replacement")
            return x * d, y
        return sample_batches

    return Problem(f"least squares d={dim} m={n_points}", model, make_loss(model, "mse"), phi, sampler, dist,
                   {"input_scales": d})
