"""Data-parallel meta-training with ``torch.distributed``: the tasks of a meta-batch split across ranks.

``torchrun --nproc_per_node=N -m reptile train ...`` starts N processes; each computes the task
updates ``u_j`` of its share of the meta-batch (a contiguous :func:`task_slice`), the per-rank sums
are added with one all-reduce (:func:`all_reduce_sum`), and every rank takes the same outer step.
Task ``j`` of iteration ``t`` is drawn from ``numpy.random.default_rng([seed, t, j])`` whichever rank
draws it, so N ranks end with the parameters of one process, up to the order of a floating-point
sum (about 1e-7 relative in float32). Only rank 0 writes checkpoints and metrics; every rank
resumes from the same checkpoint.

Backends: gloo on the CPU, NCCL on CUDA (each rank on ``cuda:LOCAL_RANK``).

One restriction: an inner Adam whose moments persist from task to task (the paper's setting,
``reset_inner_state=False``) makes task j depend on every task before it, so the tasks of a
meta-batch cannot run on different ranks and give the same numbers; :func:`check_config` refuses it.
"""
from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from .types import Params

__all__ = ["DistContext", "world_size_from_env", "launched_distributed", "task_slice", "all_reduce_sum",
           "check_config", "process_group", "trainer_kwargs"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the process group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes checkpoints, metrics and printed results."""
        return self.rank == 0


def world_size_from_env() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be a whole number, got {os.environ['WORLD_SIZE']!r}") from None


def launched_distributed() -> bool:
    """Whether this process was started by ``torchrun`` (or similar) with more than one rank."""
    return world_size_from_env() > 1


def task_slice(meta_batch: int, rank: int, world_size: int) -> range:
    """The meta-batch task indices of ``rank``: contiguous shares, sizes differing by at most one.

    Raises:
        ValueError: ``world_size < 1``, ``rank`` outside ``0..world_size-1``, or more ranks than tasks
            (a rank without a task would only wait).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..world_size-1, got rank {rank} of world size {world_size}")
    if meta_batch < world_size:
        raise ValueError(f"meta-batch of {meta_batch} tasks cannot be split across {world_size} ranks; "
                         f"use --meta-batch >= {world_size} or fewer processes")
    base, extra = divmod(meta_batch, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


_TIMEOUT_S = 300.0  # of the current process group (for messages); set by process_group


def all_reduce_sum(tree: Params, group: Any = None) -> Params:
    """Sum a tree over all ranks with a single all-reduce of one flat buffer (same keys on every rank).

    Leaves are cast to the dtype of the first leaf for the transfer and back afterwards.
    """
    if not tree:
        return {}
    keys = list(tree)
    ref = tree[keys[0]]
    flat = torch.cat([tree[k].detach().reshape(-1).to(ref.dtype) for k in keys])
    try:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    except RuntimeError as e:  # gloo: "Timed out waiting ...", or a peer that went away
        if "time" in str(e).lower() or "connection" in str(e).lower():
            raise _peers_missing("in an all-reduce", _TIMEOUT_S) from e
        raise
    out, i = {}, 0
    for k in keys:
        v = tree[k]
        out[k] = flat[i:i + v.numel()].view(v.shape).to(v.dtype)
        i += v.numel()
    return out


def check_config(config: Any, world_size: int) -> None:
    """Refuse settings that cannot be split across ranks and still give one process's numbers.

    Raises:
        ValueError: Adam moments persisting from task to task, or fewer tasks than ranks.
    """
    if world_size <= 1:
        return
    if config.inner_optimizer == "adam" and not config.reset_inner_state:
        raise ValueError("distributed training splits the tasks of a meta-batch across ranks, so inner Adam "
                         "moments cannot persist from task to task (each task would depend on all before it): "
                         "pass --reset-inner-state, use --inner-optimizer sgd, or run one process")
    task_slice(config.meta_batch, 0, world_size)


#: seconds a rank waits for the others (to join, or in a collective) unless ``REPTILE_DIST_TIMEOUT`` says
DEFAULT_TIMEOUT_S = 300.0


def timeout_from_env() -> float:
    """``REPTILE_DIST_TIMEOUT`` in seconds (default :data:`DEFAULT_TIMEOUT_S`)."""
    text = os.environ.get("REPTILE_DIST_TIMEOUT")
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 < v < float("inf"):
        raise ValueError(f"REPTILE_DIST_TIMEOUT must be a positive number of seconds, got {text!r}")
    return v


def _peers_missing(what: str, timeout_s: float) -> TimeoutError:
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    return TimeoutError(f"rank {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE', '?')} waited "
                        f"{timeout_s:g} s for the other ranks {what} ({where}) and gave up; start every rank "
                        f"(torchrun --nproc_per_node=N ... starts all N), check that none of them failed, or "
                        f"raise REPTILE_DIST_TIMEOUT (seconds) for slow starts")


@contextmanager
def process_group(device: torch.device | str = "cpu", timeout_s: float | None = None) -> Iterator[DistContext | None]:
    """Join the process group that ``torchrun`` set up (env ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...).

    Yields ``None`` when not launched with more than one rank (nothing is initialized). Uses gloo for
    CPU devices and NCCL for CUDA; on CUDA sets this process's device to ``cuda:LOCAL_RANK``. The
    group is destroyed on exit, also after an exception.

    ``timeout_s`` (default :func:`timeout_from_env`, 300 s) bounds the wait for the other ranks to
    join and every collective; a rank left alone raises ``TimeoutError`` saying so, instead of
    waiting torch's default 30 minutes in silence.
    """
    if not launched_distributed():
        yield None
        return
    timeout_s = timeout_from_env() if timeout_s is None else timeout_s
    device = torch.device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, OSError) as e:  # DistStoreError / DistNetworkError on a missing peer
        if "time" in str(e).lower() or type(e).__name__.startswith("Dist"):
            raise _peers_missing("to join", timeout_s) from e
        raise
    global _TIMEOUT_S
    _TIMEOUT_S = timeout_s
    try:
        yield DistContext(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    except BaseException:
        dist.destroy_process_group()
        raise
    # every rank leaves together: a rank that destroyed the group while rank 0 was still evaluating
    # was seen to abort (SIGABRT, "terminate called without an active exception") under load
    dist.barrier()
    dist.destroy_process_group()


def trainer_kwargs(ctx: DistContext | None, meta_batch: int) -> dict[str, Any]:
    """Keyword arguments of :class:`reptile.train.MetaTrainer` for this rank (empty when not distributed)."""
    if ctx is None:
        return {}
    reduce: Callable[[Params], Params] = all_reduce_sum
    return {"task_slice": task_slice(meta_batch, ctx.rank, ctx.world_size), "reduce": reduce,
            "is_writer": ctx.is_writer}


def barrier() -> None:
    """Wait for all ranks (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
