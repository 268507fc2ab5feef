"""The benchmark suite: ``python -m benchmarks [--quick] [--only SUITE,...]``.

Suites (each figure a ratio to a baseline measured in the same process, interleaved; medians over
repeats after warm-up; see ``benchmarks/common.py``):

* ``default``: what a user gets without flags (``TrainConfig()``: compile/channels_last "auto") at
  the paper's Omniglot 5-way settings against the plain PyTorch loop, at 1 and 2 threads in one
  interleaved comparison (``bench_meta.run_default``); also written to ``results/default.csv``;
* ``meta``: one meta-iteration of Reptile, FOMAML and MAML at the paper's Omniglot 5-way and
  Mini-ImageNet settings against the straightforward PyTorch loop (``bench_meta.py``);
* ``parallel``: the same Omniglot meta-iteration with its tasks split over 2 single-threaded
  processes (``reptile.distributed``, gloo), wall time against the reference loop with 2 threads;
* ``avggradinner``: AvgGradInner samples per second, vmap+jvp against a naive double-backward loop
  (``bench_avggradinner.py``);
* ``memory``: time and peak memory of MAML, FOMAML and Reptile against k, MAML's slope per step
  (``bench_memory.py``);
* ``hvp``: HVP time over gradient time (``bench_hvp.py``, run as its own process when present);
* ``manifolds``: the certified projection onto a sine task's solution set against the L-BFGS end
  point, time and distance (``bench_manifolds.py``).

Writes ``results[-SUITES].csv`` (one row per candidate; ``-SUITES`` when ``--only`` names a
subset, so that a partial run does not replace the full table), ``machine[-SUITES].json`` (CPU,
threads, torch, date, load average before and after) and ``bench_hvp.csv`` into
``benchmarks/results/`` (the committed results), or, with ``--quick``, ``results-quick*.csv`` and
``machine-quick*.json`` and ``bench_hvp.csv`` into the git-ignored scratch folder
``benchmarks/results/quick/``, never over the committed ones; ``--out DIR`` for elsewhere.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path


if __package__ in (None, ""):  # python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_avggradinner, bench_manifolds, bench_memory, bench_meta  # noqa: E402
from benchmarks.common import QUICK_RESULTS, RESULTS, fmt_table, machine  # noqa: E402
from reptile.cli.argtypes import add_threads_flag  # noqa: E402
from reptile.threads import apply_threads  # noqa: E402

SUITES = ("default", "meta", "parallel", "avggradinner", "memory", "hvp", "manifolds")
HERE = Path(__file__).resolve().parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="short pass: Omniglot only, fewer repeats and k values, no torch.compile candidates")
    p.add_argument("--only", default=",".join(SUITES), help=f"comma-separated suites among {','.join(SUITES)}")
    p.add_argument("--algorithms", default="reptile,fomaml,maml", help="meta suite: algorithms")
    p.add_argument("--settings", default=None, help="meta suite: omniglot,miniimagenet (default both; quick: omniglot)")
    p.add_argument("--variants", default=None,
                   help=f"meta suite: engine paths among {','.join(bench_meta.VARIANTS)} (default: all for Omniglot; "
                        "eager, channels_last, compile+channels_last for Mini-ImageNet; quick: no compile)")
    p.add_argument("--repeats", type=int, default=None, help="rounds per comparison (default 9, quick 3)")
    add_threads_flag(p)
    p.add_argument("--device", default="cpu",
                   help="cpu (default) or cuda[:i]: the meta, avggradinner, memory and hvp suites run there "
                        "(default and parallel are CPU-thread measurements)")
    p.add_argument("--default-threads", default="1,2", help="default suite: thread counts (default 1,2)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"folder for the CSVs and JSON (default {RESULTS}; with --quick {QUICK_RESULTS}, "
                        "never the committed results)")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = QUICK_RESULTS if args.quick else RESULTS
    return args


def hvp_command(quick: bool, threads: int, out: Path, device: str = "cpu") -> list[str]:
    """The ``benchmarks.bench_hvp`` command line: its CSV goes to ``out/bench_hvp.csv``; quick: 5 repeats
    after 1 warm-up, else the script's defaults plus the ``torch.compile`` rows of the committed CSV."""
    cmd = [sys.executable, "-m", "benchmarks.bench_hvp", "--threads", str(threads), "--out", str(out / "bench_hvp.csv"),
           "--device", device]
    return cmd + (["--repeats", "5", "--warmup", "1"] if quick else ["--compile"])


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    threads = apply_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    suites = [s for s in args.only.split(",") if s]
    bad = [s for s in suites if s not in SUITES]
    if bad:
        print(f"unknown suite(s) {bad}; choose among {SUITES}", file=sys.stderr)
        return 2
    reps = args.repeats or (3 if args.quick else 9)
    info = machine()
    info["load_before"] = info.pop("loadavg_1_5_15")
    info["command"] = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    log = lambda s: print(s, flush=True)
    log(f"machine: {info['cpu']}, {info['cores']} cores, {threads} torch thread(s), torch {info['torch']}, "
        f"load average {info['load_before']}")
    rows: list[dict] = []
    extra: dict[str, float] = {}
    t0 = time.time()
    if "default" in suites:
        log("== the default path (TrainConfig() as it comes) vs the plain PyTorch loop, Omniglot 5-way, Reptile")
        default_threads = tuple(int(n) for n in args.default_threads.split(","))
        drows = bench_meta.run_default(reps, default_threads, log)
        rows += drows
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / f"default{'-quick' if args.quick else ''}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in drows for k in r)))
            w.writeheader()
            w.writerows(drows)
        for r in drows:
            if r["candidate"] == "default":
                extra[f"default_ratio_wall_{r['threads']}_threads"] = r["ratio_wall"]
        apply_threads(threads)
    if "meta" in suites:
        settings = (args.settings or ("omniglot" if args.quick else "omniglot,miniimagenet")).split(",")
        repeats = {"omniglot": reps, "miniimagenet": max(3, reps // 2)}
        log(f"== meta-iteration vs the straightforward PyTorch loop ({', '.join(settings)})")
        for setting in settings:
            variants = (args.variants or ("eager,channels_last,vmap" if args.quick else
                                          ",".join(bench_meta.VARIANTS) if setting == "omniglot" else
                                          "default,eager,channels_last,compile+channels_last")).split(",")
            rows += bench_meta.run([setting], args.algorithms.split(","), variants, repeats, log, args.device)
    if "parallel" in suites:
        log("== both cores: the meta-batch split over 2 single-threaded processes vs the reference with 2 threads")
        pv = (args.variants or ("eager" if args.quick else "eager,compile+channels_last")).split(",")
        rows += bench_meta.run_parallel(["omniglot"], args.algorithms.split(","), pv, reps, 2, log)
    if "avggradinner" in suites:
        log("== AvgGradInner (Hbar_2 gbar_1) samples per second: vmap+jvp vs naive double backward")
        rows += bench_avggradinner.run(list(bench_avggradinner.MODELS), reps, args.quick, log, args.device)
    if "memory" in suites:
        log("== time and peak memory against k (Omniglot CNN, SGD inner loop)")
        mem_rows, slopes = bench_memory.run(args.quick, reps, log, args.device)
        rows += mem_rows
        extra.update(slopes)
        log(f"  MAML memory slope: {slopes['maml_peak_alloc_mib_per_step']:.2f} MiB per inner step (profiler peak), "
            f"{slopes['maml_rss_mib_per_step']:.2f} MiB per step (RSS high-water); "
            f"Reptile: {slopes['reptile_peak_alloc_mib_per_step']:.3f} / {slopes['reptile_rss_mib_per_step']:.3f}")
    if "manifolds" in suites:
        log("== certified projection onto a sine task's solution set vs the L-BFGS end point (bench_manifolds.py)")
        manifold_rows = bench_manifolds.run(max(2, reps // 3), args.quick, log)
        bench_manifolds.write(manifold_rows, args.out / bench_manifolds.CSV_NAME)
        rows += manifold_rows
    if "hvp" in suites:
        hvp = HERE / "bench_hvp.py"
        if hvp.exists():
            log("== HVP time over gradient time (benchmarks/bench_hvp.py)")
            rc = subprocess.call(hvp_command(args.quick, threads, args.out, args.device), cwd=HERE.parent)
            if rc != 0:
                log(f"  bench_hvp exited with {rc}")
        else:
            log("== hvp: benchmarks/bench_hvp.py not present, skipped")
    info["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info["minutes"] = round((time.time() - t0) / 60, 1)
    info.update(extra)
    if rows:
        cols = ["suite", "setting", "algorithm", "k", "threads", "candidate", "baseline", "ratio_cpu", "ratio_wall",
                "cpu_ms", "speedup_cpu", "samples_per_s_cpu", "peak_alloc_mib", "rss_growth_mib", "first_call_s"]
        cols = [c for c in cols if any(c in r for r in rows)]
        log("\n" + fmt_table(rows, cols))
        args.out.mkdir(parents=True, exist_ok=True)
        tag = ("-quick" if args.quick else "") + ("" if set(suites) == set(SUITES) else "-" + "-".join(suites))
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(args.out / f"results{tag}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        (args.out / f"machine{tag}.json").write_text(json.dumps(info, indent=1) + "\n")
        log(f"\nwrote {args.out / f'results{tag}.csv'} and machine{tag}.json; load average before {info['load_before']}, "
            f"after {info['load_after']}; {info['minutes']} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
