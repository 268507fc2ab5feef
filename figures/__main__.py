"""Build every figure: ``python -m figures [--fast] [--out DIR] [--only NAME ...] [--list]``.

Runs each figure script's ``main(fast, out)`` one after the other in this process and prints the
time each took. Scripts of other parts of the project (``solution_manifolds``,
``glyph_contact_sheet``) are included when they exist and expose the same ``main(fast, out)``.
A failing figure does not stop the others; the command exits non-zero if any failed.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time
import traceback
from pathlib import Path

from figures.style import DEFAULT_OUT, FAST_OUT, default_out
from reptile.cli.argtypes import add_threads_flag
from reptile.threads import apply_threads

#: every figure module, in build order; optional ones are skipped when absent
FIGURES = ["sine", "gradient_combinations", "minibatch_overlap", "taylor_residual", "coefficients",
           "alignment", "cost", "solution_manifolds", "glyph_contact_sheet"]
OPTIONAL = {"solution_manifolds", "glyph_contact_sheet"}


def load(name: str):
    """The module's ``main`` if it has the ``main(fast, out)`` interface, else ``None``."""
    try:
        mod = importlib.import_module(f"figures.{name}")
    except ModuleNotFoundError as e:
        if name in OPTIONAL and e.name in (f"figures.{name}",):
            return None
        raise
    main = getattr(mod, "main", None)
    if main is None:
        return None
    params = inspect.signature(main).parameters
    if not {"fast", "out"} <= set(params):
        return None
    return main


def build(names: list[str], fast: bool, out: Path) -> dict[str, float | str]:
    """Run the named figures; returns seconds taken per figure (or the error text)."""
    results: dict[str, float | str] = {}
    for name in names:
        try:
            main = load(name)
        except Exception as e:  # an import error of one figure must not hide the others
            results[name] = f"import failed: {e!r}"
            traceback.print_exc()
            continue
        if main is None:
            print(f"[skip] {name}: not present or no main(fast, out)")
            continue
        tic = time.perf_counter()
        try:
            paths = main(fast=fast, out=out)
        except Exception as e:
            results[name] = f"failed: {e!r}"
            traceback.print_exc()
            continue
        results[name] = time.perf_counter() - tic
        print(f"[ok] {name}: {results[name]:.1f} s -> {', '.join(Path(p).name for p in paths)}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build the paper-style figures.")
    p.add_argument("--fast", action="store_true", help="tiny settings (seconds each; for tests)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder (default {DEFAULT_OUT}; with --fast {FAST_OUT}, never the committed figures)")
    p.add_argument("--only", nargs="+", choices=FIGURES, help="build only these figures")
    add_threads_flag(p)
    p.add_argument("--list", action="store_true", help="list the figures and exit")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(FIGURES))
        return 0
    apply_threads(args.threads)
    results = build(args.only or FIGURES, args.fast, args.out or default_out(args.fast))
    failed = {k: v for k, v in results.items() if isinstance(v, str)}
    for k, v in failed.items():
        print(f"[FAILED] {k}: {v}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
