"""Shared plumbing of the figure scripts: the command line, threads, timing, notes."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, Sequence

from figures.style import DEFAULT_OUT, FAST_NOTE, FAST_OUT, default_out
from reptile.cli.argtypes import add_threads_flag
from reptile.threads import apply_threads

Main = Callable[..., list[Path]]


def parse(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--fast", action="store_true", help="tiny settings that run in seconds (for tests)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder (default {DEFAULT_OUT}; with --fast {FAST_OUT}, never the committed figures)")
    add_threads_flag(p)
    args = p.parse_args(argv)
    if args.out is None:
        args.out = default_out(args.fast)
    return args


def cli(main: Main, description: str, argv: Sequence[str] | None = None) -> list[Path]:
    """Run ``main(fast, out)`` from the command line and print what it wrote and how long it took."""
    args = parse(description, argv)
    apply_threads(args.threads)
    tic = time.perf_counter()
    paths = main(fast=args.fast, out=args.out)
    print(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - tic:.1f} s")
    return paths


def note(fast: bool, extra: str | None = None) -> str | None:
    """The grey stamp of a figure: the fast-mode warning and/or a scale note."""
    parts = ([FAST_NOTE] if fast else []) + ([extra] if extra else [])
    return "; ".join(parts) or None
