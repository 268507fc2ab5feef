"""Committed few-shot figure data are reproducible, and the figures' fast evaluator is the official one.

* The compiled :class:`figures.fewshot_common.Evaluator` gives the same per-task accuracies as
  :func:`reptile.fewshot.evaluate_fewshot` (same tasks, same fine-tuning batches, same Adam state).
* Every committed few-shot CSV records the command, commit and seeds that produced it.
* One small committed point of Figures 3 and 4 is regenerated and compared (when committed at
  the current protocol).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from figures.fewshot_common import Evaluator, provenance  # noqa: E402
from reptile import fewshot  # noqa: E402
from reptile.data.images import ImageClassDataset  # noqa: E402
from reptile.inner import Adam, SGD  # noqa: E402
from reptile.losses import make_loss, params_of  # noqa: E402
from reptile.models import OmniglotCNN, seeded_init  # noqa: E402

OUT = ROOT / "figures" / "out"


def _dataset(n_classes: int = 8, n: int = 6, size: int = 8) -> ImageClassDataset:
    rng = np.random.default_rng(0)
    protos = rng.random((n_classes, size, size)).astype(np.float32)
    images = [np.clip(protos[c] + 0.3 * rng.standard_normal((n, size, size)).astype(np.float32), 0, 1)
              for c in range(n_classes)]
    return ImageClassDataset(images, [f"c{c}" for c in range(n_classes)], ["g"] * n_classes)


@pytest.mark.parametrize("optimizer", [Adam(0.01), SGD(0.05)])
def test_evaluator_equals_evaluate_fewshot(optimizer):
    ds = _dataset()
    model = seeded_init(0, lambda: OmniglotCNN(n_way=3, filters=4, image_size=8)).double()
    loss_fn, phi = make_loss(model, "cross_entropy"), params_of(model)
    state = optimizer.init(phi)
    if isinstance(optimizer, Adam):  # a non-trivial starting state, as after meta-training
        state = {"m": {k: 0.1 * torch.ones_like(v) for k, v in phi.items()},
                 "v": {k: 0.01 * torch.ones_like(v) for k, v in phi.items()}, "t": torch.tensor(7.0, dtype=torch.float64)}
    ref = fewshot.evaluate_fewshot(model, phi, ds, n_way=3, shots=2, inner_steps=4, inner_batch=4, optimizer=optimizer,
                                   state=state, n_tasks=6, seed=3, test_shots=2, loss_fn=loss_fn)
    ours = Evaluator(model, loss_fn, optimizer, compile=False)(phi, ds, n_way=3, shots=2, steps=4, batch=4, n_tasks=6,
                                                              state=state, seed=3, test_shots=2)
    for mode in fewshot.MODES:
        # float64: the fine-tuned weights agree to ~1e-15, far from any argmax tie, so every prediction is equal
        np.testing.assert_array_equal(ours[mode], ref.per_task[mode])


def test_provenance_names_command_commit_and_seeds():
    p = provenance([0, 1, 2], [str(ROOT / "figures" / "minibatch_overlap.py"), "--mode", "reduced"])
    assert p["command"] == "python -m figures.minibatch_overlap --mode reduced"
    assert p["seeds"] == "0 1 2"
    assert len(p["commit"].split("+")[0]) in (40, 7) or p["commit"] == "unknown"


@pytest.mark.parametrize("name", ["gradient_combinations", "minibatch_overlap", "table3"])
def test_committed_csv_records_provenance(name):
    path = OUT / f"{name}.csv"
    if not path.exists():
        pytest.skip(f"{path} not built yet")
    df = pd.read_csv(path)
    if "command" not in df.columns:
        pytest.skip(f"{path} predates the provenance columns; rebuild it (python -m figures.{name})")
    assert df["command"].str.contains(f"figures.{name}").all()
    commits = df["commit"] if "commit" in df.columns else df["commits"]
    assert commits.astype(str).str.len().min() >= 7
    assert "seeds" in df.columns and df["seeds"].notna().all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gradient_combinations", "minibatch_overlap"])
def test_regenerate_one_committed_point(name):
    """Recompute the cheapest committed point of a figure (seed 0) and compare it with the CSV."""
    import importlib

    fig = importlib.import_module(f"figures.{name}")
    path = OUT / f"{name}.csv"
    df = pd.read_csv(path)
    if "mode" not in df.columns:
        pytest.skip(f"{path} predates the provenance columns; rebuild it (python -m figures.{name})")
    if name == "gradient_combinations":  # g_1 (one step per iteration), first point after the start
        cand = df[(df.kind == "last") & (df.m == 1) & (df.seed == 0) & (df.iteration > 0)].sort_values("iteration")
    else:  # shared-tail FOMAML with the fewest steps and the smallest batch
        cand = df[(df.variant == "fomaml_shared") & (df.seed == 0)].sort_values(["k", "inner_batch"])
    row = cand.iloc[0].to_dict()
    acc = fig.regenerate(row)
    # same code path (compiled), seeds and tasks on the same kind of CPU: equal up to one prediction
    # flipped by float rounding, out of eval_tasks * 5 queries
    n = int(fig.SETTINGS[row["mode"]]["scale"].eval_tasks) * 5
    assert abs(acc - row["accuracy"]) <= 1.0 / n + 1e-9, (acc, row)


@pytest.mark.slow
def test_table3_fast_runs_end_to_end_in_a_scratch_folder(tmp_path):
    from figures import table3

    committed = OUT / "table3.csv"
    before = committed.stat().st_mtime if committed.exists() else None
    assert table3.main(["--fast", "--root", str(tmp_path), "--seeds", "0", "1", "--no-progress"]) == 0
    df = pd.read_csv(tmp_path / "out" / "table3.csv")
    assert len(df) == 4  # 5-way, K = 1 and 5, transductive or not
    assert (df["n_seeds"] == 2).all() and (df["seeds"] == "0 1").all()
    assert df["command"].str.contains("figures.table3 --fast").all()
    assert set(df["paper_omniglot"]) == {95.39, 97.68, 98.90, 99.48}
    md = (tmp_path / "out" / "table3.md").read_text()
    assert "| Reptile |" in md and "not run (88.14)" in md
    # resuming finds the finished runs and only collects again
    assert table3.main(["--fast", "--root", str(tmp_path), "--seeds", "0", "1", "--no-progress"]) == 0
    assert (committed.stat().st_mtime if committed.exists() else None) == before  # never figures/out
    with pytest.raises(SystemExit):
        table3.main(["--fast", "--out", str(OUT)])


@pytest.mark.slow
def test_regenerate_matches_a_fresh_fast_run(tmp_path):
    """regenerate() recomputes a point exactly as run() computed it (fast mode, eager path)."""
    from figures import gradient_combinations as fig3

    fig3.main(fast=True, out=tmp_path)
    df = pd.read_csv(tmp_path / "gradient_combinations.csv")
    assert {"command", "commit", "seeds", "mode"} <= set(df.columns) and (df["mode"] == "fast").all()
    row = df[(df.kind == "sum") & (df.m == 2) & (df.seed == 1)].sort_values("iteration").iloc[-1].to_dict()
    assert fig3.regenerate(row) == row["accuracy"]  # same process kind, same eager path: bit-identical
