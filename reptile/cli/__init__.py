"""The ``reptile`` command. Its subcommands are the ``register(subparsers)`` functions listed in
:data:`COMMANDS` (``train``/``eval``, ``glyphs``, ``demo``), plus those of other packages through the
``reptile_lab.commands`` entry-point group (``reptile verify`` comes from ``analysis`` that way, so
``reptile`` never imports it). Each task family's flags live in their own module here
(:mod:`.sine`, :mod:`.least_squares`, :mod:`.fewshot`); argparse types in :mod:`.argtypes`.

Exit codes: 0 success, 1 failure (a clear one-line error, no traceback), 2 usage error,
130 interrupted.

Building the parser imports no torch (``reptile --help`` is instant): choices come from
:mod:`reptile.choices`, the science is imported when a command runs. Every subcommand takes
``--threads`` (policy: :func:`reptile.threads.apply_threads`).
"""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from typing import Any, Sequence

from . import data, demo, train
from .argtypes import (int_at_least, nonneg_float, nonneg_int, number_list, port_number,  # noqa: F401
                       positive_float, positive_int)
from .parsing import flag_words, parse_args


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: reported in one line, exit code 1 (imports the science)."""
    from ..checkpoint import CheckpointError
    from ..train import TrainingDiverged

    return (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, CheckpointError,
            TrainingDiverged, OSError)


def __getattr__(name: str) -> Any:  # USER_ERRORS, kept as a name without importing torch up front
    if name == "USER_ERRORS":
        return user_errors()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: the subcommands of this package, in help order
COMMANDS = (data.register, demo.register, train.register)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reptile",
        description="Reptile, FOMAML and MAML meta-learning, and an empirical check of the Reptile "
                    "paper's theory (Nichol, Achiam, Schulman 2018).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(sub)
    for ep in sorted(entry_points(group="reptile_lab.commands"), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    # which options were typed (``--resume`` reads the others back from the checkpoint)
    from .parsing import explicit_options
    args._given = explicit_options(parser, sys.argv[1:] if argv is None else [str(a) for a in argv])
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except user_errors() as e:  # a parameter the science names is shown as the flag (data_dir -> --data-dir)
        print(f"reptile {args.command}: error: {flag_words(str(e), parser)}", file=sys.stderr)
        return 1
