"""Check provider: the theory on the paper's few-shot CNN (batch norm, cross-entropy, float64).

The paper's analysis is for any smooth loss; this provider runs the HVP and Taylor checks on the
Omniglot network itself (``OmniglotCNN``: 4 x [conv 3x3 stride 2 -> batch norm with batch
statistics -> ReLU] -> linear), kept small (3 ways, 3 filters, about 150 parameters) so that a
dense Hessian is cheap, on a synthetic 3-way task of 28x28 images (one random ink prototype per
class plus pixel noise; self-contained, no dataset needed).

Claims: both HVP methods equal the dense Hessian to 1e-10; the residual of the leading-order
predictions of MAML, FOMAML and Reptile falls like alpha^2 (k = 2, 3) with batch norm, and that
of the second-order predictions like alpha^3 with group norm: torch 2.13's third derivatives of
batch norm with batch statistics disagree with finite differences of its (correct) HVPs, and
forward-over-reverse with reverse-over-reverse (measured: 1977 and 2221 against 2002), so the
second-order prediction cannot be checked on batch norm with this torch. ReLU is only piecewise smooth: the alphas stay small enough
that no pre-activation changes sign along the inner loop (the fits would break otherwise).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from reptile import tree
from reptile.losses import make_loss, params_of
from reptile.models import OmniglotCNN, seeded_init

from . import artifacts, taylor
from .claims import Claim, check_mode
from .hessian import dense_hessian, hvp

# alphas: small enough that no ReLU flips along the inner loop (a kink appeared near 1e-4), and for
# the second order (residual ~1e-11 at 3e-5) large enough to stay above float64 rounding (~1e-15)
CONFIG = {"quick": dict(alphas={1: np.logspace(-6.5, -4.5, 3), 2: np.logspace(-5.5, -4.5, 3)}, ks=(2,)),
          "default": dict(alphas={1: np.logspace(-6.5, -4.5, 5), 2: np.logspace(-5.5, -4.5, 4)}, ks=(2, 3)),
          "full": dict(alphas={1: np.logspace(-6.5, -4.5, 7), 2: np.logspace(-5.5, -4.5, 6)}, ks=(2, 3, 4))}
WAYS, SHOTS, FILTERS = 3, 4, 3
HVP_TOL = 1e-10                              # float64 products; ~1e-14 expected
SLOPE_BANDS = {1: (1.8, 2.2), 2: (2.7, 3.3)}  # the same bands as the MLP checks


def synthetic_batches(k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` minibatches ``(x[k, WAYS*SHOTS, 1, 28, 28], y[k, WAYS*SHOTS])`` of a 3-way task, float64."""
    rng = np.random.default_rng(seed)
    protos = (rng.random((WAYS, 28, 28)) > 0.8).astype(np.float64)   # sparse ink strokes per class
    y = np.tile(np.arange(WAYS), (k, SHOTS))
    x = 1.0 - protos[y] + 0.3 * rng.standard_normal((k, WAYS * SHOTS, 28, 28))
    return torch.as_tensor(x[:, :, None]), torch.as_tensor(y)


def _problem(norm: str):
    model = seeded_init(0, lambda: OmniglotCNN(n_way=WAYS, filters=FILTERS, norm=norm)).double()
    return make_loss(model, "cross_entropy"), params_of(model)


def checks(mode: str, out_dir: Path, progress: bool) -> list[Claim]:
    cfg = CONFIG[check_mode(mode)]
    loss_fn, phi = _problem("batch")
    batches = synthetic_batches(max(cfg["ks"]))
    setting = (f"OmniglotCNN {WAYS}-way, {FILTERS} filters, {tree.numel(phi)} parameters, float64; "
               f"synthetic 28x28 task, {WAYS * SHOTS} images per minibatch")

    first = (batches[0][0], batches[1][0])
    h = dense_hessian(loss_fn, phi, first)
    gen = torch.Generator().manual_seed(0)
    v = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in phi.items()}
    ref = h @ tree.flatten(v)
    errs = {m: float((tree.flatten(hvp(loss_fn, phi, first, v, method=m)) - ref).abs().max())
            for m in ("fwd-rev", "rev-rev")}
    claims = [Claim(f"HVP {m} = dense Hessian (few-shot CNN, batch norm)", e, f"max abs error <= {HVP_TOL:g}",
                    e <= HVP_TOL, f"{setting}; dense Hessian from rev-rev products on the basis vectors, |H| max "
                    f"{float(h.abs().max()):.3g}", unit="max abs error {}") for m, e in errs.items()]

    # leading order with batch norm (the paper's model); the second-order terms need third
    # derivatives, and torch 2.13's third derivatives of batch norm (batch statistics) disagree
    # with finite differences of its HVPs (and fwd-rev with rev-rev), so they are checked on
    # the same network with group norm, whose third derivatives agree with finite differences
    sweeps = []
    for norm, order in (("batch", 1), ("group", 2)):
        lf, p0 = (loss_fn, phi) if norm == "batch" else _problem(norm)
        alphas = cfg["alphas"][order]
        sw = taylor.alpha_sweep(lf, p0, batches, alphas, ks=cfg["ks"], orders=(order,))
        sweeps.append(sw.assign(norm=norm))
        sl = taylor.slopes(sw)
        lo, hi = SLOPE_BANDS[order]
        for name in taylor.ALGORITHMS:
            g = sl[sl.algorithm == name]
            ok = bool(((g.slope >= lo) & (g.slope <= hi)).all())
            per_k = "slope " + ", ".join(f"k={r.k}: {r.slope:.3f}" for r in g.itertuples())
            what = "leading-order" if order == 1 else "second-order"
            claims.append(Claim(f"{what} residual ~ alpha^{order + 1} ({name}, few-shot CNN, {norm} norm)", per_k,
                                f"slope {order + 1} (in [{lo}, {hi}])", ok,
                                f"{setting}, {norm} norm; alphas {alphas[0]:.2g}..{alphas[-1]:.2g} "
                                f"(small enough that no ReLU changes sign along the inner loop)"))
    artifacts.write_csv(Path(out_dir) / "fewshot_taylor_sweep.csv", pd.concat(sweeps, ignore_index=True))
    return claims
