"""The ``reptile`` command. Subcommands live in the modules of this package (each exposes
``register(subparsers)``) and in other packages through the ``reptile_lab.commands`` entry-point
group (``reptile verify`` comes from ``analysis`` that way, so ``reptile`` never imports it).

Exit codes: 0 success, 1 failure (a clear one-line error, no traceback), 2 usage error,
130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from importlib.metadata import entry_points
from typing import Sequence

from ..checkpoint import CheckpointError
from ..train import TrainingDiverged

#: errors that are the user's to fix: reported in one line, exit code 1
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, CheckpointError,
               TrainingDiverged, OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reptile",
        description="Reptile, FOMAML and MAML meta-learning, and an empirical check of the Reptile "
                    "paper's theory (Nichol, Achiam, Schulman 2018).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)]
    for mod in modules:
        if hasattr(mod, "register"):
            mod.register(sub)
    for ep in sorted(entry_points(group="reptile_lab.commands"), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # which options were typed (``--resume`` reads the others back from the checkpoint)
    from ..runfolder import explicit_options
    args._given = explicit_options(parser, sys.argv[1:] if argv is None else [str(a) for a in argv])
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        print(f"reptile {args.command}: error: {e}", file=sys.stderr)
        return 1


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
