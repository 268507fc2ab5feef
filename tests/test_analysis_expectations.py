"""Monte-Carlo expectations: AvgGrad, AvgGradInner, the coefficient table (analysis.expectations)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from analysis import closed_forms, expectations
from analysis.problems import least_squares_problem, sine_problem
from analysis.stats import Estimate, compare, regress


@pytest.fixture(scope="module")
def ls():
    return least_squares_problem(0)


@pytest.fixture(scope="module")
def ls_runs(ls):
    # thousands of vmapped least-squares samples take about a second
    return {k: expectations.monte_carlo(ls.loss_fn, ls.phi, ls.sampler(k, 5), 1500, seed=10 + k, k=k,
                                        alphas=[1e-4, 1e-3], chunk=750) for k in (2, 3)}


def test_estimators_equal_least_squares_closed_forms_sample_by_sample(ls, ls_runs):
    w = ls.phi["linear.weight"].numpy()[0]
    for k, mc in ls_runs.items():
        orders = expectations.orderings(k)
        for s in range(5):
            x, y = (t.numpy() for t in ls.sampler(k, 5)(np.random.default_rng([10 + k, s])))
            t = closed_forms.taylor_terms(w, x, y)
            hg = t["hbar_gbar"]
            want = {"avg_grad": t["gbar"].mean(0),
                    "inner": np.mean([hg[i, j] for i in range(k) for j in range(i)], 0),
                    "inner_dot": np.mean([hg[i, j] for i, j in itertools.permutations(range(k), 2)], 0)}
            got = {"avg_grad": mc.avg_grad, "inner": mc.avg_grad_inner, "inner_dot": mc.avg_grad_inner_dot}
            for alg in expectations.ALGORITHMS:
                want[alg] = np.mean([closed_forms.meta_gradients(w, x[list(o)], y[list(o)], 1e-3)[alg] for o in orders], 0)
                got[alg] = mc.meta[(alg, 1e-3)]
            for key in want:
                # the same algebra in torch (vmapped autodiff) and numpy: float64 rounding only
                np.testing.assert_allclose(got[key].samples[s].numpy(), want[key], rtol=1e-10, atol=1e-12)


def test_expectations_match_least_squares_closed_forms(ls, ls_runs):
    w = ls.phi["linear.weight"].numpy()[0]
    d, m = ls.info["input_scales"].numpy(), ls.distribution.n_points
    a_ref = closed_forms.avg_grad(w, ls.distribution.mean, d)
    b_ref = closed_forms.avg_grad_inner(w, ls.distribution.mean, d, m)
    for mc in ls_runs.values():
        for est, ref in [(mc.avg_grad, a_ref), (mc.avg_grad_inner, b_ref), (mc.avg_grad_inner_dot, b_ref)]:
            # |mean - exact| / sqrt(tr Cov / n) has E[.^2] = 1; 3 is exceeded with probability < 0.3 %
            assert np.linalg.norm(est.mean_flat.numpy() - ref) <= 3 * est.se_norm


def test_two_avg_grad_inner_forms_agree(ls_runs):
    for mc in ls_runs.values():
        ok, ratio = expectations.inner_forms_agree(mc)
        assert ok and ratio <= 3      # same criterion as verify: 3 standard errors
        # and they are genuinely different estimators sample by sample (so the test has teeth)
        assert (mc.avg_grad_inner.samples - mc.avg_grad_inner_dot.samples).abs().max() > 1e-3


def test_coefficient_table_least_squares(ls_runs):
    for k, mc in ls_runs.items():
        t = expectations.coefficient_table(mc)
        small = t[np.isclose(t.alpha, 1e-4)]
        assert len(small) == 3
        # at alpha = 1e-4 the O(alpha) truncation (~0.1 %) is far below the error bars (~3 %)
        assert (small.z_avg_grad.abs() <= 3).all() and (small.z_inner.abs() <= 3).all(), small
        assert (small.inner_coef_se / small.inner_coef_paper.abs() < 0.1).all()   # the bars are informative
        for r in small.itertuples():
            assert (r.avg_grad_coef_paper, r.inner_coef_paper) == expectations.paper_coefficients(r.algorithm, k)
        # symmetrized regressor: exact first order, so only the O(alpha) deviation is left
        sym = expectations.coefficient_table(mc, "grad_dot")
        dev4 = (sym[np.isclose(sym.alpha, 1e-4)].inner_coef / sym[np.isclose(sym.alpha, 1e-4)].inner_coef_paper - 1).abs()
        dev3 = (sym[np.isclose(sym.alpha, 1e-3)].inner_coef / sym[np.isclose(sym.alpha, 1e-3)].inner_coef_paper - 1).abs()
        assert (dev4.to_numpy() <= 0.005 * k).all()             # O(alpha k lambda): measured <= 0.13 %
        assert (dev4.to_numpy() <= dev3.to_numpy() / 5 + 1e-9).all()  # ~10x smaller for 10x smaller alpha


def test_coefficient_table_sine_small_alpha():
    prob = sine_problem(0)
    mc = expectations.monte_carlo(prob.loss_fn, prob.phi, prob.sampler(2, 10), 300, seed=3, k=2, alphas=[1e-4],
                                  chunk=100)
    t = expectations.coefficient_table(mc)
    # relative error bars of ~15 % at n = 300 (sine gradients are heavy-tailed in the amplitude)
    assert (t.z_avg_grad.abs() <= 3).all() and (t.z_inner.abs() <= 3).all(), t
    ok, _ = expectations.inner_forms_agree(mc)
    assert ok
    ratio = t.set_index("algorithm").eval("inner_coef / avg_grad_coef").abs()
    assert ratio["maml"] > ratio["fomaml"] > ratio["reptile"]


def test_orderings_are_balanced():
    for k in range(2, 7):
        orders = expectations.orderings(k)
        assert len(orders) == (2 if k == 2 else 6 if k == 3 else 2 * k)
        last = np.bincount([o[-1] for o in orders], minlength=k)
        assert (last == last[0]).all()                       # every batch last equally often
        before = np.zeros((k, k))
        for o in orders:
            for a, b in itertools.combinations(o, 2):
                before[a, b] += 1                            # a comes before b
        off = before[~np.eye(k, dtype=bool)]
        assert (off == off[0]).all()                         # every ordered pair equally often
    assert expectations.orderings(4, "none") == [(0, 1, 2, 3)]
    assert len(expectations.orderings(4, "all")) == 24
    assert len(expectations.orderings(4, 3, np.random.default_rng(0))) == 3
    with pytest.raises(ValueError):
        expectations.orderings(4, "spiral")


def test_regress_and_compare_on_synthetic_data():
    rng = np.random.default_rng(0)
    n, p = 400, 50
    ea, eb = rng.standard_normal(p), rng.standard_normal(p)
    a = torch.as_tensor(ea + 0.5 * rng.standard_normal((n, p)))
    b = torch.as_tensor(eb + 0.5 * rng.standard_normal((n, p)))
    y = 2 * a - 3 * b
    coef, se = regress(y, [a, b])
    np.testing.assert_allclose(coef, [2, -3], atol=1e-12)    # exact linear relation, rounding only
    assert (se < 1e-10).all()
    noisy = y + torch.as_tensor(rng.standard_normal((n, p)))
    for debias in (False, True):
        coef, se = regress(noisy, [a, b], debias=debias)
        assert (np.abs(coef - [2, -3]) <= 4 * se).all()      # 4 s.e.: two coefficients, fixed seed
    e1 = Estimate(a, {"w": torch.zeros(p)})
    e2 = Estimate(a + torch.as_tensor(rng.standard_normal((n, p))), {"w": torch.zeros(p)})
    assert compare(e1, e2).within(3)
    with pytest.raises(ValueError):
        regress(y[:3], [a[:3], b[:3]])
    with pytest.raises(ValueError, match="dependent"):
        regress(y, [a, 2 * a])


def test_bad_inputs_and_seeds(ls):
    f, phi = ls.loss_fn, ls.phi
    with pytest.raises(ValueError, match="expected k = 3"):
        expectations.monte_carlo(f, phi, ls.sampler(2, 5), 10, k=3)
    with pytest.raises(ValueError, match="at least 2"):
        expectations.monte_carlo(f, phi, ls.sampler(1, 5), 10)
    with pytest.raises(ValueError, match="n must be"):
        expectations.monte_carlo(f, phi, ls.sampler(2, 5), 2)
    with pytest.raises(ValueError, match="positive"):
        expectations.monte_carlo(f, phi, ls.sampler(2, 5), 10, alphas=[1e-3, -1e-3])
    with pytest.raises(ValueError, match="unknown algorithms"):
        expectations.monte_carlo(f, phi, ls.sampler(2, 5), 10, algorithms=["sgd"])
    with pytest.raises(ValueError, match="form"):
        expectations.avg_grad_inner(f, phi, ls.sampler(2, 5), 10, form="fisher")
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    r1 = expectations.avg_grad(f, phi, ls.sampler(2, 5), 20, seed=4)
    r2 = expectations.avg_grad(f, phi, ls.sampler(2, 5), 20, seed=4)
    assert torch.equal(r1.samples, r2.samples)                         # same seed, same numbers
    assert torch.equal(torch.get_rng_state(), torch_state)             # global RNGs untouched
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()
    loop = expectations.monte_carlo(f, phi, ls.sampler(2, 5), 6, seed=4, alphas=[1e-3], chunk=1)
    vec = expectations.monte_carlo(f, phi, ls.sampler(2, 5), 6, seed=4, alphas=[1e-3], chunk=4)
    for key in loop.meta:
        # vmap and the loop do the same arithmetic in a different order
        assert (loop.meta[key].samples - vec.meta[key].samples).abs().max() < 1e-12
    em = expectations.expected_meta_gradients(f, phi, ls.sampler(2, 5), 1e-3, 20, seed=4)
    assert set(em) == {"maml", "fomaml", "reptile"} and em["maml"].mean.keys() == phi.keys()


def test_alpha_derivatives_equal_least_squares_taylor_terms(ls):
    """g0, g1 from the engine at alpha, 2 alpha, 3 alpha equal the closed-form Taylor terms: on least
    squares FOMAML/Reptile with k = 2 are linear in alpha, so the three-point formulas are exact."""
    w = ls.phi["linear.weight"].numpy()[0]
    sampler = ls.sampler(2, 5)
    for name in ("fomaml", "reptile"):
        g0, g1 = expectations.alpha_derivatives(name, ls.loss_fn, ls.phi, sampler, 4, 1e-3, seed=3)
        for s in range(4):
            x, y = (t.numpy() for t in sampler(np.random.default_rng([3, s])))
            t = closed_forms.taylor_terms(w, x, y)
            want0 = t["gbar"][1] if name == "fomaml" else t["gbar"].sum(0)
            want1 = -t["hbar_gbar"][1, 0]
            # rounding of O(1) gradients amplified by the 1/alpha of the three-point formula: ~1e-13 / 1e-3
            np.testing.assert_allclose(g0.samples[s].numpy(), want0, rtol=1e-9, atol=1e-10)
            np.testing.assert_allclose(g1.samples[s].numpy(), want1, rtol=1e-9, atol=1e-9)


def test_ratio_coefficient_is_unbiased_and_its_errors_are_calibrated():
    """y = c x + noise, from independent draws, in P = 50 dimensions with regressor noise 3x its
    mean: the plug-in |mean x|^2 would attenuate c by ~tr Cov / (n |E x|^2); the U-statistic
    does not. Over 200 repetitions the z-scores have mean ~0 and s.d. ~1."""
    from analysis.stats import ratio_coefficient

    rng = np.random.default_rng(0)
    mean_x = rng.standard_normal(50) * 0.2
    zs, est = [], []
    for r in range(200):
        x = torch.as_tensor(mean_x + 3 * np.abs(mean_x).mean() * 3 * rng.standard_normal((60, 50)))
        y = torch.as_tensor(-2 * mean_x + rng.standard_normal((80, 50)))
        c = ratio_coefficient(y, x)
        zs.append(c.z(-2.0))
        est.append(c.value)
    zs = np.array(zs)
    # 200 draws: the mean of z has s.e. ~0.07, its s.d. an s.e. of ~0.05 (tolerances ~4 s.e.)
    assert abs(zs.mean()) < 0.3 and 0.8 < zs.std() < 1.25, (zs.mean(), zs.std())
    assert c.detectable(-2.0) == pytest.approx((3 + 0.8416) * c.se / 2)
    with pytest.raises(ValueError, match="not resolved"):
        ratio_coefficient(y, torch.as_tensor(rng.standard_normal((5, 50))))
