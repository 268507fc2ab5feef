"""Few-shot classification: the Reptile paper's N-way K-shot protocol on the toolkit.

Meta-training (paper section 6, official code ``train``): each task is an N-way episode with
``train_shots`` examples per class (10 on Omniglot in Table 3, more than the K shots of the test
tasks); the inner loop takes ``inner_steps`` minibatches of ``inner_batch`` of them, chosen by the
engine's schedules (``cycle`` exactly as the official ``_mini_batches``, ``replacement``,
``separate_tail``). :class:`EpisodeSampler` returns them stacked, ``(x[k, b, C, H, W], y[k, b])``,
for :class:`reptile.train.MetaTrainer`.

Evaluation (official code ``evaluate``), :func:`evaluate_fewshot`: for each test task draw N
classes with K training examples and one held-out example each; fine-tune from the meta-learned
initialization on the training examples only (``eval_inner_steps`` minibatches of
``eval_inner_batch``, the same inner optimizer: Adam with beta1 = 0); classify the held-out
examples; the parameters *and the Adam moments* are restored before the next task. With the
functional optimizer state that restoring is automatic: every task starts from the same state
(the one saved with the meta-trained checkpoint, as the official code's backup/restore of all
variables does, or a fresh one).

* non-transductive (the default): each test example is classified by a forward pass on all the
  training examples plus that one example, so batch-norm statistics come from the training
  examples and a single test example (the example's logits do not depend on the other test
  examples);
* transductive: the whole test set in one forward pass, batch-norm statistics shared across the
  test examples.

Accuracy is the fraction of held-out examples classified correctly, averaged over tasks, with a
95% confidence interval over tasks (``1.96 * std / sqrt(n_tasks)``, as MAML reports);
:func:`summarize_seeds` gives the mean and sample standard deviation over independently trained
seeds, as the Reptile paper reports its own rows (e.g. 95.39 +- 0.09 over 3 seeds).

Presets (:data:`PRESETS`) hold the hyper-parameters of the paper's appendix Tables 3-4
(Omniglot 5/20-way 1/5-shot, Mini-ImageNet 5-way 1/5-shot). They are dataset-independent: the
image size and channels come from the dataset (glyphs/Omniglot 28x28x1 -> ``OmniglotCNN``,
Mini-ImageNet 84x84x3 -> ``MiniImageNetCNN``). The tables are Reptile's; ``--algorithm fomaml``
or ``maml`` reuse the same values (the official code's first-order MAML runs share those flags;
MAML's own published settings use an SGD inner loop and differ).

Command line (``reptile train fewshot ...``, or ``reptile train --preset NAME ...``) and
``python -m reptile.fewshot report RUN [RUN ...]`` (accuracy of each run with its CI, and mean +-
std over the runs): see docs/fewshot.md.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from .data.episodes import Episode, sample_episode
from .data.images import ImageClassDataset
from .families import Family, Setup, device_of, dtype_of, register_family, seeded_init
from .inner import SGD, Adam, State, adapt, make_optimizer
from .losses import make_loss, params_of
from .models import MiniImageNetCNN, OmniglotCNN, model_spec
from .tasks.schedules import SCHEDULES, gather, minibatch_indices
from .types import Batch, LossFn, Params

__all__ = [
    "Preset", "PRESETS", "PAPER_RESULTS", "DATASET_LOADERS", "register_dataset", "load_splits",
    "build_fewshot_model", "EpisodeSampler", "episode_batches", "predict_transductive",
    "predict_non_transductive", "FewShotEvaluation", "evaluate_task", "evaluate_fewshot",
    "summarize_seeds", "MODES", "main",
]

MODES = ("non_transductive", "transductive")


# ----------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class Preset:
    """One column of the paper's appendix Table 3 (Omniglot) or Table 4 (Mini-ImageNet).

    ``iterations`` is the paper's outer-iteration count (100K or 200K): far beyond a CPU; pass
    ``--iterations`` to shorten a run (the outer step then anneals to 0 over the shorter run).
    """

    name: str
    table: str
    ways: int
    shots: int
    train_shots: int
    inner_lr: float
    inner_batch: int
    inner_steps: int
    outer_lr: float
    iterations: int
    meta_batch: int
    eval_inner_steps: int
    eval_inner_batch: int
    inner_optimizer: str = "adam"

    def defaults(self) -> dict[str, Any]:
        """The values as ``reptile train`` option names (``ways``, ``inner_lr``, ...)."""
        return {k: v for k, v in asdict(self).items() if k not in ("name", "table")}


def _omniglot(name: str, ways: int, shots: int) -> Preset:
    five = ways == 5
    return Preset(name, "Table 3 (Omniglot)", ways=ways, shots=shots, train_shots=10,
                  inner_lr=0.001 if five else 0.0005, inner_batch=10 if five else 20,
                  inner_steps=5 if five else 10, outer_lr=1.0, iterations=100_000 if five else 200_000,
                  meta_batch=5, eval_inner_steps=50, eval_inner_batch=5 if five else 10)


def _mini(name: str, shots: int) -> Preset:
    return Preset(name, "Table 4 (Mini-ImageNet)", ways=5, shots=shots, train_shots=15, inner_lr=0.001,
                  inner_batch=10, inner_steps=8, outer_lr=1.0, iterations=100_000, meta_batch=5,
                  eval_inner_steps=50, eval_inner_batch=5 if shots == 1 else 15)


#: the paper's hyper-parameter tables (appendix Tables 3-4), by preset name
PRESETS: dict[str, Preset] = {p.name: p for p in (
    _omniglot("omniglot-5w1s", 5, 1), _omniglot("omniglot-5w5s", 5, 5),
    _omniglot("omniglot-20w1s", 20, 1), _omniglot("omniglot-20w5s", 20, 5),
    _mini("miniimagenet-5w1s", 1), _mini("miniimagenet-5w5s", 5))}

#: published accuracies (%) per preset: Reptile's +- is a std over 3 seeds, MAML's (and FOMAML's,
#: both from Finn et al. 2017) a 95% CI over tasks; MAML/FOMAML rows are transductive.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "omniglot-5w1s": {"maml+transduction": 98.7, "fomaml+transduction": 98.3, "reptile": 95.39,
                      "reptile+transduction": 97.68},
    "omniglot-5w5s": {"maml+transduction": 99.9, "fomaml+transduction": 99.2, "reptile": 98.90,
                      "reptile+transduction": 99.48},
    "omniglot-20w1s": {"maml+transduction": 95.8, "fomaml+transduction": 89.4, "reptile": 88.14,
                       "reptile+transduction": 89.43},
    "omniglot-20w5s": {"maml+transduction": 98.9, "fomaml+transduction": 97.9, "reptile": 96.65,
                       "reptile+transduction": 97.12},
    "miniimagenet-5w1s": {"maml+transduction": 48.70, "fomaml+transduction": 48.07, "reptile": 47.07,
                          "reptile+transduction": 49.97},
    "miniimagenet-5w5s": {"maml+transduction": 63.11, "fomaml+transduction": 63.15, "reptile": 62.74,
                          "reptile+transduction": 65.99},
}

#: family defaults when no preset is given: Omniglot 5-way 1-shot (Table 3)
DEFAULT_PRESET = "omniglot-5w1s"


# ---------------------------------------------------------------------------------- datasets
Loader = Callable[..., dict[str, ImageClassDataset]]

#: extra datasets by name: ``loader(data_dir, seed, rotations) -> {"train", "val", "test"}``
DATASET_LOADERS: dict[str, Loader] = {}


def register_dataset(name: str, loader: Loader) -> None:
    """Make ``--dataset NAME`` available: ``loader(data_dir, seed, rotations)`` returns the splits.

    Registered names take precedence over :data:`reptile.data.DATASETS` (glyphs, omniglot,
    miniimagenet); register before the command-line parser is built.
    """
    DATASET_LOADERS[name] = loader
    load_splits.cache_clear()


#: the datasets of :func:`reptile.data.load_dataset`
BUILTIN_DATASETS = ("glyphs", "omniglot", "miniimagenet")


def dataset_names() -> list[str]:
    return sorted(set(BUILTIN_DATASETS) | set(DATASET_LOADERS))


@lru_cache(maxsize=4)
def load_splits(name: str, data_dir: str | None = None, seed: int = 0,
                rotations: bool = True) -> dict[str, ImageClassDataset]:
    """``{"train", "val", "test"}`` of a dataset (cached per process).

    ``rotations`` adds the 90/180/270-degree rotations of every training character as new classes
    (the Omniglot protocol of MAML and Reptile); it applies to character datasets (glyphs,
    Omniglot) and is ignored for Mini-ImageNet.
    """
    if name in DATASET_LOADERS:
        return DATASET_LOADERS[name](data_dir, seed, rotations)
    from .data import load_dataset
    key = name.lower().replace("-", "").replace("_", "")
    kwargs = {"augment_rotations": rotations} if key in ("glyphs", "omniglot") else {}
    return load_dataset(name, data_dir, seed=seed, **kwargs)


def build_fewshot_model(dataset: ImageClassDataset, n_way: int, model: str = "auto", filters: int | None = None,
                        norm: str = "batch") -> nn.Module:
    """The paper's CNN for the dataset's image shape.

    ``model="auto"`` picks ``OmniglotCNN`` (64 filters, stride-2 convolutions) for images smaller
    than 64 pixels (glyphs, Omniglot: 28x28x1) and ``MiniImageNetCNN`` (32 filters, max-pooling)
    otherwise (Mini-ImageNet: 84x84x3). Channels and image size always come from the dataset.
    """
    shape = dataset.image_shape
    assert shape is not None
    h, w = shape[:2]
    if h != w:
        raise ValueError(f"the few-shot CNNs expect square images, the dataset has {h}x{w}")
    if model == "auto":
        model = "omniglot" if h < 64 else "miniimagenet"
    if model not in ("omniglot", "miniimagenet"):
        raise ValueError(f"unknown few-shot model {model!r}; choose auto, omniglot or miniimagenet")
    cls = OmniglotCNN if model == "omniglot" else MiniImageNetCNN
    f = filters if filters is not None else (64 if model == "omniglot" else 32)
    return cls(n_way=n_way, in_channels=dataset.channels, filters=f, norm=norm, image_size=h)


# ------------------------------------------------------------------------------ meta-training
def to_channels_last(x: Tensor) -> Tensor:
    """Images ``[..., C, H, W]`` stored channels-last, so that every ``[b, C, H, W]`` slice is."""
    n = x.ndim
    perm = (*range(n - 3), n - 2, n - 1, n - 3)
    inv = (*range(n - 3), n - 1, n - 3, n - 2)
    return x.permute(perm).contiguous().permute(inv)


def params_channels_last(phi: Params) -> Params:
    """Convolution kernels (4-d leaves) in ``torch.channels_last`` memory format; others unchanged."""
    return {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in phi.items()}


def episode_batches(x: Tensor, y: Tensor, inner_steps: int, inner_batch: int, rng: np.random.Generator,
                    schedule: str = "cycle", tail: int | None = None) -> Batch:
    """Stack ``inner_steps`` minibatches of ``inner_batch`` of a task's examples ``x[n, ...], y[n]``.

    Returns ``(x[k, b, ...], y[k, b])`` following ``schedule`` (see
    :func:`reptile.tasks.schedules.minibatch_indices`).
    """
    return gather(x, y, minibatch_indices(len(x), inner_steps, inner_batch, schedule, rng, tail))


@dataclass
class EpisodeSampler:
    """Draws one meta-training task: an N-way episode of ``train_shots`` examples per class.

    ``sampler(rng)`` returns ``(x[inner_steps, inner_batch, C, H, W], y[inner_steps, inner_batch])``
    with labels in ``0..ways-1``; only the episode's training examples are used (no held-out
    examples are drawn during meta-training, as in the official code).
    """

    dataset: ImageClassDataset
    ways: int
    train_shots: int
    inner_steps: int
    inner_batch: int
    schedule: str = "cycle"
    tail: int | None = None
    device: torch.device | str | None = None
    dtype: torch.dtype = torch.float32
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown minibatch schedule {self.schedule!r}; choose one of {SCHEDULES}")
        n = self.ways * self.train_shots
        if self.schedule != "separate_tail" and self.inner_batch > n:
            raise ValueError(f"inner batch {self.inner_batch} exceeds the {n} training examples of a "
                             f"{self.ways}-way {self.train_shots}-shot task; lower --inner-batch or raise --train-shots")

    def __call__(self, rng: np.random.Generator) -> Batch:
        ep = sample_episode(self.dataset, rng, self.ways, self.train_shots, test_shots=0, device=self.device,
                            dtype=self.dtype)
        x, y = episode_batches(ep.train_x, ep.train_y, self.inner_steps, self.inner_batch, rng, self.schedule,
                               self.tail)
        return (to_channels_last(x) if self.channels_last else x), y


# --------------------------------------------------------------------------------- evaluation
def predict_transductive(model: nn.Module, params: Params, train_x: Tensor, test_x: Tensor) -> Tensor:
    """Logits ``[n_test, n_way]`` of the whole test set in one forward pass (statistics shared).

    ``train_x`` is not used; it is accepted so both predictors share a signature.
    """
    with torch.no_grad():
        return functional_call(model, params, (test_x,))


def predict_non_transductive(model: nn.Module, params: Params, train_x: Tensor, test_x: Tensor) -> Tensor:
    """Logits ``[n_test, n_way]``: test example ``i`` is classified by a forward pass on
    ``cat(train_x, test_x[i:i+1])`` (its logits are the last row), so batch-norm statistics come
    from all training examples plus that single test example (official code, ``transductive=False``).

    The ``n_test`` forward passes run as one ``vmap``; the logits of an example do not depend on
    the other test examples.
    """
    def one(t: Tensor) -> Tensor:
        return functional_call(model, params, (torch.cat([train_x, t.unsqueeze(0)]),))[-1]

    with torch.no_grad():
        return vmap(one)(test_x)


PREDICTORS = {"non_transductive": predict_non_transductive, "transductive": predict_transductive}


def evaluate_task(model: nn.Module, loss_fn: LossFn, phi: Params, episode: Episode, inner_steps: int,
                  inner_batch: int, optimizer: SGD | Adam, rng: np.random.Generator, state: State | None = None,
                  schedule: str = "cycle", modes: Sequence[str] = MODES,
                  channels_last: bool = False) -> dict[str, float]:
    """Fine-tune on one episode's training examples, then classify its held-out examples.

    ``inner_steps`` minibatches of ``inner_batch`` training examples (``schedule``; the official
    code uses ``cycle``; a batch larger than the N*K training examples is clipped to all of them)
    are taken with ``optimizer`` from ``phi`` and ``state``; neither ``phi``
    nor ``state`` is modified (the functional optimizer returns a new state, so every task starts
    from the same moments: the official code's backup and restore). Returns the fraction of
    held-out examples classified correctly, per mode in ``modes``.
    """
    for m in modes:
        if m not in PREDICTORS:
            raise ValueError(f"unknown evaluation mode {m!r}; choose from {MODES}")
    train_x, test_x = episode.train_x, episode.test_x
    if channels_last:
        train_x, test_x = to_channels_last(train_x), to_channels_last(test_x)
    adapted = phi
    if inner_steps > 0:
        batches = episode_batches(train_x, episode.train_y, inner_steps, min(inner_batch, len(train_x)), rng,
                                  schedule)
        adapted = adapt(loss_fn, phi, batches, optimizer, state).end
    out = {}
    for m in modes:
        pred = PREDICTORS[m](model, adapted, train_x, test_x).argmax(-1)
        out[m] = float((pred == episode.test_y).float().mean())
    return out


@dataclass
class FewShotEvaluation:
    """Accuracy over test tasks: ``per_task[mode]`` holds each task's fraction correct.

    ``accuracy(mode)`` is their mean (= correct / all held-out examples, as the official code
    counts), ``ci95(mode)`` the half-width of the 95% confidence interval over tasks,
    ``1.96 * std(ddof=1) / sqrt(n_tasks)``.
    """

    per_task: dict[str, np.ndarray]
    n_way: int
    shots: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tasks(self) -> int:
        return len(next(iter(self.per_task.values())))

    def accuracy(self, mode: str = "non_transductive") -> float:
        return float(self.per_task[mode].mean())

    def ci95(self, mode: str = "non_transductive") -> float:
        a = self.per_task[mode]
        return float(1.96 * a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """``{prefix}accuracy`` (non-transductive), ``{prefix}accuracy_transductive`` and ``_ci95``s."""
        out = {}
        for m in self.per_task:
            key = f"{prefix}accuracy" + ("" if m == "non_transductive" else "_transductive")
            out[key], out[key + "_ci95"] = self.accuracy(m), self.ci95(m)
        return out


def evaluate_fewshot(model: nn.Module, phi: Params, dataset: ImageClassDataset, *, n_way: int = 5, shots: int = 1,
                     inner_steps: int = 50, inner_batch: int = 5, optimizer: SGD | Adam | None = None,
                     state: State | None = None, n_tasks: int = 100, seed: int = 12345, test_shots: int = 1,
                     schedule: str = "cycle", modes: Sequence[str] = MODES, loss_fn: LossFn | None = None,
                     channels_last: bool = False, progress: bool = False) -> FewShotEvaluation:
    """The paper's few-shot evaluation of an initialization ``phi`` on ``n_tasks`` unseen tasks.

    Args:
        model: the network ``phi`` belongs to.
        phi: the meta-learned initialization (not modified).
        dataset: the classes to draw test tasks from (the meta-test split).
        n_way, shots: N and K of the test tasks.
        inner_steps, inner_batch: the paper's "eval inner iterations" (50) and "eval inner batch".
        optimizer: the inner optimizer (default ``Adam(0.001, beta1=0)``, Table 3).
        state: its state to start every task from (the trainer's ``inner_state``, i.e. the Adam
            moments of meta-training, as the official code; ``None``: fresh moments).
        n_tasks: test tasks (the official code uses 10000).
        seed: task ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so the first
            ``n`` tasks do not depend on ``n_tasks``.
        test_shots: held-out examples per class (official code: 1).
        schedule: minibatch schedule of the fine-tuning (official: ``cycle``).
        modes: ``"non_transductive"`` and/or ``"transductive"``; both use the same fine-tuned
            weights.
        loss_fn: the training loss (default cross-entropy of ``model``).
        channels_last: run convolutions in channels-last memory format.
    Returns:
        :class:`FewShotEvaluation`.
    """
    optimizer = optimizer if optimizer is not None else Adam(0.001)
    loss_fn = loss_fn if loss_fn is not None else make_loss(model, "cross_entropy")
    like = next(iter(phi.values()))
    if channels_last:
        phi = params_channels_last(phi)
        state = _map_state(state, params_channels_last) if state is not None else None
    per: dict[str, list[float]] = {m: [] for m in modes}
    it = range(n_tasks)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc="evaluating", leave=False)
    for i in it:
        rng = np.random.default_rng([seed, i])
        ep = sample_episode(dataset, rng, n_way, shots, test_shots, device=like.device, dtype=like.dtype)
        res = evaluate_task(model, loss_fn, phi, ep, inner_steps, inner_batch, optimizer, rng, state, schedule,
                            modes, channels_last)
        for m in modes:
            per[m].append(res[m])
    settings = dict(inner_steps=inner_steps, inner_batch=inner_batch, n_tasks=n_tasks, seed=seed,
                    test_shots=test_shots, schedule=schedule, optimizer=repr(optimizer),
                    state="given" if state is not None else "fresh")
    return FewShotEvaluation({m: np.asarray(v) for m, v in per.items()}, n_way, shots, settings)


def _map_state(state: State, fn: Callable[[Params], Params]) -> State:
    return {k: fn(v) if isinstance(v, dict) else v for k, v in state.items()}


def summarize_seeds(accuracies: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) over independently trained seeds.

    This is the +- of the Reptile paper's own rows (3 seeds); ``nan`` std for a single seed.
    """
    a = np.asarray(accuracies, dtype=float)
    if a.size == 0:
        raise ValueError("summarize_seeds needs at least one accuracy")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan")


# ------------------------------------------------------------------------------ CLI family
class _ExplicitStore(argparse._StoreAction):
    """A store action that also records ``<dest>_given = True`` (so presets know what was typed)."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        super().__call__(parser, namespace, values, option_string)
        setattr(namespace, f"{self.dest}_given", True)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "few-shot classification (family 'fewshot'; paper section 6, appendix Tables 3-4)",
        "Unset values come from --preset (default omniglot-5w1s). Image size and channels come from "
        "the dataset: glyphs/omniglot 28x28x1 -> OmniglotCNN, miniimagenet 84x84x3 -> MiniImageNetCNN. "
        "--algorithm maml differentiates through the Adam inner loop (second order): exact but slow "
        "and memory-hungry, growing with --inner-steps; fomaml and reptile are first order.")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="hyper-parameters of the paper's Table 3/4 column (implies the fewshot family); "
                        "any flag given explicitly overrides it")
    g.add_argument("--dataset", choices=dataset_names(), default="glyphs",
                   help="glyphs (generated from fonts, always available; default), omniglot or miniimagenet "
                        "(read from --data-dir)")
    g.add_argument("--data-dir", default=None,
                   help="folder of Omniglot/Mini-ImageNet (see docs/data.md), or the glyph cache folder")
    g.add_argument("--no-rotations", action="store_true",
                   help="do not add 90/180/270-degree rotations of training characters as new classes "
                        "(the Omniglot protocol adds them; glyphs/omniglot only)")
    g.add_argument("--ways", type=_pos_int, default=None, help="N: classes per task")
    existing = p._option_string_actions.get("--shots")
    if existing is not None:
        # ``--shots`` is shared with the sine family (points at test time, default 10): keep its
        # action, but record when it is typed so that a preset can supply the few-shot K.
        existing.__class__ = _ExplicitStore
        existing.help = (f"{existing.help}; fewshot: K, training examples per class of a test task "
                         f"(default: the preset's)")
        p.set_defaults(shots_given=False)
    else:
        g.add_argument("--shots", type=_pos_int, default=None, help="K: training examples per class of a test task")
    g.add_argument("--train-shots", type=_pos_int, default=None,
                   help="examples per class of a meta-training task (paper: 10 Omniglot, 15 Mini-ImageNet)")
    g.add_argument("--tail", type=_pos_int, default=None,
                   help="--schedule separate_tail: examples reserved for the last minibatch (default --inner-batch)")
    g.add_argument("--eval-inner-steps", type=_nonneg_int, default=None,
                   help="fine-tuning steps on a test task (paper: 50)")
    g.add_argument("--eval-inner-batch", type=_pos_int, default=None, help="fine-tuning minibatch size (Tables 3-4)")
    g.add_argument("--test-shots", type=_pos_int, default=1, help="held-out examples per class of a test task (default 1)")
    g.add_argument("--eval-split", choices=("test", "val", "train"), default="test",
                   help="split the evaluation tasks come from (default test: unseen alphabets/classes)")
    g.add_argument("--transductive", action="store_true",
                   help="also report transductive accuracy (the whole test set in one batch, batch-norm "
                        "statistics shared); the default protocol is non-transductive")
    g.add_argument("--eval-state", choices=("checkpoint", "fresh"), default="checkpoint",
                   help="Adam moments each test task starts from: those saved with the evaluated checkpoint "
                        "(official code; default) or fresh ones")
    g.add_argument("--model", choices=("auto", "omniglot", "miniimagenet"), default="auto",
                   help="network (auto: by image size)")
    g.add_argument("--filters", type=_pos_int, default=None,
                   help="convolution filters per layer (paper: 64 OmniglotCNN, 32 MiniImageNetCNN)")
    g.add_argument("--norm", choices=("batch", "group", "none"), default="batch",
                   help="batch: batch statistics always, as the paper (default)")
    g.add_argument("--channels-last", action="store_true",
                   help="channels-last memory format for convolutions (faster on some CPUs; measure)")


def _pos_int(text: str) -> int:
    from .cli import positive_int
    return positive_int(text)


def _nonneg_int(text: str) -> int:
    from .cli import nonneg_int
    return nonneg_int(text)


def preset_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """Values of ``--preset`` (or the family default, Omniglot 5-way 1-shot) for unset options.

    Called by ``reptile.cli.train.resolve``, which fills every option still ``None`` from the
    returned dict. ``--shots`` is shared with the sine family (default 10 there); unless it was
    typed, the preset's K replaces it.
    """
    name = getattr(args, "preset", None) or DEFAULT_PRESET
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    if not getattr(args, "shots_given", True):
        args.shots = None
    return PRESETS[name].defaults()


def _resolved(args: argparse.Namespace) -> argparse.Namespace:
    """Fill what ``resolve`` would, so :func:`_build` also works on a bare namespace."""
    a = argparse.Namespace(**vars(args))
    for k, v in preset_defaults(a).items():
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    for k, v in dict(dataset="glyphs", data_dir=None, no_rotations=False, tail=None, test_shots=1,
                     eval_split="test", transductive=False, eval_state="checkpoint", model="auto", filters=None,
                     norm="batch", channels_last=False, schedule="cycle", dtype="float32", device="cpu",
                     seed=0, algorithm="reptile").items():
        if not hasattr(a, k):
            setattr(a, k, v)
    return a


def _build(args: argparse.Namespace) -> Setup:
    args = _resolved(args)
    dtype, device = dtype_of(args.dtype), device_of(args.device)
    splits = load_splits(args.dataset, args.data_dir, args.seed, not args.no_rotations)
    train = splits["train"]
    model = seeded_init(args.seed, lambda: build_fewshot_model(train, args.ways, args.model, args.filters, args.norm))
    model = model.to(dtype=dtype, device=device)
    loss_fn = make_loss(model, "cross_entropy")
    phi = params_of(model)
    if args.channels_last:
        phi = params_channels_last(phi)
    sampler = EpisodeSampler(train, args.ways, args.train_shots, args.inner_steps, args.inner_batch,
                             args.schedule, args.tail, device, dtype, args.channels_last)
    for split, needed, what in (("train", args.train_shots, f"--train-shots {args.train_shots}"),
                                (args.eval_split, args.shots + args.test_shots,
                                 f"--shots {args.shots} + --test-shots {args.test_shots}")):
        if splits[split].n_classes < args.ways:
            raise ValueError(f"the {split} split of {args.dataset} has {splits[split].n_classes} classes, fewer "
                             f"than --ways {args.ways}")
        if splits[split].min_class_size < needed:
            raise ValueError(f"{what} exceed the {splits[split].min_class_size} examples of the smallest "
                             f"{split} class of {args.dataset}")

    def evaluate(phi: Params, a: argparse.Namespace) -> dict[str, float]:
        modes = ("non_transductive", "transductive") if (getattr(a, "transductive", False) or args.transductive) \
            else ("non_transductive",)
        eval_state = getattr(a, "eval_state", None) or args.eval_state
        state = _checkpoint_state(a, args, phi) if eval_state == "checkpoint" else None
        split = getattr(a, "eval_split", None) or args.eval_split
        opt = make_optimizer(args.inner_optimizer, args.inner_lr)
        ev = evaluate_fewshot(model, phi, splits[split], n_way=args.ways, shots=args.shots,
                              inner_steps=args.eval_inner_steps, inner_batch=args.eval_inner_batch, optimizer=opt,
                              state=state, n_tasks=a.eval_tasks, seed=a.eval_seed, test_shots=args.test_shots,
                              schedule="cycle", modes=modes, loss_fn=loss_fn,
                              channels_last=args.channels_last)
        out = ev.metrics()
        out["eval_adam_state_from_checkpoint"] = float(state is not None)
        return out

    spec = model_spec(model)
    return Setup(model, loss_fn, phi, sampler, evaluate, spec)


def _checkpoint_state(a: argparse.Namespace, args: argparse.Namespace, phi: Params) -> State | None:
    """The inner-optimizer state saved with the checkpoint whose parameters are ``phi``, if any.

    ``reptile eval RUN`` names the run (``a.run``); ``reptile train`` writes to ``--out`` or
    ``runs/<family>-<algorithm>-seed<seed>``. Before training no checkpoint matches, and a fresh
    state is exactly the trainer's initial one.
    """
    from .checkpoint import latest_checkpoint, load_checkpoint
    path = getattr(a, "run", None)
    if path is None:
        path = getattr(a, "out", None) or Path("runs") / f"{args.family if hasattr(args, 'family') else 'fewshot'}-" \
                                                         f"{args.algorithm}-seed{args.seed}"
    path = Path(path)
    try:
        if path.is_dir():
            found = latest_checkpoint(path / "checkpoints") or latest_checkpoint(path)
            if found is None:
                return None
            ckpt = found[1]
        elif path.is_file():
            ckpt = load_checkpoint(path)
        else:
            return None
    except (OSError, ValueError):
        return None
    saved, state = ckpt.get("params") or {}, ckpt.get("inner_state")
    if not state or saved.keys() != phi.keys():
        return None
    if not all(torch.equal(saved[k].to(phi[k].device, phi[k].dtype), phi[k]) for k in phi):
        return None
    like = next(iter(phi.values()))

    def move(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: move(v) for k, v in obj.items()}
        return obj.to(like.device) if isinstance(obj, Tensor) else obj
    return move(state)


class FewShotFamily(Family):
    """The few-shot family; ``preset_defaults`` lets ``resolve`` apply ``--preset``."""

    def preset_defaults(self, args: argparse.Namespace) -> dict[str, Any]:
        return preset_defaults(args)


_family_defaults = PRESETS[DEFAULT_PRESET].defaults()
register_family(FewShotFamily(
    "fewshot", "N-way K-shot image classification (paper section 6): glyphs, Omniglot, Mini-ImageNet",
    _add_arguments, _build, defaults=_family_defaults))


# ------------------------------------------------------------------- report over runs/seeds
def report(runs: Sequence[str | Path], eval_tasks: int = 1000, eval_seed: int = 12345, transductive: bool = True,
           eval_split: str | None = None, eval_state: str = "checkpoint", progress: bool = False
           ) -> dict[str, Any]:
    """Evaluate the newest checkpoint of each run (one per seed) and summarize over runs.

    Returns ``{"runs": [{run, iteration, accuracy, accuracy_ci95, ...}], "over_seeds":
    {metric: {"mean", "std", "n"}}}`` with accuracies as fractions.
    """
    from .checkpoint import resolve_checkpoint
    from .train import check_compatible
    rows = []
    for run in runs:
        path, ckpt = resolve_checkpoint(run)
        extra = ckpt.get("extra") or {}
        if extra.get("family") != "fewshot":
            raise ValueError(f"{path} was not trained on the few-shot family (family {extra.get('family')!r})")
        saved = argparse.Namespace(**extra["args"])
        saved.family = "fewshot"
        setup = _build(saved)
        check_compatible(ckpt, setup.phi, setup.spec)
        like = next(iter(setup.phi.values()))
        phi = {k: v.to(like) for k, v in ckpt["params"].items()}
        if getattr(saved, "channels_last", False):
            phi = params_channels_last(phi)
        a = argparse.Namespace(run=path, eval_tasks=eval_tasks, eval_seed=eval_seed, transductive=transductive,
                               eval_split=eval_split, eval_state=eval_state)
        metrics = setup.evaluate(phi, a)
        rows.append({"run": str(run), "checkpoint": str(path), "iteration": int(ckpt["iteration"]), **metrics})
    over = {}
    for key in ("accuracy", "accuracy_transductive"):
        vals = [r[key] for r in rows if key in r]
        if vals:
            m, s = summarize_seeds(vals)
            over[key] = {"mean": m, "std": s, "n": len(vals)}
    return {"runs": rows, "over_seeds": over}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reptile.fewshot report RUN [RUN ...]``: accuracy per run and over seeds."""
    p = argparse.ArgumentParser(prog="python -m reptile.fewshot",
                                description="Few-shot evaluation of trained runs (one per seed), as the paper's tables: "
                                            "each run's accuracy with a 95%% CI over tasks, and the mean +- sample "
                                            "standard deviation over runs.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="evaluate runs and summarize over seeds")
    r.add_argument("runs", nargs="+", help="run folders or checkpoint files (one per seed)")
    r.add_argument("--eval-tasks", type=_pos_int, default=1000, help="test tasks per run (default 1000; paper 10000)")
    r.add_argument("--eval-seed", type=_nonneg_int, default=12345)
    r.add_argument("--eval-split", choices=("test", "val", "train"), default=None,
                   help="split of the test tasks (default: the one the run was trained with, normally test)")
    r.add_argument("--eval-state", choices=("checkpoint", "fresh"), default="checkpoint")
    r.add_argument("--no-transductive", action="store_true", help="skip the transductive accuracy")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    try:
        res = report(args.runs, args.eval_tasks, args.eval_seed, not args.no_transductive, args.eval_split,
                     args.eval_state, args.progress)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"python -m reptile.fewshot: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res))
        return 0
    for row in res["runs"]:
        parts = [f"{row['run']} (iteration {row['iteration']}):"]
        for key in ("accuracy", "accuracy_transductive"):
            if key in row:
                parts.append(f"{key} {100 * row[key]:.2f} +- {100 * row[key + '_ci95']:.2f} % (95% CI, "
                             f"{args.eval_tasks} tasks)")
        print("  ".join(parts))
    for key, s in res["over_seeds"].items():
        std = "n/a (one run)" if math.isnan(s["std"]) else f"{100 * s['std']:.2f}"
        print(f"over {s['n']} run(s): {key} {100 * s['mean']:.2f} % +- {std} (sample std over seeds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
