"""The command lines of the analysis package; only this module prints.

* ``verify``: the ``reptile verify`` subcommand (registered through the entry point
  ``reptile_lab.commands: verify = analysis.cli:register``);
* ``alignment``: the long gradient-alignment experiment of docs/manifolds.md with its own
  iterations, seed and algorithms (``python -m analysis.cli alignment --iterations 3000 --seed 0
  --out DIR``; :func:`register_alignment`), which ``reptile verify`` runs only at fixed sizes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reptile.cli.argtypes import add_threads_flag, nonneg_int, positive_int
from reptile.paths import check_output_dir
from reptile.threads import apply_threads

# analysis.verify, analysis.problems and torch are imported when used, not here: every ``reptile``
# command builds this parser, and `reptile --help` must not import torch. Same value as analysis.verify.DEFAULT_OUT.
DEFAULT_OUT = Path("reports/verify")
PROVIDER_HELP = "analysis.taylor_checks, analysis.expectation_checks, ... (the names in the report's timing table)"

DESCRIPTION = """\
Check the Reptile paper's Taylor-series analysis (section 5.1) on embedded problems: the sine-wave
MLP 1-64-64-1 tanh and a least-squares family, in float64. Prints each claim with the measured
figure, the prediction and whether it holds; writes a report folder (markdown, CSV, PNG); exits
with status 1 naming the claims that fail. Default mode takes ~25 s of CPU (--jobs 2 shares it
between two processes on an idle machine), --quick ~13 s.

--problem package.module:factory runs every claim that applies on your own model instead
(repeatable; see analysis.problems for the Problem protocol): HVPs, residual slopes, the
breakdown point, the AvgGrad/AvgGradInner coefficients, exchangeability, gradient alignment and
certified projections onto a few tasks' solution sets (beside the L-BFGS upper bound), with step sizes from the problem's own scale; claims that need a closed form are skipped with
the reason. Arguments for the factory: --problem-arg key=value (value read as JSON when it
parses) and --problem-args FILE (.json or .toml), each applying to the --problem before it."""

DTYPES = ("float64", "float32")  # names of torch dtypes; resolved in run()


class _ProblemAction(argparse.Action):
    """``--problem SPEC`` appends ``[SPEC, {}]`` to ``args.problems``."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, "problems", None) or [])
        items.append([values, {}])
        namespace.problems = items


class _ProblemArgAction(argparse.Action):
    """``--problem-arg key=value`` / ``--problem-args FILE``: arguments of the last ``--problem``."""

    def __call__(self, parser, namespace, values, option_string=None):
        from .problems import ProblemError, parse_problem_arg, read_problem_args

        items = getattr(namespace, "problems", None)
        if not items:
            parser.error(f"{option_string} must follow a --problem package.module:factory")
        try:
            if option_string == "--problem-args":
                items[-1][1].update(read_problem_args(values))
            else:
                key, value = parse_problem_arg(values)
                items[-1][1][key] = value
        except ProblemError as e:
            parser.error(str(e))


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
    p.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                   help="processes sharing the check providers (default: 2 when 2 CPUs are available and the "
                        "machine is idle, load average <= CPUs - 1.5; else 1); each runs whole providers, so the "
                        "claims are the same for any N")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this check provider (repeatable): " + PROVIDER_HELP)
    p.add_argument("--problem", action=_ProblemAction, metavar="MODULE:FACTORY", dest="problems", default=None,
                   help="run the claims on your problem: a function returning analysis.problems.Problem "
                        "(repeatable; the embedded problems are then skipped unless --only names them)")
    p.add_argument("--problem-arg", action=_ProblemArgAction, metavar="KEY=VALUE", dest="problems",
                   help="keyword argument for the preceding --problem's factory (repeatable)")
    p.add_argument("--problem-args", action=_ProblemArgAction, metavar="FILE", dest="problems",
                   help="keyword arguments for the preceding --problem's factory from a .json or .toml file")
    p.add_argument("--device", default="cpu", help="device for --problem runs (cpu, cuda, cuda:1; default cpu)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float64",
                   help="dtype for --problem runs (default float64; float32 fits slopes above its rounding floor)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run verify with parsed ``args``; print the table; return 0 if every claim holds, else 1."""
    from .verify import default_jobs, format_table, registered_names, run_verify

    mode = "quick" if getattr(args, "quick", False) else "full" if getattr(args, "full", False) else "default"
    import torch

    from .problems import ProblemError, load_problem

    apply_threads(getattr(args, "threads", None))
    # only registered providers are imported by name (an arbitrary module would run on import)
    unknown = [m for m in (getattr(args, "only", None) or []) if m not in registered_names()]
    if unknown:
        print(f"reptile verify: error: --only {unknown[0]!r} is not a registered check provider; choose "
              f"among {', '.join(registered_names())} (your own model: --problem module:factory; your own "
              f"checks: register the module under the entry-point group reptile_lab.checks)", file=sys.stderr)
        return 2
    problems = []
    device = getattr(args, "device", "cpu")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        print(f"reptile verify: error: --device {device!r} is not available here ({str(e).splitlines()[0]})",
              file=sys.stderr)
        return 2
    for spec, kwargs in getattr(args, "problems", None) or []:
        try:
            problems.append(load_problem(spec, kwargs, device=device, dtype=getattr(torch, getattr(args, "dtype", "float64"))))
        except ProblemError as e:
            print(f"reptile verify: error: {e}", file=sys.stderr)
            return 2
    try:
        check_output_dir(getattr(args, "out", DEFAULT_OUT))
    except ValueError as e:
        print(f"reptile verify: error: {e}", file=sys.stderr)
        return 1
    try:
        result = run_verify(mode, getattr(args, "out", DEFAULT_OUT), progress=not getattr(args, "no_progress", False),
                            providers=getattr(args, "only", None), problems=problems,
                            jobs=getattr(args, "jobs", None) or default_jobs())
    except ValueError as e:
        print(f"reptile verify: {e}", file=sys.stderr)
        return 2
    print(format_table(result.claims, width=48))
    print()
    timing = ", ".join(f"{p.module.split('.')[-1]} {p.seconds:.1f} s" for p in result.providers)
    skipped = [c for c in result.claims if c.skipped]
    for c in skipped:
        print(f"skipped: {c.name}: {c.skipped}")
    procs = f" in {result.jobs} processes" if result.jobs > 1 else ""
    print(f"{len(result.claims)} claims, {len(result.failed)} failed, {len(skipped)} skipped; mode {mode}, {result.seconds:.1f} s wall, "
          f"{result.cpu_seconds:.1f} s CPU{procs} ({timing}); report in {result.out_dir / 'report.md'}")
    if result.failed:
        print("FAILED: " + "; ".join(c.name for c in result.failed), file=sys.stderr)
        for c in result.failed:
            if c.detail and "Traceback" in c.detail:
                print(f"--- {c.name} ---\n{c.detail}", file=sys.stderr)
        return 1
    return 0


ALIGNMENT_OUT = Path("reports/alignment")
ALIGNMENT_METRICS = ("within_cos", "within_ratio", "within_dot", "across_cos", "sq_norm")


def register_alignment(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``alignment`` subcommand (:func:`analysis.alignment_checks.run_alignment_experiment`)."""
    p = subparsers.add_parser(
        "alignment", help="gradient alignment under meta-training on sine waves (paper 5.1), any length",
        description="Train the blog's 1-64-64-1 tanh MLP on sine waves with each algorithm from the same "
                    "initialization (5 inner SGD steps of 0.02, outer step 0.1 annealed to 0) and log the "
                    "within- and across-task gradient alignment on fixed probe tasks; prints each metric at the "
                    "start, over the first and last quarter, and at the end. About 2 minutes per 1000 "
                    "iterations and algorithm on one CPU core.")
    p.add_argument("--iterations", type=positive_int, default=3000, help="meta-iterations per algorithm (default 3000)")
    p.add_argument("--every", type=positive_int, default=250, help="measure every N iterations (default 250)")
    p.add_argument("--probe", type=positive_int, default=10, help="probe tasks (default 10)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="initialization and task-stream seed (default 0)")
    p.add_argument("--algorithms", default="reptile,fomaml,maml,joint",
                   help="comma-separated (default reptile,fomaml,maml,joint)")
    p.add_argument("--out", type=Path, default=ALIGNMENT_OUT,
                   help=f"folder for alignment.csv and each run's metrics.csv (default {ALIGNMENT_OUT})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    add_threads_flag(p)
    p.set_defaults(func=run_alignment)
    return p


def run_alignment(args: argparse.Namespace) -> int:
    """Run the alignment experiment with parsed ``args``; print the summaries; 0, or 2 on bad input."""
    from .alignment_checks import ALGORITHMS, run_alignment_experiment, summarize

    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    bad = [a for a in algorithms if a not in ALGORITHMS]
    if bad or not algorithms:
        print(f"reptile alignment: error: --algorithms {args.algorithms!r}: choose from {', '.join(ALGORITHMS)}",
              file=sys.stderr)
        return 2
    try:
        out = check_output_dir(args.out)
    except ValueError as e:
        print(f"reptile alignment: error: {e}", file=sys.stderr)
        return 2
    apply_threads(args.threads)
    res = run_alignment_experiment(algorithms, args.iterations, args.every, args.probe, args.seed, out_dir=out,
                                   progress=not args.no_progress)
    for metric in ALIGNMENT_METRICS:
        print(metric)
        for alg, v in summarize(res, metric).items():
            print(f"  {alg:8s} start {v['start']:+.4f} early {v['early']:+.4f} late {v['late']:+.4f} end {v['end']:+.4f}")
    print(f"rows in {out / 'alignment.csv'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m analysis.cli verify|alignment ...``), for use without the ``reptile`` CLI."""
    parser = argparse.ArgumentParser(prog="python -m analysis.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    register_alignment(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
