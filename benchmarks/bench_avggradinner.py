"""AvgGradInner estimation: samples per second, vectorized against a naive double-backward loop.

AvgGradInner (paper section 5) is ``E[Hbar_2 gbar_1]``: the Hessian of one minibatch's loss times
the gradient of another minibatch of the same task, averaged over tasks and minibatch pairs. One
*sample* is one such product for one (task, minibatch pair).

* ``naive`` (the baseline): for each sample, ``gbar_1 = autograd.grad(L_1)``,
  ``gbar_2 = autograd.grad(L_2, create_graph=True)``, then ``autograd.grad(gbar_2, grad_outputs=gbar_1)``
  (double backward), on an ``nn.Module``'s parameters.
* ``vmap_jvp``: one call of ``vmap`` over the samples of ``g1 = grad(L_1)`` and
  ``jvp(grad(L_2), (phi,), (g1,))`` (forward-over-reverse), with ``torch.func``.

Both estimate the same mean; the benchmark checks they agree (relative error printed).
Models: the sine MLP 1-64-64-1 (batch 10) and the Omniglot CNN (64 filters, batch 10).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, jvp, vmap

from benchmarks.common import compare
from reptile.losses import make_loss, params_of
from reptile.models import MLP, OmniglotCNN, seeded_init

MODELS = {
    "sine_mlp": dict(model=lambda: MLP((1, 64, 64, 1), "tanh"), x=(1,), criterion="mse", samples=64),
    "omniglot_cnn": dict(model=lambda: OmniglotCNN(n_way=5, filters=64), x=(1, 28, 28), criterion="cross_entropy",
                         samples=16),
}
BATCH = 10


def make_samples(spec: dict, n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x1, x2 = (torch.rand(n, BATCH, *spec["x"], generator=g) for _ in range(2))
    if spec["criterion"] == "mse":
        y1, y2 = (torch.rand(n, BATCH, 1, generator=g) for _ in range(2))
    else:
        y1, y2 = (torch.randint(0, 5, (n, BATCH), generator=g) for _ in range(2))
    return x1, y1, x2, y2


def naive(model: nn.Module, criterion: str, samples: tuple[torch.Tensor, ...]) -> Callable[[], list[torch.Tensor]]:
    crit = (lambda o, y: ((o - y) ** 2).mean()) if criterion == "mse" else F.cross_entropy
    params = list(model.parameters())

    def estimate() -> list[torch.Tensor]:
        x1, y1, x2, y2 = samples
        total = [torch.zeros_like(p) for p in params]
        for i in range(x1.shape[0]):
            g1 = torch.autograd.grad(crit(model(x1[i]), y1[i]), params)
            g2 = torch.autograd.grad(crit(model(x2[i]), y2[i]), params, create_graph=True)
            hv = torch.autograd.grad(g2, params, grad_outputs=g1)
            for t, h in zip(total, hv):
                t += h
        return [t / x1.shape[0] for t in total]
    return estimate


def vectorized(model: nn.Module, criterion: str, samples: tuple[torch.Tensor, ...]) -> Callable[[], list[torch.Tensor]]:
    loss_fn, phi = make_loss(model, criterion), params_of(model)

    def one(x1, y1, x2, y2):
        g1 = grad(loss_fn)(phi, (x1, y1))
        return jvp(lambda p: grad(loss_fn)(p, (x2, y2)), (phi,), (g1,))[1]

    def estimate() -> list[torch.Tensor]:
        hv = vmap(one)(*samples)
        return [v.mean(0) for v in hv.values()]
    return estimate


def run(models: list[str], repeats: int, quick: bool = False, log: Callable[[str], None] = print,
        device: str = "cpu") -> list[dict]:
    rows = []
    for name in models:
        spec = MODELS[name]
        n = max(2, spec["samples"] // (4 if quick else 1))
        model = seeded_init(0, spec["model"]).to(device)
        samples = tuple(t.to(device) for t in make_samples(spec, n))
        cands = {"naive": naive(model, spec["criterion"], samples),
                 "vmap_jvp": vectorized(model, spec["criterion"], samples)}
        a, b = cands["naive"](), cands["vmap_jvp"]()
        rel = float(torch.sqrt(sum(((u - v) ** 2).sum() for u, v in zip(a, b)))
                    / torch.sqrt(sum((u ** 2).sum() for u in a)))
        if device.startswith("cuda"):  # time the kernels, not their launch
            cands = {c: (lambda f=f: (f(), torch.cuda.synchronize())) for c, f in cands.items()}
        res = compare(cands, "naive", repeats, warmup=1)
        for c, t in res.items():
            rows.append({"suite": "avg_grad_inner", "device": device, "setting": name, "algorithm": "Hbar_2 gbar_1", "candidate": c,
                         "baseline": "naive", "ratio_cpu": t.ratio_cpu, "ratio_wall": t.ratio_wall,
                         "ratio_cpu_iqr_half": t.spread(), "cpu_ms": t.cpu_s * 1e3, "wall_ms": t.wall_s * 1e3,
                         "samples": n, "samples_per_s_cpu": n / t.cpu_s, "speedup_cpu": 1 / t.ratio_cpu,
                         "rel_diff_to_naive": rel, "repeats": repeats})
            log(f"  {name:<13} {c:<9} {n / t.cpu_s:8.1f} samples/s (cpu)  {1 / t.ratio_cpu:5.2f}x the naive rate  "
                f"(rel. diff {rel:.1e})")
    return rows
