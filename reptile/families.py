"""The task families: typed configs and their builders, and the registry ``reptile train`` uses.

A :class:`Family` turns its config into a :class:`~reptile.setups.Setup` (model, loss, initial
parameters, task sampler, evaluation). Sine waves and least squares are defined here, few-shot
classification in :mod:`reptile.fewshot`. The command-line flags of each family live in
``reptile/cli/`` (one module per family); nothing here parses a command line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .evaluate import evaluate_sine
from .fewshot import DEFAULT_PRESET, PRESETS, FewShotConfig, build_fewshot
from .losses import make_loss, params_of
from .models import MLP, LinearModel, model_spec, seeded_init
from .setups import EvalOptions, Setup, TaskConfig, config_from, device_of, dtype_of
from .tasks import LeastSquaresTaskDistribution, SineTaskDistribution
from .types import Params

__all__ = ["Family", "FAMILIES", "register_family", "get_family", "build_saved", "SineConfig", "build_sine",
           "LeastSquaresConfig", "build_least_squares", "Setup", "EvalOptions", "dtype_of", "device_of",
           "seeded_init"]


@dataclass(frozen=True)
class Family:
    """A task family: ``build(config_cls(...)) -> Setup`` and its training defaults
    (``inner_steps``, ``inner_lr``, ... as ``reptile train`` option names)."""

    name: str
    help: str
    config: type
    build: Callable[[Any], Setup]
    defaults: dict[str, Any] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> None:
    FAMILIES[family.name] = family


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown task family {name!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def build_saved(name: str, settings: dict[str, Any]) -> Setup:
    """Rebuild family ``name`` from saved settings (the ``args`` of a ``reptile train`` checkpoint)."""
    fam = get_family(name)
    return fam.build(config_from(fam.config, settings))


# -- sine waves ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SineConfig(TaskConfig):
    """Sine-wave regression (Reptile paper Figure 1, the blog's gist).

    ``variant``: ``"reptile"`` (phase in [0, 2 pi], 50-point grid) or ``"maml"`` (phase in [0, pi],
    K uniform points); ``points``: examples per training task (``None``: the variant's default);
    ``shots``, ``test_steps``, ``test_lr``: the test-time fine-tuning (10 points, 32 SGD steps of
    0.02); the inner-loop minibatches, seed, dtype and device: :class:`~reptile.setups.TaskConfig`.
    """

    variant: str = "reptile"
    hidden: str | tuple[int, ...] = "64,64"
    activation: str = "tanh"
    points: int | None = None
    shots: int = 10
    test_steps: int = 32
    test_lr: float = 0.02

    def widths(self) -> list[int]:
        """Hidden widths as integers (``"64,64"`` or ``(64, 64)``)."""
        if not isinstance(self.hidden, str):
            return [int(h) for h in self.hidden]
        try:
            return [int(h) for h in self.hidden.split(",") if h]
        except ValueError:
            raise ValueError(f"`hidden` must be comma-separated integers like 64,64, got {self.hidden!r}") from None


def build_sine(cfg: SineConfig) -> Setup:
    dtype, device = dtype_of(cfg.dtype), device_of(cfg.device)
    hidden = cfg.widths()
    model = seeded_init(cfg.seed, lambda: MLP((1, *hidden, 1), cfg.activation)).to(dtype=dtype, device=device)
    dist = SineTaskDistribution(variant=cfg.variant, n_points=cfg.points, dtype=dtype, device=device)
    k, b, sched = cfg.inner_steps, cfg.inner_batch, cfg.schedule

    def sampler(rng: np.random.Generator):
        return dist.sample(rng).minibatches(k, b, rng, sched)

    loss_fn = make_loss(model, "mse")

    def evaluate(phi: Params, o: EvalOptions) -> dict[str, float]:
        ev = evaluate_sine(loss_fn, phi, n_tasks=o.n_tasks, shots=cfg.shots, steps=cfg.test_steps, lr=cfg.test_lr,
                           seed=o.seed, variant=cfg.variant, record=(0, cfg.test_steps))
        (m0, m1), (c0, c1) = ev.mean, ev.ci95
        return {"grid_mse_0_steps": m0, "grid_mse_0_steps_ci95": c0,
                f"grid_mse_{cfg.test_steps}_steps": m1, f"grid_mse_{cfg.test_steps}_steps_ci95": c1}

    return Setup(model, loss_fn, params_of(model), sampler, evaluate, model_spec(model))


register_family(Family("sine", "sine-wave regression (Reptile paper Figure 1, blog gist)", SineConfig, build_sine,
                       defaults=dict(inner_steps=5, inner_batch=10, inner_lr=0.02, inner_optimizer="sgd",
                                     outer_lr=0.1, iterations=30000, meta_batch=1, shots=10)))


# -- least squares ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LeastSquaresConfig(TaskConfig):
    """Linear least-squares tasks: ``dim`` weights, ``ls_points`` examples (fewer: underdetermined),
    target noise ``noise``; the rest: :class:`~reptile.setups.TaskConfig` (5 examples a minibatch)."""

    dim: int = 10
    ls_points: int = 5
    noise: float = 0.0
    inner_batch: int = 5


def build_least_squares(cfg: LeastSquaresConfig) -> Setup:
    dtype, device = dtype_of(cfg.dtype), device_of(cfg.device)
    model = seeded_init(cfg.seed, lambda: LinearModel(cfg.dim)).to(dtype=dtype, device=device)
    dist = LeastSquaresTaskDistribution(cfg.dim, cfg.ls_points, cfg.noise, dtype=dtype, device=device)
    k, b, sched = cfg.inner_steps, cfg.inner_batch, cfg.schedule
    loss_fn = make_loss(model, "mse")

    def sampler(rng: np.random.Generator):
        return dist.sample(rng).minibatches(k, b, rng, sched)

    def evaluate(phi: Params, o: EvalOptions) -> dict[str, float]:
        rng = np.random.default_rng(o.seed)
        w = phi["linear.weight"][0]
        d = [float(dist.sample(rng).solution_set().distance(w)) for _ in range(o.n_tasks)]
        return {"mean_distance_to_solution_sets": float(np.mean(d))}

    return Setup(model, loss_fn, params_of(model), sampler, evaluate, model_spec(model))


register_family(Family("least-squares", "linear least-squares tasks (closed-form solution sets)", LeastSquaresConfig,
                       build_least_squares, defaults=dict(inner_steps=5, inner_batch=5, inner_lr=0.02,
                                                          inner_optimizer="sgd", outer_lr=0.1, iterations=2000,
                                                          meta_batch=1)))

# -- few-shot classification (reptile.fewshot) -------------------------------------------------
register_family(Family("fewshot", "N-way K-shot image classification (paper section 6): glyphs, Omniglot, "
                                  "Mini-ImageNet", FewShotConfig, build_fewshot,
                       defaults=PRESETS[DEFAULT_PRESET].defaults()))
