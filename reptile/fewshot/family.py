"""The few-shot task family: :class:`FewShotConfig` -> :class:`~reptile.setups.Setup`.

Unset (``None``) protocol values of the config come from its preset (default Omniglot 5-way 1-shot,
Table 3); any value given explicitly overrides the preset.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..inner import State, make_optimizer
from ..losses import make_loss, params_of
from ..models import model_spec, seeded_init
from ..setups import EvalOptions, Setup, TaskConfig, config_from, device_of, dtype_of, state_like
from ..types import Params
from .datasets import build_fewshot_model, load_splits
from .evaluation import evaluate_fewshot
from .presets import preset_defaults
from .sampler import EpisodeSampler


@dataclass(frozen=True)
class FewShotConfig(TaskConfig):
    """Everything that defines a few-shot run's model, tasks and evaluation.

    The preset-backed fields (``ways``, ``shots``, ``train_shots``, ``inner_*``,
    ``eval_inner_*``, ...) left ``None`` are filled from ``preset`` (:data:`~reptile.fewshot.PRESETS`).
    ``channels_last`` lays convolutions out channels-last in the evaluation; the trainer's own
    ``TrainConfig.channels_last`` does it for meta-training.
    """

    preset: str | None = None
    dataset: str = "glyphs"
    data_dir: str | None = None
    no_rotations: bool = False
    ways: int | None = None
    shots: int | None = None
    train_shots: int | None = None
    inner_steps: int | None = None
    inner_batch: int | None = None
    inner_lr: float | None = None
    inner_optimizer: str | None = None
    outer_lr: float | None = None
    iterations: int | None = None
    meta_batch: int | None = None
    eval_inner_steps: int | None = None
    eval_inner_batch: int | None = None
    tail: int | None = None
    test_shots: int = 1
    eval_split: str = "test"
    transductive: bool = False
    eval_state: str = "checkpoint"
    model: str = "auto"
    filters: int | None = None
    norm: str = "batch"
    convention: str = "pytorch"  # "tensorflow": the official code's init and 'SAME' padding (reptile.models)
    channels_last: bool = False

    def __post_init__(self) -> None:
        names = {f.name for f in fields(self)}
        for k, v in preset_defaults(self.preset).items():
            if k in names and getattr(self, k) is None:
                object.__setattr__(self, k, v)


def build_fewshot(cfg: FewShotConfig) -> Setup:
    """The few-shot setup of ``cfg``: the paper's CNN, cross-entropy, :class:`EpisodeSampler` over
    the training split, and :func:`evaluate_fewshot` on ``cfg.eval_split``.

    Raises:
        ValueError: a split with fewer classes than ``ways`` or smaller classes than the shots need.
    """
    dtype, device = dtype_of(cfg.dtype), device_of(cfg.device)
    splits = load_splits(cfg.dataset, cfg.data_dir, cfg.seed, not cfg.no_rotations)
    train = splits["train"]
    model = seeded_init(cfg.seed, lambda: build_fewshot_model(train, cfg.ways, cfg.model, cfg.filters, cfg.norm,
                                                               cfg.convention))
    model = model.to(dtype=dtype, device=device)
    loss_fn = make_loss(model, "cross_entropy")
    sampler = EpisodeSampler(train, cfg.ways, cfg.train_shots, cfg.inner_steps, cfg.inner_batch, cfg.schedule,
                             cfg.tail, device, dtype)
    for split, needed, what in (("train", cfg.train_shots, f"`train_shots` {cfg.train_shots}"),
                                (cfg.eval_split, cfg.shots + cfg.test_shots,
                                 f"`shots` {cfg.shots} + `test_shots` {cfg.test_shots}")):
        if splits[split].n_classes < cfg.ways:
            raise ValueError(f"the {split} split of {cfg.dataset} has {splits[split].n_classes} classes, fewer "
                             f"than `ways` {cfg.ways}")
        if splits[split].min_class_size < needed:
            raise ValueError(f"{what} exceed the {splits[split].min_class_size} examples of the smallest "
                             f"{split} class of {cfg.dataset}")

    def evaluate(phi: Params, o: EvalOptions) -> dict[str, float]:
        modes = ("non_transductive", "transductive") if (o.transductive or cfg.transductive) \
            else ("non_transductive",)
        state = _checkpoint_state(o.inner_state, phi) if (o.state or cfg.eval_state) == "checkpoint" else None
        opt = make_optimizer(cfg.inner_optimizer, cfg.inner_lr)
        ev = evaluate_fewshot(model, phi, splits[o.split or cfg.eval_split], n_way=cfg.ways, shots=cfg.shots,
                              inner_steps=cfg.eval_inner_steps, inner_batch=cfg.eval_inner_batch, optimizer=opt,
                              state=state, n_tasks=o.n_tasks, seed=o.seed, test_shots=cfg.test_shots,
                              schedule="cycle", modes=modes, loss_fn=loss_fn, channels_last=cfg.channels_last,
                              progress=o.progress)
        out = ev.metrics()
        out["eval_adam_state_from_checkpoint"] = float(state is not None)
        return out

    return Setup(model, loss_fn, params_of(model), sampler, evaluate, model_spec(model))


def _checkpoint_state(state: State | None, phi: Params) -> State | None:
    """The inner-optimizer state saved with ``phi`` (the trainer's, or a checkpoint's
    ``inner_state``), on ``phi``'s device; ``None`` when there is none (before training, or SGD,
    which keeps no state): every test task then starts from a fresh state."""
    return state_like(state, next(iter(phi.values())))


def _build(settings: Any) -> Setup:
    """The setup of saved settings (a mapping, or a namespace object of attributes); what is unset
    comes from the preset and :class:`FewShotConfig`."""
    values = settings if isinstance(settings, dict) else vars(settings)
    return build_fewshot(config_from(FewShotConfig, values))
