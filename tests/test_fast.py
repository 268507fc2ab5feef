"""Fast paths (reptile.fast, TrainConfig.compile / channels_last) give the eager path's numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reptile.algorithms import meta_update
from reptile.fast import channels_last_batches, make_meta_update
from reptile.inner import SGD, Adam
from reptile.losses import make_loss, params_of
from reptile.models import MLP, OmniglotCNN
from reptile.train import MetaTrainer, TrainConfig


def _cnn(norm: str, dtype=torch.float64):
    torch.manual_seed(0)
    model = OmniglotCNN(n_way=3, filters=6, norm=norm).to(dtype)
    g = torch.Generator().manual_seed(1)
    batches = (torch.rand(4, 5, 1, 28, 28, generator=g, dtype=dtype), torch.randint(0, 3, (4, 5), generator=g))
    return make_loss(model, "cross_entropy"), params_of(model), batches


def _close(a, b, tol):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol, msg=k)


class CountingBackend:
    """A torch.compile backend that runs the captured graph as it is and counts compilations."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


# Adam's step lr * g / (|g| + eps) turns rounding noise in an exactly-zero gradient (a conv bias
# before batch norm) into a step of size lr, so Adam cases use a model without batch norm.
CASES = [("reptile", "batch", SGD(0.1)), ("fomaml", "batch", SGD(0.1)), ("maml", "batch", SGD(0.1)),
         ("reptile", "none", Adam(1e-2)), ("fomaml", "none", Adam(1e-2)), ("combination", "none", Adam(1e-2)),
         ("maml", "none", SGD(0.1)), ("joint", "batch", SGD(0.1))]


@pytest.mark.parametrize("name,norm,opt", CASES, ids=[f"{c[0]}-{c[1]}-{type(c[2]).__name__}" for c in CASES])
def test_channels_last_equals_eager_float64(name, norm, opt):
    loss_fn, phi, batches = _cnn(norm)
    w = [1.0, 0.5, 0.25, 2.0] if name == "combination" else None
    state = opt.init(phi)
    u0, s0, l0 = meta_update(name, loss_fn, phi, batches, opt, state, weights=w)
    u1, s1, l1 = make_meta_update(name, loss_fn, opt, channels_last=True)(phi, batches, state, weights=w)
    _close(u0, u1, 1e-10)
    torch.testing.assert_close(l0, l1, rtol=1e-10, atol=1e-10)
    assert all(v.is_contiguous() for v in u1.values())


# dynamo capture costs seconds per case: one per code path (step loop with BN, persistent Adam state,
# combination weights; MAML's whole differentiable update)
COMPILE_CASES = [CASES[1], CASES[3], CASES[5], CASES[6]]


@pytest.mark.parametrize("name,norm,opt", COMPILE_CASES,
                         ids=[f"{c[0]}-{c[1]}-{type(c[2]).__name__}" for c in COMPILE_CASES])
def test_compiled_graph_equals_eager_float64_and_compiles_once(name, norm, opt):
    """Dynamo's capture of the step (or of MAML's whole update) computes what the eager path does,
    with a persistent Adam state and 3 tasks, and is captured once: no recompilation per step."""
    loss_fn, phi, batches = _cnn(norm)
    w = [1.0, 0.5, 0.25, 2.0] if name == "combination" else None
    backend = CountingBackend()
    torch._dynamo.reset()
    fast = make_meta_update(name, loss_fn, opt, compile=True, channels_last=True,
                            compile_options={"backend": backend})
    se = sf = opt.init(phi)
    for task in range(3):
        b = (batches[0].roll(task, 0), batches[1].roll(task, 0))
        ue, se, le = meta_update(name, loss_fn, phi, b, opt, se, weights=w)
        uf, sf, lf = fast(phi, b, sf, weights=w)
        _close(ue, uf, 1e-10)
        torch.testing.assert_close(le, lf, rtol=1e-10, atol=1e-10)
    assert backend.graphs == 1


def test_inductor_compiled_reptile_equals_eager_float32():
    """The real compiler (inductor, C++ kernels) on a small MLP in float32: equal to 1e-5."""
    torch.manual_seed(0)
    model = MLP((1, 16, 16, 1), "tanh")
    loss_fn, phi = make_loss(model, "mse"), params_of(model)
    g = torch.Generator().manual_seed(0)
    batches = (torch.rand(5, 10, 1, generator=g) * 10 - 5, torch.rand(5, 10, 1, generator=g))
    opt = Adam(1e-2)
    torch._dynamo.reset()
    fast = make_meta_update("reptile", loss_fn, opt, compile=True)
    se = sf = opt.init(phi)
    for task in range(2):
        b = (batches[0].roll(task, 0), batches[1].roll(task, 0))
        ue, se, _ = meta_update("reptile", loss_fn, phi, b, opt, se)
        uf, sf, _ = fast(phi, b, sf)
        _close(ue, uf, 1e-5)


def test_trainer_fast_flags_give_the_eager_parameters():
    torch.manual_seed(0)
    model = OmniglotCNN(n_way=3, filters=4).double()
    loss_fn, phi = make_loss(model, "cross_entropy"), params_of(model)

    def sampler(rng: np.random.Generator):
        x = torch.as_tensor(rng.random((3, 4, 1, 28, 28)))
        return x, torch.as_tensor(rng.integers(0, 3, (3, 4)))

    runs = {}
    for flags in ({}, {"channels_last": True}):
        cfg = TrainConfig(algorithm="fomaml", inner_steps=3, inner_batch=4, inner_optimizer="sgd", inner_lr=0.1,
                          meta_batch=2, iterations=3, **flags)
        runs[str(flags)] = MetaTrainer(loss_fn, phi, sampler, cfg).run(progress=False).params
    a, b = runs.values()
    _close(a, b, 1e-10)


def test_fast_flags_are_refused_with_vmap_batching():
    with pytest.raises(ValueError, match="batching='loop'"):
        TrainConfig(batching="vmap", compile=True)


def test_channels_last_batches_keeps_values_and_lays_out_nhwc():
    x = torch.rand(2, 3, 4, 5, 6)
    xc, _ = channels_last_batches((x, torch.zeros(2, 3)))
    assert torch.equal(xc, x) and xc[1].is_contiguous(memory_format=torch.channels_last)
    v = torch.rand(2, 3, 1)
    assert channels_last_batches((v, v))[0] is v


def test_compiled_updates_of_different_optimizers_do_not_share_a_graph():
    """The optimizer's hyper-parameters are baked into the graph: another lr must not reuse it."""
    loss_fn, phi, batches = _cnn("none")
    backend = CountingBackend()
    torch._dynamo.reset()
    for lr in (1e-2, 3e-2):
        opt = Adam(lr)
        fast = make_meta_update("reptile", loss_fn, opt, compile=True, compile_options={"backend": backend})
        _close(fast(phi, batches)[0], meta_update("reptile", loss_fn, phi, batches, opt)[0], 1e-10)
