"""Engine correctness: meta-gradients against finite differences and a second implementation."""
from __future__ import annotations

import pytest
import torch

from reptile import tree
from reptile.algorithms import meta_gradient, meta_update
from reptile.inner import SGD, Adam, adapt
from reptile.losses import make_loss, params_of
from reptile.models import MLP, OmniglotCNN



def _setup(k=3, b=4, seed=0, sizes=(1, 6, 6, 1)):
    torch.manual_seed(seed)
    model = MLP(sizes, "tanh").double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(k, b, 1, generator=g, dtype=torch.float64)
    y = torch.sin(3 * x) + 0.1 * torch.randn(k, b, 1, generator=g, dtype=torch.float64)
    return model, make_loss(model, "mse"), params_of(model), (x, y)


def _manual_forward(p, x):
    h = torch.tanh(x @ p["net.0.weight"].T + p["net.0.bias"])
    h = torch.tanh(h @ p["net.2.weight"].T + p["net.2.bias"])
    return h @ p["net.4.weight"].T + p["net.4.bias"]


def _manual_loss(p, x, y):
    return ((_manual_forward(p, x) - y) ** 2).mean()


def _unrolled_maml(phi, batches, alpha):
    """Second implementation: plain autograd with create_graph=True, no torch.func."""
    x, y = batches
    leaves = {k: v.clone().requires_grad_(True) for k, v in phi.items()}
    p = dict(leaves)
    for i in range(len(x) - 1):
        grads = torch.autograd.grad(_manual_loss(p, x[i], y[i]), list(p.values()), create_graph=True)
        p = {k: v - alpha * g for (k, v), g in zip(p.items(), grads)}
    out = torch.autograd.grad(_manual_loss(p, x[-1], y[-1]), list(leaves.values()))
    return dict(zip(leaves, out))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_maml_matches_central_finite_differences(k):
    model, loss_fn, phi, batches = _setup(k=k)
    alpha = 0.3
    g = tree.flatten(meta_gradient("maml", loss_fn, phi, batches, alpha))
    x, y = batches

    def f(vec):
        p = tree.unflatten(vec, phi)
        for i in range(k - 1):
            grads = torch.func.grad(loss_fn)(p, (x[i], y[i]))
            p = tree.add(p, grads, -alpha)
        return float(loss_fn(p, (x[-1], y[-1])))

    v0, h = tree.flatten(phi), 1e-6
    fd = torch.tensor([(f(v0 + h * e) - f(v0 - h * e)) / (2 * h) for e in torch.eye(len(v0), dtype=v0.dtype)], dtype=v0.dtype)
    # central differences have O(h^2) ~ 1e-12 truncation and ~1e-16/h ~ 1e-10 rounding error
    assert torch.allclose(g, fd, atol=1e-8, rtol=1e-7), (g - fd).abs().max()


@pytest.mark.parametrize("k", [2, 4])
def test_maml_matches_unrolled_autograd(k):
    _, loss_fn, phi, batches = _setup(k=k)
    ours = meta_gradient("maml", loss_fn, phi, batches, 0.1)
    ref = _unrolled_maml(phi, batches, 0.1)
    for name in phi:  # same arithmetic in a different order: agreement to rounding
        assert torch.allclose(ours[name], ref[name], atol=1e-12, rtol=1e-10)


def test_maml_differs_from_fomaml_and_first_order_switch():
    _, loss_fn, phi, batches = _setup(k=3)
    maml = meta_gradient("maml", loss_fn, phi, batches, 0.3)
    fo = meta_gradient("maml", loss_fn, phi, batches, 0.3, first_order=True)
    fomaml = meta_gradient("fomaml", loss_fn, phi, batches, 0.3)
    assert float(tree.norm(tree.sub(fo, fomaml))) == 0.0
    assert float(tree.norm(tree.sub(maml, fomaml))) > 1e-4  # second-order terms are not negligible at alpha=0.3


def _manual_sgd_grads(phi, batches, alpha, steps):
    x, y = batches
    p, gs = {k: v.clone() for k, v in phi.items()}, []
    for i in range(steps):
        leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
        grads = torch.autograd.grad(_manual_loss(leaves, x[i], y[i]), list(leaves.values()))
        g = dict(zip(p, grads))
        gs.append(g)
        p = {k: p[k] - alpha * g[k] for k in p}
    return gs


@pytest.mark.parametrize("k", [1, 3, 5])
def test_reptile_gradient_is_sum_of_inner_gradients(k):
    _, loss_fn, phi, batches = _setup(k=k)
    ours = meta_gradient("reptile", loss_fn, phi, batches, 0.1)
    gs = _manual_sgd_grads(phi, batches, 0.1, k)
    ref = tree.weighted_sum(gs, [1.0] * k)
    for name in phi:  # (phi - phi~)/alpha vs a sum: cancellation costs ~1e-16/alpha relative
        assert torch.allclose(ours[name], ref[name], atol=1e-12)


@pytest.mark.parametrize("k", [2, 4])
def test_fomaml_is_last_inner_gradient(k):
    _, loss_fn, phi, batches = _setup(k=k)
    ours = meta_gradient("fomaml", loss_fn, phi, batches, 0.1)
    ref = _manual_sgd_grads(phi, batches, 0.1, k)[-1]
    for name in phi:
        assert torch.allclose(ours[name], ref[name], atol=1e-13)


def test_combination_reproduces_reptile_and_fomaml():
    _, loss_fn, phi, batches = _setup(k=4)
    a = 0.05
    comb_r = meta_gradient("combination", loss_fn, phi, batches, a, weights=[1, 1, 1, 1])
    comb_f = meta_gradient("combination", loss_fn, phi, batches, a, weights=[0, 0, 0, 1])
    rep = meta_gradient("reptile", loss_fn, phi, batches, a)
    fom = meta_gradient("fomaml", loss_fn, phi, batches, a)
    assert float(tree.norm(tree.sub(comb_r, rep))) < 1e-12
    assert float(tree.norm(tree.sub(comb_f, fom))) < 1e-13
    g1 = meta_gradient("combination", loss_fn, phi, batches, a, weights=[1, 0, 0, 0])
    joint_first = meta_gradient("joint", loss_fn, phi, (batches[0][:1], batches[1][:1]), a)
    assert float(tree.norm(tree.sub(g1, joint_first))) == 0.0  # g_1 is evaluated at phi_1


def test_functional_adam_matches_torch_optim_adam():
    model, loss_fn, phi, (x, y) = _setup(k=6)
    ours = adapt(loss_fn, phi, (x, y), Adam(0.01, beta1=0.0)).end
    ref_model = MLP((1, 6, 6, 1), "tanh").double()
    ref_model.load_state_dict(phi)
    opt = torch.optim.Adam(ref_model.parameters(), lr=0.01, betas=(0.0, 0.999), eps=1e-8)
    for i in range(6):
        opt.zero_grad()
        ((ref_model(x[i]) - y[i]) ** 2).mean().backward()
        opt.step()
    for name, p in ref_model.named_parameters():
        assert torch.allclose(ours[name], p.detach(), atol=1e-12)


def test_adam_state_continues():
    _, loss_fn, phi, batches = _setup(k=4)
    opt = Adam(0.01)
    full = adapt(loss_fn, phi, batches, opt)
    half = adapt(loss_fn, phi, (batches[0][:2], batches[1][:2]), opt)
    rest = adapt(loss_fn, half.end, (batches[0][2:], batches[1][2:]), opt, half.state)
    assert float(tree.norm(tree.sub(full.end, rest.end))) == 0.0
    assert float(full.state["t"]) == 4.0


def test_trajectory_keeps_every_step():
    _, loss_fn, phi, batches = _setup(k=3)
    traj = adapt(loss_fn, phi, batches, SGD(0.1), keep=True)
    assert len(traj.params) == 4 and len(traj.grads) == 3 and traj.losses.shape == (3,)
    for i in range(3):
        step = tree.add(traj.params[i], traj.grads[i], -0.1)
        assert float(tree.norm(tree.sub(step, traj.params[i + 1]))) == 0.0
    assert adapt(loss_fn, phi, batches, SGD(0.1)).params == []


def test_meta_update_with_sgd_equals_alpha_times_meta_gradient():
    _, loss_fn, phi, batches = _setup(k=3)
    for name in ("reptile", "fomaml", "maml"):
        u, _, losses = meta_update(name, loss_fn, phi, batches, SGD(0.2))
        g = meta_gradient(name, loss_fn, phi, batches, 0.2)
        assert float(tree.norm(tree.sub(u, tree.scale(g, 0.2)))) < 1e-13
        assert losses.shape == (3,)


def test_cnn_maml_runs_under_batch_norm_in_float64():
    torch.manual_seed(0)
    model = OmniglotCNN(n_way=3, filters=4).double()
    loss_fn = make_loss(model, "cross_entropy")
    phi = params_of(model)
    x = torch.randn(3, 6, 1, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 3, (3, 6))
    g = meta_gradient("maml", loss_fn, phi, (x, y), 0.1)
    v = {k: torch.randn_like(p) for k, p in phi.items()}
    from reptile.algorithms import maml_outer_loss
    f = lambda p: float(maml_outer_loss(loss_fn, p, (x, y), SGD(0.1)))
    h = 1e-6
    fd = (f(tree.add(phi, v, h)) - f(tree.add(phi, v, -h))) / (2 * h)
    # directional derivative: FD error ~1e-9 on a loss of order 1
    assert abs(fd - float(tree.dot(g, v))) < 1e-6 * max(1.0, abs(fd))


def test_second_order_maml_through_adam_is_finite_with_zero_gradients():
    # a parameter whose gradient is exactly 0 (here: an unused output bias direction) used to give
    # sqrt'(0) = inf and a NaN meta-gradient
    from reptile.algorithms import maml_outer_loss
    _, loss_fn, phi, batches = _setup(k=3)
    phi = dict(phi)
    phi["net.0.weight"] = phi["net.0.weight"].clone()
    phi["net.0.weight"][0] = 0.0
    phi["net.2.weight"] = phi["net.2.weight"].clone()
    phi["net.2.weight"][:, 0] = 0.0   # hidden unit 0 of layer 1 is dead: its incoming weights get zero gradient
    g = torch.func.grad(maml_outer_loss, argnums=1)(loss_fn, phi, batches, Adam(0.01))
    assert tree.all_finite(g)
    # Adam's g / sqrt(v) is discontinuous where g = 0, so check the derivative along a direction that
    # keeps the dead unit dead (its gradients stay exactly 0): there the function is smooth
    v = {k: torch.randn_like(p) for k, p in phi.items()}
    v["net.0.weight"][0] = 0.0
    v["net.0.bias"][0] = 0.0
    v["net.2.weight"][:, 0] = 0.0
    f = lambda p: float(maml_outer_loss(loss_fn, p, batches, Adam(0.01)))
    h = 1e-6
    fd = (f(tree.add(phi, v, h)) - f(tree.add(phi, v, -h))) / (2 * h)
    assert abs(fd - float(tree.dot(g, v))) < 1e-6 * max(1.0, abs(fd))  # FD error ~1e-9 relative


def test_reptile_gradient_equals_displacement_over_alpha():
    _, loss_fn, phi, batches = _setup(k=4)
    g = meta_gradient("reptile", loss_fn, phi, batches, 0.1)
    end = adapt(loss_fn, phi, batches, SGD(0.1)).end
    disp = tree.scale(tree.sub(phi, end), 1 / 0.1)
    # (phi - phi~)/alpha loses ~1e-16 |phi| / alpha to cancellation; the sum does not
    assert float(tree.norm(tree.sub(g, disp))) < 1e-13


def test_numpy_step_sizes_are_accepted_and_bad_ones_named():
    import numpy as np
    _, loss_fn, phi, batches = _setup(k=2)
    meta_gradient("reptile", loss_fn, phi, batches, np.float32(0.1))
    for bad in (True, "0.1", np.float64("nan"), -np.float32(1)):
        with pytest.raises(ValueError, match="alpha must be a positive finite number"):
            meta_gradient("reptile", loss_fn, phi, batches, bad)
