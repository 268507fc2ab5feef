"""``analysis.hvp``'s default ``method="auto"``: plain-autograd reverse-over-reverse, compiled for
paper-size CNNs; checked against a dense Hessian and against the torch.func forms."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import grad, vmap

from analysis import hessian
from analysis.hessian import hvp
from analysis.problems import init_params, sine_problem
from reptile import fast, tree
from reptile.losses import make_loss, params_of
from reptile.models import MLP, OmniglotCNN


@pytest.fixture(scope="module")
def small():
    model = MLP((1, 8, 8, 1), "tanh").double()
    phi = init_params(model, seed=5)
    f = make_loss(model, "mse")
    x, y = sine_problem(0).sampler(1, 10)(np.random.default_rng(4))
    batch = (x[0], y[0])
    dense = torch.autograd.functional.hessian(lambda w: f(tree.unflatten(w, phi), batch), tree.flatten(phi))
    return f, phi, batch, dense


def _rand(phi, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in phi.items()}


def test_auto_is_the_default_and_equals_the_dense_hessian(small):
    f, phi, batch, dense = small
    for seed in range(3):
        v = _rand(phi, seed)
        hv = tree.flatten(hvp(f, phi, batch, v))
        assert (hv - dense @ tree.flatten(v)).abs().max() < 1e-10  # float64, 97 parameters: ~1e-14 in fact
    with pytest.raises(ValueError, match="unknown HVP method"):
        hvp(f, phi, batch, v, "fastest")


def test_auto_under_transforms_and_with_grad_requiring_inputs(small):
    """Inside vmap (batched v) and when phi requires grad, auto uses the torch.func form: same numbers,
    and an outer derivative sees through it (d/dphi <u, H(phi) v> is the third derivative)."""
    f, phi, batch, dense = small
    vs = torch.stack([tree.flatten(_rand(phi, s)) for s in range(3)])
    got = vmap(lambda col: tree.flatten(hvp(f, phi, batch, tree.unflatten(col, phi))))(vs)
    assert (got - vs @ dense.T).abs().max() < 1e-10  # as above
    u, v = _rand(phi, 7), _rand(phi, 8)
    third = grad(lambda p: tree.dot(u, hvp(f, p, batch, v)))(phi)
    ref = hessian.third_derivative(f, phi, batch, v, u, "rev-rev")
    assert float(tree.norm(tree.sub(third, ref))) < 1e-10 * max(1.0, float(tree.norm(ref)))


def test_zero_second_derivative_leaves_give_zeros():
    """A leaf whose gradient does not depend on phi (a linear model's bias): H v has zeros, no error."""
    model = torch.nn.Linear(3, 1).double()
    f, phi = make_loss(model, "mse"), params_of(model)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    batch = (x, x.sum(1, keepdim=True))
    v = _rand(phi, 1)
    a, b = hvp(f, phi, batch, v), hvp(f, phi, batch, v, "rev-rev")
    assert float(tree.norm(tree.sub(a, b))) < 1e-12


def _paper_size_cnn(monkeypatch, backend):
    """A float64 CNN above the auto-compile size, its loss and parameters, with ``backend`` as the compiler."""
    monkeypatch.setattr(fast, "COMPILE_OPTIONS", {"backend": backend})
    if fast.compile_unavailable("cpu"):
        pytest.skip(fast.compile_unavailable("cpu"))
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = OmniglotCNN(n_way=3, filters=32, norm="none").double()
    return make_loss(model, "cross_entropy"), params_of(model)


def test_compiled_auto_product_for_a_paper_size_cnn(monkeypatch):
    """A CNN above the auto-compile size takes the compiled channels-last product (dynamo's graph run
    without inductor here): equal to the eager rev-rev product to 1e-10 in float64, graph cached."""
    f, phi = _paper_size_cnn(monkeypatch, "eager")
    assert sum(t.numel() for t in phi.values()) >= fast.AUTO_COMPILE_MIN_PARAMS
    g = torch.Generator().manual_seed(0)
    batch = (torch.rand(4, 1, 28, 28, generator=g, dtype=torch.float64), torch.arange(4) % 3)
    v = _rand(phi, 2)
    got = hvp(f, phi, batch, v)
    assert f in hessian._COMPILED_HVPS and hessian._COMPILED_HVPS[f].failed is None
    ref = hvp(f, phi, batch, v, "rev-rev")
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-10, atol=1e-10)
        assert got[k].is_contiguous()


def test_failed_compilation_of_the_product_warns_and_runs_eagerly(monkeypatch):
    def broken(gm, example_inputs):
        raise RuntimeError("simulated compiler failure")
    f, phi = _paper_size_cnn(monkeypatch, broken)
    batch = (torch.rand(2, 1, 28, 28, dtype=torch.float64), torch.arange(2))
    v = _rand(phi, 3)
    with pytest.warns(RuntimeWarning, match="simulated compiler failure"):
        got = hvp(f, phi, batch, v)
    ref = hvp(f, phi, batch, v, "rev-rev")
    assert float(tree.norm(tree.sub(got, ref))) < 1e-10
