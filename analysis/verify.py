"""``reptile verify``: run every check provider, collect the claims, write the report folder.

A provider is a function ``checks(mode, out_dir, progress) -> list[Claim]`` (see
:mod:`analysis.claims`). :data:`PROVIDERS` lists them, imported; add a function there to add its
claims to the table. Each is named by its module (``analysis.taylor_checks``), which is what
``--only`` takes. User problems (``--problem``) run :func:`analysis.problem_checks.problem_checks`
as one more provider each. A provider that raises becomes a failing claim ``"<name> ran"`` whose
detail holds the traceback, so the other providers still report and the run still fails.

The report folder (default ``reports/verify``) gets ``report.md`` (the claims table, timings,
figures and CSV files) and ``claims.csv``, plus whatever each provider writes; every file is
written atomically (:mod:`analysis.artifacts`).
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import pickle
import platform
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

import pandas as pd
import torch

from reptile.paths import check_output_dir

from . import (alignment_seed_checks, artifacts, expectation_checks, fewshot_checks, fixed_point_checks,
               manifold_checks, taylor_checks)
from .claims import Claim, check_mode
from .problems import Problem

Provider = Callable[[str, Path, bool], list]

#: the check providers of ``reptile verify``, in report order
PROVIDERS: list[Provider] = [
    taylor_checks.checks,
    expectation_checks.checks,
    manifold_checks.checks,
    fixed_point_checks.checks,      # Reptile's fixed point where inner steps are not projections
    alignment_seed_checks.checks,   # the alignment_checks experiment over >= 3 seeds
    fewshot_checks.checks,
]


def provider_name(provider: Provider) -> str:
    """A provider's name: its ``__qualname__``-free module (``analysis.taylor_checks``), or the
    ``name`` attribute a problem provider carries."""
    return getattr(provider, "provider_name", None) or provider.__module__


def provider_names() -> list[str]:
    return [provider_name(p) for p in PROVIDERS]


#: further providers that ``reptile verify --only NAME`` runs by name (modules with a ``checks``
#: function that the default run leaves out); other packages register theirs under the entry-point
#: group ``reptile_lab.checks`` (name = module). Nothing else is imported by name: a user's own model
#: goes through ``--problem module:factory``.
OPTIONAL_PROVIDERS: list[str] = ["analysis.alignment_checks"]


def registered_names() -> list[str]:
    """Every name ``--only`` accepts: :func:`provider_names`, :data:`OPTIONAL_PROVIDERS` and the
    modules registered under the entry-point group ``reptile_lab.checks``."""
    from importlib.metadata import entry_points

    eps = [ep.value.split(":")[0] for ep in entry_points(group="reptile_lab.checks")]
    return list(dict.fromkeys(provider_names() + OPTIONAL_PROVIDERS + eps))


def problem_provider(problem: Problem, label: str | None = None) -> Provider:
    """A provider running every applicable claim on a user :class:`Problem`."""
    fn = functools.partial(_run_problem, problem, label)
    fn.provider_name = f"problem: {label or problem.name}"  # type: ignore[attr-defined]
    return fn


def _run_problem(problem: Problem, label: str | None, mode: str, out_dir: Path, progress: bool) -> list:
    from .problem_checks import problem_checks

    return problem_checks(problem, mode, out_dir, progress, label)


def resolve_providers(names: Sequence[Union[str, Provider]]) -> list[Provider]:
    """Providers from names (:func:`provider_name` of a listed one, or an importable module with a
    ``checks`` function: third-party providers) or callables. Unknown names stay as names and
    become failing claims when run."""
    known = {provider_name(p): p for p in PROVIDERS}
    return [known.get(n, n) if isinstance(n, str) else n for n in names]

DEFAULT_OUT = Path("reports/verify")


@dataclass
class ProviderResult:
    """What one provider returned: its claims, its wall time and its CPU time (seconds)."""

    module: str
    claims: list[Claim]
    seconds: float
    error: str | None = None
    cpu_seconds: float = float("nan")


@dataclass
class VerifyResult:
    """The outcome of :func:`run_verify`."""

    mode: str
    out_dir: Path
    providers: list[ProviderResult] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    #: processes the providers ran in (``cpu_seconds`` is their sum)
    jobs: int = 1

    @property
    def claims(self) -> list[Claim]:
        return [c for p in self.providers for c in p.claims]

    @property
    def failed(self) -> list[Claim]:
        return [c for c in self.claims if not c.holds]

    @property
    def ok(self) -> bool:
        return not self.failed


def _run_provider(provider: Union[str, Provider], mode: str, out_dir: Path, progress: bool,
                  threads: int | None = None) -> ProviderResult:
    if threads is not None:   # every provider starts from the run's thread count, whatever ran before it
        torch.set_num_threads(threads)
    start, cpu = time.perf_counter(), time.process_time()
    module = provider if isinstance(provider, str) else provider_name(provider)
    try:
        fn = importlib.import_module(provider).checks if isinstance(provider, str) else provider
        claims = list(fn(mode, out_dir, progress))
        bad = [c for c in claims if not isinstance(c, Claim)]
        if bad:
            raise TypeError(f"{module}.checks returned non-Claim items: {bad[:3]}")
        return ProviderResult(module, claims, time.perf_counter() - start, None, time.process_time() - cpu)
    except Exception as e:  # a crashed provider is a failed claim, reported with its traceback
        return _crashed(module, f"{type(e).__name__}: {e}", traceback.format_exc(), time.perf_counter() - start,
                        time.process_time() - cpu)


def _crashed(module: str, what: str, detail: str, seconds: float, cpu_seconds: float = float("nan")) -> ProviderResult:
    """A provider that did not run to completion, as one failed claim ``"<module> ran"``: ``what`` in
    its measured column (``"crashed: <what>"``), ``detail`` (a traceback or an explanation) as its detail."""
    claim = Claim(f"{module} ran", f"crashed: {what}", "runs to completion", False, detail)
    return ProviderResult(module, [claim], seconds, detail, cpu_seconds)


#: typical CPU seconds of each default provider in default mode (2-core CPU, 2026-11-30): only the
#: order in which parallel workers take providers (largest first); results do not depend on it
COST_HINT = {"analysis.alignment_seed_checks": 9.0, "analysis.expectation_checks": 8.0,
             "analysis.taylor_checks": 3.5, "analysis.manifold_checks": 3.5, "analysis.fewshot_checks": 1.0,
             "analysis.fixed_point_checks": 0.5}
_UNKNOWN_COST = 5.0


#: a second process is used only while the 1-minute load average leaves this much of a CPU idle
#: besides the one this run takes. On the 2-core machine: idle, 2 processes took 16.4 s wall for
#: the default run against 27.0 s for 1; with another job busy on one core, 42.5 s against 34.0 s
#: (both processes share the one free core, and each ran ~25% slower per unit of work)
IDLE_CPUS_FOR_A_WORKER = 1.5


def default_jobs() -> int:
    """Processes ``reptile verify`` uses unless told (``--jobs``): 2 where at least 2 CPUs are
    available, processes can be forked (Linux, macOS) and the machine is idle enough
    (1-minute load average <= CPUs - :data:`IDLE_CPUS_FOR_A_WORKER`); else 1. Processes, not
    intra-op threads (:mod:`reptile.threads`): each runs whole providers, so the numbers do not
    depend on the choice, only the time does."""
    import os

    from reptile.threads import available_cpus

    cpus = available_cpus()
    if cpus < 2 or not _can_fork():
        return 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 1
    return 2 if load <= cpus - IDLE_CPUS_FOR_A_WORKER else 1


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _run_all(mods: list, mode: str, out: Path, progress: bool, jobs: int, threads: int
             ) -> tuple[list[ProviderResult], float, int]:
    """Every provider's :class:`ProviderResult` in the order of ``mods``, the CPU seconds of the
    worker processes and the number of processes used. ``jobs - 1`` forked workers and this
    process take providers from one shared counter, largest :data:`COST_HINT` first; each worker
    sends its results back (pickled claims). Serial when ``jobs`` is 1, there is one provider,
    processes cannot be forked, or CUDA is initialized (a forked child cannot use it)."""
    if jobs <= 1 or len(mods) < 2 or not _can_fork() or torch.cuda.is_initialized():
        return [_run_provider(m, mode, out, progress, threads) for m in mods], 0.0, 1
    import multiprocessing
    import queue

    importlib.import_module("torch._dynamo")  # the first torch.func call imports it (~1 s): once, before forking

    ctx = multiprocessing.get_context("fork")
    names = [m if isinstance(m, str) else provider_name(m) for m in mods]
    order = sorted(range(len(mods)), key=lambda i: -COST_HINT.get(names[i], _UNKNOWN_COST))
    counter, results = ctx.Value("i", 0), ctx.Queue()

    def take() -> int | None:
        with counter.get_lock():
            n = counter.value
            counter.value = n + 1
        return order[n] if n < len(order) else None

    def worker() -> None:   # runs in a forked child; progress bars stay with this process
        cpu = time.process_time()
        while (i := take()) is not None:
            res = _run_provider(mods[i], mode, out, False, threads)
            try:
                pickle.dumps(res)
            except Exception as e:  # claims that cannot travel back are a failed claim, like a crash
                detail = f"its claims could not be sent back from the worker process: {type(e).__name__}: {e}"
                res = _crashed(res.module, detail, detail, res.seconds, res.cpu_seconds)
            results.put(("done", i, res))
        results.put(("exit", time.process_time() - cpu))

    # not daemonic: a provider may start processes of its own; the finally below ends the workers
    procs = [ctx.Process(target=worker, name=f"reptile-verify-{j + 1}") for j in range(min(jobs, len(mods)) - 1)]
    for p in procs:
        p.start()
    done: dict[int, ProviderResult] = {}
    try:
        while (i := take()) is not None:
            done[i] = _run_provider(mods[i], mode, out, progress, threads)
        exits, worker_cpu, gone = 0, 0.0, False
        while exits < len(procs):
            try:
                msg = results.get(timeout=0.1 if gone else 0.5)
            except queue.Empty:
                if gone:        # every worker has ended and the queue is drained
                    break
                gone = not any(p.is_alive() for p in procs)   # a worker died without a word (killed, crashed)
                continue
            if msg[0] == "done":
                done[msg[1]] = msg[2]
            else:
                exits, worker_cpu = exits + 1, worker_cpu + msg[1]
    finally:
        for p in procs:
            if p.is_alive() and len(done) < len(mods):   # interrupted: do not leave workers behind
                p.terminate()
            p.join()
    for i in range(len(mods)):
        if i not in done:   # taken by a worker that died while running it
            code = next((p.exitcode for p in procs if p.exitcode), None)
            detail = f"the worker process running it exited with code {code} (killed, out of memory, or crashed)"
            done[i] = _crashed(names[i], detail, detail, float("nan"))
    return [done[i] for i in range(len(mods))], worker_cpu, len(procs) + 1


def run_verify(mode: str = "default", out_dir: str | Path = DEFAULT_OUT, progress: bool = False,
               providers: Sequence[Union[str, Provider]] | None = None,
               problems: Sequence[Problem] = (), jobs: int = 1) -> VerifyResult:
    """Run the providers in ``mode`` (``"quick"``, ``"default"``, ``"full"``) and write the report.

    Args:
        mode: how much sampling each provider does (quick < 30 s, default < 3 min on 2 CPU cores).
        out_dir: the report folder (created if needed).
        progress: show tqdm progress bars on stderr.
        providers: providers (functions, or names: :func:`resolve_providers`) to run instead of
            :data:`PROVIDERS`; with ``problems`` and no ``providers``, only the problems run.
        problems: user problems (:class:`analysis.problems.Problem`), each run by
            :func:`analysis.problem_checks.problem_checks` after the providers.
        jobs: processes sharing the providers (``reptile verify`` default: :func:`default_jobs`).
            With more than 1, this process forks ``jobs - 1`` workers before any provider runs and
            all take providers, largest first (:data:`COST_HINT`); the claims, files and report
            order are the same as with 1 (every provider seeds its own draws and starts from the
            same thread count; tests/test_verify_speed.py compares the two). Serial where processes
            cannot be forked or CUDA is initialized.
    Returns:
        A :class:`VerifyResult`; nothing is printed.
    Raises:
        ValueError: unknown mode, an empty provider list, ``jobs`` < 1, or an ``out_dir`` that cannot be created
            (a file in the way, no write permission). A provider module that does not exist
            becomes a failing claim, like one that crashes.
    """
    check_mode(mode)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a whole number >= 1, got {jobs!r}")
    mods = list(PROVIDERS if providers is None and not problems else resolve_providers(providers or []))
    mods += [problem_provider(p) for p in problems]
    if not mods:
        raise ValueError("no check providers to run")
    out = check_output_dir(out_dir, "out_dir")
    out.mkdir(parents=True, exist_ok=True)
    artifacts.prepare_outputs(out, ("report.md", "claims.csv"))  # fail before the checks; no stale report
    result = VerifyResult(mode, out)
    start, cpu = time.perf_counter(), time.process_time()
    threads = torch.get_num_threads()
    try:
        result.providers, worker_cpu, result.jobs = _run_all(mods, mode, out, progress, jobs, threads)
    finally:   # a provider that changed the thread count does not change the caller's
        torch.set_num_threads(threads)
    result.seconds, result.cpu_seconds = time.perf_counter() - start, time.process_time() - cpu + worker_cpu
    write_report(result)
    return result


def claims_frame(claims: Sequence[Claim]) -> pd.DataFrame:
    return pd.DataFrame([c.as_row() for c in claims],
                        columns=["name", "measured", "unit", "prediction", "holds", "detail", "skipped"])


def format_table(claims: Sequence[Claim], width: int = 60) -> str:
    """A plain-text table: claim, measured, prediction, holds/FAILS (long cells wrapped)."""
    import textwrap

    rows = [("claim", "measured", "prediction", "result")]
    rows += [(c.name, c.measured_text(), c.prediction, c.status) for c in claims]
    widths = [min(width, max(len(r[i]) for r in rows)) for i in range(3)] + [7]
    lines = []
    for j, r in enumerate(rows):
        cells = [textwrap.wrap(r[i], widths[i]) or [""] for i in range(3)] + [[r[3]]]
        for li in range(max(len(c) for c in cells)):
            lines.append("  ".join((c[li] if li < len(c) else "").ljust(widths[i]) for i, c in enumerate(cells)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_report(result: VerifyResult) -> None:
    """Write ``claims.csv`` and ``report.md`` into ``result.out_dir`` (atomically)."""
    out = result.out_dir
    artifacts.write_csv(out / "claims.csv", claims_frame(result.claims))
    n_fail = len(result.failed)
    lines = [
        "# reptile verify: the Reptile paper's Taylor-series claims, measured",
        "",
        f"Mode `{result.mode}`, {len(result.claims)} claims ({sum(bool(c.skipped) for c in result.claims)} skipped), "
        + (f"**{n_fail} failed**." if n_fail else "all hold.")
        + f" Total {result.seconds:.1f} s wall, {result.cpu_seconds:.1f} s CPU"
        + (f" ({result.jobs} processes)" if result.jobs > 1 else "") + f", on {platform.machine()} "
        f"(torch {torch.__version__}, {_plural(torch.get_num_threads(), 'thread')}; wall time grows with other load "
        f"on the machine, CPU time much less).",
        "",
        "| claim | measured | prediction | result |",
        "|---|---|---|---|",
    ]
    for c in result.claims:
        lines.append(f"| {_md_escape(c.name)} | {_md_escape(c.measured_text())} | {_md_escape(c.prediction)} | "
                     f"{'**FAILS**' if c.status == 'FAILS' else c.status} |")
    lines += ["", "## Timings", "", "| provider | wall s | CPU s | claims |", "|---|---|---|---|"]
    for p in result.providers:
        lines.append(f"| `{p.module}` | {p.seconds:.1f} | {p.cpu_seconds:.1f} | {len(p.claims)} |")
    lines += ["", "## Details", ""]
    for c in result.claims:
        detail = c.detail if len(c.detail) < 4000 else c.detail[:4000] + " ..."
        if "\n" in detail:
            lines += [f"- **{c.name}**:", "", "```", detail.rstrip(), "```", ""]
        else:
            lines.append(f"- **{c.name}**: {detail}")
    pngs = sorted(p.name for p in out.glob("*.png"))
    csvs = sorted(p.name for p in out.glob("*.csv"))
    if pngs:
        lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in pngs]
    lines += ["", "## Data", ""] + [f"- [{name}]({name})" for name in csvs]
    artifacts.write_text(out / "report.md", "\n".join(lines) + "\n")
