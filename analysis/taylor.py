"""Taylor expansions of the meta-gradients in the inner step size alpha (REFERENCE.md section 2).

Notation (paper section 5.1, indices 1-based in docstrings, 0-based in code): phi_1 = phi,
SGD ``phi_{i+1} = phi_i - alpha g_i``, ``g_i = L_i'(phi_i)``, ``gbar_i = L_i'(phi_1)``,
``Hbar_i = L_i''(phi_1)``, ``Tbar_i = L_i'''(phi_1)`` (``Tbar_i[u, v]`` a vector, see
:func:`analysis.hessian.third_derivative`), ``s_i = sum_{j<i} gbar_j``.

Leading order (the paper's equations):

    g_i       = gbar_i - alpha Hbar_i s_i + O(alpha^2)
    g_MAML    = gbar_k - alpha Hbar_k s_k - alpha sum_{j<k} Hbar_j gbar_k + O(alpha^2)
    g_FOMAML  = g_k,   g_Reptile = sum_{i<=k} g_i,   g_w = sum_i w_i g_i (combinations)

Second order (beyond the paper; derived here). The displacement ``d_i = phi_i - phi_1 =
-alpha sum_{j<i} g_j``; inserting the first-order g_j gives ``d_i = -alpha s_i + alpha^2 r_i +
O(alpha^3)`` with ``r_i = sum_{j<i} Hbar_j s_j``. Then ``g_i = gbar_i + Hbar_i d_i +
1/2 Tbar_i[d_i, d_i] + O(alpha^3)``, i.e.

    g_i = gbar_i - alpha Hbar_i s_i + alpha^2 (Hbar_i r_i + 1/2 Tbar_i[s_i, s_i]) + O(alpha^3).

For MAML, ``g_MAML = (I - alpha A_1) ... (I - alpha A_{k-1}) g_k`` with ``A_j = L_j''(phi_j) =
Hbar_j - alpha Tbar_j[s_j] + O(alpha^2)``, so the Jacobian product is ``I - alpha sum_j Hbar_j +
alpha^2 (sum_j Tbar_j[s_j] + sum_{j<l} Hbar_j Hbar_l) + O(alpha^3)`` (j < l < k, left to right),
and the alpha^2 coefficient of g_MAML is

    (Hbar_k r_k + 1/2 Tbar_k[s_k, s_k]) + sum_{j<k} Hbar_j Hbar_k s_k
        + sum_{j<k} Tbar_j[s_j, gbar_k] + sum_{j<l<k} Hbar_j Hbar_l gbar_k.

The residual of the order-n prediction falls like alpha^(n+1); :func:`alpha_sweep` measures
that, and the tests check it (slopes 2 and 3). For least squares (constant Hessians, Tbar = 0)
g_i is a polynomial of degree i-1 in alpha, so e.g. the first-order prediction is exact for
FOMAML and Reptile with k = 2, and the second-order one for MAML with k = 2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from reptile import tree
from reptile.algorithms import ALGORITHMS as TABLE, PAPER_ALGORITHMS, head, meta_gradient
from reptile.types import Batch, LossFn, Params

from .hessian import HVPOperator, third_derivative
from .validation import check_alpha, check_alphas, check_k, check_params, check_weights, scalar_loss

#: the paper's three algorithms, in the order the analysis reports them (from the engine's table)
ALGORITHMS = PAPER_ALGORITHMS
#: what an expansion can predict: the paper's three and weighted combinations
EXPANDABLE = ALGORITHMS + ("combination",)


def _minibatch(batches: Batch, i: int) -> Batch:
    return batches[0][i], batches[1][i]


@dataclass(frozen=True)
class Expansion:
    """Power-series coefficients in alpha of the inner gradients and of g_MAML, at one phi.

    Attributes:
        k: number of minibatches.
        order: highest power of alpha kept (1 or 2).
        grads: ``grads[i][n]`` is the coefficient of ``alpha^n`` in ``g_{i+1}`` (``Params``).
        maml: ``maml[n]`` is the coefficient of ``alpha^n`` in g_MAML (MAML with k).
    """

    k: int
    order: int
    grads: list[list[Params]]
    maml: list[Params]

    @property
    def gbar(self) -> list[Params]:
        """``gbar_i = L_i'(phi_1)``, i = 1..k."""
        return [g[0] for g in self.grads]

    def coefficients(self, name: str, weights: Sequence[float] | None = None) -> list[Params]:
        """Coefficients ``[c_0, ..., c_order]`` of ``alpha^n`` for ``name``.

        ``name``: ``"maml"``, ``"fomaml"`` (= g_k), ``"reptile"`` (= sum g_i) or
        ``"combination"`` (= sum w_i g_i, ``weights`` required).
        """
        if name not in EXPANDABLE:
            raise ValueError(f"unknown algorithm {name!r}; choose one of {EXPANDABLE}")
        rule = TABLE[name].inner_weights
        if rule is None:  # MAML: not a fixed combination of the inner gradients
            return self.maml
        w = rule(self.k, weights)
        return [tree.weighted_sum([g[n] for g in self.grads], w) for n in range(self.order + 1)]

    def predict(self, name: str, alpha: float, order: int | None = None,
                weights: Sequence[float] | None = None) -> Params:
        """``sum_{n <= order} alpha^n c_n``: the order-``order`` prediction (default: all kept)."""
        alpha = check_alpha(alpha)
        order = self.order if order is None else order
        if not 0 <= order <= self.order:
            raise ValueError(f"order must be in 0..{self.order} for this expansion, got {order}")
        c = self.coefficients(name, weights)
        return tree.weighted_sum(c[:order + 1], [alpha ** n for n in range(order + 1)])

    def predictions(self, alpha: float, order: int | None = None,
                    weights: Sequence[float] | None = None) -> dict[str, Params]:
        """``{"maml", "fomaml", "reptile"[, "combination"]} -> Params`` at this alpha."""
        out = {name: self.predict(name, alpha, order) for name in ALGORITHMS}
        if weights is not None:
            out["combination"] = self.predict("combination", alpha, order, weights)
        return out


def gbars(loss_fn: LossFn, phi: Params, batches: Batch, k: int | None = None) -> list[Params]:
    """``[gbar_1, ..., gbar_k]``, each ``Params`` shaped like ``phi`` (all at phi_1)."""
    check_params(phi)
    k = check_k(batches, k, k_min=1)
    g = torch.func.grad(scalar_loss(loss_fn))
    return [g(phi, _minibatch(batches, i)) for i in range(k)]


def hbar_gbar(loss_fn: LossFn, phi: Params, batches: Batch, k: int | None = None,
              method: str = "rev-rev") -> dict[tuple[int, int], Params]:
    """All products ``Hbar_i gbar_j`` for i != j, keyed by the 1-based pair ``(i, j)``.

    Uses one :class:`~analysis.hessian.HVPOperator` per minibatch (k gradients, then
    k(k-1) cheap products).
    """
    check_params(phi)
    k = check_k(batches, k)
    ops = [HVPOperator(loss_fn, phi, _minibatch(batches, i), method) for i in range(k)]
    return {(i + 1, j + 1): ops[i](ops[j].grad) for i in range(k) for j in range(k) if i != j}


def expand(loss_fn: LossFn, phi: Params, batches: Batch, order: int = 2, *, k: int | None = None,
           method: str = "rev-rev", third_method: str = "fwd-rev") -> Expansion:
    """The alpha-power-series of g_1..g_k and g_MAML up to ``order`` (1 or 2); see the module doc.

    Args:
        loss_fn: scalar loss of (params, batch).
        phi: phi_1, ``Params``.
        batches: ``(x[k, b, ...], y[k, b, ...])``, k >= 2.
        order: 1 (the paper's leading order) or 2 (adds the alpha^2 terms).
        k: if given, the number of minibatches expected (a different count raises).
        method: HVP method for the operators; ``third_method`` for ``Tbar_i[u, v]``.
    Cost: k gradients, about 3k HVPs, and for order 2 about 2k third-derivative products.
    Raises:
        ValueError: k < 2 or different from ``k``, order not 1 or 2, non-scalar loss.
    """
    check_params(phi)
    k = check_k(batches, k)
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    mb = [_minibatch(batches, i) for i in range(k)]
    ops = [HVPOperator(loss_fn, phi, b, method) for b in mb]
    gb = [op.grad for op in ops]
    zero = tree.zeros_like(phi)
    s = [tree.total(gb[:i], phi) for i in range(k)]                  # s_i = sum_{j<i} gbar_j
    hs = [zero] + [ops[i](s[i]) for i in range(1, k)]                # Hbar_i s_i
    grads = [[gb[i], tree.scale(hs[i], -1.0)] for i in range(k)]
    last = k - 1
    u = [ops[j](gb[last]) for j in range(last)]                      # Hbar_j gbar_k, j < k
    maml = [gb[last], tree.scale(tree.add(hs[last], tree.total(u, phi)), -1.0)]
    if order == 2:
        def t(i: int, a: Params, b: Params) -> Params:
            return third_derivative(loss_fn, phi, mb[i], a, b, third_method)

        for i in range(k):
            r_i = tree.total(hs[:i], phi)                            # r_i = sum_{j<i} Hbar_j s_j
            c2 = ops[i](r_i) if i >= 2 else zero
            if i >= 1:
                c2 = tree.add(c2, t(i, s[i], s[i]), 0.5)
            grads[i].append(c2)
        c2 = grads[last][2]
        for j in range(last):
            w_j = tree.total(u[j + 1:], phi)                         # sum_{j<l<k} Hbar_l gbar_k
            c2 = tree.add(c2, ops[j](tree.add(hs[last], w_j)))       # Hbar_j (Hbar_k s_k + w_j)
            if j >= 1:
                c2 = tree.add(c2, t(j, s[j], gb[last]))              # Tbar_j[s_j, gbar_k]
        maml.append(c2)
    return Expansion(k, order, grads, maml)


def predictions(loss_fn: LossFn, phi: Params, batches: Batch, alpha: float, *, order: int = 1,
                weights: Sequence[float] | None = None, k: int | None = None,
                method: str = "rev-rev") -> dict[str, Params]:
    """The order-``order`` predictions of the meta-gradients (1: the paper's leading order, 2: with
    the alpha^2 terms of the module docstring).

    Returns ``{"maml", "fomaml", "reptile"} -> Params`` (plus ``"combination"`` for
    ``sum_i w_i g_i`` when ``weights`` are given), each shaped like ``phi``; at order 1:

        maml    = gbar_k - alpha Hbar_k sum_{j<k} gbar_j - alpha sum_{j<k} Hbar_j gbar_k
        fomaml  = gbar_k - alpha Hbar_k sum_{j<k} gbar_j
        reptile = sum_i gbar_i - alpha sum_i sum_{j<i} Hbar_i gbar_j

    Raises:
        ValueError: k < 2 or not the ``k`` asked, alpha <= 0, weights not of length k, order not 1 or 2.
    """
    alpha = check_alpha(alpha)
    kk = check_k(batches, k)
    check_weights(weights, kk)
    return expand(loss_fn, phi, batches, order, k=k, method=method).predictions(alpha, order, weights)


def leading_order(loss_fn: LossFn, phi: Params, batches: Batch, alpha: float, *,
                  weights: Sequence[float] | None = None, k: int | None = None,
                  method: str = "rev-rev") -> dict[str, Params]:
    """The paper's leading-order (alpha^1) predictions: :func:`predictions` with ``order=1``."""
    return predictions(loss_fn, phi, batches, alpha, order=1, weights=weights, k=k, method=method)


def second_order(loss_fn: LossFn, phi: Params, batches: Batch, alpha: float, *,
                 weights: Sequence[float] | None = None, k: int | None = None,
                 method: str = "rev-rev") -> dict[str, Params]:
    """Predictions including the alpha^2 terms: :func:`predictions` with ``order=2``."""
    return predictions(loss_fn, phi, batches, alpha, order=2, weights=weights, k=k, method=method)


def measured(loss_fn: LossFn, phi: Params, batches: Batch, alpha: float, *,
             weights: Sequence[float] | None = None, k: int | None = None,
             reptile: str = "difference") -> dict[str, Params]:
    """The exact meta-gradients (``reptile.algorithms.meta_gradient``), keys as :func:`leading_order`.

    MAML/FOMAML with k take k-1 steps and evaluate the k-th minibatch; Reptile takes k steps.

    Args:
        reptile: ``"difference"`` computes g_Reptile as ``(phi_1 - phi_{k+1}) / alpha`` (the
            algorithm's definition); ``"sum"`` as ``g_1 + ... + g_k`` (the same number for SGD,
            without the cancellation that costs ~eps |phi| / alpha -- about 1e-11 at alpha = 3e-5,
            enough to flatten a second-order residual there).
    """
    alpha = check_alpha(alpha)
    check_params(phi)
    kk = check_k(batches, k)
    w = check_weights(weights, kk)
    if reptile not in ("difference", "sum"):
        raise ValueError(f"reptile must be 'difference' or 'sum', got {reptile!r}")
    f = scalar_loss(loss_fn)
    out = {name: meta_gradient(name, f, phi, batches, alpha) for name in ("maml", "fomaml")}
    if reptile == "difference":
        out["reptile"] = meta_gradient("reptile", f, phi, batches, alpha)
    else:
        out["reptile"] = meta_gradient("combination", f, phi, batches, alpha, weights=[1.0] * kk)
    if w is not None:
        out["combination"] = meta_gradient("combination", f, phi, batches, alpha, weights=w)
    return out


def fit_slope(alphas: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope of ``log(values)`` against ``log(alphas)`` and its standard error.

    Non-positive values (exact zeros) are dropped; fewer than 2 points left gives ``(nan, nan)``.
    """
    a, v = np.asarray(alphas, float), np.asarray(values, float)
    keep = (v > 0) & np.isfinite(v)
    x, y = np.log(a[keep]), np.log(v[keep])
    if x.size < 2:
        return float("nan"), float("nan")
    xc = x - x.mean()
    slope = float(xc @ (y - y.mean()) / (xc @ xc))
    if x.size < 3:
        return slope, float("nan")
    resid = y - y.mean() - slope * xc
    return slope, float(np.sqrt(resid @ resid / (x.size - 2) / (xc @ xc)))


def alpha_sweep(loss_fn: LossFn, phi: Params, batches: Batch, alphas: Iterable[float], *,
                ks: Sequence[int] | None = None, orders: Sequence[int] = (1, 2),
                weights: Sequence[float] | None = None, fit_range: tuple[float, float] | None = None,
                reptile: str = "sum", callback: Callable[[], None] | None = None) -> pd.DataFrame:
    """Residuals ``|measured - prediction|`` over alpha, with the fitted log-log slope.

    Args:
        batches: ``(x[K, b, ...], y[K, b, ...])``; MAML/FOMAML/Reptile with k use the first k.
        alphas: step sizes (all > 0; at least 2 distinct).
        ks: the k values (each 2..K); default ``(K,)``.
        orders: which predictions to compare (1 = the paper's, 2 = with alpha^2 terms).
        weights: also sweep the combination ``sum_i w_i g_i`` (needs a single k = len(weights)).
        fit_range: fit the slope on alphas within ``[lo, hi]`` only (default: all).
        reptile: how g_Reptile is measured (see :func:`measured`); ``"sum"`` by default so that
            rounding does not floor the residuals at small alpha.
        callback: called once per (k, alpha) evaluation (progress bars).
    Returns:
        One row per (k, algorithm, order, alpha) with columns ``k, algorithm, order, alpha,
        alpha_k, residual, measured_norm, relative_error, slope, slope_se``; the slope (expected
        order + 1) and its standard error are fitted per (k, algorithm, order) and repeated on
        each of that group's rows (:func:`slopes` reduces to one row per group).
    Raises:
        ValueError: non-positive alphas, k out of range, orders not in {0, 1, 2}.
    """
    alphas_arr = check_alphas(alphas, min_count=2)
    kmax = check_k(batches)
    ks = [kmax] if ks is None else list(ks)
    for k in ks:
        if not isinstance(k, (int, np.integer)) or not 2 <= k <= kmax:
            raise ValueError(f"each k must be an integer in 2..{kmax} (the minibatches given), got {k!r}")
    if not orders or any(o not in (0, 1, 2) for o in orders):
        raise ValueError(f"orders must be a non-empty subset of (0, 1, 2), got {list(orders)}")
    if weights is not None and (len(ks) != 1 or len(weights) != ks[0]):
        raise ValueError("a combination sweep needs a single k equal to len(weights)")
    rows = []
    for k in ks:
        sub = head(batches, k)
        exp = expand(loss_fn, phi, sub, max(max(orders), 1))
        names = list(ALGORITHMS) + (["combination"] if weights is not None else [])
        for alpha in alphas_arr:
            meas = measured(loss_fn, phi, sub, float(alpha), weights=weights, reptile=reptile)
            for name in names:
                mnorm = float(tree.norm(meas[name]))
                for order in orders:
                    res = float(tree.norm(tree.sub(meas[name], exp.predict(name, float(alpha), order, weights))))
                    rows.append(dict(k=k, algorithm=name, order=order, alpha=float(alpha), alpha_k=float(alpha) * k,
                                     residual=res, measured_norm=mnorm,
                                     relative_error=res / mnorm if mnorm > 0 else float("inf")))
            if callback is not None:
                callback()
    df = pd.DataFrame(rows)
    lo, hi = fit_range if fit_range is not None else (-np.inf, np.inf)
    fits = {}
    for key, g in df.groupby(["k", "algorithm", "order"]):
        g = g[(g.alpha >= lo) & (g.alpha <= hi)]
        fits[key] = fit_slope(g.alpha, g.residual)
    df["slope"] = [fits[(r.k, r.algorithm, r.order)][0] for r in df.itertuples()]
    df["slope_se"] = [fits[(r.k, r.algorithm, r.order)][1] for r in df.itertuples()]
    return df


def slopes(sweep: pd.DataFrame) -> pd.DataFrame:
    """One row per (k, algorithm, order) of an :func:`alpha_sweep` frame: ``slope, slope_se, expected``."""
    out = sweep.groupby(["k", "algorithm", "order"], as_index=False)[["slope", "slope_se"]].first()
    out["expected"] = out["order"] + 1
    return out


def breakdown(sweep: pd.DataFrame, threshold: float = 0.1, order: int = 1) -> pd.DataFrame:
    """Where the order-``order`` prediction stops being accurate: relative error passes ``threshold``.

    For each (k, algorithm), the smallest alpha at which ``relative_error`` exceeds the
    threshold, interpolated log-linearly between the bracketing alphas of the sweep. Returns
    columns ``k, algorithm, alpha, alpha_k, status`` with status ``"crossed"``, ``"below range"``
    (already above at the smallest alpha: alpha is that alpha) or ``"not reached"`` (NaN).
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    rows = []
    for (k, name), g in sweep[sweep.order == order].groupby(["k", "algorithm"]):
        g = g.sort_values("alpha")
        a, e = g.alpha.to_numpy(), g.relative_error.to_numpy(dtype=float)
        e = np.where(np.isfinite(e), e, np.inf)           # a diverged inner loop counts as inaccurate
        above = np.nonzero(e > threshold)[0]
        if above.size == 0:
            rows.append(dict(k=k, algorithm=name, alpha=np.nan, alpha_k=np.nan, status="not reached"))
            continue
        i = above[0]
        if i == 0:
            rows.append(dict(k=k, algorithm=name, alpha=a[0], alpha_k=a[0] * k, status="below range"))
            continue
        x0, x1, y0, y1 = np.log(a[i - 1]), np.log(a[i]), np.log(max(e[i - 1], 1e-300)), np.log(e[i])
        x = x0 + (np.log(threshold) - y0) * (x1 - x0) / (y1 - y0) if np.isfinite(y1) and y1 != y0 else x1
        rows.append(dict(k=k, algorithm=name, alpha=float(np.exp(x)), alpha_k=float(np.exp(x)) * k, status="crossed"))
    return pd.DataFrame(rows, columns=["k", "algorithm", "alpha", "alpha_k", "status"])
