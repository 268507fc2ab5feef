"""Few-shot plumbing shared by Table 3 and the gradient-combination and overlap figures.

Built on the few-shot family's public API (:mod:`reptile.fewshot`: dataset splits, the paper's
CNN, :class:`~reptile.fewshot.EpisodeSampler`, the two predictors) and the engine's
:class:`~reptile.train.MetaTrainer`; training runs through ``TrainConfig(compile=True,
channels_last=True)``, the fastest path on this CPU (docs/benchmarks.md).

Evaluation (:func:`evaluate`) is the official code's ``evaluate`` exactly as
:func:`reptile.fewshot.evaluate_fewshot` does it (same tasks from ``default_rng([seed, i])``, same
random draws, same fine-tuning batches, the same optimizer state at the start of every task,
non-transductive and/or transductive prediction from the same fine-tuned weights), with the
fine-tuning steps run by the compiled inner step of :mod:`reptile.fast` (3-4x faster here; equal
to the eager path up to float rounding, checked in ``tests/test_figure_provenance.py``).

Data: the glyph set (the project's Omniglot stand-in) with the Omniglot protocol's rotated copies
of the training characters. Fast mode uses ``"glyphs-small"``: three scripts, built in seconds.

Provenance: :func:`provenance` returns the command, git commit and seeds that every committed CSV
records.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch._dynamo

from reptile import fewshot
from reptile.data.episodes import sample_episode
from reptile.fast import make_meta_update
from reptile.inner import SGD, Adam, State
from reptile.losses import make_loss, params_of
from reptile.models import OmniglotCNN, seeded_init
from reptile.train import MetaTrainer, TrainConfig
from reptile.types import Params

ROOT = Path(__file__).resolve().parents[1]

# A figure trains dozens of short runs that share one compiled inner step; each new run (new
# optimizer object, new step count) may add a specialization. torch's default limit of 8 per
# function would silently fall back to eager (2-3x slower here) after the eighth.
torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)


@dataclass(frozen=True)
class Scale:
    """How big a run is: model width, training length, evaluation size, seeds."""

    filters: int = 32           # paper: 64
    iterations: int = 400       # paper: 40K (Figure 3) / 100K (Figure 4)
    eval_every: int = 100
    eval_tasks: int = 40        # test tasks per evaluation point
    test_shots: int = 1         # held-out examples per class of each test task (official code: 1)
    dataset: str = "glyphs"     # "glyphs-small" in fast mode
    seeds: tuple[int, ...] = (0, 1, 2)
    compile: bool = True        # torch.compile the inner step (2-3x faster per step; False in fast mode,
                                # where compiling would cost more than the few steps it speeds up)


def _small_glyphs(data_dir, seed, rotations):
    from reptile.data.glyphs import load_glyphs
    return load_glyphs(seed=seed, cache_dir=data_dir, augment_rotations=rotations, scripts=("Latn", "Grek", "Cyrl"))


if "glyphs-small" not in fewshot.DATASET_LOADERS:
    fewshot.register_dataset("glyphs-small", _small_glyphs)


def load_splits(dataset: str = "glyphs", seed: int = 0):
    """``{"train", "val", "test"}`` of ``dataset`` with rotation augmentation of the training split."""
    return fewshot.load_splits(dataset, None, seed, True)


def build_model(dataset, n_way: int, filters: int, seed: int = 0, convention: str = "pytorch"):
    """The paper's Omniglot CNN (``filters`` wide), its cross-entropy LossFn and initial params.

    ``convention`` as :class:`reptile.models.OmniglotCNN` (``"tensorflow"``: the official code's
    initialization and padding). The initialization is drawn with torch's RNG seeded by ``seed``.
    """
    shape = dataset.image_shape
    model = seeded_init(seed, lambda: OmniglotCNN(n_way=n_way, in_channels=dataset.channels, filters=filters,
                                                  image_size=shape[0], convention=convention))
    return model, make_loss(model, "cross_entropy"), params_of(model)


def make_sampler(dataset, n_way: int, shots: int, k: int, batch: int, schedule: str = "cycle",
                 tail: int | None = None) -> fewshot.EpisodeSampler:
    """Draws an ``n_way``-way ``shots``-shot task and returns its ``k`` stacked inner minibatches."""
    return fewshot.EpisodeSampler(dataset, n_way, shots, k, batch, schedule, tail)


class Evaluator:
    """The official few-shot evaluation with compiled fine-tuning steps (see the module docstring).

    ``Evaluator(model, loss_fn, optimizer)(phi, dataset, ...)`` returns
    ``{mode: per-task accuracies}``; build one per (model, optimizer) and reuse it, since each
    input shape compiles once (seconds, cached by torch under ``/tmp``).
    """

    def __init__(self, model: torch.nn.Module, loss_fn, optimizer: SGD | Adam, compile: bool = True) -> None:
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self._update = make_meta_update("reptile", loss_fn, optimizer, compile=compile)

    def __call__(self, phi: Params, dataset, *, n_way: int, shots: int, steps: int, batch: int, n_tasks: int,
                 state: State | None = None, seed: int = 12345, test_shots: int = 1,
                 modes: Sequence[str] = fewshot.MODES, progress: bool = False) -> dict[str, np.ndarray]:
        per: dict[str, list[float]] = {m: [] for m in modes}
        like = next(iter(phi.values()))
        it: Any = range(n_tasks)
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(it, desc="evaluating", leave=False)
        for i in it:
            # the same draws, in the same order, as reptile.fewshot.evaluate_fewshot / evaluate_task
            rng = np.random.default_rng([seed, i])
            ep = sample_episode(dataset, rng, n_way, shots, test_shots, device=like.device, dtype=like.dtype)
            adapted = phi
            if steps > 0:
                batches = fewshot.episode_batches(ep.train_x, ep.train_y, steps, min(batch, len(ep.train_x)), rng,
                                                  "cycle")
                u, _, _ = self._update(phi, batches, state)
                adapted = {k: phi[k] - u[k] for k in phi}
            for m in modes:
                pred = fewshot.PREDICTORS[m](self.model, adapted, ep.train_x, ep.test_x).argmax(-1)
                per[m].append(float((pred == ep.test_y).float().mean()))
        return {m: np.asarray(v) for m, v in per.items()}


def ci95(per_task: np.ndarray) -> float:
    """Half-width of the 95% confidence interval over tasks, ``1.96 * std(ddof=1) / sqrt(n)``."""
    return float(1.96 * per_task.std(ddof=1) / np.sqrt(len(per_task))) if len(per_task) > 1 else 0.0


def learning_curve(config: TrainConfig, sampler, scale: Scale, splits, *, n_way: int, eval_shots: int,
                   eval_steps: int, eval_batch: int, eval_optimizer: SGD | Adam, seed: int = 0,
                   mode: str = "non_transductive", evaluator: Evaluator | None = None,
                   until: int | None = None, **labels: Any) -> pd.DataFrame:
    """Meta-train with ``config`` (seed ``seed``), evaluating on the test split every ``scale.eval_every``.

    Returns one row per evaluation point: ``seed, iteration, accuracy, ci95`` plus ``labels``.
    Test tasks are the same at every point, for every seed and every algorithm (eval seed 12345).
    Pass the ``evaluator`` of a figure to every call: its model and loss function are then shared
    by all runs, so the compiled inner step is reused instead of compiled again per run.
    ``until`` stops after the evaluation point ``until`` (for regenerating one point).
    """
    model, loss_fn, phi = build_model(splits["train"], n_way, scale.filters, seed)
    if evaluator is not None:
        model, loss_fn = evaluator.model, evaluator.loss_fn  # same architecture; phi carries the seed's weights
    cfg = replace(config, seed=seed, log_every=10 ** 9, checkpoint_every=10 ** 9, compile=scale.compile,
                  channels_last=scale.compile)
    trainer = MetaTrainer(loss_fn, phi, sampler, cfg)
    ev = evaluator or Evaluator(model, loss_fn, eval_optimizer, compile=scale.compile)
    points = sorted({0, *range(scale.eval_every, config.iterations, scale.eval_every), config.iterations})
    if until is not None:  # stop early (the outer step still anneals over config.iterations)
        points = [t for t in points if t <= until]
    rows = []
    for t in points:
        if t > trainer.iteration:
            trainer.run(progress=False, until=t)
        # the eval optimizer starts fresh for SGD; Adam starts from the trainer's moments, as the official code
        state = trainer.inner_state if isinstance(eval_optimizer, Adam) else None
        acc = ev(trainer.phi, splits["test"], n_way=n_way, shots=eval_shots, steps=eval_steps, batch=eval_batch,
                 n_tasks=scale.eval_tasks, state=state, test_shots=scale.test_shots, modes=(mode,))[mode]
        rows.append({**labels, "seed": seed, "iteration": t, "accuracy": float(acc.mean()), "ci95": ci95(acc)})
    return pd.DataFrame(rows)


def git_commit() -> str:
    """The commit of the working tree (``+dirty`` when code under ``reptile/`` or ``figures/`` has
    uncommitted changes), or ``unknown``."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()
        # only code counts: outputs under figures/out and docs change while experiments run
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "reptile", "figures",
                                ":!figures/out"], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


#: the commit when this module was imported, i.e. of the code a long run actually executes (the
#: working tree may move on while it runs); ``+dirty`` if the code had uncommitted changes then
COMMIT_AT_START = git_commit()


def provenance(seeds: Sequence[int], argv: Sequence[str] | None = None) -> dict[str, str]:
    """``{"command", "commit", "seeds"}`` for the columns of a committed CSV (commit: :data:`COMMIT_AT_START`)."""
    args = list(sys.argv if argv is None else argv)
    if args and args[0].endswith(".py"):
        mod = Path(args[0]).resolve()
        try:
            args = ["python", "-m", ".".join(mod.relative_to(ROOT).with_suffix("").parts)] + args[1:]
        except ValueError:
            args = ["python"] + args
    return {"command": shlex.join(args), "commit": COMMIT_AT_START, "seeds": " ".join(str(s) for s in seeds)}


def add_provenance(df: pd.DataFrame, seeds: Sequence[int], mode: str) -> pd.DataFrame:
    """``df`` with the columns every committed figure CSV carries: :func:`provenance`'s command,
    commit and seeds, and the figure's ``mode``."""
    for key, value in provenance(seeds).items():
        df[key] = value
    df["mode"] = mode
    return df


def summarize(df: pd.DataFrame, by: list[str], value: str = "accuracy") -> pd.DataFrame:
    """Mean, sample std (ddof = 1) and count of ``value`` over seeds, per group of ``by``."""
    g = df.groupby(by, sort=False)[value]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def output_folder(fast: bool, out: str | Path | None) -> Path:
    """Where a figure writes: ``out`` (default ``figures/out``), except that fast mode (a smoke test)
    never writes to ``figures/out``: it gets a fresh temporary folder instead."""
    from figures.style import DEFAULT_OUT
    import tempfile
    folder = Path(out) if out is not None else Path(DEFAULT_OUT)
    if fast and folder.resolve() == Path(DEFAULT_OUT).resolve():
        return Path(tempfile.mkdtemp(prefix="reptile-figure-fast-"))
    return folder


def figure_cli(main, description: str, modes: Sequence[str], argv: Sequence[str] | None = None) -> list[Path]:
    """``python -m figures.NAME [--fast | --mode MODE] [--out DIR] [--threads N]``; prints what it wrote."""
    import argparse
    import time
    from figures.style import DEFAULT_OUT
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--fast", action="store_true", help="tiny smoke test (writes to a temporary folder unless --out)")
    p.add_argument("--mode", choices=list(modes), default=None, help="scale of the run (see SETTINGS)")
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tic = time.perf_counter()
    paths = main(fast=args.fast, out=args.out, mode=args.mode)
    print(f"wrote {', '.join(str(x) for x in paths)} in {time.perf_counter() - tic:.1f} s")
    return paths
