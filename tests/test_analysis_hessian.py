"""Hessian-vector products, dense Hessians, eigenvalues and third derivatives (analysis.hessian)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import analysis
from analysis.hessian import (METHODS, HVPOperator, dense_hessian, hessian_operator, hvp, power_iteration,
                              third_derivative, top_eigenvalues)
from analysis.problems import init_params, least_squares_problem, sine_problem
from reptile import tree
from reptile.losses import make_loss
from reptile.models import MLP


@pytest.fixture(scope="module")
def small():
    """A float64 MLP 1-8-8-1 tanh (97 parameters), one minibatch of 10 sine points, and the
    dense Hessian by classic ``torch.autograd.functional`` (independent of torch.func)."""
    model = MLP((1, 8, 8, 1), "tanh").double()
    phi = init_params(model, seed=5)
    f = make_loss(model, "mse")
    x, y = sine_problem(0).sampler(1, 10)(np.random.default_rng(4))
    batch = (x[0], y[0])
    flat = tree.flatten(phi)
    dense = torch.autograd.functional.hessian(lambda w: f(tree.unflatten(w, phi), batch), flat)
    return f, phi, batch, dense


def _rand(phi, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in phi.items()}


@pytest.mark.parametrize("method", METHODS)
def test_hvp_matches_dense_hessian(small, method):
    f, phi, batch, dense = small
    for seed in range(3):
        v = _rand(phi, seed)
        hv = tree.flatten(hvp(f, phi, batch, v, method))
        # the bar; float64 products of a 97-parameter MLP agree to ~1e-14
        assert (hv - dense @ tree.flatten(v)).abs().max() < 1e-10


def test_hvp_fn_reusable(small):
    f, phi, batch, dense = small
    v = _rand(phi, 4)
    for method in METHODS:
        fn = analysis.hvp_fn(f, method)
        assert (tree.flatten(fn(phi, batch, v)) - dense @ tree.flatten(v)).abs().max() < 1e-10  # as above
    with pytest.raises(ValueError, match="unknown HVP method"):
        analysis.hvp_fn(f, "fwd-fwd")


@pytest.mark.parametrize("method", METHODS)
def test_operator_dense_and_linear_operator(small, method):
    f, phi, batch, dense = small
    op = HVPOperator(f, phi, batch, method)
    # the gradient is computed once and kept
    g = torch.func.grad(f)(phi, batch)
    assert max(float((op.grad[k] - g[k]).abs().max()) for k in g) < 1e-14  # same computation, rounding only
    assert (op.dense() - dense).abs().max() < 1e-10  # same bar as the single products
    v = tree.flatten(_rand(phi, 9))
    lin = hessian_operator(f, phi, batch, method)
    assert lin.shape == (op.numel, op.numel)
    np.testing.assert_allclose(lin.matvec(v.numpy()), (dense @ v).numpy(), rtol=0, atol=1e-10)
    mat = torch.randn(op.numel, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert (op.matmat(mat) - dense @ mat).abs().max() < 1e-10
    assert (dense_hessian(f, phi, batch) - dense).abs().max() < 1e-10


def test_hvp_least_squares_closed_form():
    prob = least_squares_problem(0)
    x, y = prob.sampler(1, 5)(np.random.default_rng(1))
    batch = (x[0], y[0])
    v = _rand(prob.phi, 3)
    exact = 2.0 / 5 * x[0].T @ x[0] @ v["linear.weight"][0]      # (2/b) X^T X v
    for method in METHODS:
        got = hvp(prob.loss_fn, prob.phi, batch, v, method)["linear.weight"][0]
        assert (got - exact).abs().max() < 1e-12  # a 10x10 product in float64


def test_top_eigenvalues_and_power_iteration(small):
    f, phi, batch, dense = small
    ev = np.linalg.eigvalsh(dense.numpy())
    top = top_eigenvalues(f, phi, batch, 3, tol=1e-12)
    # Lanczos converged to tol 1e-12 relative; 1e-8 leaves room for ARPACK's stopping rule
    np.testing.assert_allclose(top, np.sort(ev)[::-1][:3], rtol=1e-8)
    lam, vec = power_iteration(HVPOperator(f, phi, batch), tol=1e-13, max_iter=20000)
    largest = ev[np.argmax(np.abs(ev))]
    # the Rayleigh quotient converges quadratically in the eigenvector error: 1e-8 is safe at tol 1e-13
    assert abs(lam - largest) <= 1e-8 * abs(largest)
    assert abs(np.linalg.norm(vec) - 1) < 1e-12
    with pytest.raises(ValueError, match="n must be between"):
        top_eigenvalues(f, phi, batch, 0)


def test_third_derivative_symmetric_and_matches_finite_difference(small):
    f, phi, batch, _ = small
    u, v = _rand(phi, 1), _rand(phi, 2)
    a = tree.flatten(third_derivative(f, phi, batch, u, v, "fwd-rev"))
    b = tree.flatten(third_derivative(f, phi, batch, u, v, "rev-rev"))
    c = tree.flatten(third_derivative(f, phi, batch, v, u, "fwd-rev"))
    scale = float(a.abs().max())
    assert (a - b).abs().max() <= 1e-12 * scale   # two AD paths, rounding only
    assert (a - c).abs().max() <= 1e-12 * scale   # T is symmetric
    eps = 1e-5
    fd = (tree.flatten(hvp(f, tree.add(phi, u, eps), batch, v)) - tree.flatten(hvp(f, tree.add(phi, u, -eps), batch, v))) / (2 * eps)
    # central difference: truncation O(eps^2 * |4th derivative|) ~ 1e-9, rounding ~1e-16/eps ~ 1e-11
    assert (fd - a).abs().max() <= 1e-6 * scale


def test_non_scalar_loss_is_a_clear_error(small):
    _, phi, batch, _ = small
    model = MLP((1, 8, 8, 1), "tanh").double()

    def per_example(params, b):
        return (torch.func.functional_call(model, params, (b[0],)) - b[1]).pow(2)[:, 0]

    for method in METHODS:
        with pytest.raises(ValueError, match="scalar"):
            hvp(per_example, phi, batch, phi, method)
        with pytest.raises(ValueError, match="scalar"):
            HVPOperator(per_example, phi, batch, method)


def test_bad_vectors_methods_and_batches(small):
    f, phi, batch, _ = small
    with pytest.raises(ValueError, match="unknown HVP method"):
        hvp(f, phi, batch, phi, "rev-fwd")
    wrong = dict(phi)
    wrong.pop(next(iter(wrong)))
    with pytest.raises(ValueError, match="keys"):
        hvp(f, phi, batch, wrong)
    bad_shape = {k: v.reshape(-1) if v.ndim > 1 else v for k, v in phi.items()}
    with pytest.raises(ValueError, match="shape"):
        hvp(f, phi, batch, bad_shape)
    with pytest.raises(ValueError, match="batch"):
        hvp(f, phi, batch[0], phi)
    with pytest.raises(ValueError, match="m\\]"):
        HVPOperator(f, phi, batch).matmat(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="dense Hessian"):
        HVPOperator(f, phi, batch).dense(max_numel=10)


class _CubeNoJvp(torch.autograd.Function):
    """x^3 with a backward (twice differentiable) but no forward-mode rule."""

    @staticmethod
    def forward(x):
        return x ** 3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x ** 2 * g


def test_forward_mode_missing_falls_back_with_warning():
    w = torch.tensor([0.3, -1.2, 0.7], dtype=torch.float64)
    phi = {"w": w}
    batch = (torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))

    def f(p, b):
        return _CubeNoJvp.apply(p["w"] * b[0]).sum()

    v = {"w": torch.tensor([1.0, 0.5, -2.0], dtype=torch.float64)}
    exact = 6 * (w * batch[0]) * batch[0] ** 2 * v["w"]             # d^2/dw^2 sum (w x)^3 = 6 w x^3
    with pytest.warns(RuntimeWarning, match="forward-mode"):
        got = hvp(f, phi, batch, v, "fwd-rev")
    assert (got["w"] - exact).abs().max() < 1e-14  # three float64 products
    with pytest.warns(RuntimeWarning, match="reverse-over-reverse"):
        op = HVPOperator(f, phi, batch, "fwd-rev")
    assert op.method == "rev-rev"
    assert (op(v)["w"] - exact).abs().max() < 1e-14
    with pytest.warns(RuntimeWarning, match="forward-mode"):
        third_derivative(f, phi, batch, v, v, "fwd-rev")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rev-rev never needs the fallback
        hvp(f, phi, batch, v, "rev-rev")


def test_package_exports():
    assert analysis.hvp is hvp
    assert callable(analysis.taylor.leading_order)
    import analysis.hessian as mod  # the submodule is not shadowed by a function of the same name

    assert mod.HVPOperator is HVPOperator
