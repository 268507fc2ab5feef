"""The outer loop: serial or batched meta-training with checkpoints, metrics and resume.

Per outer iteration ``t`` (0-based), task ``j`` of the meta-batch is drawn from its own generator
``numpy.random.default_rng([seed, t, j])``; nothing else is random. So a run resumed from any
checkpoint, or split across processes, draws exactly the same tasks as an uninterrupted run and
ends with the same parameters (on the same device).

Outer step (paper Algorithm 2): ``phi <- phi - eps_t * mean_j u_j``, with ``u_j`` from
:func:`reptile.algorithms.meta_update` (``phi - phi~`` for Reptile) and ``eps_t`` annealed
linearly to 0 (``eps_t = eps_0 (1 - t / T)``); or ``mean_j u_j`` handed as the gradient to a
torch optimizer (``outer_optimizer="sgd" | "adam"``).
"""
from __future__ import annotations

import csv
import io
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch.func import vmap
from tqdm.auto import tqdm

from . import tree
from .algorithms import meta_update
from .config import TrainConfig
from .checkpoint import atomic_write_bytes, checkpoint_path, latest_checkpoint, save_checkpoint, validate_checkpoint
from .runfolder import RunFolder, check_fresh_start, check_resume_settings, find_resume_checkpoint, prune_own_checkpoints
from .inner import Adam, SGD, make_optimizer
from .types import LossFn, Params, TaskSampler

"""Draws one task and returns its k stacked minibatches ``(x[k, b, ...], y[k, b, ...])``."""


class TrainingDiverged(RuntimeError):
    """The loss or the parameters became NaN or infinite."""


class Callback(Protocol):
    """Called with ``(iteration, phi)`` every ``every`` iterations; returns metrics to log."""

    every: int

    def __call__(self, iteration: int, phi: Params) -> dict[str, float]: ...


#: fields that may differ between a run and its resumption (they do not change the numbers); kept as
#: an alias: :func:`reptile.runfolder.check_resume_settings` decides (``iterations`` may also be raised)
RESUMABLE_CHANGES = {"checkpoint_every", "log_every", "keep_checkpoints", "compile", "channels_last"}


@dataclass
class TrainResult:
    params: Params
    iteration: int
    history: list[dict[str, float]] = field(default_factory=list)


#: keys under which a distributed ``reduce`` also sums the inner losses (never parameter names: no dots)
_LOSS_FIRST, _LOSS_LAST = "__loss_first_sum__", "__loss_last_sum__"


def epsilon(config: TrainConfig, t: int) -> float:
    """Outer step size at iteration ``t``: ``outer_lr * (1 - t / iterations)`` if annealed."""
    return config.outer_lr * (1 - t / config.iterations) if config.anneal else config.outer_lr


def task_rng(seed: int, iteration: int, task: int) -> np.random.Generator:
    """The generator of task ``task`` of outer iteration ``iteration``."""
    return np.random.default_rng([seed, iteration, task])


class MetaTrainer:
    """Meta-trains ``phi`` on tasks from ``sampler``; see the module docstring for the update.

    Args:
        loss_fn: scalar loss of (params, batch).
        phi: initial parameters (copied).
        sampler: draws one task's k minibatches from a numpy Generator.
        config: :class:`TrainConfig`.
        out_dir: folder for ``checkpoints/`` and ``metrics.csv`` (``None``: keep nothing on disk).
        model_spec: stored in checkpoints so that loading can rebuild and check the model.
        callbacks: extra metrics (evaluation, gradient alignment, ...) logged to the CSV.
        task_slice: which meta-batch tasks this process computes (``range`` for distributed runs).
        reduce: combines the per-process sum of updates (all-reduce in distributed runs).
        is_writer: whether this process writes checkpoints and metrics (rank 0 only).
        extra: plain data stored in checkpoints (e.g. the task family, for ``reptile eval``).
    """

    def __init__(self, loss_fn: LossFn, phi: Params, sampler: TaskSampler, config: TrainConfig,
                 out_dir: str | Path | None = None, model_spec: dict[str, Any] | None = None,
                 callbacks: Sequence[Callback] = (), task_slice: range | None = None,
                 reduce: Callable[[Params], Params] | None = None, is_writer: bool = True,
                 extra: dict[str, Any] | None = None) -> None:
        config.validate()
        self.loss_fn, self.sampler, self.config = loss_fn, sampler, config
        self.phi = tree.clone(phi)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.model_spec, self.callbacks = model_spec, list(callbacks)
        self.task_slice = task_slice if task_slice is not None else range(config.meta_batch)
        self.reduce, self.is_writer, self.extra = reduce, is_writer, extra or {}
        self.optimizer: SGD | Adam = make_optimizer(config.inner_optimizer, config.inner_lr)
        self.inner_state = self.optimizer.init(self.phi)
        self.iteration = 0
        self.history: list[dict[str, float]] = []
        #: the writer's hold on ``out_dir`` (ownership, lock, marker); see :mod:`reptile.runfolder`
        self.folder = RunFolder(self.out_dir, "out_dir") if self.out_dir is not None and is_writer else None
        self._resumed = False
        #: the iteration of the last checkpoint this trainer wrote (None: none yet)
        self.saved_iteration: int | None = None
        #: notes on allowed setting changes made by the last :meth:`resume` (e.g. raised iterations)
        self.resume_notes: list[str] = []
        self._outer = self._make_outer_optimizer()
        self._fast = None  # reptile.fast.make_meta_update(...) when a fast path is selected
        from .fast import choose_fast_path, make_meta_update
        #: what the loop runs (compile / channels_last resolved, and why): reptile.fast.FastPath
        self.fast_path = choose_fast_path(config.compile, config.channels_last, config.algorithm, self.phi,
                                          config.batching)
        if config.batching == "loop" and (self.fast_path.compile or self.fast_path.channels_last):
            self._fast = make_meta_update(config.algorithm, loss_fn, self.optimizer, compile=self.fast_path.compile,
                                          channels_last=self.fast_path.channels_last,
                                          device=next(iter(self.phi.values())).device)

    # -- outer optimizer -------------------------------------------------------------------
    def _make_outer_optimizer(self) -> torch.optim.Optimizer | None:
        if self.config.outer_optimizer == "interpolate":
            return None
        self._leaves = {k: torch.nn.Parameter(v.clone()) for k, v in self.phi.items()}
        cls = torch.optim.SGD if self.config.outer_optimizer == "sgd" else torch.optim.Adam
        return cls(list(self._leaves.values()), lr=self.config.outer_lr)

    def _outer_step(self, update: Params, t: int) -> None:
        eps = epsilon(self.config, t)
        if self._outer is None:
            self.phi = tree.add(self.phi, update, -eps)
            return
        for group in self._outer.param_groups:
            group["lr"] = eps
        for k, p in self._leaves.items():
            p.grad = update[k].detach().clone()
        self._outer.step()
        self.phi = {k: p.detach().clone() for k, p in self._leaves.items()}

    # -- one iteration ---------------------------------------------------------------------
    def task_updates(self, t: int) -> tuple[Params, torch.Tensor]:
        """Sum of this process's task updates ``u_j`` for iteration ``t`` and their losses ``[n, k]``."""
        cfg = self.config
        batches = [self.sampler(task_rng(cfg.seed, t, j)) for j in self.task_slice]
        if cfg.batching == "vmap":
            x = torch.stack([b[0] for b in batches])
            y = torch.stack([b[1] for b in batches])
            def one(xb: torch.Tensor, yb: torch.Tensor) -> tuple[Params, torch.Tensor]:
                u, _, losses = meta_update(cfg.algorithm, self.loss_fn, self.phi, (xb, yb), self.optimizer,
                                           None, weights=cfg.weights)
                return u, losses
            us, losses = vmap(one, randomness="error")(x, y)
            return {k: v.sum(0) for k, v in us.items()}, losses
        if self._parallel_tasks(batches):
            return self._task_updates_in_threads(batches)
        total, all_losses = None, []
        for b in batches:
            state = None if cfg.reset_inner_state else self.inner_state
            if self._fast is not None:
                u, state, losses = self._fast(self.phi, b, state, weights=cfg.weights)
            else:
                u, state, losses = meta_update(cfg.algorithm, self.loss_fn, self.phi, b, self.optimizer, state,
                                               weights=cfg.weights)
            if not cfg.reset_inner_state:
                self.inner_state = state
            total = u if total is None else tree.add(total, u)
            all_losses.append(losses)
        return total, torch.stack(all_losses)

    @property
    def first_call_seconds(self) -> dict[tuple, float]:
        """Wall time of the first task update of every input shape on the fast path (mostly compilation:
        the "time to first iteration"); empty on the eager path."""
        return dict(self._fast.first_call_seconds) if self._fast is not None else {}

    def _parallel_tasks(self, batches: list) -> bool:
        """Whether to compute the tasks concurrently, one per intra-op thread (see
        :meth:`_task_updates_in_threads`): the compiled fast path, more than one torch thread and
        more than one task, tasks independent (fresh inner state per task: ``reset_inner_state`` or
        the state-free SGD), and the compiled graph already built for these shapes."""
        cfg = self.config
        independent = cfg.reset_inner_state or cfg.inner_optimizer == "sgd"
        return (self._fast is not None and self._fast.compiled and independent and len(batches) > 1
                and torch.get_num_threads() > 1 and self.phi[next(iter(self.phi))].device.type == "cpu"
                and all(self._fast.seen(self.phi, b) for b in batches))

    def _task_updates_in_threads(self, batches: list) -> tuple[Params, torch.Tensor]:
        """Independent tasks on ``n = torch.get_num_threads()`` Python threads with one intra-op thread
        each (the compiled kernels and convolutions release the GIL), then summed in task order.

        On a CPU the layers of the paper's CNNs are too small for oneDNN to split one convolution
        well over threads (the plain loop gains 15% from a second thread), while whole tasks split
        perfectly; batching the tasks into grouped convolutions (``vmap``) was measured no faster
        than separate ones. Each task is computed exactly as the one-thread loop computes it.
        """
        cfg = self.config
        n = min(torch.get_num_threads(), len(batches))
        pool = _task_pool(n)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            outs = list(pool.map(lambda b: self._fast(self.phi, b, None, weights=cfg.weights), batches))
        finally:
            torch.set_num_threads(threads)
        total = None
        for u, _, _ in outs:
            total = u if total is None else tree.add(total, u)
        if not cfg.reset_inner_state:  # SGD: the state is empty; keep what the loop would keep
            self.inner_state = outs[-1][1]
        return total, torch.stack([losses for _, _, losses in outs])

    def step(self) -> dict[str, float]:
        """Run outer iteration ``self.iteration`` and advance it; returns the iteration's metrics."""
        t = self.iteration
        total, losses = self.task_updates(t)
        if self.reduce is not None:
            # distributed: the loss sums travel with the update, so every rank logs and checks the same numbers
            total = self.reduce({**total, _LOSS_FIRST: losses[:, 0].sum().reshape(1).to(losses),
                                 _LOSS_LAST: losses[:, -1].sum().reshape(1).to(losses)})
            first = float(total.pop(_LOSS_FIRST)) / self.config.meta_batch
            last = float(total.pop(_LOSS_LAST)) / self.config.meta_batch
        else:
            first, last = float(losses[:, 0].mean()), float(losses[:, -1].mean())
        update = tree.scale(total, 1.0 / self.config.meta_batch)
        if not (math.isfinite(first) and math.isfinite(last) and tree.all_finite(update)):
            raise TrainingDiverged(self._diverged_message(t, first, last))
        self._outer_step(update, t)
        if not tree.all_finite(self.phi):  # a finite update can still overflow the parameters
            raise TrainingDiverged(self._diverged_message(t, first, last, "parameters after the outer step"))
        self.iteration = t + 1
        return {"iteration": t + 1, "eps": epsilon(self.config, t), "loss_first": first, "loss_last": last}

    def _last_good(self) -> str:
        """Where the last good checkpoint is, in words (loading refuses non-finite parameters)."""
        if self.out_dir is not None and (found := latest_checkpoint(self.out_dir / "checkpoints", validate=True)):
            return f"the last good checkpoint is {found[0]} (iteration {found[1]['iteration']})"
        return "no checkpoint was written"

    def _diverged_message(self, t: int, first: float, last: float, what: str = "loss or update") -> str:
        return (f"non-finite {what} at iteration {t + 1} (inner loss first {first}, last {last}); "
                f"training stopped; {self._last_good()}. Lower the learning rates or check the data")

    # -- persistence -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"format": "reptile-lab", "iteration": self.iteration, "params": tree.clone(self.phi),
                "inner_state": self.inner_state, "outer_state": self._outer.state_dict() if self._outer else {},
                "config": self.config.to_dict(), "model_spec": self.model_spec,
                "extra": self.extra, "torch_version": str(torch.__version__)}

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Restore from a checkpoint; raises ``ValueError`` if it is from another model or config."""
        validate_checkpoint(ckpt)
        check_compatible(ckpt, self.phi, self.model_spec)
        now = self.config.to_dict()
        notes = check_resume_settings(ckpt["config"], now, reached=int(ckpt["iteration"]),
                                      anneal=self.config.anneal).notes
        # settings outside the config that change the numbers (CLI flags: dtype, schedule, variant, ...)
        saved_extra, now_extra = ckpt.get("extra") or {}, self.extra
        for k in sorted(set(saved_extra) | set(now_extra)):
            a, b = saved_extra.get(k), now_extra.get(k)
            if k == "args" and isinstance(a, dict) and isinstance(b, dict):
                check_resume_settings(a, b, reached=int(ckpt["iteration"]))
            elif a != b:
                raise ValueError(f"cannot resume: the run was trained with {k} {a!r}, now {b!r}; start a new run "
                                 f"in another output folder")
        self.resume_notes = notes
        like = next(iter(self.phi.values()))
        self.phi = {k: v.to(like) for k, v in ckpt["params"].items()}
        self.inner_state = _to_like(ckpt["inner_state"], like)
        if self._outer is not None:
            for k, p in self._leaves.items():
                p.data.copy_(self.phi[k])
            self._outer.load_state_dict(ckpt["outer_state"])
        self.iteration = int(ckpt["iteration"])

    def open_run_folder(self) -> None:
        """Claim ``out_dir`` for this writer (see :mod:`reptile.runfolder`); idempotent, no-op for other ranks.

        Raises:
            reptile.runfolder.RunFolderError: a non-empty folder that is not a reptile-lab run, a
                ``checkpoints`` entry that is a file, an unwritable folder.
            reptile.runfolder.RunFolderBusy: another process is writing to it.
        """
        if self.folder is not None:
            self.folder.acquire()

    def close(self) -> None:
        """Release ``out_dir`` (also done when :meth:`run` returns or raises)."""
        if self.folder is not None:
            self.folder.release()

    def save(self) -> Path | None:
        """Write a checkpoint of the current iteration (writer only) and prune this run's older ones.

        Raises:
            TrainingDiverged: the parameters are not finite (nothing is written).
        """
        if self.out_dir is None or not self.is_writer:
            return None
        if not tree.all_finite(self.phi):
            raise TrainingDiverged(f"refusing to checkpoint non-finite parameters at iteration {self.iteration}; "
                                   f"{self._last_good()}. Lower the learning rates or check the data")
        self.open_run_folder()
        self.folder.mark()
        d = self.out_dir / "checkpoints"
        path = save_checkpoint(checkpoint_path(d, self.iteration), self.state_dict())
        self.saved_iteration = self.iteration
        prune_own_checkpoints(d, self.config.keep_checkpoints, self.iteration)
        return path

    def resume(self) -> bool:
        """Load the newest good checkpoint of ``out_dir`` if there is one; returns whether it did.

        Raises:
            reptile.runfolder.RunFolderError: checkpoint files exist but none can be read (the run is
                not started over), or the folder is not a reptile-lab run folder.
            reptile.runfolder.RunFolderBusy: another process is writing to ``out_dir``.
            ValueError: the checkpoint is of another model or was trained with other settings.
        """
        if self.out_dir is None:
            raise ValueError("resume needs an output folder (out_dir)")
        self.open_run_folder()
        try:
            found = find_resume_checkpoint(self.out_dir)
            if found is None:
                return False
            self.load_state_dict(found[1])
        except BaseException:
            self.close()  # a refused resume leaves the folder to others
            raise
        self._resumed = True
        if self.is_writer:
            _truncate_metrics(self.out_dir / "metrics.csv", self.iteration)
        return True

    def _log(self, rows: list[dict[str, float]]) -> None:
        self.history.extend(rows)
        if self.out_dir is None or not self.is_writer or not rows:
            return
        path = self.out_dir / "metrics.csv"
        self.open_run_folder()
        self.folder.mark()
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["iteration", "metric", "value"])
            for row in rows:
                it = int(row["iteration"])
                w.writerows([it, k, repr(float(v))] for k, v in row.items() if k != "iteration")

    # -- the loop --------------------------------------------------------------------------
    def run(self, progress: bool = True, until: int | None = None) -> TrainResult:
        """Train until ``until`` (default: ``config.iterations``), checkpointing on the way.

        On ``KeyboardInterrupt`` a checkpoint of the last finished iteration is written before the
        exception propagates; on divergence :class:`TrainingDiverged` is raised and no checkpoint
        of the bad state is written.
        """
        cfg = self.config
        stop = cfg.iterations if until is None else min(until, cfg.iterations)
        self.open_run_folder()
        try:
            if self.iteration == 0 and stop > 0 and self.out_dir is not None and self.is_writer:
                if not self._resumed:
                    check_fresh_start(self.out_dir)  # never start over a run's checkpoints
                # a fresh start: rows left by an earlier attempt that never reached a checkpoint
                # (killed, disk full) would otherwise be logged twice
                _truncate_metrics(self.out_dir / "metrics.csv", 0)
            return self._run(progress, stop)
        finally:
            self.close()

    def _run(self, progress: bool, stop: int) -> TrainResult:
        cfg = self.config
        pending: list[dict[str, float]] = []
        bar = tqdm(total=cfg.iterations, initial=self.iteration, disable=not progress, desc=cfg.algorithm,
                   dynamic_ncols=True)
        try:
            while self.iteration < stop:
                tic = time.perf_counter()
                row = self.step()
                row["seconds"] = time.perf_counter() - tic
                t = self.iteration
                for cb in self.callbacks:
                    if t % cb.every == 0 or t == cfg.iterations:
                        row.update(cb(t, self.phi))
                if t % cfg.log_every == 0 or t == stop or len(row) > 5:
                    pending.append(row)
                    bar.set_postfix(loss=f"{row['loss_first']:.4g}")
                if t % cfg.checkpoint_every == 0 or t == stop:
                    self._log(pending)
                    pending = []
                    self.save()
                bar.update(1)
        except KeyboardInterrupt:
            self._log([r for r in pending if r["iteration"] <= self.iteration])
            self.save()
            raise
        finally:
            bar.close()
        return TrainResult(self.phi, self.iteration, self.history)


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _task_pool(n: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``n`` threads for :meth:`MetaTrainer._task_updates_in_threads`."""
    if n not in _POOLS:
        _POOLS[n] = ThreadPoolExecutor(n, thread_name_prefix="reptile-task")
    return _POOLS[n]


def check_compatible(ckpt: dict[str, Any], phi: Params, model_spec: dict[str, Any] | None) -> None:
    """Raise ``ValueError`` if a checkpoint's parameters or model spec do not match ours."""
    saved = ckpt.get("params")
    if not isinstance(saved, dict):
        raise ValueError("the checkpoint holds no parameters")
    if model_spec is not None and ckpt.get("model_spec") not in (None, model_spec):
        raise ValueError(f"the checkpoint is of another model: {ckpt.get('model_spec')} (expected {model_spec})")
    if not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise ValueError("the checkpoint's parameters are not all tensors; it was not written by reptile-lab")
    ours = {k: tuple(v.shape) for k, v in phi.items()}
    theirs = {k: tuple(v.shape) for k, v in saved.items()}
    if ours != theirs:
        diff = sorted(set(ours.items()) ^ set(theirs.items()))[:4]
        raise ValueError(f"the checkpoint is of another model: its parameters differ ({diff} ...)")
    dtypes = {str(v.dtype) for v in saved.values()} - {str(v.dtype) for v in phi.values()}
    if dtypes:
        raise ValueError(f"the checkpoint holds {sorted(dtypes)} parameters, this model "
                         f"{sorted({str(v.dtype) for v in phi.values()})}; pass the dtype it was trained with")


def to_like(obj: Any, like: torch.Tensor) -> Any:
    """Every tensor of nested dicts (an optimizer state) with ``like``'s dtype and device."""
    if isinstance(obj, dict):
        return {k: to_like(v, like) for k, v in obj.items()}
    return obj.to(like) if isinstance(obj, torch.Tensor) else obj


_to_like = to_like


def _complete_row(row: list[str]) -> bool:
    """Whether a metrics row was written whole (a kill during an append can leave a partial line)."""
    if len(row) != 3 or not row[1]:
        return False
    try:
        int(row[0]), float(row[2])
    except ValueError:
        return False
    return True


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop metric rows logged after ``iteration`` (they will be logged again)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:  # killed while writing the header
        path.unlink()
        return
    keep = [rows[0]] + [r for r in rows[1:] if _complete_row(r) and int(r[0]) <= iteration]
    buf = io.StringIO()
    csv.writer(buf).writerows(keep)
    atomic_write_bytes(path, buf.getvalue().encode())
