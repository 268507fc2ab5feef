"""Distances to solution manifolds on a user's :class:`~analysis.problems.Problem` (paper section 5.2).

The hook of :mod:`analysis.problem_checks` (``reptile verify --problem``): for a few tasks drawn
from the problem's sampler, the union of one task's k minibatches is the task's constraint set
(``constraint="auto"``: fit constraints ``f_theta(x_i) = y_i`` for floating-point targets, a
mean-loss level for integer labels; :func:`analysis.manifolds.certified_projection`), ``phi`` is
projected onto each, and two claims are reported:

* every projection is certified (constraint violation <= ``VIOLATION_TOL`` and KKT residual <=
  ``KKT_TOL``); a projection that cannot be certified fails the claim with its numbers (it does
  not crash the run);
* the certified distance ``D(phi, W_tau)`` is no larger than the distance to the end point of an
  L-BFGS descent of the task loss from ``phi`` (an upper bound), with the ratio per task.

Cost: the Jacobian ``J`` is ``n x P`` (n scalar constraints, P parameters) and every Newton step
takes its thin SVD, ``O(n^2 P)``; :data:`MAX_CONSTRAINTS` and :data:`MAX_JACOBIAN` bound both, and
a problem above them (or with ``n >= P``: not over-parameterized, the solution set is then
generically a point or empty) is skipped with the reason and the limit.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.func import functional_call

from reptile.types import Batch

from . import artifacts
from .claims import Claim, check_mode
from .manifolds import KKT_TOL, VIOLATION_TOL, compare_with_lbfgs
from .problems import Problem
from .progress import bar

#: tasks projected per mode, minibatches k per task (their union is the constraint set), and the
#: L-BFGS iteration cap of the upper bound. Measured CPU per task (projection + L-BFGS), one thread:
#: ~0.5 s on the 3-16-16-1 MLP of tests/user_problem.py (16 constraints, 353 parameters), 1.8-3 s
#: on docs/examples/conv_groupnorm.py (20 constraints, 89 parameters; 57-168 Newton iterations)
CONFIG = {
    "quick": dict(tasks=1, k=2, lbfgs_iter=300),
    "default": dict(tasks=2, k=2, lbfgs_iter=1000),
    "full": dict(tasks=8, k=3, lbfgs_iter=3000),
}
#: at most this many scalar constraints n: every Newton step solves n x n systems and takes the
#: thin SVD of J (O(n^2 P)); a few hundred keeps a projection within seconds
MAX_CONSTRAINTS = 400
#: at most this many entries of J (n x P float64: 4e6 entries = 32 MB, SVD ~ n^2 P <= 1.6e9 flops)
MAX_JACOBIAN = 4_000_000
SEED = 2**21            # task draws: numpy default_rng(SEED + t), apart from the claims' other seeds
RATIO_SLACK = 1e-9      # "never farther than L-BFGS" within the certified point's own accuracy


def slug(label: str) -> str:
    """File-name prefix of a problem's CSV files (``<slug>_*.csv``)."""
    return "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")[:40] or "problem"


def union_of_minibatches(x: Tensor, y: Tensor) -> Batch:
    """``x[k, b, ...], y[k, b, ...]`` -> the distinct examples ``(x[n, ...], y[n, ...])`` of the task.

    Minibatches drawn with replacement repeat examples; a repeated constraint adds a zero singular
    value to J without changing the solution set, so duplicates (same x and y) are dropped.
    """
    xs, ys = x.reshape(-1, *x.shape[2:]), y.reshape(-1, *y.shape[2:])
    key = torch.cat([xs.reshape(len(xs), -1).double(), ys.reshape(len(ys), -1).double()], 1).cpu()
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    first = sorted({int(i): j for j, i in reversed(list(enumerate(inverse.tolist())))}.values())
    idx = torch.as_tensor(first, device=xs.device)
    return xs[idx], ys[idx]


def _predict(prob: Problem):
    """``f(params, x)`` for the fit constraint: the LossFn's own model (``make_loss``), else the
    problem's ``model``, else ``None`` (the claim is skipped)."""
    if getattr(prob.loss_fn, "model", None) is not None or prob.model is None:
        return None
    model = prob.model
    buffers = dict(model.named_buffers())

    def f(params, x):
        return functional_call(model, (params, buffers) if buffers else params, (x,))
    return f


def manifold_claims_for(prob: Problem, label: str, mode: str, out_dir: Path, progress: bool = False) -> list[Claim]:
    """Certified projections of ``prob.phi`` onto a few tasks' solution sets (module docstring).

    Writes ``<slug>_manifolds.csv`` (one row per task: constraints, certificate, certified and
    L-BFGS distances) into ``out_dir``. Returns two claims (certified; nearer than L-BFGS), or one
    skip with the reason when the problem is above the size limits or has no model output.
    """
    cfg = CONFIG[check_mode(mode)]
    names = (f"certified projections onto the tasks' solution sets ({label})",
             f"certified distance to the solution sets <= L-BFGS end point ({label})")
    rng = np.random.default_rng(SEED)
    x, y = prob.sampler(cfg["k"], prob.batch_size)(rng)
    data = union_of_minibatches(x, y)
    fit = data[1].is_floating_point()
    n = int(data[1].numel()) if fit else 1
    p = prob.n_params
    why = ""
    if fit and getattr(prob.loss_fn, "model", None) is None and prob.model is None:
        why = ("the fit constraints f(x_i) = y_i need the model's output: build loss_fn with reptile.make_loss(model, ...) "
               "or give the Problem its model")
    elif n > MAX_CONSTRAINTS:
        why = (f"{n} constraints (the union of {cfg['k']} minibatches of {prob.batch_size}, x outputs) exceed "
               f"MAX_CONSTRAINTS = {MAX_CONSTRAINTS} (n x n systems and an O(n^2 P) SVD per Newton step); use a "
               f"smaller batch_size")
    elif n * p > MAX_JACOBIAN:
        why = (f"the constraint Jacobian would be {n} x {p} = {n * p:.2g} entries, above MAX_JACOBIAN = "
               f"{MAX_JACOBIAN:.0e} (float64; an O(n^2 P) SVD per Newton step)")
    elif fit and n >= p:
        why = (f"{n} fit constraints for {p} parameters: not over-parameterized, so a task's solution set is "
               f"generically a point or empty, not a manifold")
    if why:
        return [Claim.skip(names[0], why), Claim.skip(names[1], why)]

    predict = _predict(prob)
    rows = []
    with bar(progress, cfg["tasks"], f"manifolds: {label}") as pb:
        for t in range(cfg["tasks"]):
            if t:
                x, y = prob.sampler(cfg["k"], prob.batch_size)(np.random.default_rng(SEED + t))
                data = union_of_minibatches(x, y)
            tic = time.perf_counter()
            cmp = compare_with_lbfgs(prob.loss_fn, prob.phi, data, constraint="auto", predict=predict,
                                     violation_tol=VIOLATION_TOL, kkt_tol=KKT_TOL, lbfgs_options=dict(gtol=1e-9, max_iter=cfg["lbfgs_iter"]))
            c, lb = cmp.certified.certificate, cmp.lbfgs
            rows.append(dict(task=t, constraint=c.constraint, n_constraints=c.n_constraints, n_params=p, rank=c.rank,
                             cond=c.cond, certified=c.certified, violation=c.violation, kkt_residual=c.kkt_residual,
                             distance=cmp.certified.distance, newton_iterations=c.iterations,
                             lbfgs_distance=lb.distance, lbfgs_converged=lb.converged,
                             lbfgs_kkt_residual=cmp.lbfgs_certificate.kkt_residual,
                             lbfgs_violation=cmp.lbfgs_certificate.violation, ratio=cmp.ratio,
                             seconds=time.perf_counter() - tic))
            pb.update(1)
    df = pd.DataFrame(rows)
    artifacts.write_csv(Path(out_dir) / f"{slug(label)}_manifolds.csv", df)
    n_cert = int(df.certified.sum())
    form = rows[0]["constraint"]
    setting = (f"{len(df)} task{'s' * (len(df) != 1)} from the problem's sampler (numpy default_rng({SEED} + t)), each the union of its "
               f"{cfg['k']} minibatches of {prob.batch_size}: {', '.join(str(r['n_constraints']) for r in rows)} "
               f"{'fit constraints f(x_i) = y_i' if form == 'fit' else 'mean-loss level constraint'}, P = {p}; "
               f"{df.seconds.mean():.2g} s per task (projection + L-BFGS)")
    cert = Claim(names[0], f"{n_cert}/{len(df)} certified",
                 f"violation <= {VIOLATION_TOL:g} and KKT residual <= {KKT_TOL:g} for every task", n_cert == len(df),
                 f"{setting}; worst violation {df.violation.max():.1e}, worst KKT residual {df.kkt_residual.max():.1e}; "
                 f"rank of J " + ", ".join(str(r) for r in df["rank"]) + ", cond(J) "
                 + ", ".join(f"{v:.2g}" for v in df.cond) + "; distances D(phi, W_tau) "
                 + ", ".join(f"{d:.4g}{'' if ok else ' (uncertified)'}" for d, ok in zip(df.distance, df.certified))
                 + "; mean D^2 over the certified tasks "
                 + (f"{float((df.distance[df.certified] ** 2).mean()):.4g}" if n_cert else "n/a"))
    ok = df[df.certified]
    if not n_cert:
        return [cert, Claim.skip(names[1], "no projection was certified, so there is no distance to compare")]
    worst = float(ok.ratio.min())
    near = Claim(names[1], worst,
                 "L-BFGS end point distance / certified distance >= 1 (a local projection against an upper bound)",
                 worst >= 1.0 - RATIO_SLACK,
                 f"{setting}; min ratio over the {len(ok)} certified task{'s' * (len(ok) != 1)}; per task (certified D, L-BFGS D, ratio): "
                 + ", ".join(f"({r.distance:.4g}, {r.lbfgs_distance:.4g}, {r.ratio:.3g})" for r in ok.itertuples())
                 + f"; L-BFGS (|grad| <= 1e-9 or {cfg['lbfgs_iter']} iterations; {int(ok.lbfgs_converged.sum())}/{len(ok)} "
                 f"converged, worst violation {ok.lbfgs_violation.max():.1e}: an upper bound only where it fits) end "
                 f"points' KKT residuals " + ", ".join(f"{v:.2g}" for v in ok.lbfgs_kkt_residual) + " (not projections)",
                 unit="min L-BFGS / certified distance = {}")
    return [cert, near]
