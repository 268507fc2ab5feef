"""Section 5.2 on networks (analysis.manifold_nets): the distance callback, the same-budget
initializations and the paired statistics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.manifold_nets import (DistanceCallback, distance_summary, evaluate_initializations, paired, probe_tasks,
                                    sine_setup, train_initializations, update_vs_projection)
from analysis.manifolds import certified_projection

torch.set_num_threads(1)


def _small_probe(n: int = 1):
    # 4 grid points keep every projection of the 1-32-32-1 MLP to a fraction of a second
    return probe_tasks(n, seed=5, points=4)


def test_probe_tasks_are_seeded_float64_grids():
    a, b = probe_tasks(2, seed=3), probe_tasks(2, seed=3)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert a[0][0].dtype == torch.float64 and a[0][0].shape == (10, 1)
    assert not torch.equal(a[0][1], a[1][1])


def test_distance_callback_logs_certified_distances_during_training():
    loss_fn, phi, sampler = sine_setup(0, hidden=(32, 32))
    datas = _small_probe(1)
    cb = DistanceCallback(loss_fn, datas, every=2)
    runs = train_initializations(loss_fn, phi, sampler, ["reptile"], iterations=2, callbacks=lambda: [cb])
    end, hist = runs["reptile"]
    row = [h for h in hist if "dist_mean_sq" in h][-1]
    assert row["dist_certified"] == 1.0
    # the logged value is the mean of the certified squared distances at the final parameters
    ref = np.mean([certified_projection(loss_fn, {k: v.double() for k, v in end.items()}, d).distance ** 2
                   for d in datas])
    assert row["dist_mean_sq"] == pytest.approx(ref, rel=1e-9)
    assert row["dist_mean"] <= row["dist_mean_sq"] ** 0.5 + 1e-12        # mean D <= sqrt(mean D^2)
    with pytest.raises(ValueError):
        DistanceCallback(loss_fn, datas, every=0)


def test_paired_differences_and_summaries():
    a, b = np.array([3.0, 5.0, np.nan, 7.0]), np.array([2.0, 4.5, 1.0, 6.0])
    mean, half = paired(a, b)
    d = np.array([1.0, 0.5, 1.0])
    assert mean == pytest.approx(d.mean())
    # t interval with 2 degrees of freedom: t_0.975 = 4.3027
    assert half == pytest.approx(4.302652729911275 * d.std(ddof=1) / np.sqrt(3), rel=1e-9)
    loss_fn, phi, _ = sine_setup(0, hidden=(32, 32))
    datas = _small_probe(1)
    s = distance_summary("x", loss_fn, phi, datas)
    assert s.certified == 1 and s.n == 1 and np.all(np.isfinite(s.sq))
    summary, per_task = evaluate_initializations(loss_fn, {"random": phi, "joint": phi}, datas)
    assert summary[1]["paired_vs_random"] == 0.0 and len(per_task) == 2
    assert summary[0]["mean_sq"] == pytest.approx(float(s.sq[0]), rel=1e-12)


def test_update_vs_projection_on_the_mlp():
    loss_fn, phi, _ = sine_setup(0, hidden=(32, 32))
    proj, res = update_vs_projection(loss_fn, phi, _small_probe()[0], 0.01, [1, 10, 100])
    assert proj.converged
    assert [r.k for r in res] == [1, 10, 100]
    assert all(-1.0 <= r.cosine <= 1.0 for r in res)
    # the first GD step points along -grad L = -J^T (f - y) * 2/n, a vector in the row space of J at phi,
    # but the projection step is J(P)^T lambda at the far end: they differ, so the cosine is below 1
    assert res[0].cosine < 0.999
