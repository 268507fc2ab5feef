"""Gradient alignment (analysis.alignment): statistics against hand-computed values, the callback in
the trainer and its metrics CSV."""
from __future__ import annotations

import csv
import math

import pytest
import torch

from analysis.alignment import (Alignment, AlignmentCallback, alignment_from_gradients, gradient_alignment,
                                minibatch_gradients)
from reptile.losses import make_loss, params_of
from reptile.models import LinearModel
from reptile.tasks import LeastSquaresTaskDistribution
from reptile.train import MetaTrainer, TrainConfig

torch.set_num_threads(1)

# two tasks, two minibatch gradients each, in R^2
G = torch.tensor([[[1.0, 0.0], [1.0, 1.0]],       # task 0: g00, g01
                  [[0.0, 2.0], [-1.0, 0.0]]],     # task 1: g10, g11
                 dtype=torch.float64)
S2 = math.sqrt(2.0)
# by hand (ordered pairs; each unordered pair counts twice, which leaves the means unchanged):
#   within:  g00.g01 = 1, g10.g11 = 0                                 -> mean 1/2
#            cos: 1/sqrt2, 0                                          -> mean 1/(2 sqrt2)
#   across:  g00.g10 = 0, g00.g11 = -1, g01.g10 = 2, g01.g11 = -1     -> mean 0
#            cos: 0, -1, 2/(2 sqrt2), -1/sqrt2                        -> mean -1/4
#   |g|^2:   1, 2, 4, 1                                               -> mean 2
#   mean g = (1, 3)/4                                                 -> |.|^2 = 10/16
EXPECTED = dict(within_dot=0.5, within_cos=1 / (2 * S2), across_dot=0.0, across_cos=-0.25, sq_norm=2.0,
                within_ratio=0.25, mean_grad_sq_norm=10 / 16)


def test_alignment_matches_hand_computed_values():
    a = alignment_from_gradients(G)
    assert (a.n_tasks, a.k) == (2, 2)
    for name, value in EXPECTED.items():
        # a handful of float64 products and sums of small integers: exact up to one rounding
        assert getattr(a, name) == pytest.approx(value, abs=1e-15), name
    assert set(a.as_dict()) == {"align_" + k for k in EXPECTED}


def test_alignment_matches_brute_force_on_random_gradients():
    g = torch.randn(4, 3, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = alignment_from_gradients(g)
    n, k, _ = g.shape
    within = [g[t, i] @ g[t, j] for t in range(n) for i in range(k) for j in range(k) if i != j]
    across = [g[t, i] @ g[s, j] for t in range(n) for s in range(n) if s != t for i in range(k) for j in range(k)]
    cos = lambda u, v: u @ v / (u.norm() * v.norm())  # noqa: E731
    within_cos = [cos(g[t, i], g[t, j]) for t in range(n) for i in range(k) for j in range(k) if i != j]
    across_cos = [cos(g[t, i], g[s, j]) for t in range(n) for s in range(n) if s != t for i in range(k) for j in range(k)]
    # the closed-form sums (|sum|^2 - sum of squares) against explicit pair loops: float64 rounding only
    assert a.within_dot == pytest.approx(float(torch.stack(within).mean()), abs=1e-12)
    assert a.across_dot == pytest.approx(float(torch.stack(across).mean()), abs=1e-12)
    assert a.within_cos == pytest.approx(float(torch.stack(within_cos).mean()), abs=1e-12)
    assert a.across_cos == pytest.approx(float(torch.stack(across_cos).mean()), abs=1e-12)


def _linear_loss(params, batch):
    x, _ = batch
    return (x @ params["w"]).mean()          # gradient = mean of the rows of x


def test_gradient_alignment_through_a_loss_function():
    # each minibatch has two rows whose mean is the wanted gradient: rows g + e and g - e
    e = torch.tensor([0.3, -0.7], dtype=torch.float64)
    tasks = []
    for t in range(2):
        x = torch.stack([torch.stack([G[t, i] + e, G[t, i] - e]) for i in range(2)])   # [k=2, b=2, 2]
        tasks.append((x, torch.zeros(2, 2, 1, dtype=torch.float64)))
    phi = {"w": torch.zeros(2, dtype=torch.float64)}
    grads = minibatch_gradients(_linear_loss, phi, tasks[0])
    assert torch.allclose(grads, G[0], atol=1e-15)
    a = gradient_alignment(_linear_loss, phi, tasks)
    assert isinstance(a, Alignment)
    for name, value in EXPECTED.items():
        assert getattr(a, name) == pytest.approx(value, abs=1e-14), name


def test_alignment_input_errors():
    with pytest.raises(ValueError, match="k >= 2"):
        alignment_from_gradients(G[:, :1])
    with pytest.raises(ValueError, match="n_tasks, k, P"):
        alignment_from_gradients(G[0])
    with pytest.raises(ValueError, match="zero"):
        alignment_from_gradients(torch.zeros(2, 2, 3))
    single = alignment_from_gradients(G[:1])
    assert math.isnan(single.across_dot)                 # no pairs of distinct tasks
    with pytest.raises(ValueError, match="at least one task"):
        gradient_alignment(_linear_loss, {"w": torch.zeros(2)}, [])


def test_callback_logs_to_metrics_csv(tmp_path):
    dist = LeastSquaresTaskDistribution(dim=4, n_points=6, dtype=torch.float32)
    model = LinearModel(4)
    loss_fn = make_loss(model, "mse")

    def sampler(rng):
        return dist.sample(rng).minibatches(3, 2, rng, "cycle")

    cb = AlignmentCallback(loss_fn, sampler, every=2, n_tasks=3, seed=5)
    first = cb(0, params_of(model))
    assert cb(0, params_of(model)) == first                  # fixed probe tasks: the same numbers each call
    cfg = TrainConfig(inner_steps=3, inner_batch=2, iterations=5, log_every=10, checkpoint_every=10)
    MetaTrainer(loss_fn, params_of(model), sampler, cfg, out_dir=tmp_path, callbacks=[cb]).run(progress=False)
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    logged = {(int(r["iteration"]), r["metric"]) for r in rows}
    for it in (2, 4, 5):                                     # every 2 iterations, and the last one
        for name in EXPECTED:
            assert (it, "align_" + name) in logged
    assert (3, "align_within_cos") not in logged
    vals = [float(r["value"]) for r in rows if r["metric"] == "align_within_cos"]
    assert all(-1.0 <= v <= 1.0 for v in vals)


def test_alignment_experiment_writes_its_files(tmp_path):
    from analysis.alignment_checks import run_alignment_experiment, summarize
    res = run_alignment_experiment(("reptile", "joint"), iterations=4, every=2, n_probe=2, hidden=(4, 4), out_dir=tmp_path)
    assert [r["iteration"] for r in res["reptile"]] == [0.0, 2.0, 4.0]
    assert res["reptile"][0] == res["joint"][0]                   # same start, same probe tasks
    with (tmp_path / "alignment.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["algorithm"] for r in rows} == {"reptile", "joint"} and len(rows) == 2 * 3 * 7
    assert (tmp_path / "reptile" / "metrics.csv").exists()
    assert not (tmp_path / "reptile" / "checkpoints").exists()
    s = summarize(res)
    assert s["joint"]["start"] == s["reptile"]["start"]
