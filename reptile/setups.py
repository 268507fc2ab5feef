"""What a task family builds, and how a trained run gets it back.

A task family turns a typed config (``SineConfig``, ``FewShotConfig``, ...) into a :class:`Setup`:
the model, its ``LossFn``, the initial parameters, a task sampler for
:class:`reptile.train.MetaTrainer` and an evaluation of an initialization on unseen tasks
(:class:`EvalOptions` says how many, with which seed, and which inner-optimizer state to start from).
:func:`restore` is the one path checkpoint -> setup -> parameters used by ``reptile eval`` and the
few-shot report. Nothing here parses a command line.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import torch
from torch import Tensor, nn

from .checkpoint import resolve_checkpoint
from .inner import State
from .train import check_compatible, to_like
from .types import LossFn, Params, TaskSampler

__all__ = ["EvalOptions", "TaskConfig", "Setup", "Restored", "restore", "dtype_of", "device_of", "config_from", "state_like"]


@dataclass(frozen=True)
class EvalOptions:
    """How :attr:`Setup.evaluate` measures an initialization.

    Attributes:
        n_tasks: unseen test tasks.
        seed: seed of the test tasks (use one other than training's).
        inner_state: the inner-optimizer state saved with the evaluated parameters (the trainer's
            ``inner_state``; few-shot evaluation starts every test task from it, as the official
            code), ``None`` when there is none (before training, a bare initialization).
        transductive: also report transductive accuracy (few-shot; ``False``: the run's setting).
        split: dataset split of the test tasks (few-shot; ``None``: the run's setting).
        state: ``"checkpoint"`` or ``"fresh"`` inner state (few-shot; ``None``: the run's setting).
        progress: show a progress bar where the evaluation is long.
    """

    n_tasks: int = 100
    seed: int = 12345
    inner_state: State | None = None
    transductive: bool = False
    split: str | None = None
    state: str | None = None
    progress: bool = False


@dataclass(frozen=True)
class TaskConfig:
    """What every family's config holds: the inner-loop minibatches a task sampler stacks
    (``inner_steps`` of ``inner_batch`` examples, by ``schedule``), the seed of the initialization,
    and the parameters' dtype and device (by name)."""

    inner_steps: int = 5
    inner_batch: int = 10
    schedule: str = "cycle"
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"


@dataclass
class Setup:
    """A task family ready to train: ``evaluate(phi, EvalOptions) -> {metric: value}``."""

    model: nn.Module
    loss_fn: LossFn
    phi: Params
    sampler: TaskSampler
    evaluate: Callable[[Params, EvalOptions], dict[str, float]]
    spec: dict[str, Any] = field(default_factory=dict)


def dtype_of(name: str) -> torch.dtype:
    """``"float32"`` or ``"float64"`` as a torch dtype; ``ValueError`` otherwise."""
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {name!r}")
    return getattr(torch, name)


def device_of(name: str) -> torch.device:
    """A torch device by name; ``ValueError`` for an unknown one or CUDA without CUDA."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available; use `device` cpu")
    return device


C = TypeVar("C")


def config_from(cls: type[C], values: Mapping[str, Any], **overrides: Any) -> C:
    """A config dataclass from a mapping of settings (e.g. the ``args`` saved in a checkpoint):
    the mapping's values for the dataclass's fields, ``None`` and unknown keys ignored (the
    field's default applies), then ``overrides``."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    kwargs = {k: v for k, v in values.items() if k in names and v is not None}
    return cls(**{**kwargs, **overrides})


def state_like(state: State | None, like: Tensor) -> State | None:
    """An optimizer state (nested dicts of tensors) with ``like``'s dtype and device; ``None`` for
    none or an empty state (SGD keeps none)."""
    return to_like(state, like) if state else None


@dataclass
class Restored:
    """A checkpoint brought back: its path, contents, the rebuilt setup and its parameters."""

    path: Path
    checkpoint: dict[str, Any]
    family: str
    setup: Setup
    phi: Params

    @property
    def inner_state(self) -> State | None:
        """The inner-optimizer state saved with :attr:`phi`."""
        return self.checkpoint.get("inner_state")

    @property
    def iteration(self) -> int:
        return int(self.checkpoint["iteration"])


def restore(run: str | Path, build: Callable[[str, dict[str, Any]], Setup], family: str | None = None) -> Restored:
    """Load a run folder's newest good checkpoint (or a checkpoint file) and rebuild its setup.

    ``build(family, saved_settings)`` rebuilds the family's :class:`Setup` from the settings that
    ``reptile train`` saved with the checkpoint; ``family``, if given, is the one family accepted.
    The checkpoint is checked against the rebuilt model, and its parameters are returned with the
    dtype and device of the setup's.
    """
    path, ckpt = resolve_checkpoint(run)
    extra = ckpt.get("extra") or {}
    if family is not None and isinstance(extra, dict) and extra.get("family") != family:
        raise ValueError(f"{path} was not trained on the {family} family (family {extra.get('family')!r})")
    if not isinstance(extra, dict) or "family" not in extra or not isinstance(extra.get("args"), dict):
        raise ValueError(f"{path} does not say which task family it was trained on and with which settings; "
                         f"it was not written by `reptile train`")
    from .runfolder import safe_saved_args  # a checkpoint never chooses where files go

    setup = build(extra["family"], safe_saved_args(extra["args"]))
    check_compatible(ckpt, setup.phi, setup.spec)
    like = next(iter(setup.phi.values()))
    phi = {k: v.to(like) for k, v in ckpt["params"].items()}
    return Restored(Path(path), ckpt, extra["family"], setup, phi)
