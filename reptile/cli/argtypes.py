"""argparse types of the ``reptile`` command (and of ``python -m reptile.fewshot``): each turns a
flag's text into a checked value or raises ``argparse.ArgumentTypeError`` with what was expected.
Imports nothing of the toolkit but the torch-free :mod:`reptile.threads`, so every CLI module can
use it (and ``reptile --help`` stays fast)."""
from __future__ import annotations

import argparse

from ..threads import THREADS_HELP, check_threads


def int_at_least(minimum: int):
    """argparse type factory: an integer >= ``minimum``."""
    return lambda text: _int_at_least(minimum, text)


def _int_at_least(minimum: int, text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {v}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(1, text)


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(0, text)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return v


def number_list(text: str) -> list[float]:
    """argparse type: comma-separated finite numbers, e.g. ``1,1,0,0``."""
    out = []
    for part in text.split(","):
        try:
            v = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 1,1,0,0, got {text!r} "
                                             f"({part.strip()!r} is not a number)") from None
        if v != v or v in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected finite numbers, got {part.strip()!r} in {text!r}")
        out.append(v)
    return out


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0..65535 (0: any free port)."""
    v = _int_at_least(0, text)
    if v > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0..65535 (0 picks a free one), got {v}")
    return v


def nonneg_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (0 <= v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return v


def thread_count(text: str) -> int:
    """argparse type: a torch thread count, 1..the CPUs available (:func:`reptile.threads.check_threads`)."""
    n = _int_at_least(1, text)
    try:
        return check_threads(n)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_threads_flag(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--threads N`` (default ``None``: the policy of :func:`reptile.threads.apply_threads`),
    the same flag with the same help on every subcommand."""
    p.add_argument("--threads", type=thread_count, default=None, metavar="N", help=THREADS_HELP)
