"""CUDA checks (marker ``cuda``: skipped without a GPU; ``scripts/gpu_check.sh`` runs them on one).

Each compares a computation on the GPU with the same one on the CPU (float64 where the operation
supports it, so the bar is rounding), or the GPU default path with the GPU eager path.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.hessian import hvp
from reptile import tree
from reptile.algorithms import meta_update
from reptile.inner import Adam, SGD
from reptile.losses import make_loss, params_of
from reptile.models import MLP, OmniglotCNN
from reptile.train import MetaTrainer, TrainConfig

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _cnn(device, dtype=torch.float64, norm="batch", filters=8):
    torch.manual_seed(0)
    model = OmniglotCNN(n_way=3, filters=filters, norm=norm).to(device=device, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    batches = (torch.rand(3, 5, 1, 28, 28, generator=g, dtype=dtype).to(device),
               torch.randint(0, 3, (3, 5), generator=g).to(device))
    return make_loss(model, "cross_entropy"), params_of(model), batches


def _close(a, b, tol):
    for k in a:
        torch.testing.assert_close(a[k].cpu(), b[k].cpu(), rtol=tol, atol=tol, msg=k)


@pytest.mark.parametrize("name", ["reptile", "fomaml", "maml"])
def test_meta_update_on_cuda_equals_cpu_float64(name):
    opt = SGD(0.1)
    cpu, gpu = _cnn("cpu"), _cnn("cuda")
    u0, _, l0 = meta_update(name, cpu[0], cpu[1], cpu[2], opt)
    u1, _, l1 = meta_update(name, gpu[0], gpu[1], gpu[2], opt)
    _close(u0, u1, 1e-9)  # float64; cuDNN and oneDNN sum in different orders: ~1e-13 relative per op
    torch.testing.assert_close(l0, l1.cpu(), rtol=1e-9, atol=1e-9)


def test_default_trainer_on_cuda_equals_eager_and_vmap():
    """TrainConfig() as it comes on the GPU (compiled for a paper-size CNN when triton is there) and
    the meta-batch in one vmap give the eager loop's parameters (float32: 1e-4 absolute after 2
    iterations of 3 tasks; rounding of reordered float32 sums, parameters O(0.1))."""
    torch.manual_seed(0)
    model = OmniglotCNN(n_way=5, filters=64, norm="none").cuda()
    loss_fn, phi = make_loss(model, "cross_entropy"), params_of(model)

    def sampler(rng: np.random.Generator):
        x = torch.as_tensor(rng.random((3, 10, 1, 28, 28)), dtype=torch.float32, device="cuda")
        return x, torch.as_tensor(rng.integers(0, 5, (3, 10)), device="cuda")

    base = dict(inner_steps=3, inner_batch=10, inner_optimizer="adam", inner_lr=1e-3, reset_inner_state=True,
                outer_lr=1.0, meta_batch=3, iterations=2)
    runs = {}
    for name, over in {"eager": dict(compile=False, channels_last=False), "default": {},
                       "vmap": dict(batching="vmap")}.items():
        runs[name] = MetaTrainer(loss_fn, phi, sampler, TrainConfig(**base, **over)).run(progress=False).params
    _close(runs["eager"], runs["default"], 1e-4)
    _close(runs["eager"], runs["vmap"], 1e-4)


def test_hvp_on_cuda_equals_cpu_float64():
    model = MLP((1, 16, 16, 1), "tanh").double()
    f, phi = make_loss(model, "mse"), params_of(model)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 1, generator=g, dtype=torch.float64)
    v = {k: torch.randn(t.shape, generator=g, dtype=t.dtype) for k, t in phi.items()}
    ref = hvp(f, phi, (x, torch.sin(x)), v)
    model.cuda()
    f2 = make_loss(model, "mse")
    got = hvp(f2, {k: t.cuda() for k, t in phi.items()}, (x.cuda(), torch.sin(x).cuda()),
              {k: t.cuda() for k, t in v.items()})
    _close(ref, got, 1e-10)  # float64 MLP: ~1e-15 in fact


def test_persistent_adam_state_on_cuda_equals_cpu_float64():
    opt = Adam(1e-2)
    cpu, gpu = _cnn("cpu", norm="none"), _cnn("cuda", norm="none")
    s0, s1 = opt.init(cpu[1]), opt.init(gpu[1])
    for _ in range(2):
        u0, s0, _ = meta_update("reptile", cpu[0], cpu[1], cpu[2], opt, s0)
        u1, s1, _ = meta_update("reptile", gpu[0], gpu[1], gpu[2], opt, s1)
    _close(u0, u1, 1e-9)  # as above
    _close(s0["v"], s1["v"], 1e-12)
    assert float(tree.norm(u1)) > 0
