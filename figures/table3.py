"""The paper's Table 3 (few-shot Omniglot) on the glyph set: N-way K-shot accuracy over seeds.

One command runs (or resumes) every cell and assembles the table::

    python -m figures.table3                       # run/resume the plan, then collect
    python -m figures.table3 --collect             # only collect finished runs
    python -m figures.table3 --fast                # smoke test in a scratch folder

Each *training run* is (algorithm, N ways, seed) with Table 3's hyper-parameters for N (Adam
inner loop with beta1 = 0 and moments kept across tasks, 10 training shots, meta-batch 5, outer
step 1.0 annealed linearly to 0; 5-way: lr 0.001, 5 inner steps of 10; 20-way: lr 0.0005, 10
steps of 20). The 1-shot and 5-shot cells of the same N share the training runs: Table 3's
training hyper-parameters do not depend on K (the official commands differ only in ``--shots``,
which only changes evaluation), so the same initialization is evaluated twice, K = 1 and K = 5
(the paper trained each cell separately). Evaluation is the official code's: 50 Adam steps of
the eval batch (5 for 5-way, 10 for 20-way) from the moments meta-training ended with, one
held-out example per class; non-transductive and transductive prediction from the same
fine-tuned weights.

What differs from the paper (also in docs/fewshot.md): glyphs instead of Omniglot, fewer outer
iterations (PLAN; the outer step still anneals to 0 over the shorter run), possibly fewer filters,
fewer test tasks per run (the paper: 10,000); the +- is the sample standard deviation over
training seeds, as the paper's Reptile rows.

Outputs: ``<root>/<run>/`` (checkpoints, ``metrics.csv``, ``eval.json``, ``curve.csv``) for each
run, and ``<out>/table3.csv`` (one row per cell and mode: mean, std, seeds, per-seed values, the
paper's Omniglot number, the command, commits and seeds) and ``<out>/table3.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from figures.fewshot_common import COMMIT_AT_START, Evaluator, build_model, ci95, load_splits, provenance
from reptile import fewshot
from reptile.inner import Adam
from reptile.train import MetaTrainer, TrainConfig

NAME = "table3"
DEFAULT_ROOT = Path(os.environ.get("REPTILE_TABLE3_ROOT", "runs/table3"))
DEFAULT_OUT = Path(__file__).resolve().parent / "out"
ALGORITHMS = ("reptile", "fomaml")
SHOTS = (1, 5)
MODES = {"non_transductive": False, "transductive": True}


@dataclass(frozen=True)
class Setting:
    """Scale of one training run and its evaluation."""

    filters: int
    iterations: int
    eval_tasks: int
    dataset: str = "glyphs"
    checkpoint_every: int = 250
    curve_every: int = 0        # >0: also evaluate 1-shot non-transductively every this many iterations
    curve_tasks: int = 200
    compile: bool = True        # torch.compile the inner step (False in fast mode: compiling costs more there)


#: the scale of each N in full mode, chosen from the CPU budget (docs/fewshot.md, Table 3 section)
PLAN: dict[int, Setting] = {
    5: Setting(filters=32, iterations=6000, eval_tasks=500),    # ~75 ms CPU per iteration compiled
    20: Setting(filters=32, iterations=1000, eval_tasks=200),   # ~190 ms CPU per iteration compiled
}
FAST: dict[int, Setting] = {5: Setting(filters=8, iterations=4, eval_tasks=3, dataset="glyphs-small",
                                       checkpoint_every=2, curve_every=2, curve_tasks=2, compile=False)}
SEEDS = (0, 1, 2)


def preset(ways: int, shots: int = 1) -> fewshot.Preset:
    return fewshot.PRESETS[f"omniglot-{ways}w{shots}s"]


def run_name(algorithm: str, ways: int, s: Setting, seed: int) -> str:
    return f"{algorithm}-{ways}w-f{s.filters}-it{s.iterations}-seed{seed}"


def train_and_evaluate(root: Path, algorithm: str, ways: int, s: Setting, seed: int, *,
                       command: str, progress: bool = True) -> dict[str, Any]:
    """Train (resuming from the newest checkpoint) and evaluate one run; returns its ``eval.json``."""
    folder = root / run_name(algorithm, ways, s, seed)
    done = folder / "eval.json"
    if done.exists():
        return json.loads(done.read_text())
    p = preset(ways)
    splits = load_splits(s.dataset)
    model, loss_fn, phi = build_model(splits["train"], ways, s.filters, seed)
    schedule = "cycle"
    sampler = fewshot.EpisodeSampler(splits["train"], ways, p.train_shots, p.inner_steps, p.inner_batch, schedule)
    cfg = TrainConfig(algorithm, inner_steps=p.inner_steps, inner_batch=p.inner_batch, inner_optimizer="adam",
                      inner_lr=p.inner_lr, outer_lr=p.outer_lr, meta_batch=p.meta_batch, iterations=s.iterations,
                      seed=seed, checkpoint_every=s.checkpoint_every, log_every=50, keep_checkpoints=2,
                      compile=s.compile, channels_last=s.compile)
    trainer = MetaTrainer(loss_fn, phi, sampler, cfg, folder)
    trainer.resume()
    evaluator = Evaluator(model, loss_fn, Adam(p.inner_lr), compile=s.compile)
    cpu = time.process_time()
    curve = folder / "curve.csv"
    stops = list(range(s.curve_every, s.iterations, s.curve_every)) if s.curve_every else []
    for stop in [t for t in stops if t > trainer.iteration] + [s.iterations]:
        trainer.run(progress=progress, until=stop)
        if stop < s.iterations or s.curve_every:
            acc = evaluator(trainer.phi, splits["test"], n_way=ways, shots=1, steps=p.eval_inner_steps,
                            batch=p.eval_inner_batch, n_tasks=s.curve_tasks, state=trainer.inner_state,
                            modes=("non_transductive",))["non_transductive"]
            new = not curve.exists()
            with curve.open("a") as f:
                if new:
                    f.write("iteration,shots,accuracy,ci95,eval_tasks\n")
                f.write(f"{stop},1,{acc.mean():.6f},{ci95(acc):.6f},{s.curve_tasks}\n")
    train_cpu = time.process_time() - cpu
    results = {}
    for shots in SHOTS:
        q = preset(ways, shots)
        per = evaluator(trainer.phi, splits["test"], n_way=ways, shots=shots, steps=q.eval_inner_steps,
                        batch=q.eval_inner_batch, n_tasks=s.eval_tasks, state=trainer.inner_state,
                        modes=tuple(MODES), progress=progress)
        results[str(shots)] = {m: {"accuracy": float(v.mean()), "ci95": ci95(v), "n_tasks": len(v)}
                               for m, v in per.items()}
    out = {"algorithm": algorithm, "ways": ways, "seed": seed, "setting": asdict(s), "iteration": trainer.iteration,
           "results": results, "commit": COMMIT_AT_START, "command": command,
           "cpu_seconds_this_process": time.process_time() - cpu, "train_cpu_seconds_this_process": train_cpu,
           "eval_seed": 12345, "eval_inner_steps": p.eval_inner_steps}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(done)
    return out


def paper_value(algorithm: str, ways: int, shots: int, transductive: bool) -> float:
    """The paper's Omniglot number for the cell (%), or nan (FOMAML without transduction is not published)."""
    key = algorithm + ("+transduction" if transductive else "")
    return fewshot.PAPER_RESULTS[f"omniglot-{ways}w{shots}s"].get(key, math.nan)


def collect(root: Path, out: Path, argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Gather every ``<root>/*/eval.json`` into ``<out>/table3.csv`` and ``table3.md``; returns the CSV rows."""
    runs = [json.loads(p.read_text()) for p in sorted(root.glob("*/eval.json"))]
    if not runs:
        raise FileNotFoundError(f"no finished runs (eval.json) under {root}; run `python -m figures.table3` first")
    rows = []
    for r in runs:
        for shots, by_mode in r["results"].items():
            for mode, v in by_mode.items():
                s = r["setting"]
                rows.append({"algorithm": r["algorithm"], "ways": r["ways"], "shots": int(shots),
                             "transductive": MODES[mode], "seed": r["seed"], "accuracy": v["accuracy"],
                             "ci95_tasks": v["ci95"], "eval_tasks": v["n_tasks"], "filters": s["filters"],
                             "iterations": r["iteration"], "dataset": s["dataset"], "commit": r["commit"]})
    per = pd.DataFrame(rows)
    keys = ["algorithm", "ways", "shots", "transductive", "filters", "iterations", "dataset", "eval_tasks"]
    table = []
    for k, g in per.groupby(keys, sort=True):
        g = g.sort_values("seed")
        acc = 100 * g["accuracy"].to_numpy()
        cell = dict(zip(keys, k))
        table.append({**cell, "n_seeds": len(acc), "mean": acc.mean(),
                      "std": float(acc.std(ddof=1)) if len(acc) > 1 else math.nan,
                      "per_seed": " ".join(f"{a:.2f}" for a in acc),
                      "seeds": " ".join(str(int(x)) for x in g["seed"]),
                      "paper_omniglot": paper_value(cell["algorithm"], cell["ways"], cell["shots"], cell["transductive"]),
                      "commits": " ".join(sorted(set(g["commit"])))})
    df = pd.DataFrame(table)
    prov = provenance(sorted(set(per["seed"])), argv)
    df["command"] = prov["command"] + " ; runs: " + " | ".join(sorted({r["command"] for r in runs}))
    df["collect_commit"] = prov["commit"]
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"{NAME}.csv", index=False)
    (out / f"{NAME}.md").write_text(markdown(df))
    return df


def _main_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell, the configuration (filters, iterations) with the most seeds (ties: more iterations)."""
    keys = ["algorithm", "ways", "shots", "transductive"]
    order = df.sort_values(["n_seeds", "iterations"], ascending=[False, False])
    return order.groupby(keys, sort=False).head(1)


def markdown(df: pd.DataFrame) -> str:
    """The table as the paper lays it out (one row per method, one column per (N, K)), then the
    cells' other configurations (e.g. a longer single-seed run) as a list."""
    cols = [(5, 1), (5, 5), (20, 1), (20, 5)]
    main = _main_rows(df)
    head = "| method (glyphs; paper's Omniglot in brackets) | " + " | ".join(f"{n}-way {k}-shot" for n, k in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for algorithm in ALGORITHMS:
        for trans in (False, True):
            name = {"reptile": "Reptile", "fomaml": "FOMAML"}[algorithm] + (" + transduction" if trans else "")
            cells, any_row = [], False
            for n, k in cols:
                g = main[(main.algorithm == algorithm) & (main.ways == n) & (main.shots == k) & (main.transductive == trans)]
                paper = paper_value(algorithm, n, k, trans)
                ref = f" ({paper:.2f})" if not math.isnan(paper) else ""
                if len(g) == 0:
                    cells.append("not run" + ref)
                    continue
                any_row = True
                r = g.iloc[0]
                std = "n/a" if math.isnan(r["std"]) else f"{r['std']:.2f}"
                cells.append(f"{r['mean']:.2f} +- {std} (n={int(r['n_seeds'])}){ref}")
            if any_row:
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
    scale = "; ".join(f"{n}-way: {int(g.filters.iloc[0])} filters, {int(g.iterations.iloc[0])} outer iterations, "
                      f"{int(g.eval_tasks.iloc[0])} test tasks per run" for n, g in main.groupby("ways"))
    lines.append("")
    lines.append(f"Accuracy (%) on the glyph set's test scripts, mean +- sample std over training seeds (n); "
                 f"paper's Omniglot numbers in brackets (Reptile: 100K/200K iterations, 64 filters, std over 3 "
                 f"seeds; FOMAML: Finn et al., transductive only). Scale here: {scale}. The 1-shot and 5-shot "
                 f"cells of one N evaluate the same training runs.")
    other = df.drop(main.index)
    if len(other):
        lines.append("")
        lines.append("Other configurations:")
        lines.append("")
        for _, r in other.sort_values(["algorithm", "ways", "iterations", "shots", "transductive"]).iterrows():
            std = "" if math.isnan(r["std"]) else f" +- {r['std']:.2f}"
            lines.append(f"* {r['algorithm']}, {int(r['ways'])}-way {int(r['shots'])}-shot"
                         f"{' + transduction' if r['transductive'] else ''}, {int(r['filters'])} filters, "
                         f"{int(r['iterations'])} iterations, {int(r['eval_tasks'])} test tasks: {r['mean']:.2f}{std} "
                         f"(seeds {r['seeds']})")
    return "\n".join(lines) + "\n"


def plan(fast: bool, algorithms: Sequence[str], ways: Sequence[int], seeds: Sequence[int],
         iterations: int | None, filters: int | None, eval_tasks: int | None) -> list[tuple[str, int, Setting, int]]:
    """The runs to do, in order: every algorithm and N for seed 0 first, then seed 1, ..."""
    table = FAST if fast else PLAN
    todo = []
    for seed in seeds:
        for algorithm in algorithms:
            for n in ways:
                if n not in table:
                    raise ValueError(f"no setting for {n}-way in {'fast' if fast else 'full'} mode; choose from {sorted(table)}")
                s = table[n]
                s = Setting(**{**asdict(s), **{k: v for k, v in dict(iterations=iterations, filters=filters,
                                                                      eval_tasks=eval_tasks).items() if v is not None}})
                todo.append((algorithm, n, s, seed))
    return todo


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m figures.table3", description=__doc__.splitlines()[0])
    p.add_argument("--fast", action="store_true", help="tiny smoke test in a scratch folder (never figures/out)")
    p.add_argument("--collect", action="store_true", help="only collect finished runs into the table")
    p.add_argument("--root", type=Path, default=None, help=f"run folders (default {DEFAULT_ROOT}; --fast: a temp dir)")
    p.add_argument("--out", type=Path, default=None, help=f"table output folder (default {DEFAULT_OUT}; --fast: <root>/out)")
    p.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, default=["reptile"])
    p.add_argument("--ways", nargs="+", type=int, default=None, help="N of the runs (default 5 20; --fast: 5)")
    p.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    p.add_argument("--iterations", type=int, default=None, help="override the plan's outer iterations")
    p.add_argument("--filters", type=int, default=None, help="override the plan's filters")
    p.add_argument("--eval-tasks", type=int, default=None, help="override the plan's test tasks per run")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.fast:
        root = args.root or Path(tempfile.mkdtemp(prefix="reptile-table3-fast-"))
        out = args.out or root / "out"
        if out.resolve() == DEFAULT_OUT.resolve():
            p.error("--fast never writes to figures/out; choose another --out")
    else:
        root, out = args.root or DEFAULT_ROOT, args.out or DEFAULT_OUT
    command = provenance(args.seeds, ["python", "-m", "figures.table3", *(sys.argv[1:] if argv is None else argv)])["command"]
    if not args.collect:
        ways = args.ways or ([5] if args.fast else [5, 20])
        for algorithm, n, s, seed in plan(args.fast, args.algorithms, ways, args.seeds, args.iterations,
                                          args.filters, args.eval_tasks):
            tic = time.perf_counter()
            r = train_and_evaluate(root, algorithm, n, s, seed, command=command, progress=not args.no_progress)
            res = r["results"]
            print(f"{run_name(algorithm, n, s, seed)}: " + ", ".join(
                f"{k}-shot {100 * v['non_transductive']['accuracy']:.2f} / {100 * v['transductive']['accuracy']:.2f} "
                f"(transductive)" for k, v in res.items()) + f" [{time.perf_counter() - tic:.0f} s]", flush=True)
    try:
        df = collect(root, out, ["python", "-m", "figures.table3", *(sys.argv[1:] if argv is None else argv)])
    except FileNotFoundError as e:
        print(f"python -m figures.table3: error: {e}", file=sys.stderr)
        return 1
    print((out / f"{NAME}.md").read_text())
    print(f"wrote {out / f'{NAME}.csv'} and {out / f'{NAME}.md'} ({len(df)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
