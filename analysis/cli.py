"""The ``verify`` subcommand of the ``reptile`` CLI (registered through the entry point
``reptile_lab.commands: verify = analysis.cli:register``). Only this module prints."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reptile.cli.argtypes import add_threads_flag
from reptile.paths import check_output_dir
from reptile.threads import apply_threads

DEFAULT_OUT = Path("reports/verify")  # = analysis.verify.DEFAULT_OUT; kept here so `reptile --help` needs no torch

DESCRIPTION = """\
Check the Reptile paper's Taylor-series analysis (section 5.1) on embedded problems: the sine-wave
MLP 1-64-64-1 tanh and a least-squares family, in float64. Prints each claim with the measured
figure, the prediction and whether it holds; writes a report folder (markdown, CSV, PNG); exits
with status 1 naming the claims that fail. Default mode takes under 3 minutes on 2 CPU cores,
--quick under 30 seconds."""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``verify`` subcommand to ``subparsers``; its ``func`` is :func:`run`."""
    p = subparsers.add_parser("verify", help="check the paper's Taylor-series claims (HVPs, expansions, "
                                             "AvgGrad/AvgGradInner)", description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="fewer tasks and samples (under 30 s)")
    speed.add_argument("--full", action="store_true", help="more tasks and samples, k up to 5 everywhere")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report folder (default {DEFAULT_OUT})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    add_threads_flag(p)
    p.add_argument("--only", action="append", metavar="MODULE",
                   help="run only this check provider (repeatable), e.g. analysis.taylor_checks")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run verify with parsed ``args``; print the table; return 0 if every claim holds, else 1."""
    from .verify import PROVIDERS, format_table, module_exists, run_verify

    mode = "quick" if getattr(args, "quick", False) else "full" if getattr(args, "full", False) else "default"
    apply_threads(getattr(args, "threads", None))
    unknown = [m for m in (getattr(args, "only", None) or []) if not module_exists(m)]
    if unknown:
        print(f"reptile verify: error: --only {unknown[0]!r} is not an importable module; the check "
              f"providers are {', '.join(PROVIDERS)}", file=sys.stderr)
        return 2
    try:
        check_output_dir(getattr(args, "out", DEFAULT_OUT))
    except ValueError as e:
        print(f"reptile verify: error: {e}", file=sys.stderr)
        return 1
    try:
        result = run_verify(mode, getattr(args, "out", DEFAULT_OUT), progress=not getattr(args, "no_progress", False),
                            providers=getattr(args, "only", None))
    except ValueError as e:
        print(f"reptile verify: {e}", file=sys.stderr)
        return 2
    print(format_table(result.claims, width=48))
    print()
    timing = ", ".join(f"{p.module.split('.')[-1]} {p.seconds:.1f} s" for p in result.providers)
    print(f"{len(result.claims)} claims, {len(result.failed)} failed; mode {mode}, {result.seconds:.1f} s wall, "
          f"{result.cpu_seconds:.1f} s CPU ({timing}); report in {result.out_dir / 'report.md'}")
    if result.failed:
        print("FAILED: " + "; ".join(c.name for c in result.failed), file=sys.stderr)
        for c in result.failed:
            if c.detail and "Traceback" in c.detail:
                print(f"--- {c.name} ---\n{c.detail}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m analysis.cli``), for use without the ``reptile`` CLI."""
    parser = argparse.ArgumentParser(prog="reptile")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
