"""Taylor expansions of the meta-gradients (analysis.taylor)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.func import grad, jvp

import analysis
from analysis import taylor
from analysis.problems import least_squares_problem, sine_problem
from reptile import tree


@pytest.fixture(scope="module")
def sine():
    prob = sine_problem(0)
    batches = prob.sampler(5, 10)(np.random.default_rng(1))
    return prob, batches


def test_residual_slopes_on_the_mlp(sine):
    """Leading order: residual ~ alpha^2; with the alpha^2 terms: ~ alpha^3; all algorithms, k = 2..5."""
    prob, batches = sine
    # asymptotic regime: top Hessian eigenvalue ~35 for this task, so alpha k lambda <= 0.55 at
    # alpha = 10^-2.5, k = 5; the smallest alpha keeps second-order residuals far above rounding
    alphas = np.logspace(-4.5, -2.5, 5)
    df = taylor.alpha_sweep(prob.loss_fn, prob.phi, batches, alphas, ks=[2, 3, 4, 5], orders=(1, 2))
    s = taylor.slopes(df)
    assert len(s) == 3 * 4 * 2
    lead, second = s[s.order == 1], s[s.order == 2]
    # the bands: 2 +- 0.2 and 3 +- 0.3 (measured: 1.94..2.00 and 2.97..3.00)
    assert lead.slope.between(1.8, 2.2).all(), lead
    assert second.slope.between(2.7, 3.3).all(), second
    assert set(df.columns) >= {"k", "algorithm", "order", "alpha", "alpha_k", "residual", "relative_error",
                               "slope", "slope_se"}


def test_expansion_equals_taylor_mode_derivatives_in_alpha():
    """The derived coefficients equal d^n g / d alpha^n / n! at alpha = 0, computed by nested jvp
    through a hand-written SGD loop (an independent route to the same numbers)."""
    prob = sine_problem(0, sizes=(1, 8, 8, 1))
    f, phi, k = prob.loss_fn, prob.phi, 4
    x, y = prob.sampler(k, 6)(np.random.default_rng(3))

    def inner(alpha, p, steps):
        gs = []
        for i in range(steps):
            g = grad(f)(p, (x[i], y[i]))
            gs.append(g)
            p = {n: p[n] - alpha * g[n] for n in p}
        return p, gs

    fns = {"reptile": lambda a: tree.flatten(tree.weighted_sum(inner(a, phi, k)[1], [1.0] * k)),
           "fomaml": lambda a: tree.flatten(inner(a, phi, k)[1][-1]),
           "maml": lambda a: tree.flatten(grad(lambda p: f(inner(a, p, k - 1)[0], (x[k - 1], y[k - 1])))(phi))}
    a0, one = torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64)
    exp = taylor.expand(f, phi, (x, y), 2)
    for name, fn in fns.items():
        c1 = jvp(fn, (a0,), (one,))[1]
        c2 = jvp(lambda a: jvp(fn, (a,), (one,))[1], (a0,), (one,))[1] / 2
        for got, want in zip([tree.flatten(c) for c in exp.coefficients(name)], [fn(a0), c1, c2]):
            # float64, a few hundred operations: rounding ~1e-15 relative
            assert (got - want).abs().max() <= 1e-12 * want.abs().max(), name


def test_least_squares_polynomials_are_exact():
    """Constant Hessians: g_i has degree i-1 in alpha, so these predictions are exact."""
    prob = least_squares_problem(0)
    for k, order, names in [(2, 1, ("fomaml", "reptile")), (2, 2, ("maml",)), (3, 2, ("fomaml", "reptile"))]:
        batches = prob.sampler(k, 5)(np.random.default_rng(k))
        for alpha in (0.01, 0.2):
            meas = taylor.measured(prob.loss_fn, prob.phi, batches, alpha)
            pred = taylor.leading_order(prob.loss_fn, prob.phi, batches, alpha) if order == 1 else \
                taylor.second_order(prob.loss_fn, prob.phi, batches, alpha)
            for name in names:
                rel = tree.norm(tree.sub(meas[name], pred[name])) / tree.norm(meas[name])
                assert rel < 1e-12, (k, order, name, alpha)  # polynomial identities, float64 rounding only
    # and where it is not exact, the leading order misses by O(alpha^2)
    batches = prob.sampler(3, 5)(np.random.default_rng(0))
    meas = taylor.measured(prob.loss_fn, prob.phi, batches, 0.05)
    pred = taylor.leading_order(prob.loss_fn, prob.phi, batches, 0.05)
    assert tree.norm(tree.sub(meas["reptile"], pred["reptile"])) > 1e-6


def test_leading_order_matches_the_paper_formulas_k2(sine):
    prob, batches = sine
    f, phi = prob.loss_fn, prob.phi
    b2 = (batches[0][:2], batches[1][:2])
    alpha = 0.01
    g1, g2 = taylor.gbars(f, phi, b2)
    hg = taylor.hbar_gbar(f, phi, b2)
    pred = analysis.taylor.leading_order(f, phi, b2, alpha)
    want = {"maml": tree.add(tree.add(g2, hg[(2, 1)], -alpha), hg[(1, 2)], -alpha),
            "fomaml": tree.add(g2, hg[(2, 1)], -alpha),
            "reptile": tree.add(tree.add(g1, g2), hg[(2, 1)], -alpha)}
    for name in want:
        assert tree.norm(tree.sub(pred[name], want[name])) <= 1e-12 * tree.norm(want[name])  # same sums


def test_combinations_and_measured(sine):
    prob, batches = sine
    f, phi = prob.loss_fn, prob.phi
    b3 = (batches[0][:3], batches[1][:3])
    alpha = 1e-3
    for weights, same in [([1.0, 1.0, 1.0], "reptile"), ([0.0, 0.0, 1.0], "fomaml")]:
        pred = taylor.leading_order(f, phi, b3, alpha, weights=weights)
        assert tree.norm(tree.sub(pred["combination"], pred[same])) <= 1e-12 * tree.norm(pred[same])
        meas = taylor.measured(f, phi, b3, alpha, weights=weights)
        # "reptile" is (phi - phi~)/alpha: cancellation costs ~eps |phi| / alpha ~ 1e-12 here
        assert tree.norm(tree.sub(meas["combination"], meas[same])) <= 1e-9 * tree.norm(meas[same])
    d = taylor.measured(f, phi, b3, alpha)
    s = taylor.measured(f, phi, b3, alpha, reptile="sum")
    assert tree.norm(tree.sub(d["reptile"], s["reptile"])) <= 1e-9 * tree.norm(s["reptile"])


def test_bad_inputs(sine):
    prob, batches = sine
    f, phi = prob.loss_fn, prob.phi
    with pytest.raises(ValueError, match="expected k = 3"):
        taylor.leading_order(f, phi, batches, 0.01, k=3)          # 5 minibatches given
    one = (batches[0][:1], batches[1][:1])
    with pytest.raises(ValueError, match="at least 2"):
        taylor.leading_order(f, phi, one, 0.01)
    for alpha in (0.0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            taylor.leading_order(f, phi, batches, alpha)
    with pytest.raises(ValueError, match="positive"):
        taylor.alpha_sweep(f, phi, batches, [1e-3, 0.0, 1e-2])
    with pytest.raises(ValueError, match="positive"):
        taylor.alpha_sweep(f, phi, batches, [1e-3, -1e-2])
    with pytest.raises(ValueError, match="at least 2"):
        taylor.alpha_sweep(f, phi, batches, [1e-3])
    with pytest.raises(ValueError, match="k must be"):
        taylor.alpha_sweep(f, phi, batches, [1e-3, 1e-2], ks=[6])
    with pytest.raises(ValueError, match="weights"):
        taylor.leading_order(f, phi, batches, 0.01, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="order"):
        taylor.expand(f, phi, batches, order=3)
    with pytest.raises(ValueError, match="scalar"):
        taylor.leading_order(lambda p, b: f(p, b).reshape(1), phi, batches, 0.01)


def test_fit_slope_and_breakdown():
    a = np.logspace(-4, -1, 7)
    slope, se = taylor.fit_slope(a, 3.0 * a ** 2)
    assert abs(slope - 2) < 1e-12 and se < 1e-10  # exact power law
    rows = [dict(k=2, algorithm="maml", order=1, alpha=x, relative_error=e)
            for x, e in zip([1e-3, 1e-2, 1e-1], [0.01, 0.05, 0.5])]
    rows += [dict(k=2, algorithm="fomaml", order=1, alpha=x, relative_error=e)
             for x, e in zip([1e-3, 1e-2, 1e-1], [0.2, 0.3, 0.4])]
    rows += [dict(k=2, algorithm="reptile", order=1, alpha=x, relative_error=e)
             for x, e in zip([1e-3, 1e-2, 1e-1], [0.01, 0.02, float("nan")])]
    out = taylor.breakdown(pd.DataFrame(rows), 0.1).set_index("algorithm")
    # log-linear interpolation between (1e-2, 0.05) and (1e-1, 0.5): 0.1 at 10^-1.699
    assert abs(out.loc["maml", "alpha"] - 10 ** (-2 + np.log10(2))) < 1e-12
    assert out.loc["maml", "alpha_k"] == pytest.approx(2 * out.loc["maml", "alpha"])
    assert out.loc["fomaml", "status"] == "below range"
    assert out.loc["reptile", "status"] == "crossed"   # a diverged (NaN) point counts as inaccurate
    with pytest.raises(ValueError):
        taylor.breakdown(pd.DataFrame(rows), 0.0)
