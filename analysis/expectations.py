"""Expectations over a task distribution: AvgGrad, AvgGradInner, expected meta-gradients and the
paper's coefficient table (REFERENCE.md section 2), by Monte Carlo with standard errors.

    AvgGrad      = E[gbar_1]
    AvgGradInner = E[Hbar_2 gbar_1] = E[Hbar_1 gbar_2] = 1/2 grad E[gbar_1 . gbar_2]

    E[g_MAML]    = AvgGrad - 2(k-1) alpha AvgGradInner + O(alpha^2)
    E[g_FOMAML]  = AvgGrad -  (k-1) alpha AvgGradInner + O(alpha^2)
    E[g_Reptile] = k AvgGrad - k(k-1)/2 alpha AvgGradInner + O(alpha^2)

A task sampler is a callable ``sample_batches(rng) -> (x[k, b, ...], y[k, b, ...])`` that draws a
task and k minibatches of it from ``rng`` (a ``numpy.random.Generator``); sample s uses the
generator ``numpy.random.default_rng([seed, s])``, so results repeat exactly and any subset of
samples can be recomputed.

Assumption (the paper's): the k minibatches of a sample are *exchangeable* -- every ordering of
them has the same joint law (true for the "replacement" schedule, where batches are i.i.d. given
the task, and for "cycle" with ``n = k b``, a random partition). Then every gbar_i has mean
AvgGrad and every ordered pair (i, j), i != j, gives ``E[Hbar_i gbar_j] = AvgGradInner``. The
estimators use this to cut variance:

* AvgGrad per sample: ``mean_i gbar_i``.
* AvgGradInner, "hvp" form: ``mean_{i>j} Hbar_i gbar_j`` (the paper's E[Hbar_2 gbar_1], averaged
  over the positions of the pair but not over its order); "grad_dot" form:
  ``1/2 grad_phi mean_{i<j} gbar_i . gbar_j`` (differentiated directly, reverse over reverse). The
  two differ sample by sample by ``1/2 mean_{i>j}(Hbar_i gbar_j - Hbar_j gbar_i)``, whose mean is 0
  only under exchangeability: their agreement within standard errors tests it.
* Meta-gradients are averaged over orderings of the k minibatches ("dihedral": the k rotations
  and their reversals, 2k orderings, all k! for k <= 3), which leaves their expectation unchanged.
  Under these orderings every batch comes last equally often and every ordered pair appears in
  both orders equally often, so the leading term of each averaged meta-gradient is exactly
  ``c_1 mean_i gbar_i`` and its alpha term is exactly ``c_2 mean_{i!=j} Hbar_i gbar_j`` sample by
  sample -- the O(1) noise of the leading term disappears.

Why the coefficient table regresses on the *unsymmetrized* "hvp" form: with the symmetrized form
the first-order part of each averaged sample would match the regressors identically, leaving only
the O(alpha^2) remainder as noise. Standard errors would then shrink at the same rate as the
O(alpha^2) truncation bias and could never cover it, however small alpha is. With the "hvp"
form the noise keeps a zero-mean O(alpha) part (the antisymmetric term above), so the relative
error bars of the AvgGradInner coefficient stay fixed while the truncation bias falls like alpha:
at small alpha the comparison with the paper is a genuine statistical test (of the expansion and
of exchangeability together).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.func import grad, vmap

from reptile import tree
from reptile.algorithms import PAPER_ALGORITHMS, meta_gradient
from reptile.inner import SGD, adapt
from reptile.types import Batch, LossFn, Params, TaskSampler

from .hessian import HVPOperator
from .stats import Estimate, compare, regress
from .validation import check_alphas, check_k, check_params, scalar_loss

#: the paper's three algorithms (from the engine's table, :data:`reptile.algorithms.PAPER_ALGORITHMS`)
ALGORITHMS = PAPER_ALGORITHMS
#: the task sampler (:data:`reptile.types.TaskSampler`), under its old name here
Sampler = TaskSampler


def paper_coefficients(name: str, k: int) -> tuple[float, float]:
    """The paper's ``(coefficient of AvgGrad, coefficient of alpha * AvgGradInner)`` for ``name``."""
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    table = {"maml": (1.0, -2.0 * (k - 1)), "fomaml": (1.0, -(k - 1.0)), "reptile": (float(k), -k * (k - 1) / 2.0)}
    if name not in table:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {ALGORITHMS}")
    return table[name]


def orderings(k: int, kind: str | int = "dihedral", rng: np.random.Generator | None = None) -> list[tuple[int, ...]]:
    """Orderings of k minibatches to average a meta-gradient over.

    ``"dihedral"``: the k rotations of (0..k-1) and their reversals (2k orderings; every batch last
    equally often and every ordered pair in both orders equally often); ``"all"``: all k!;
    ``"none"``: only the identity; an int m: m random permutations drawn from ``rng``.
    """
    ident = tuple(range(k))
    if kind == "none":
        return [ident]
    if kind == "all":
        return list(itertools.permutations(ident))
    if kind == "dihedral":
        rots = [ident[r:] + ident[:r] for r in range(k)]
        out = list(dict.fromkeys(rots + [tuple(reversed(p)) for p in rots]))
        return out
    if isinstance(kind, (int, np.integer)) and kind >= 1:
        if rng is None:
            raise ValueError("random orderings need an rng")
        return [tuple(int(i) for i in rng.permutation(k)) for _ in range(int(kind))]
    raise ValueError(f"orderings must be 'dihedral', 'all', 'none' or a positive int, got {kind!r}")


def _permute(batches: Batch, order: Sequence[int]) -> Batch:
    idx = torch.as_tensor(list(order), device=batches[0].device)
    return batches[0][idx], batches[1][idx]


@dataclass
class MonteCarloResult:
    """Per-sample quantities of one Monte-Carlo run (all ``Estimate``s share the n samples).

    Attributes:
        k, n, seed: sizes and seed of the run.
        alphas: the step sizes at which meta-gradients were measured.
        avg_grad: AvgGrad estimate (``mean_i gbar_i`` per sample).
        avg_grad_inner: AvgGradInner, "hvp" form (``mean_{i>j} Hbar_i gbar_j``).
        avg_grad_inner_dot: AvgGradInner, "grad_dot" form (``1/2 grad mean_{i<j} gbar_i . gbar_j``).
        meta: ``{(algorithm, alpha): Estimate}`` of the order-averaged meta-gradients.
    """

    k: int
    n: int
    seed: int
    alphas: list[float]
    avg_grad: Estimate
    avg_grad_inner: Estimate
    avg_grad_inner_dot: Estimate
    meta: dict[tuple[str, float], Estimate] = field(default_factory=dict)
    ordering: str | int = "dihedral"


def _per_sample(f: LossFn, phi: Params, batches: Batch, k: int, alphas: Sequence[float],
                algorithms: Sequence[str], orders: list[tuple[int, ...]]) -> dict:
    mb = [(batches[0][i], batches[1][i]) for i in range(k)]
    ops = [HVPOperator(f, phi, b) for b in mb]
    gb = [op.grad for op in ops]
    out = {"avg_grad": tree.flatten(tree.scale(tree.weighted_sum(gb, [1.0] * k), 1.0 / k))}
    pairs = [(i, j) for i in range(k) for j in range(i)]                 # i > j
    out["inner"] = tree.flatten(tree.scale(tree.weighted_sum([ops[i](gb[j]) for i, j in pairs], [1.0] * len(pairs)),
                                           1.0 / len(pairs)))
    g = grad(f)

    def half_mean_dot(p: Params) -> torch.Tensor:
        gs = [g(p, b) for b in mb]
        return 0.5 * sum(tree.dot(gs[i], gs[j]) for j, i in pairs) / len(pairs)

    out["inner_dot"] = tree.flatten(grad(half_mean_dot)(phi))
    for alpha in alphas:
        acc = {name: None for name in algorithms}
        for order in orders:
            pb = _permute(batches, order)
            if "reptile" in algorithms or "fomaml" in algorithms:
                traj = adapt(f, phi, pb, SGD(alpha), keep=True)
                vals = {"reptile": tree.weighted_sum(traj.grads, [1.0] * k), "fomaml": traj.grads[-1]}
            else:
                vals = {}
            if "maml" in algorithms:
                vals["maml"] = meta_gradient("maml", f, phi, pb, alpha)
            for name in algorithms:
                v = tree.flatten(vals[name])
                acc[name] = v if acc[name] is None else acc[name] + v
        for name in algorithms:
            out[f"{name}@{alpha!r}"] = acc[name] / len(orders)
    return out


def monte_carlo(loss_fn: LossFn, phi: Params, sample_batches: Sampler, n: int, *, seed: int = 0,
                k: int | None = None, alphas: Iterable[float] = (), algorithms: Sequence[str] = ALGORITHMS,
                ordering: str | int = "dihedral", chunk: int = 32,
                callback: Callable[[int], None] | None = None) -> MonteCarloResult:
    """Draw n samples (task + k minibatches) and compute every per-sample quantity once.

    Args:
        loss_fn: scalar loss of (params, batch).
        phi: the initialization where everything is evaluated.
        sample_batches: ``rng -> (x[k, b, ...], y[k, b, ...])``; sample s gets
            ``numpy.random.default_rng([seed, s])``.
        n: number of samples (>= 3).
        k: if given, the number of minibatches each sample must have (a different count raises).
        alphas: step sizes for the meta-gradients (may be empty: then only AvgGrad/AvgGradInner).
        ordering: how meta-gradients are averaged over minibatch orders (:func:`orderings`).
        chunk: samples processed together under ``torch.func.vmap`` (1: a plain loop). Batching
            removes the per-call overhead that dominates small models (least squares: ~50x).
        callback: called with the number of samples just finished (progress bars).
    Cost per sample: k gradients, k(k-1)/2 HVPs, one reverse-over-reverse gradient of the mean
    inner product, and per alpha and ordering one k-step trajectory and one MAML gradient.
    Raises:
        ValueError: n < 3, a sample with a different k than asked or k < 2, non-positive alphas,
            unknown algorithms.
    """
    check_params(phi)
    if not isinstance(n, (int, np.integer)) or n < 3:
        raise ValueError(f"n must be an integer >= 3 (standard errors need several samples), got {n!r}")
    alphas = list(alphas)
    alphas_l = [float(a) for a in check_alphas(alphas)] if alphas else []
    bad = [a for a in algorithms if a not in ALGORITHMS]
    if bad:
        raise ValueError(f"unknown algorithms {bad}; choose from {ALGORITHMS}")
    f = scalar_loss(loss_fn)
    samples = []
    for s in range(n):
        batches = sample_batches(np.random.default_rng([seed, s]))
        k = check_k(batches, k)
        samples.append(batches)
    orders = orderings(k, ordering, np.random.default_rng([seed, n, 1]))

    def one(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return _per_sample(f, phi, (x, y), k, alphas_l, list(algorithms), orders)

    chunks: list[dict[str, torch.Tensor]] = []
    same_shape = len({(tuple(x.shape), tuple(y.shape)) for x, y in samples}) == 1
    if chunk > 1 and same_shape:
        batched = vmap(one)
        for i in range(0, n, chunk):
            part = samples[i:i + chunk]
            chunks.append(batched(torch.stack([x for x, _ in part]), torch.stack([y for _, y in part])))
            if callback is not None:
                callback(len(part))
    else:
        for x, y in samples:
            chunks.append({key: v[None] for key, v in one(x, y).items()})
            if callback is not None:
                callback(1)

    def est(key: str) -> Estimate:
        return Estimate(torch.cat([c[key] for c in chunks]), phi)

    meta = {(name, a): est(f"{name}@{a!r}") for a in alphas_l for name in algorithms}
    return MonteCarloResult(int(k), int(n), int(seed), alphas_l, est("avg_grad"), est("inner"), est("inner_dot"),
                            meta, ordering)


def avg_grad(loss_fn: LossFn, phi: Params, sample_batches: Sampler, n: int, *, seed: int = 0,
             k: int | None = None) -> Estimate:
    """AvgGrad = E[gbar_1], estimated by ``mean_i gbar_i`` per sample (``Estimate``: mean, se)."""
    return monte_carlo(loss_fn, phi, sample_batches, n, seed=seed, k=k).avg_grad


def avg_grad_inner(loss_fn: LossFn, phi: Params, sample_batches: Sampler, n: int, *, seed: int = 0,
                   k: int | None = None, form: str = "hvp") -> Estimate:
    """AvgGradInner = E[Hbar_2 gbar_1] ("hvp" form) or 1/2 grad E[gbar_1 . gbar_2] ("grad_dot")."""
    if form not in ("hvp", "grad_dot"):
        raise ValueError(f"form must be 'hvp' or 'grad_dot', got {form!r}")
    mc = monte_carlo(loss_fn, phi, sample_batches, n, seed=seed, k=k)
    return mc.avg_grad_inner if form == "hvp" else mc.avg_grad_inner_dot


def expected_meta_gradients(loss_fn: LossFn, phi: Params, sample_batches: Sampler, alpha: float, n: int, *,
                            seed: int = 0, k: int | None = None, ordering: str | int = "dihedral"
                            ) -> dict[str, Estimate]:
    """``{"maml", "fomaml", "reptile"} -> Estimate`` of E[g] at step size alpha (order-averaged)."""
    mc = monte_carlo(loss_fn, phi, sample_batches, n, seed=seed, k=k, alphas=[alpha], ordering=ordering)
    return {name: mc.meta[(name, mc.alphas[0])] for name in ALGORITHMS}


def coefficient_table(mc: MonteCarloResult, regressor: str = "hvp", debias: bool = False) -> pd.DataFrame:
    """Regress each measured expected meta-gradient on (AvgGrad, AvgGradInner), beside the paper.

    For each (algorithm, alpha) of ``mc``: coefficients ``c1, c2`` minimizing
    ``|E[g] - c1 AvgGrad - c2 AvgGradInner|`` with all three expectations replaced by their
    Monte-Carlo means (:func:`analysis.stats.regress`), with delete-one jackknife standard errors.
    ``c2`` is reported divided by alpha, to compare with the paper's -2(k-1), -(k-1), -k(k-1)/2.

    Args:
        regressor: AvgGradInner estimate to regress on: ``"hvp"`` (default; see the module
            docstring for why) or ``"grad_dot"`` (symmetrized: the first-order part of each
            order-averaged sample then matches exactly, so the coefficient is measured to O(alpha)
            with tiny error bars that do not cover that O(alpha) deviation -- use it to watch the
            deviation vanish as alpha -> 0, not for a within-error-bars test).
        debias: U-statistic normal equations (unbiased, but unstable for heavy-tailed samples at
            n of a few hundred) instead of the plug-in ones (default; their O(1/n) bias was well
            below one standard error in every run we made).
    Returns:
        Columns ``algorithm, k, alpha, avg_grad_coef, avg_grad_coef_se, avg_grad_coef_paper,
        inner_coef, inner_coef_se, inner_coef_paper, z_avg_grad, z_inner, n, regressor``;
        ``z_*`` are (measured - paper) / se.
    """
    if regressor not in ("hvp", "grad_dot"):
        raise ValueError(f"regressor must be 'hvp' or 'grad_dot', got {regressor!r}")
    inner = mc.avg_grad_inner if regressor == "hvp" else mc.avg_grad_inner_dot
    rows = []
    for (name, alpha), est in mc.meta.items():
        coef, se = regress(est.samples, [mc.avg_grad.samples, inner.samples], debias=debias)
        p1, p2 = paper_coefficients(name, mc.k)
        c2, se2 = coef[1] / alpha, se[1] / alpha
        rows.append(dict(algorithm=name, k=mc.k, alpha=alpha, avg_grad_coef=coef[0], avg_grad_coef_se=se[0],
                         avg_grad_coef_paper=p1, inner_coef=c2, inner_coef_se=se2, inner_coef_paper=p2,
                         z_avg_grad=_z(coef[0] - p1, se[0]), z_inner=_z(c2 - p2, se2), n=mc.n, regressor=regressor))
    return pd.DataFrame(rows)


def _z(diff: float, se: float) -> float:
    if se > 0:
        return float(diff / se)
    return 0.0 if diff == 0 else float(np.inf * np.sign(diff))


def inner_forms_agree(mc: MonteCarloResult, n_se: float = 3.0) -> tuple[bool, float]:
    """Do the "hvp" and "grad_dot" AvgGradInner estimates agree within ``n_se`` standard errors?

    Returns ``(holds, ratio)`` with ratio = |mean difference| / its standard error (paired,
    :func:`analysis.stats.compare`).
    """
    c = compare(mc.avg_grad_inner, mc.avg_grad_inner_dot)
    return c.within(n_se), c.ratio


# -- independent estimates: each quantity from its own draws (``reptile verify``'s coefficient claims) --
def sample_many(per_sample: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
                sample_batches: Sampler, n: int, *, seed: int, chunk: int = 256,
                callback: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """Draw n samples (sample s from ``numpy.random.default_rng([seed, s])``) and stack
    ``per_sample(x, y)`` (a dict of flat ``[P]`` tensors) into ``[n, P]`` tensors.

    Samples are processed ``chunk`` at a time under ``torch.func.vmap``; a model that ``vmap``
    cannot transform (or ``chunk=1``) is run in a plain loop (same numbers, slower). A sampler with
    a ``many(seed, start, stop)`` attribute returning those draws stacked (the embedded
    least-squares problem: :class:`analysis.draws.ManyDraws`) is asked for a chunk at once.
    """
    if not isinstance(n, (int, np.integer)) or n < 4:
        raise ValueError(f"n must be an integer >= 4, got {n!r}")
    out: dict[str, list[torch.Tensor]] = {}
    use_vmap = chunk > 1
    batched = vmap(per_sample)
    many = getattr(sample_batches, "many", None)
    for start in range(0, n, max(chunk, 1)):
        stop = min(n, start + max(chunk, 1))
        if many is not None:
            xs, ys = many(seed, start, stop)
            part = list(zip(xs, ys))
        else:
            part = [sample_batches(np.random.default_rng([seed, s])) for s in range(start, stop)]
            xs = ys = None
        res = None
        if use_vmap and (xs is not None or len({(tuple(x.shape), tuple(y.shape)) for x, y in part}) == 1):
            try:
                res = batched(torch.stack([x for x, _ in part]) if xs is None else xs,
                              torch.stack([y for _, y in part]) if ys is None else ys)
            except (RuntimeError, NotImplementedError, ValueError):  # an op without a batching rule
                use_vmap = False
        if res is None:
            rows = [per_sample(x, y) for x, y in part]
            res = {key: torch.stack([r[key] for r in rows]) for key in rows[0]}
        for key, v in res.items():
            out.setdefault(key, []).append(v)
        if callback is not None:
            callback(len(part))
    return {key: torch.cat(v) for key, v in out.items()}


def regressor_samples(loss_fn: LossFn, phi: Params, sample_batches: Sampler, n: int, which: str, *, seed: int,
                      chunk: int = 256, callback: Callable[[int], None] | None = None) -> Estimate:
    """Per-sample estimates of AvgGrad (``which="avg_grad"``: ``mean_i gbar_i``) or AvgGradInner
    (``which="avg_grad_inner"``: the symmetric ``mean_{i != j} Hbar_i gbar_j``, computed as
    ``1/2 grad_phi mean_{i<j} gbar_i . gbar_j``, one reverse-over-reverse pass), over the
    k >= 2 minibatches each sample has. Unbiased under exchangeable minibatches."""
    if which not in ("avg_grad", "avg_grad_inner"):
        raise ValueError(f"which must be 'avg_grad' or 'avg_grad_inner', got {which!r}")
    check_params(phi)
    f = scalar_loss(loss_fn)
    g = grad(f)

    def one(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        k = x.shape[0]
        if which == "avg_grad":
            return {"v": tree.flatten(tree.scale(tree.weighted_sum([g(phi, (x[i], y[i])) for i in range(k)],
                                                                   [1.0] * k), 1.0 / k))}
        pairs = [(i, j) for i in range(k) for j in range(i)]

        def half_mean_dot(p: Params) -> torch.Tensor:
            gs = [g(p, (x[i], y[i])) for i in range(k)]
            return 0.5 * sum(tree.dot(gs[i], gs[j]) for i, j in pairs) / len(pairs)

        return {"v": tree.flatten(grad(half_mean_dot)(phi))}

    check_k(sample_batches(np.random.default_rng([seed, 0])))
    return Estimate(sample_many(one, sample_batches, n, seed=seed, chunk=chunk, callback=callback)["v"], phi)


#: weights of g(alpha), g(2 alpha), g(3 alpha) in the three-point estimates of g(0) and g'(0):
#: g(0) = 3 g(a) - 3 g(2a) + g(3a) + O(a^3), g'(0) = (-5 g(a) + 8 g(2a) - 3 g(3a)) / (2a) + O(a^2)
THREE_POINT_G0 = (3.0, -3.0, 1.0)
THREE_POINT_G1 = (-2.5, 4.0, -1.5)


def alpha_derivatives(name: str, loss_fn: LossFn, phi: Params, sample_batches: Sampler, n: int, alpha: float, *,
                      seed: int, ordering: str | int = "none", chunk: int = 256,
                      callback: Callable[[int], None] | None = None) -> tuple[Estimate, Estimate]:
    """The meta-gradient of ``name`` as ``g(alpha) = g0 + alpha g1 + O(alpha^2)``: per-sample ``g0``
    and ``g1`` from the engine (``reptile.algorithms.meta_gradient``) at alpha, 2 alpha and
    3 alpha (:data:`THREE_POINT_G0`, :data:`THREE_POINT_G1`; truncation O(alpha^2) relative).

    The paper: ``E[g0] = c1 AvgGrad`` and ``E[g1] = c2 AvgGradInner`` with ``(c1, c2)`` = (1,
    -2(k-1)) MAML, (1, -(k-1)) FOMAML, (k, -k(k-1)/2) Reptile. ``ordering`` averages each sample
    over minibatch orders (:func:`orderings`; default none: one order per draw).
    Returns ``(g0, g1)`` as :class:`~analysis.stats.Estimate` with n samples each.
    """
    check_params(phi)
    a = float(check_alphas([alpha])[0])
    f = scalar_loss(loss_fn)
    k = check_k(sample_batches(np.random.default_rng([seed, 0])))
    orders = orderings(k, ordering, np.random.default_rng([seed, n, 1]))

    def one(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        vals = []
        for m in (1, 2, 3):
            acc = None
            for order in orders:
                v = tree.flatten(meta_gradient(name, f, phi, _permute((x, y), order), m * a))
                acc = v if acc is None else acc + v
            vals.append(acc / len(orders))
        g0 = sum(w * v for w, v in zip(THREE_POINT_G0, vals))
        g1 = sum(w * v for w, v in zip(THREE_POINT_G1, vals)) / a
        return {"g0": g0, "g1": g1}

    res = sample_many(one, sample_batches, n, seed=seed, chunk=chunk, callback=callback)
    return Estimate(res["g0"], phi), Estimate(res["g1"], phi)
