"""The speed-ups of ``reptile verify`` (issue 17) change no result.

Each faster path is compared with the slower computation it replaced: the least-squares sampler
(numpy indexing) with ``dist.sample(rng).minibatches(...)`` bit for bit, the breakdown
prediction's Gram-matrix evaluation with the per-alpha loop, the vmapped batched Reptile with a
Python loop over the tasks.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import taylor_checks
from analysis.manifolds import batched_reptile_gradients
from analysis.problems import least_squares_problem
from reptile import tree
from reptile.algorithms import meta_gradient
from reptile.losses import make_loss
from reptile.models import LinearModel


@pytest.mark.parametrize("dim,n_points", [(10, 20), (3, 7)])
def test_least_squares_sampler_draws_the_same_batches_bit_for_bit(dim, n_points):
    prob = least_squares_problem(0, dim=dim, n_points=n_points)
    dist, d = prob.distribution, prob.info["input_scales"]
    for k, b in [(1, 5), (2, 5), (3, 5), (4, 5), (2, n_points)]:
        sampler = prob.sampler(k, b)
        for s in range(40):
            x, y = sampler(np.random.default_rng([2027, s]))
            rng = np.random.default_rng([2027, s])             # the generic path it replaced
            x0, y0 = dist.sample(rng).minibatches(k, b, rng, "replacement")
            x0 = x0 * d
            assert x.dtype == x0.dtype == torch.float64 and y.dtype == y0.dtype
            assert x.shape == x0.shape and y.shape == y0.shape
            assert torch.equal(x, x0) and torch.equal(y, y0), (k, b, s)


def test_sample_arrays_are_the_draws_of_sample():
    dist = least_squares_problem(0).distribution
    w, a, y = dist.sample_arrays(np.random.default_rng(5))
    task = dist.sample(np.random.default_rng(5))
    assert np.array_equal(task.w.numpy(), w) and np.array_equal(task.inputs.numpy(), a)
    assert np.array_equal(task.targets.numpy()[:, 0], y)


def _first_above_loop(c, grid, threshold):
    """The per-alpha loop ``breakdown_claim_for`` ran before (the reference)."""
    err = np.array([float((a * a * c[2]).norm() / (c[0] + a * c[1] + a * a * c[2]).norm()) for a in grid])
    above = np.nonzero(err > threshold)[0]
    return float(grid[above[0]]) if above.size else float("nan")


def _same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == b


def test_first_above_equals_the_loop_on_random_coefficients():
    gen = torch.Generator().manual_seed(0)
    for trial in range(30):
        p = [5, 50, 4353][trial % 3]
        c = [torch.randn(p, generator=gen, dtype=torch.float64) * float(10.0 ** torch.randint(-3, 4, (1,), generator=gen))
             for _ in range(3)]
        grid = np.geomspace(1e-4, 1e2, 3000) * np.sqrt(float(c[0].norm()) / float(c[2].norm()))
        assert _same(taylor_checks.first_above(c, grid, 0.1), _first_above_loop(c, grid, 0.1)), trial


def test_first_above_equals_the_loop_in_hard_cases():
    gen = torch.Generator().manual_seed(1)
    c0, c1 = torch.randn(40, generator=gen, dtype=torch.float64), torch.randn(40, generator=gen, dtype=torch.float64)
    grid = np.geomspace(1e-3, 1e1, 3000)
    cases = {
        "c2 = 0 (exact leading order: never crosses)": [c0, c1, torch.zeros(40, dtype=torch.float64)],
        "c0 + a c1 + a^2 c2 = 0 at a grid point (cancellation)": [c0, -c0 / grid[1500] - grid[1500] * c1, c1],
        "parallel coefficients": [c0, -2.0 * c0, 0.9 * c0],
    }
    for name, c in cases.items():
        assert _same(taylor_checks.first_above(c, grid, 0.1), _first_above_loop(c, grid, 0.1)), name
    # strong cancellation (c0 + a c1 ~ 0 near the crossing): the Gram matrix alone misplaces the
    # crossing here (in most of these draws); the points near the threshold are re-evaluated directly
    for trial in range(12):
        a_star = float(grid[1500])
        c1 = -c0 / a_star + 10.0 ** -(4 + trial % 5) * torch.randn(40, generator=gen, dtype=torch.float64)
        c2 = 10.0 ** -(3 + trial % 6) * torch.randn(40, generator=gen, dtype=torch.float64)
        c = [c0, c1, c2]
        t = taylor_checks.second_order_error(c, float(grid[1500 - 3 * trial]))
        for thr in (t, np.nextafter(t, 0), np.nextafter(t, 1)):
            assert _same(taylor_checks.first_above(c, grid, thr), _first_above_loop(c, grid, thr)), trial
    # the threshold exactly at a grid point's error: decided by the direct evaluation, as the loop did
    c = [c0, c1, torch.randn(40, generator=gen, dtype=torch.float64)]
    t = taylor_checks.second_order_error(c, float(grid[700]))
    for thr in (t, np.nextafter(t, 0), np.nextafter(t, 1)):
        assert _same(taylor_checks.first_above(c, grid, thr), _first_above_loop(c, grid, thr))


def test_breakdown_predictions_unchanged_on_the_sine_mlp():
    from analysis import taylor
    from analysis.problems import sine_problem

    prob = sine_problem(0)
    batches = prob.sampler(3, prob.batch_size)(np.random.default_rng([200, 0]))
    exp = taylor.expand(prob.loss_fn, prob.phi, batches, 2)
    for name in taylor.ALGORITHMS:
        c = [tree.flatten(p).double() for p in exp.coefficients(name)]
        grid = np.geomspace(1e-4, 1e2, 3000) * np.sqrt(float(c[0].norm()) / float(c[2].norm()))
        assert _same(taylor_checks.first_above(c, grid, 0.1), _first_above_loop(c, grid, 0.1)), name


def test_batched_reptile_gradients_match_the_loop_over_tasks():
    loss_fn = make_loss(LinearModel(3).double(), "mse")
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 5, 2, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(6, 5, 2, 1, generator=gen, dtype=torch.float64)
    phi = {"linear.weight": torch.randn(1, 3, generator=gen, dtype=torch.float64)}
    got = batched_reptile_gradients(loss_fn, 0.3)(phi, x, y)["linear.weight"]
    ref = torch.stack([meta_gradient("reptile", loss_fn, phi, (x[i], y[i]), 0.3)["linear.weight"] for i in range(6)])
    # float64: the batched matmuls may sum in another order, a few eps relative at most
    torch.testing.assert_close(got, ref, rtol=1e-13, atol=1e-14)
