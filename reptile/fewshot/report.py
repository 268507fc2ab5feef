"""Few-shot accuracy of trained runs (one per seed) and its mean +- std over runs, as the paper's tables."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..setups import EvalOptions, Setup, restore
from .evaluation import summarize_seeds
from .family import _build


def _build_fewshot(family: str, settings: dict[str, Any]) -> Setup:
    return _build(settings)


def report(runs: Sequence[str | Path], eval_tasks: int = 1000, eval_seed: int = 12345, transductive: bool = True,
           eval_split: str | None = None, eval_state: str = "checkpoint", progress: bool = False
           ) -> dict[str, Any]:
    """Evaluate the newest checkpoint of each run (one per seed) and summarize over runs.

    Returns ``{"runs": [{run, iteration, accuracy, accuracy_ci95, ...}], "over_seeds":
    {metric: {"mean", "std", "n"}}}`` with accuracies as fractions.
    """
    rows = []
    for run in runs:
        r = restore(run, _build_fewshot, family="fewshot")
        options = EvalOptions(n_tasks=eval_tasks, seed=eval_seed, inner_state=r.inner_state,
                              transductive=transductive, split=eval_split, state=eval_state, progress=progress)
        metrics = r.setup.evaluate(r.phi, options)
        rows.append({"run": str(run), "checkpoint": str(r.path), "iteration": r.iteration, **metrics})
    over = {}
    for key in ("accuracy", "accuracy_transductive"):
        vals = [r[key] for r in rows if key in r]
        if vals:
            m, s = summarize_seeds(vals)
            over[key] = {"mean": m, "std": s, "n": len(vals)}
    return {"runs": rows, "over_seeds": over}
