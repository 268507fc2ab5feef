"""Solution manifolds: distances to per-task optimal sets (Reptile paper section 5.2).

For a task tau let ``W_tau`` be its set of optimal parameters, ``D(phi, W)`` the Euclidean distance
from ``phi`` to ``W`` and ``P_W(phi)`` the nearest point of ``W``. The paper's second explanation
of Reptile is that it minimizes (informally)

    (5.2)   E_tau[ 1/2 D(phi, W_tau)^2 ],   whose gradient is   E_tau[ phi - P_{W_tau}(phi) ],

so that SGD on this objective is ``phi <- phi + eps (P_{W_tau}(phi) - phi)``, and Reptile replaces
``P_{W_tau}(phi)`` by ``phi~ = U^k_tau(phi)``, the end of k inner gradient steps from ``phi``.

This module gives:

* :func:`solution_projection` / :func:`distance` -- exact for :class:`~reptile.tasks.LeastSquaresTask`
  (``W_tau`` is the affine subspace ``pinv(A) y + null(A)``; closed-form projection), approximate
  for any task with a ``LossFn`` (minimize the task loss from ``phi`` to convergence with L-BFGS or
  full-batch gradient descent and take the end point; see the caveat there).
* :func:`distance_objective` and :func:`distance_objective_gradient` -- (5.2) and its gradient over
  a list of tasks.
* :func:`reptile_vs_projection` -- cosine and relative norm of ``phi~ - phi`` against
  ``P_tau(phi) - phi`` as the number of inner steps k grows (the step size ``eps`` multiplies both
  and cancels in both numbers).
* closed forms on least squares: the minimizer of (5.2) (:func:`ls_distance_minimizer`), of the
  joint-training loss (:func:`ls_joint_minimizer`) and Reptile's fixed point for k full-batch
  gradient steps (:func:`ls_reptile_fixed_point`), which moves from the first (k = 1) to the
  second (k -> infinity).

All numerics run in float64 (inputs are converted); returned ``Params`` keep the dtype of ``phi``
unless stated otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import scipy.optimize
import torch
from torch import Tensor
from torch.func import grad_and_value

from reptile import tree
from reptile.inner import SGD, adapt, check_lr
from reptile.tasks import LeastSquaresTask
from reptile.types import Batch, LossFn, Params

Method = Literal["auto", "exact", "lbfgs", "gd"]

__all__ = ["Projection", "UpdateComparison", "solution_projection", "distance", "exact_projection",
           "approximate_projection", "task_data", "distance_objective", "distance_objective_gradient",
           "reptile_vs_projection", "ls_matrices", "ls_distance_minimizer", "ls_joint_minimizer",
           "ls_reptile_fixed_point", "ls_distance_objective", "ls_joint_loss"]


@dataclass(frozen=True)
class Projection:
    """The (exact or approximate) nearest optimal point of one task.

    Attributes:
        point: ``P_tau(phi)`` -- a ``Params`` tree like ``phi`` (exact; a tensor when ``phi`` was a
            tensor), or the end point of the minimization started at ``phi`` (approximate).
        distance: ``||phi - point||`` (float64), i.e. ``D(phi, W_tau)`` when exact.
        loss: the full-task loss at ``point`` (``nan`` when no loss is available).
        converged: exact projections are always converged; approximate ones when the gradient norm
            fell below ``gtol``.
        exact: whether ``point`` is the closed-form projection.
        iterations: iterations of the minimizer (0 when exact).
        grad_norm: norm of the task-loss gradient at ``point`` (``nan`` when exact without a loss).
        optimal: ``loss <= optimal_loss + loss_tol`` when a known optimal loss was given, else ``None``.
    """

    point: Params | Tensor
    distance: float
    loss: float
    converged: bool
    exact: bool
    iterations: int = 0
    grad_norm: float = float("nan")
    optimal: bool | None = None


# -- helpers -------------------------------------------------------------------------------------
def _as_params(phi: Params | Tensor) -> tuple[Params, bool]:
    if isinstance(phi, Tensor):
        return {"w": phi}, True
    if not isinstance(phi, dict) or not phi:
        raise ValueError("phi must be a non-empty Params dict (name -> tensor) or a tensor")
    return phi, False


def _f64(p: Params) -> Params:
    return {k: v.detach().to(torch.float64) for k, v in p.items()}


def task_data(task: object, data: Batch | None = None) -> Batch:
    """The examples ``(x[n, ...], y[n, ...])`` whose mean loss defines task ``task``'s solution set.

    ``data`` wins when given. Otherwise :class:`LeastSquaresTask` gives its ``m`` examples and
    sine tasks of the ``"reptile"`` variant their 50-point grid (deterministic). Tasks whose
    examples are random (sine ``"maml"`` variant) need ``data``.

    Raises:
        ValueError: the task's examples are random or unknown and no ``data`` was given.
    """
    if data is not None:
        return data
    if isinstance(task, LeastSquaresTask):
        return task.inputs, task.targets
    if getattr(task, "variant", None) == "reptile" and hasattr(task, "grid"):
        return task.grid(getattr(task, "n_points", 50))
    raise ValueError(f"cannot tell which examples define the solution set of a {type(task).__name__}; "
                     f"pass data=(x, y)")


# -- exact: least squares -------------------------------------------------------------------------
def exact_projection(task: LeastSquaresTask, phi: Params | Tensor, loss_fn: LossFn | None = None) -> Projection:
    """Closed-form ``P_W(phi)`` onto the minimizers of a least-squares task's loss.

    ``W = p + null(A)`` with ``p = pinv(A) y`` and ``B`` an orthonormal basis of ``null(A)``;
    ``P_W(w) = p + B B^T (w - p)``. When ``A`` has full row rank (underdetermined, m <= d) ``W`` is
    ``{w : A w = y}`` (optimal loss 0) and ``P_W(w) = w - pinv(A)(A w - y)``; when ``A`` has full
    column rank (overdetermined) ``W = {p}``, the unique least-squares solution, with a positive loss.

    Args:
        task: the least-squares task (``inputs[m, d]``, ``targets[m, 1]``).
        phi: a ``Params`` tree with ``d`` entries in all (e.g. ``LinearModel``'s ``linear.weight``
            of shape ``[1, d]``) or a tensor with ``d`` entries.
        loss_fn: if given, the full-task loss at the projection is reported through it; else the
            mean squared residual ``mean((A w - y)^2)`` is.
    Raises:
        ValueError: ``phi`` does not have ``d`` entries.
    """
    params, bare = _as_params(phi)
    d = task.inputs.shape[1]
    if tree.numel(params) != d:
        raise ValueError(f"a least-squares task with d = {d} weights needs phi with {d} entries, got "
                         f"{tree.numel(params)} (a model with a bias is not covered by the closed form)")
    sub = task.solution_set()
    p64, b64 = sub.point.double(), sub.basis.double()
    a64, y64 = task.inputs.double(), task.targets.double()[:, 0]
    w = tree.flatten(_f64(params))
    proj = p64 + b64 @ (b64.T @ (w - p64))
    dist = float(torch.linalg.vector_norm(w - proj))
    like = next(iter(params.values()))
    point = tree.unflatten(proj.to(like.dtype), params)
    if loss_fn is not None and not bare:
        loss = float(loss_fn(_f64(point), (a64, task.targets.double())))
    else:
        loss = float(((a64 @ proj - y64) ** 2).mean())
    return Projection(point["w"] if bare else point, dist, loss, True, True)  # type: ignore[arg-type]


# -- approximate: any LossFn ----------------------------------------------------------------------
def approximate_projection(loss_fn: LossFn, phi: Params, data: Batch, *, method: Literal["lbfgs", "gd"] = "lbfgs",
                           gtol: float = 1e-9, max_iter: int = 5000, lr: float | None = None,
                           optimal_loss: float | None = None, loss_tol: float | None = None) -> Projection:
    """Minimize the full-task loss ``L(w) = loss_fn(w, data)`` from ``w = phi``; return the end point.

    The end point of a descent method started at ``phi`` is the paper's stand-in for
    ``P_W(phi)`` (Reptile itself uses k gradient steps). It is the exact projection for least
    squares (every step of gradient descent and of L-BFGS with the usual ``gamma I`` initial
    Hessian lies in ``phi + rowspace(A)``, and the only optimal point there is ``P_W(phi)``). For a
    nonlinear model it is *a* nearby optimal point, not necessarily the nearest one, so
    ``||phi - end||`` is an upper bound on ``D(phi, W)`` once the end point is optimal.

    Args:
        loss_fn: scalar loss of (params, batch).
        phi: start point (any dtype; computation is float64).
        data: the task's examples ``(x[n, ...], y[n, ...])`` (one full batch).
        method: ``"lbfgs"`` (scipy L-BFGS-B, memory 20, gradients from ``torch.func.grad``) or
            ``"gd"`` (full-batch gradient descent with step ``lr``).
        gtol: convergence when the Euclidean gradient norm is ``<= gtol``.
        max_iter: iteration cap (not converged when reached).
        lr: step of ``"gd"`` (required there; ``< 2 / lambda_max`` of the Hessian to converge).
        optimal_loss: a known optimal value of the task loss (e.g. 0 for a realizable regression);
            with ``loss_tol``, sets :attr:`Projection.optimal`.
        loss_tol: tolerance on ``loss - optimal_loss``.
    Returns:
        A :class:`Projection` with ``point`` in ``phi``'s dtype.
    Raises:
        ValueError: unknown method, ``"gd"`` without ``lr``, ``optimal_loss`` without ``loss_tol``.
    """
    if method not in ("lbfgs", "gd"):
        raise ValueError(f"unknown minimization method {method!r}; choose 'lbfgs' or 'gd'")
    if (optimal_loss is None) != (loss_tol is None):
        raise ValueError("give optimal_loss and loss_tol together")
    like = next(iter(phi.values()))
    p0 = _f64(phi)
    x, y = data
    data64 = (x.to(torch.float64) if x.is_floating_point() else x, y.to(torch.float64) if y.is_floating_point() else y)
    vg = grad_and_value(loss_fn)

    def f_and_g(vec: Tensor) -> tuple[Tensor, Tensor]:
        g, v = vg(tree.unflatten(vec, p0), data64)
        return v.detach(), tree.flatten(g).detach()

    w = tree.flatten(p0).clone()
    if method == "gd":
        if lr is None:
            raise ValueError("method 'gd' needs a step size lr")
        check_lr(lr, "lr")
        its, converged = 0, False
        for its in range(max_iter + 1):
            v, g = f_and_g(w)
            if float(torch.linalg.vector_norm(g)) <= gtol:
                converged = True
                break
            if its < max_iter:
                w = w - lr * g
    else:
        def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
            v, g = f_and_g(torch.from_numpy(z))
            return float(v), g.numpy().astype(np.float64)

        # ftol=0 and the L-BFGS-B pgtol (a max-norm test) set from gtol/sqrt(n) leave the stopping to
        # the gradient; the Euclidean-norm test below decides "converged".
        n = w.numel()
        res = scipy.optimize.minimize(fun, w.numpy(), jac=True, method="L-BFGS-B",
                                      options=dict(maxiter=max_iter, maxfun=2 * max_iter, ftol=0.0,
                                                   gtol=gtol / np.sqrt(n), maxcor=20))
        w, its = torch.from_numpy(np.asarray(res.x, dtype=np.float64)), int(res.nit)
        v, g = f_and_g(w)
    gn = float(torch.linalg.vector_norm(g))
    converged = gn <= gtol
    loss = float(v)
    optimal = None if optimal_loss is None else bool(loss <= optimal_loss + float(loss_tol))
    dist = float(torch.linalg.vector_norm(w - tree.flatten(p0)))
    point = {k: t.to(like.dtype).clone() for k, t in tree.unflatten(w, p0).items()}
    return Projection(point, dist, loss, converged, False, its, gn, optimal)


def solution_projection(task: object, phi: Params | Tensor, *, loss_fn: LossFn | None = None,
                        data: Batch | None = None, method: Method = "auto", **options: object) -> Projection:
    """``P_{W_tau}(phi)``: exact for least squares, else approximate (see :func:`approximate_projection`).

    Args:
        task: a :class:`~reptile.tasks.LeastSquaresTask`, a sine task, or anything ``data`` describes.
        phi: parameters (``Params``; a bare tensor is accepted for least squares).
        loss_fn: the task loss; required by the approximate methods.
        data: the examples defining the task loss (default: :func:`task_data`).
        method: ``"auto"`` (exact for least squares, else ``"lbfgs"``), ``"exact"``, ``"lbfgs"``, ``"gd"``.
        **options: passed to :func:`approximate_projection` (``gtol``, ``max_iter``, ``lr``,
            ``optimal_loss``, ``loss_tol``).
    Raises:
        ValueError: ``"exact"`` for a task that is not least squares; approximate without ``loss_fn``.
    """
    if method not in ("auto", "exact", "lbfgs", "gd"):
        raise ValueError(f"unknown method {method!r}; choose 'auto', 'exact', 'lbfgs' or 'gd'")
    if method == "exact" or (method == "auto" and isinstance(task, LeastSquaresTask)):
        if not isinstance(task, LeastSquaresTask):
            raise ValueError(f"the exact projection is known for least-squares tasks only, not {type(task).__name__}")
        return exact_projection(task, phi, loss_fn)
    if loss_fn is None:
        raise ValueError("an approximate projection minimizes the task loss: pass loss_fn")
    params, bare = _as_params(phi)
    if bare:
        raise ValueError("approximate projections need phi as a Params dict (the LossFn's argument)")
    return approximate_projection(loss_fn, params, task_data(task, data),
                                  method="lbfgs" if method == "auto" else method, **options)  # type: ignore[arg-type]


def distance(task: object, phi: Params | Tensor, **kwargs: object) -> float:
    """``D(phi, W_tau)`` (exact for least squares; else the approximate projection's distance).

    Takes the keyword arguments of :func:`solution_projection`.
    """
    return solution_projection(task, phi, **kwargs).distance  # type: ignore[arg-type]


# -- the objective (5.2) --------------------------------------------------------------------------
def distance_objective(tasks: Sequence[object], phi: Params | Tensor, **kwargs: object) -> float:
    """``1/2 mean_tau D(phi, W_tau)^2`` over ``tasks`` (a Monte Carlo estimate of (5.2))."""
    if not tasks:
        raise ValueError("need at least one task")
    return 0.5 * float(np.mean([distance(t, phi, **kwargs) ** 2 for t in tasks]))


def distance_objective_gradient(tasks: Sequence[object], phi: Params, **kwargs: object) -> Params:
    """``mean_tau (phi - P_{W_tau}(phi))``: the gradient of :func:`distance_objective` (float64 Params).

    Valid for almost every ``phi`` (where each projection is unique, paper section 5.2).
    """
    if not tasks:
        raise ValueError("need at least one task")
    p64 = _f64(phi)
    diffs = [tree.sub(p64, _f64(solution_projection(t, phi, **kwargs).point)) for t in tasks]  # type: ignore[arg-type]
    return tree.mean(diffs)


# -- Reptile's update against the projection ------------------------------------------------------
@dataclass(frozen=True)
class UpdateComparison:
    """Reptile's ``u_k = phi~_k - phi`` against ``v = P_tau(phi) - phi`` for one k.

    ``cosine = <u_k, v> / (|u_k| |v|)``; ``relative_norm = |u_k| / |v|``;
    ``relative_error = |phi~_k - P_tau(phi)| / |phi - P_tau(phi)|`` (0 when they coincide).
    All three are unchanged when both updates are scaled by the outer step ``eps``.
    """

    k: int
    cosine: float
    relative_norm: float
    relative_error: float


def reptile_vs_projection(loss_fn: LossFn, phi: Params, batches: Batch, alpha: float, ks: Sequence[int],
                          projection: Params) -> list[UpdateComparison]:
    """Compare k-step SGD adaptation with the projection, for every k in ``ks``.

    One inner loop of ``max(ks)`` SGD steps (step ``alpha``) runs on the stacked minibatches
    ``batches`` (``x[K, b, ...]`` with ``K >= max(ks)``); ``phi~_k`` is its k-th iterate, so the
    smaller k use a prefix of the same minibatch sequence.

    Args:
        loss_fn: scalar loss of (params, batch).
        phi: the initialization (float64 recommended).
        batches: at least ``max(ks)`` stacked minibatches of one task.
        alpha: inner SGD step size.
        ks: numbers of inner steps, each >= 1.
        projection: ``P_tau(phi)`` (e.g. :func:`solution_projection`'s ``point``).
    Returns:
        One :class:`UpdateComparison` per k, in the order of ``ks``.
    Raises:
        ValueError: an empty or non-positive ``ks``, too few minibatches, ``phi`` already on ``W``.
    """
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty list of positive integers, got {list(ks)}")
    kmax = max(ks)
    if batches[0].shape[0] < kmax:
        raise ValueError(f"need at least max(ks) = {kmax} minibatches, got {batches[0].shape[0]}")
    check_lr(alpha)
    p64, proj = _f64(phi), tree.flatten(_f64(projection))
    start = tree.flatten(p64)
    v = proj - start
    vn = float(torch.linalg.vector_norm(v))
    if vn == 0.0:
        raise ValueError("phi lies on the solution set already (P(phi) = phi): the comparison is undefined")
    b64 = (batches[0][:kmax].to(torch.float64), batches[1][:kmax].to(torch.float64))
    traj = adapt(loss_fn, p64, b64, SGD(alpha), keep=True)
    out = []
    for k in ks:
        u = tree.flatten(traj.params[k]) - start
        un = float(torch.linalg.vector_norm(u))
        cos = float(u @ v) / (un * vn) if un > 0 else float("nan")
        out.append(UpdateComparison(int(k), cos, un / vn, float(torch.linalg.vector_norm(u - v)) / vn))
    return out


# -- least-squares closed forms -------------------------------------------------------------------
def ls_matrices(task: LeastSquaresTask) -> tuple[np.ndarray, np.ndarray]:
    """``(A[m, d], y[m])`` of a least-squares task as float64 numpy arrays."""
    return task.inputs.detach().cpu().double().numpy(), task.targets.detach().cpu().double().numpy()[:, 0]


def _solve(m: np.ndarray, r: np.ndarray, what: str) -> np.ndarray:
    if np.linalg.matrix_rank(m) < m.shape[0]:
        raise ValueError(f"the {what} has no unique minimizer (the tasks' row spaces do not span R^d)")
    return np.linalg.solve(m, r)


def ls_distance_objective(tasks: Sequence[LeastSquaresTask], w: np.ndarray) -> float:
    """``1/2 mean_tau D(w, W_tau)^2`` with ``D^2 = r^T (A A^T)^+ r``, ``r = A w - y`` (closed form)."""
    vals = []
    for t in tasks:
        a, y = ls_matrices(t)
        r = a @ w - y
        vals.append(r @ np.linalg.pinv(a @ a.T) @ r)
    return 0.5 * float(np.mean(vals))


def ls_joint_loss(tasks: Sequence[LeastSquaresTask], w: np.ndarray) -> float:
    """Joint-training loss ``mean_tau mean_i (a_i . w - y_i)^2`` (each task's mean-squared error)."""
    return float(np.mean([np.mean((ls_matrices(t)[0] @ w - ls_matrices(t)[1]) ** 2) for t in tasks]))


def ls_distance_minimizer(tasks: Sequence[LeastSquaresTask]) -> np.ndarray:
    """``argmin_w 1/2 mean_tau D(w, W_tau)^2`` for consistent least-squares tasks, ``[d]`` float64.

    The gradient is ``mean_tau (Q_tau w - pinv(A_tau) y_tau)`` with ``Q_tau = pinv(A_tau) A_tau``
    the projector onto the row space of ``A_tau``, so the minimizer solves
    ``(sum_tau Q_tau) w = sum_tau pinv(A_tau) y_tau``.

    Raises:
        ValueError: ``sum Q_tau`` is singular (no unique minimizer).
    """
    mats = [ls_matrices(t) for t in tasks]
    q = sum(np.linalg.pinv(a) @ a for a, _ in mats)
    r = sum(np.linalg.pinv(a) @ y for a, y in mats)
    return _solve(q, r, "expected squared distance")


def ls_joint_minimizer(tasks: Sequence[LeastSquaresTask]) -> np.ndarray:
    """``argmin_w mean_tau (1/m_tau) |A_tau w - y_tau|^2`` (joint training), ``[d]`` float64.

    Solves ``(sum_tau A^T A / m) w = sum_tau A^T y / m``. For one example per task this is
    ``sum |a|^2 D_tau^2`` -- the squared distances weighted by ``|a_tau|^2`` -- while (5.2)
    weights them equally: the two minimizers differ when the ``|a_tau|`` differ.
    """
    mats = [ls_matrices(t) for t in tasks]
    h = sum(a.T @ a / len(a) for a, _ in mats)
    r = sum(a.T @ y / len(a) for a, y in mats)
    return _solve(h, r, "joint-training loss")


def ls_reptile_fixed_point(tasks: Sequence[LeastSquaresTask], k: int, alpha: float) -> np.ndarray:
    """Where Reptile with k full-batch SGD steps of size ``alpha`` comes to rest (annealed ``eps``).

    For the task loss ``(1/m)|A w - y|^2`` (Hessian ``H = (2/m) A^T A``), k gradient steps give
    ``phi~ - phi = -M_k (phi - P(phi))`` with ``M_k = I - (I - alpha H)^k``: the expected update
    vanishes where ``(sum M_k) w = sum M_k pinv(A) y``. ``M_1 = alpha H`` gives the joint-training
    minimizer; ``M_k -> Q`` (``alpha < 2 / lambda_max``) gives :func:`ls_distance_minimizer`.

    Raises:
        ValueError: ``k < 1``, bad ``alpha``, or a singular system.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    check_lr(alpha)
    lhs, rhs = 0.0, 0.0
    for t in tasks:
        a, y = ls_matrices(t)
        d = a.shape[1]
        h = 2.0 / len(a) * a.T @ a
        mk = np.eye(d) - np.linalg.matrix_power(np.eye(d) - alpha * h, k)
        lhs = lhs + mk
        rhs = rhs + mk @ (np.linalg.pinv(a) @ y)
    return _solve(np.asarray(lhs), np.asarray(rhs), "Reptile fixed-point equation")
