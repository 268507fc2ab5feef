"""Closed forms for linear least squares, to test the estimators against.

Model ``out = x . w`` (``w[d]``, the single parameter ``linear.weight[1, d]``), minibatch loss
``L_i(w) = mean_b (x . w - y)^2``. Then, exactly,

    gbar_i = (2/b) X_i^T (X_i w - y_i),   Hbar_i = (2/b) X_i^T X_i   (constant: Tbar_i = 0),
    g_i = L_i'(w_i) = gbar_i - alpha Hbar_i sum_{j<i} g_j,
    g_MAML = (I - alpha Hbar_1) ... (I - alpha Hbar_{k-1}) g_k.

Expectations for the family of :func:`analysis.problems.least_squares_problem`: task inputs
``a ~ N(0, I_d)`` (m rows per task), targets ``y = a . w_tau + eps`` with ``E[w_tau] = mu``
and zero-mean noise, model inputs ``x = D a`` (D diagonal), and minibatches of b distinct rows
drawn independently of each other ("replacement" schedule). With ``M_i = (2/b) A_i^T A_i``,
``Hbar_i = D M_i D`` and ``gbar_i = D M_i (D w - w_tau) - noise terms``; ``E[M_i] = 2 I``, and for
two independent minibatches, counting the ``b^2/m`` expected shared rows and using
``E[(a^T D^2 a) a a^T] = tr(D^2) I + 2 D^2`` (Isserlis),
``E[M_2 D^2 M_1] = 4 ((1 + 1/m) D^2 + tr(D^2)/m I)``. Hence

    AvgGrad      = 2 D (D w - mu)
    AvgGradInner = 4 D ((1 + 1/m) D^2 + tr(D^2)/m I) (D w - mu)

(for ``D = I``: ``2 (w - mu)`` and ``4 (1 + (d + 1)/m) (w - mu)``, parallel vectors). Both are
independent of b.
"""
from __future__ import annotations

import numpy as np


def _as(w: object) -> np.ndarray:
    return np.asarray(w, dtype=np.float64).reshape(-1)


def avg_grad(w: object, mu: object, scales: object) -> np.ndarray:
    """AvgGrad ``2 D (D w - mu)`` (``[d]``); ``mu`` scalar or ``[d]``, ``scales`` the diagonal of D."""
    w, d = _as(w), _as(scales)
    return 2 * d * (d * w - mu)


def avg_grad_inner(w: object, mu: object, scales: object, m: int) -> np.ndarray:
    """AvgGradInner ``4 D ((1 + 1/m) D^2 + tr(D^2)/m I) (D w - mu)`` (``[d]``), m rows per task."""
    w, d = _as(w), _as(scales)
    return 4 * d * ((1 + 1 / m) * d ** 2 + (d ** 2).sum() / m) * (d * w - mu)


def minibatch_terms(w: object, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-minibatch ``gbar[k, d]`` and ``H[k, d, d]`` for inputs ``x[k, b, d]``, targets ``y[k, b, 1]``."""
    w = _as(w)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)[..., 0]
    b = x.shape[1]
    h = 2.0 / b * np.einsum("kbi,kbj->kij", x, x)
    g = 2.0 / b * np.einsum("kbi,kb->ki", x, x @ w - y)
    return g, h


def inner_gradients(w: object, x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Exact SGD gradients ``g[k, d]``: ``g_i = gbar_i - alpha Hbar_i sum_{j<i} g_j``."""
    gbar, h = minibatch_terms(w, x, y)
    out = np.zeros_like(gbar)
    for i in range(len(gbar)):
        out[i] = gbar[i] - alpha * h[i] @ out[:i].sum(0)
    return out


def meta_gradients(w: object, x: np.ndarray, y: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
    """Exact ``{"maml", "fomaml", "reptile"}`` meta-gradients (``[d]`` each), k = ``len(x)``."""
    g = inner_gradients(w, x, y, alpha)
    _, h = minibatch_terms(w, x, y)
    maml = g[-1]
    for j in reversed(range(len(g) - 1)):
        maml = maml - alpha * h[j] @ maml
    return {"maml": maml, "fomaml": g[-1], "reptile": g.sum(0)}


def taylor_terms(w: object, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """``{"gbar": [k, d], "H": [k, d, d], "hbar_gbar": [k, k, d]}`` with ``hbar_gbar[i, j] = Hbar_i gbar_j``."""
    gbar, h = minibatch_terms(w, x, y)
    return {"gbar": gbar, "H": h, "hbar_gbar": np.einsum("iab,jb->ija", h, gbar)}
