"""Task families the CLI can train on: a registry of (flags, builder, defaults).

A :class:`Family` turns parsed command-line options into a :class:`Setup`: the model, its
``LossFn``, the initial parameters, a task sampler for :class:`reptile.train.MetaTrainer` and an
evaluation. Few-shot classification registers itself from ``reptile.fewshot``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .evaluate import evaluate_sine
from .losses import make_loss, params_of
from .models import MLP, LinearModel, model_spec, seeded_init
from .tasks import LeastSquaresTaskDistribution, SineTaskDistribution
from .train import TaskSampler
from .types import LossFn, Params


@dataclass
class Setup:
    model: nn.Module
    loss_fn: LossFn
    phi: Params
    sampler: TaskSampler
    evaluate: Callable[[Params, argparse.Namespace], dict[str, float]]
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass
class Family:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace], Setup]
    defaults: dict[str, Any]
    eval_defaults: dict[str, Any] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> None:
    FAMILIES[family.name] = family


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown task family {name!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def dtype_of(name: str) -> torch.dtype:
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {name!r}")
    return getattr(torch, name)


def device_of(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available; use --device cpu")
    return device


# argparse types (imported late: reptile.cli imports the trainer, which must not import this module)
def _positive_int(text: str) -> int:
    from .cli import positive_int
    return positive_int(text)


def _nonneg_int(text: str) -> int:
    from .cli import nonneg_int
    return nonneg_int(text)


def _positive_float(text: str) -> float:
    from .cli import positive_float
    return positive_float(text)


def _nonneg_float(text: str) -> float:
    from .cli import nonneg_float
    return nonneg_float(text)


# -- sine waves ------------------------------------------------------------------------------
def _sine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sine waves")
    g.add_argument("--variant", choices=("reptile", "maml"), default="reptile",
                   help="reptile: phase in [0, 2pi], 50-point grid (paper/blog); maml: phase in [0, pi], K uniform points")
    g.add_argument("--hidden", default="64,64", help="hidden widths of the MLP, comma separated (default 64,64)")
    g.add_argument("--activation", default="tanh", help="MLP activation: tanh (blog), relu (MAML), gelu, elu")
    g.add_argument("--points", type=_positive_int, default=None,
                   help="examples per task during meta-training (default 50 grid points, or 10 for --variant maml)")
    g.add_argument("--shots", type=_positive_int, default=10, help="points given at test time (default 10)")
    g.add_argument("--test-steps", type=_nonneg_int, default=32, help="SGD steps at test time (default 32)")
    g.add_argument("--test-lr", type=_positive_float, default=0.02, help="SGD step size at test time (default 0.02)")


def _sine_build(args: argparse.Namespace) -> Setup:
    dtype, device = dtype_of(args.dtype), device_of(args.device)
    try:
        hidden = [int(h) for h in str(args.hidden).split(",") if h]
    except ValueError:
        raise ValueError(f"--hidden must be comma-separated integers like 64,64, got {args.hidden!r}") from None
    model = seeded_init(args.seed, lambda: MLP((1, *hidden, 1), args.activation)).to(dtype=dtype, device=device)
    dist = SineTaskDistribution(variant=args.variant, n_points=args.points, dtype=dtype, device=device)
    k, b, sched = args.inner_steps, args.inner_batch, args.schedule

    def sampler(rng: np.random.Generator):
        return dist.sample(rng).minibatches(k, b, rng, sched)

    loss_fn = make_loss(model, "mse")

    def evaluate(phi: Params, a: argparse.Namespace) -> dict[str, float]:
        ev = evaluate_sine(model, loss_fn, phi, n_tasks=a.eval_tasks, shots=args.shots, steps=args.test_steps,
                           lr=args.test_lr, seed=a.eval_seed, variant=args.variant, record=(0, args.test_steps))
        (m0, m1), (c0, c1) = ev.mean, ev.ci95
        return {"grid_mse_0_steps": m0, "grid_mse_0_steps_ci95": c0,
                f"grid_mse_{args.test_steps}_steps": m1, f"grid_mse_{args.test_steps}_steps_ci95": c1}

    return Setup(model, loss_fn, params_of(model), sampler, evaluate, model_spec(model))


register_family(Family("sine", "sine-wave regression (Reptile paper Figure 1, blog gist)", _sine_args, _sine_build,
                       defaults=dict(inner_steps=5, inner_batch=10, inner_lr=0.02, inner_optimizer="sgd",
                                     outer_lr=0.1, iterations=30000, meta_batch=1)))


# -- least squares ---------------------------------------------------------------------------
def _ls_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("least squares")
    g.add_argument("--dim", type=_positive_int, default=10, help="weights per task (default 10)")
    g.add_argument("--ls-points", type=_positive_int, default=5, help="examples per task; fewer than --dim is underdetermined (default 5)")
    g.add_argument("--noise", type=_nonneg_float, default=0.0, help="target noise standard deviation (default 0)")


def _ls_build(args: argparse.Namespace) -> Setup:
    dtype, device = dtype_of(args.dtype), device_of(args.device)
    model = seeded_init(args.seed, lambda: LinearModel(args.dim)).to(dtype=dtype, device=device)
    dist = LeastSquaresTaskDistribution(args.dim, args.ls_points, args.noise, dtype=dtype, device=device)
    k, b, sched = args.inner_steps, args.inner_batch, args.schedule
    loss_fn = make_loss(model, "mse")

    def sampler(rng: np.random.Generator):
        return dist.sample(rng).minibatches(k, b, rng, sched)

    def evaluate(phi: Params, a: argparse.Namespace) -> dict[str, float]:
        rng = np.random.default_rng(a.eval_seed)
        w = phi["linear.weight"][0]
        d = [float(dist.sample(rng).solution_set().distance(w)) for _ in range(a.eval_tasks)]
        return {"mean_distance_to_solution_sets": float(np.mean(d))}

    return Setup(model, loss_fn, params_of(model), sampler, evaluate, model_spec(model))


register_family(Family("least-squares", "linear least-squares tasks (closed-form solution sets)", _ls_args, _ls_build,
                       defaults=dict(inner_steps=5, inner_batch=5, inner_lr=0.02, inner_optimizer="sgd",
                                     outer_lr=0.1, iterations=2000, meta_batch=1)))

from . import fewshot  # noqa: F401  (registers the few-shot family)
