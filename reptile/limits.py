"""Checks of sizes, devices, seeds and thread counts given by the user, made before anything is built.

An allocation that cannot succeed is refused with the size it would need and the memory there
is, instead of an allocator traceback (or, with memory overcommit, the kernel's OOM killer
minutes later); ``--device meta``, a seed beyond 64 bits or ``--threads 100000`` get one clear line.
"""
from __future__ import annotations

import os
import resource
from typing import Any, Callable

import torch
from torch import nn

#: share of the available memory one allocation may take
MEMORY_FRACTION = 0.8
#: the largest seed torch accepts (``torch.manual_seed`` takes a 64-bit integer)
MAX_SEED = 2 ** 63 - 1


class AllocationTooLarge(ValueError):
    """A size given by the user (or a file) would need more memory than there is."""


def _fmt(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def available_memory_bytes(device: torch.device | str = "cpu") -> int:
    """Memory an allocation on ``device`` can use now: CUDA free memory, or on the CPU the
    smaller of ``MemAvailable`` (Linux; else the physical memory) and the address-space limit."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 2 ** 62
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        avail = min(avail, soft)
    return int(avail)


def check_allocation(n_bytes: int, what: str, device: torch.device | str = "cpu") -> None:
    """Raise :class:`AllocationTooLarge` if ``n_bytes`` for ``what`` exceed :data:`MEMORY_FRACTION`
    of the memory available on ``device``. ``what`` names the flag or file the size came from."""
    device = torch.device(device)
    if device.type == "meta":
        return
    avail = available_memory_bytes(device)
    if n_bytes > MEMORY_FRACTION * avail:
        raise AllocationTooLarge(f"{what} would need {_fmt(n_bytes)} of memory, more than the {_fmt(avail)} "
                                 f"available on {device}; use smaller sizes")


def param_bytes(build: Callable[[], nn.Module], dtype: torch.dtype = torch.float32) -> int:
    """Bytes of the parameters and buffers of the model ``build`` makes, counted on the ``meta``
    device (nothing is allocated)."""
    with torch.device("meta"):
        model = build()
    n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    return n * torch.empty((), dtype=dtype).element_size()


def check_model_size(build: Callable[[], nn.Module], what: str = "the model",
                     device: torch.device | str = "cpu") -> None:
    """:func:`check_allocation` for the model ``build`` makes (counted without allocating).

    Meta-training keeps a few copies of the parameters (phi, the task's phi~, gradients, Adam
    moments), so four times the parameter bytes are checked.
    """
    if torch.get_default_device().type == "meta":
        return
    check_allocation(4 * param_bytes(build), what, device)


def check_device(name: str) -> torch.device:
    """The device ``name`` names, if it can hold data here; raises ``ValueError`` otherwise."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ValueError(f"device {name!r} holds no data (or is not supported for training); use cpu, cuda or "
                         f"cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for but CUDA is not available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA "
                             f"device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


def check_seed(seed: Any, flag: str = "--seed") -> int:
    """``seed`` if it is a whole number in 0..2**63-1 (what torch accepts); ``ValueError`` otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{flag} must be a whole number from 0 to 2**63-1 = {MAX_SEED}, got {seed!r}")
    return seed


from .threads import check_threads  # noqa: E402,F401  (the one thread-count check; kept importable here)


def check_training_sizes(args: Any) -> None:
    """Check the per-task data a training run's settings ask for against memory (CLI settings).

    ``inner_steps x inner_batch`` examples per task are drawn (each ``2`` numbers for sine, ``dim + 1``
    for least squares, an 84x84x3 image at most for few-shot), and ``--points`` examples per sine
    task. Raises :class:`AllocationTooLarge` naming the flags.
    """
    elem = 8 if getattr(args, "dtype", "float32") == "float64" else 4
    device = getattr(args, "device", "cpu")
    family = getattr(args, "family", None)
    per_example = {"sine": 2, "least-squares": int(getattr(args, "dim", 1) or 1) + 1}.get(family, 3 * 84 * 84 + 1)
    k, b, m = (int(getattr(args, name, 1) or 1) for name in ("inner_steps", "inner_batch", "meta_batch"))
    check_allocation(elem * per_example * k * b, "one task's minibatches (--inner-steps x --inner-batch)", device)
    points = getattr(args, "points", None)
    if points:
        check_allocation(elem * 2 * int(points), "one task's examples (--points)", device)
    for name in ("ways", "shots", "ls_points"):
        v = getattr(args, name, None)
        if isinstance(v, int) and not isinstance(v, bool):
            check_allocation(elem * per_example * v, f"one task's examples (--{name.replace('_', '-')})", device)
