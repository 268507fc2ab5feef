"""Step sizes from a problem's own scale, for the claims of ``reptile verify`` on any model.

The Taylor expansions of the meta-gradients are power series in ``alpha * k * lambda``, where
``lambda`` is the size of the minibatch Hessians (their top eigenvalue in magnitude): the inner
loop moves phi by ``~ alpha k |gbar|`` and the gradients change by ``~ lambda`` times that. So
instead of constants tuned for the embedded problems, every alpha here is a fixed multiple of
``1 / (k lambda)`` with ``lambda`` measured at phi (:func:`measure_scale`: power iteration on the
Hessian of a few minibatches, median of their top |eigenvalue|):

* slope fits (:func:`slope_alphas`): ``alpha k lambda`` from 0.1 down over two decades (the
  asymptotic regime, where the next-order term is <~10 % of the fitted one);
* the coefficient claims (:func:`coefficient_alpha`): ``alpha k lambda = 0.02``; their three-point
  estimate of ``g'(0)`` has an O((alpha k lambda)^2) truncation, ~4e-4 relative, far below the
  10 % error the tests are sized to detect (and measured beside it:
  ``analysis.expectation_checks``);
* the breakdown sweep (:func:`breakdown_alphas`): ``alpha k lambda`` from 1e-3 to 3.

These are rules of thumb with margins of 10x or more; the claims measure what they need
(truncation, rounding floors) rather than trusting them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reptile import tree
from reptile.types import Batch, LossFn, Params

from .hessian import HVPOperator

SLOPE_TOP = 0.1        # alpha k lambda at the largest alpha of a slope fit
SLOPE_DECADES = 2.0    # span of the slope fit
SLOPE_TOP_LOW_PRECISION, SLOPE_DECADES_LOW_PRECISION = 0.3, 1.5   # float32
COEF_RHO = 0.02        # alpha k lambda of the coefficient claims
BREAK_RANGE = (1e-3, 3.0)


@dataclass(frozen=True)
class Scale:
    """The measured scale of a problem at phi.

    Attributes:
        lam: median over the probed minibatches of the top |eigenvalue| of the minibatch Hessian.
        lam_max: the largest of them.
        grad_norm: median |gbar| (gradient norm of one minibatch) at phi.
        n_batches: how many minibatches were probed.
    """

    lam: float
    lam_max: float
    grad_norm: float
    n_batches: int

    def describe(self) -> str:
        return (f"lambda = {self.lam:.3g} (median top |Hessian eigenvalue| of {self.n_batches} minibatches at phi; "
                f"max {self.lam_max:.3g})")


def top_abs_eigenvalue(loss_fn: LossFn, phi: Params, batch: Batch, iters: int = 60, tol: float = 1e-3,
                       seed: int = 0) -> tuple[float, float]:
    """``(|lambda_top|, |gbar|)`` by power iteration on the HVP operator, in phi's dtype and device
    (relative tolerance ``tol``: only the order of magnitude is used)."""
    op = HVPOperator(loss_fn, phi, batch)
    gen = torch.Generator().manual_seed(seed)
    v = {n: torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p) for n, p in phi.items()}
    v = tree.scale(v, 1.0 / float(tree.norm(v)))
    lam = 0.0
    for _ in range(iters):
        w = op(v)
        new = float(tree.norm(w))
        if new == 0.0:
            break
        v = tree.scale(w, 1.0 / new)
        if abs(new - lam) <= tol * new:
            lam = new
            break
        lam = new
    return lam, float(tree.norm(op.grad))


def measure_scale(loss_fn: LossFn, phi: Params, sample_batches, n_batches: int = 3, seed: int = 7) -> Scale:
    """:class:`Scale` from the first minibatch of ``n_batches`` tasks drawn with ``default_rng([seed, j])``."""
    lams, norms = [], []
    for j in range(n_batches):
        x, y = sample_batches(np.random.default_rng([seed, j]))
        lam, gn = top_abs_eigenvalue(loss_fn, phi, (x[0], y[0]), seed=j)
        lams.append(lam)
        norms.append(gn)
    if not np.isfinite(lams).all() or max(lams) <= 0:
        raise ValueError(f"the minibatch Hessians at phi are zero or not finite ({lams}); the Taylor claims need "
                         "curvature (a loss that is locally linear in the parameters has no AvgGradInner)")
    return Scale(float(np.median(lams)), float(max(lams)), float(np.median(norms)), n_batches)


def slope_alphas(scale: Scale, k_max: int, n: int, dtype: torch.dtype = torch.float64) -> np.ndarray:
    """n alphas for the residual slope fits: ``alpha k_max lambda`` from 0.1 down over two decades
    (float64); in float32, from 0.3 down over 1.5 decades (float32 rounding, ~1e-7 |g|, swamps the
    second-order residual, ~(alpha k lambda)^3 |g|, below alpha k lambda ~ 0.03)."""
    if dtype == torch.float64:
        top, decades = SLOPE_TOP, SLOPE_DECADES
    else:
        top, decades = SLOPE_TOP_LOW_PRECISION, SLOPE_DECADES_LOW_PRECISION
    top = top / (k_max * scale.lam)
    return np.geomspace(top * 10 ** -decades, top, n)


def coefficient_alpha(scale: Scale, k: int) -> float:
    """The alpha of the coefficient claims: ``alpha k lambda = 0.02``."""
    return float(COEF_RHO / (k * scale.lam))


def breakdown_alphas(scale: Scale, k_max: int, n: int) -> np.ndarray:
    """n alphas with ``alpha k_max lambda`` from 1e-3 to 3 (where the leading order breaks down)."""
    return np.geomspace(BREAK_RANGE[0], BREAK_RANGE[1], n) / (k_max * scale.lam)
