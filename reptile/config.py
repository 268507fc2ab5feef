"""Hyper-parameters of meta-training: :class:`TrainConfig`, a validated dataclass.

Its own module so that the checkpoint reader can validate a saved config without importing the
trainer (``reptile.train`` re-exports it; ``from reptile.train import TrainConfig`` keeps working).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from .algorithms import ALGORITHMS, MIN_K, check_weights


@dataclass
class TrainConfig:
    """Hyper-parameters of meta-training (defaults: the Reptile blog's sine-wave run)."""

    algorithm: str = "reptile"
    inner_steps: int = 5
    inner_batch: int = 10
    inner_optimizer: str = "sgd"
    inner_lr: float = 0.02
    reset_inner_state: bool = False
    outer_lr: float = 0.1
    anneal: bool = True
    outer_optimizer: str = "interpolate"
    meta_batch: int = 1
    batching: str = "loop"
    iterations: int = 30000
    seed: int = 0
    weights: list[float] | None = None
    checkpoint_every: int = 1000
    log_every: int = 100
    keep_checkpoints: int = 3
    # fast paths (reptile.fast): same numbers as the eager path up to rounding; loop batching only.
    # "auto" (the default): compile + channels-last for convolutional models of the paper's size with a
    # step-by-step algorithm where torch.compile works, eager otherwise (reptile.fast.choose_fast_path)
    compile: bool | str = "auto"
    channels_last: bool | str = "auto"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and what it accepts."""
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; choose one of {ALGORITHMS}")
        for name in ("inner_steps", "inner_batch", "meta_batch", "iterations", "checkpoint_every", "log_every",
                     "keep_checkpoints", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"{name} must be a whole number, got {v!r}")
        if not 0 <= self.seed < 2 ** 63:  # torch.manual_seed takes a 64-bit integer
            raise ValueError(f"seed must be from 0 to 2**63-1, got {self.seed}")
        if self.inner_steps < MIN_K[self.algorithm]:
            raise ValueError(f"{self.algorithm} needs inner_steps >= {MIN_K[self.algorithm]}, got {self.inner_steps}")
        for name in ("inner_batch", "meta_batch", "iterations", "checkpoint_every", "log_every", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("inner_lr", "outer_lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        if self.inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"inner_optimizer must be 'sgd' or 'adam', got {self.inner_optimizer!r}")
        if self.outer_optimizer not in ("interpolate", "sgd", "adam"):
            raise ValueError(f"outer_optimizer must be 'interpolate', 'sgd' or 'adam', got {self.outer_optimizer!r}")
        if self.batching not in ("loop", "vmap"):
            raise ValueError(f"batching must be 'loop' or 'vmap', got {self.batching!r}")
        if self.batching == "vmap" and self.inner_optimizer == "adam" and not self.reset_inner_state:
            raise ValueError("batching='vmap' runs the tasks of a meta-batch in parallel, so Adam moments cannot "
                             "persist from task to task: set reset_inner_state=True or use batching='loop'")
        for name in ("compile", "channels_last"):
            if getattr(self, name) not in (True, False, "auto"):
                raise ValueError(f"{name} must be True, False or 'auto', got {getattr(self, name)!r}")
        if self.batching == "vmap" and (self.compile is True or self.channels_last is True):
            raise ValueError("compile and channels_last are fast paths of batching='loop'; drop them or use "
                             "batching='loop'")
        if self.algorithm == "combination" and (self.weights is None or len(self.weights) != self.inner_steps):
            raise ValueError(f"algorithm 'combination' needs inner_steps = {self.inner_steps} weights w_1..w_k, "
                             f"got {None if self.weights is None else len(self.weights)}")
        if self.weights is not None:
            check_weights(self.weights, len(self.weights))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
