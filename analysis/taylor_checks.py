"""Check provider: Hessian-vector products and the Taylor expansions of the meta-gradients.

Claims checked (REFERENCE.md section 2, plus the second-order terms of :mod:`analysis.taylor`):

* both HVP methods equal the dense Hessian (computed by classic ``torch.autograd.functional``,
  independently of ``torch.func``) to 1e-10 on a small float64 MLP, and agree with each other on
  the 1-64-64-1 sine MLP; Lanczos and power iteration agree on its top Hessian eigenvalue;
* on the sine MLP, the residual of the paper's leading-order predictions falls like alpha^2
  (fitted log-log slope in [1.8, 2.2]) for MAML, FOMAML and Reptile and k = 2..5, and the
  residual of the second-order predictions like alpha^3 (slope in [2.7, 3.3]);
* on least squares, where g_i is a polynomial of degree i-1 in alpha, the predictions that
  must be exact are exact;
* where the leading order stops being accurate: the alpha at which its relative error passes
  10 %, measured, against the alpha predicted from the size of the second-order term (within
  a factor 1.5; measured ratios 0.99..1.07 on the sine MLP).

Alphas come from the problem's measured Hessian scale (:mod:`analysis.stepsize`). The generic
functions below (``*_for``) run the same claims on any :class:`~analysis.problems.Problem`.

Files written to ``out_dir``: ``taylor_sweep.csv``, ``taylor_slopes.csv``,
``taylor_breakdown.csv``, ``taylor_residuals.png``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from reptile import tree
from reptile.losses import make_loss
from reptile.models import MLP

from . import artifacts, plots, taylor
from .claims import Claim, check_mode
from .hessian import METHODS, HVPOperator, hvp, power_iteration, top_eigenvalues
from .problems import init_params, least_squares_problem, sine_problem
from .progress import bar
from .stepsize import measure_scale, slope_alphas

# Per mode: tasks (seeds) for the slope fits and for the breakdown sweeps, and grid sizes. The
# alphas come from the problem's measured scale (analysis.stepsize): slope fits over alpha k lambda
# in 0.001..0.1 at the largest k, breakdown sweeps around the alpha each task's second-order term
# predicts.
CONFIG = {
    "quick": dict(slope_tasks=1, n_alphas=4, break_tasks=1, break_points=9),
    "default": dict(slope_tasks=2, n_alphas=5, break_tasks=2, break_points=11),
    "full": dict(slope_tasks=8, n_alphas=7, break_tasks=8, break_points=15),
}
KS = (2, 3, 4, 5)
BATCH = 10
HVP_TOL = 1e-10          # the bar; float64 products of a small MLP are exact to ~1e-14
SLOPE_BANDS = {1: (1.8, 2.2), 2: (2.7, 3.3)}
EXACT_TOL = 1e-11        # relative; least-squares polynomials evaluated in float64 (~1e-15 expected)
THRESHOLD = 0.1


def _hvp_claims() -> list[Claim]:
    model = MLP((1, 16, 16, 1), "tanh").double()
    phi = init_params(model, seed=3)
    prob = sine_problem(0)
    f = make_loss(model, "mse")
    rng = np.random.default_rng(7)
    x, y = prob.sampler(1, BATCH)(rng)
    batch = (x[0], y[0])
    flat = tree.flatten(phi)
    dense = torch.autograd.functional.hessian(lambda w: f(tree.unflatten(w, phi), batch), flat)
    gen = torch.Generator().manual_seed(11)
    claims = []
    for method in METHODS:
        err = 0.0
        for _ in range(5):
            v = torch.randn(flat.shape, generator=gen, dtype=torch.float64)
            hv = tree.flatten(hvp(f, phi, batch, tree.unflatten(v, phi), method))
            err = max(err, float((hv - dense @ v).abs().max()))
        err = max(err, float((HVPOperator(f, phi, batch, method).dense() - dense).abs().max()))
        claims.append(Claim(f"HVP {method} = dense Hessian", err, f"max abs error <= {HVP_TOL:g}", err <= HVP_TOL,
                            f"MLP 1-16-16-1 tanh float64 ({flat.numel()} params), 5 random v and the full matrix "
                            f"(largest Hessian entry {float(dense.abs().max()):.3g}); reference: "
                            f"torch.autograd.functional.hessian", unit="max abs error {}"))
    # the full sine MLP: the two methods against each other, and the top eigenvalue two ways
    xb, yb = prob.sampler(1, BATCH)(np.random.default_rng(8))
    b = (xb[0], yb[0])
    v = tree.unflatten(torch.randn(tree.numel(prob.phi), generator=gen, dtype=torch.float64), prob.phi)
    a, c = hvp(prob.loss_fn, prob.phi, b, v, "fwd-rev"), hvp(prob.loss_fn, prob.phi, b, v, "rev-rev")
    diff = float(tree.norm(tree.sub(a, c)) / tree.norm(a))
    claims.append(Claim("HVP fwd-rev = rev-rev (sine MLP)", diff, f"relative difference <= {HVP_TOL:g}",
                        diff <= HVP_TOL, f"{prob.name}, {tree.numel(prob.phi)} params, one random v",
                        unit="relative difference {}"))
    lanczos = float(top_eigenvalues(prob.loss_fn, prob.phi, b, 1, which="LM", tol=1e-10)[0])
    power, _ = power_iteration(HVPOperator(prob.loss_fn, prob.phi, b), tol=1e-12, max_iter=5000)
    rel = abs(lanczos - power) / abs(lanczos)
    claims.append(Claim("Top Hessian eigenvalue: Lanczos = power iteration", f"{lanczos:.6g} vs {power:.6g}",
                        "equal to 1e-6 (relative)", rel <= 1e-6,
                        f"{prob.name}, one minibatch of {BATCH}; largest-magnitude eigenvalue; relative gap {rel:.2e}"))
    return claims


def _exact_least_squares() -> Claim:
    prob = least_squares_problem(0)
    worst, cases = 0.0, []
    for k, order, names in [(2, 1, ("fomaml", "reptile")), (2, 2, ("maml", "fomaml", "reptile")),
                            (3, 2, ("fomaml", "reptile"))]:
        batches = prob.sampler(k, 5)(np.random.default_rng(k))
        exp = taylor.expand(prob.loss_fn, prob.phi, batches, 2)
        for alpha in (0.01, 0.1):
            meas = taylor.measured(prob.loss_fn, prob.phi, batches, alpha)
            for name in names:
                rel = float(tree.norm(tree.sub(meas[name], exp.predict(name, alpha, order))) / tree.norm(meas[name]))
                worst = max(worst, rel)
        cases.append(f"order {order}, k={k}: {', '.join(names)}")
    return Claim("Least squares: predictions that must be exact are exact", worst,
                 f"relative residual <= {EXACT_TOL:g}", worst <= EXACT_TOL,
                 "constant Hessians make g_i a polynomial of degree i-1 in alpha; checked at alpha = 0.01 and 0.1: "
                 + "; ".join(cases), unit="relative residual {}")


def checks(mode: str, out_dir: Path, progress: bool) -> list[Claim]:
    """Run the Taylor-expansion checks (see the module docstring) and write their files."""
    cfg = CONFIG[check_mode(mode)]
    out_dir = Path(out_dir)
    prob = sine_problem(0)
    claims = _hvp_claims()
    claims.append(_exact_least_squares())
    scale = measure_scale(prob.loss_fn, prob.phi, prob.sampler(2, BATCH))
    alphas = slope_alphas(scale, max(KS), cfg["n_alphas"])
    with bar(progress, len(KS) * (cfg["slope_tasks"] * len(alphas) + cfg["break_tasks"] * cfg["break_points"]),
             "taylor: alpha sweeps") as pb:
        sweep = sweep_tasks(prob, alphas, KS, (1, 2), cfg["slope_tasks"], 100, pb)
        brk_claim, per_task = breakdown_claim_for(prob, "sine", cfg["break_points"], KS, cfg["break_tasks"], 200,
                                                  THRESHOLD, pb)
    fits = fit_above_floor(sweep)
    claims += slope_claims_for("sine", fits, f"{prob.name}, b={BATCH}, {cfg['slope_tasks']} task(s), alphas "
                               f"{alphas[0]:.2g}..{alphas[-1]:.2g} ({len(alphas)} points: alpha k lambda 0.001..0.1 at "
                               f"k = {max(KS)}, {scale.describe()}), least-squares fit of log residual on log alpha "
                               f"where the residual exceeds 10 rounding floors")
    claims.append(brk_claim)
    artifacts.write_csv(out_dir / "taylor_sweep.csv", sweep)
    artifacts.write_csv(out_dir / "taylor_slopes.csv", fits)
    artifacts.write_csv(out_dir / "taylor_breakdown.csv", per_task)
    artifacts.save_figure(plots.residual_figure(sweep[sweep.task == 0]), out_dir / "taylor_residuals.png")
    return claims


# -- generic claims on any Problem (``reptile verify --problem``; the embedded sine MLP uses them too) --
DENSE_MAX = 2000          # parameters up to which the HVP is checked against a dense Hessian
FLOOR_FACTOR = 2.0        # rounding floor of a k-step meta-gradient: FLOOR_FACTOR * k * eps * |g| (float32 data:
                          # second-order residuals flat at ~2 eps |g| on a 3-6-6-1 MLP, k = 2)
FIT_ABOVE_FLOOR = 10.0    # residuals fitted only where they exceed this many rounding floors
#: the measured alpha k at 10 % error may differ from the prediction of the second-order term by
#: this factor: the prediction ignores the alpha^3 and higher terms (measured ratios 0.99..1.06 on
#: the sine MLP, 13 alphas per task); a leading-order error that is not the second-order term
#: (e.g. MAML computed as FOMAML: error ~ alpha, not alpha^2) is off by far more
BREAK_FACTOR = 1.5
#: how the sweeps measure g_Reptile: through the engine's own ``meta_gradient("reptile")`` (which
#: sums g_1 + ... + g_k, so no cancellation error), not a "combination" with unit weights -- the
#: claims must exercise the code path users run
REPTILE_VIA = "difference"


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


def hvp_claims_for(prob, label: str, seed: int = 7) -> list[Claim]:
    """Both HVP methods against a dense Hessian (classic ``torch.autograd.functional.hessian``,
    independent of ``torch.func``) when the model has <= :data:`DENSE_MAX` parameters, else
    against central finite differences of gradients (two step sizes, to size the FD error)."""
    x, y = prob.sampler(1, prob.batch_size)(np.random.default_rng([seed, 0]))
    batch = (x[0], y[0])
    f, phi = prob.loss_fn, prob.phi
    eps = _eps(prob.dtype)
    flat = tree.flatten(phi)
    gen = torch.Generator().manual_seed(seed)
    vs = [tree.unflatten(torch.randn(flat.shape, generator=gen, dtype=torch.float64).to(flat), phi) for _ in range(3)]
    claims = []
    if flat.numel() <= DENSE_MAX:
        dense = torch.autograd.functional.hessian(lambda w: f(tree.unflatten(w, phi), batch).reshape(()), flat)
        scale = float(dense.abs().max())
        tol = 1e-10 * max(scale, 1.0) if prob.dtype == torch.float64 else 1e3 * eps * max(scale, 1.0)
        for method in METHODS:
            err = max(float((tree.flatten(hvp(f, phi, batch, v, method)) - dense @ tree.flatten(v)).abs().max())
                      for v in vs)
            claims.append(Claim(f"HVP {method} = dense Hessian ({label})", err, f"max abs error <= {tol:.2g}",
                                err <= tol, f"{flat.numel()} params, {prob.dtype}, 3 random v; reference "
                                f"torch.autograd.functional.hessian (largest entry {scale:.3g}); tolerance "
                                f"{'1e-10 (float64 products are exact to ~1e-14)' if prob.dtype == torch.float64 else '1000 eps'}"
                                f" x max(1, largest entry)", unit="max abs error {}"))
        return claims
    g = torch.func.grad(lambda p: f(p, batch).reshape(()))
    pnorm = max(float(tree.norm(phi)) / flat.numel() ** 0.5, 1e-3)
    h = eps ** (1 / 3) * pnorm          # balances truncation (h^2) and rounding (eps / h)
    for method in METHODS:
        worst, fd_err = 0.0, 0.0
        for v in vs:
            hv = hvp(f, phi, batch, v, method)
            fd = [tree.scale(tree.sub(g(tree.add(phi, v, s)), g(tree.add(phi, v, -s))), 1 / (2 * s)) for s in (h, h / 2)]
            ref = float(tree.norm(fd[1]))
            fd_err = max(fd_err, float(tree.norm(tree.sub(fd[0], fd[1]))) / ref)
            worst = max(worst, float(tree.norm(tree.sub(hv, fd[1]))) / ref)
        # the FD error is sized by comparing steps h and h/2; allow 10x that plus 100 eps**(2/3)
        tol = 10 * fd_err + 100 * eps ** (2 / 3)
        claims.append(Claim(f"HVP {method} = finite differences of gradients ({label})", worst,
                            f"relative error <= {tol:.2g}", worst <= tol,
                            f"{flat.numel()} params (> {DENSE_MAX}: no dense Hessian), {prob.dtype}; central "
                            f"differences of torch.func.grad at steps h = {h:.2g} and h/2 along 3 random v; their "
                            f"disagreement {fd_err:.2g} sizes the finite-difference error; tolerance 10x that + 100 eps^(2/3)",
                            unit="relative error {}"))
    return claims


def sweep_tasks(prob, alphas: np.ndarray, ks: Sequence[int], orders: Sequence[int], n_tasks: int, seed: int,
                pb=None) -> pd.DataFrame:
    """:func:`analysis.taylor.alpha_sweep` on ``n_tasks`` tasks (``default_rng([seed, t])``), with a
    ``task`` column and the rounding ``floor`` per row.

    The floor is ``FLOOR_FACTOR k eps |measured|``; below float64 it is also estimated from the
    data: the predictions computed twice, with forward-over-reverse and with reverse-over-reverse
    HVPs (the same numbers but for rounding), and the floor is at least ``FLOOR_FACTOR`` times
    their difference."""
    eps = _eps(prob.dtype)
    out = []
    for t in range(n_tasks):
        batches = prob.sampler(max(ks), prob.batch_size)(np.random.default_rng([seed, t]))
        df = taylor.alpha_sweep(prob.loss_fn, prob.phi, batches, alphas, ks=ks, orders=orders, reptile=REPTILE_VIA,
                                callback=(lambda: pb.update(1)) if pb is not None else None)
        floor = FLOOR_FACTOR * df.k * eps * df.measured_norm
        if prob.dtype != torch.float64:
            diffs = {}
            for k in ks:
                sub = (batches[0][:k], batches[1][:k])
                e1 = taylor.expand(prob.loss_fn, prob.phi, sub, max(max(orders), 1), method="rev-rev")
                e2 = taylor.expand(prob.loss_fn, prob.phi, sub, max(max(orders), 1), method="fwd-rev",
                                   third_method="rev-rev")
                for name in taylor.ALGORITHMS:
                    for order in orders:
                        for a in alphas:
                            diffs[(k, name, order, float(a))] = float(tree.norm(tree.sub(
                                e1.predict(name, float(a), order), e2.predict(name, float(a), order))))
            measured_floor = [FLOOR_FACTOR * diffs[(r.k, r.algorithm, r.order, r.alpha)] for r in df.itertuples()]
            floor = np.maximum(floor, measured_floor)
        out.append(df.assign(task=t, floor=floor))
    return pd.concat(out, ignore_index=True)


def fit_above_floor(sweep: pd.DataFrame) -> pd.DataFrame:
    """Slopes per (task, k, algorithm, order) fitted on the alphas whose residual exceeds
    :data:`FIT_ABOVE_FLOOR` rounding floors; ``bend`` is the largest alpha left out (NaN if none)."""
    rows = []
    for (t, k, name, order), g in sweep.groupby(["task", "k", "algorithm", "order"]):
        keep = g.residual > FIT_ABOVE_FLOOR * g.floor
        slope, se = taylor.fit_slope(g.alpha[keep], g.residual[keep]) if keep.sum() >= 2 else (float("nan"),) * 2
        out = g.alpha[~keep]
        rows.append(dict(task=t, k=k, algorithm=name, order=order, slope=slope, slope_se=se, points=int(keep.sum()),
                         bend=float(out.max()) if len(out) else float("nan")))
    return pd.DataFrame(rows)


def slope_claims_for(label: str, fits: pd.DataFrame, detail: str) -> list[Claim]:
    """One claim per (order, algorithm): every fitted slope within :data:`SLOPE_BANDS`; skipped
    (with the reason) when rounding leaves fewer than 3 alphas in some fit."""
    claims = []
    for order, (lo, hi) in SLOPE_BANDS.items():
        for name in taylor.ALGORITHMS:
            s = fits[(fits.order == order) & (fits.algorithm == name)]
            if s.empty:
                continue
            what = "leading-order" if order == 1 else "second-order"
            if (s.points < 3).any():
                claims.append(Claim.skip(
                    f"{what} residual ~ alpha^{order + 1} ({plots.NAMES[name]}, {label})",
                    f"rounding: only {int(s.points.min())} of the alphas have a residual above 10 rounding floors "
                    f"(the slope bends below alpha = {s.bend.max():.2g}); run in float64 (--dtype float64)"))
                continue
            ok = bool(((s.slope >= lo) & (s.slope <= hi)).all())
            per_k = "slope " + ", ".join(f"k={k}: {g.slope.min():.3f}" + (f"..{g.slope.max():.3f}" if len(g) > 1 else "")
                              for k, g in s.groupby("k"))
            bends = s.bend.dropna()
            bend = (f"; {len(bends)} fit(s) left out points below the rounding floor: the residual bends (stops "
                    f"falling like alpha^{order + 1}) below alpha = {bends.max():.2g}") if len(bends) else ""
            claims.append(Claim(f"{what} residual ~ alpha^{order + 1} ({plots.NAMES[name]}, {label})", per_k,
                                f"slope {order + 1} (in [{lo}, {hi}])", ok, detail + bend))
    return claims


def second_order_error(c: Sequence[torch.Tensor], a: float) -> float:
    """``a^2 |c2| / |c0 + a c1 + a^2 c2|`` for flat float64 coefficients ``c = (c0, c1, c2)``: the
    relative error of the leading order at step size ``a`` predicted by the second-order term."""
    return float((a * a * c[2]).norm() / (c[0] + a * c[1] + a * a * c[2]).norm())


def first_above(c: Sequence[torch.Tensor], grid: np.ndarray, threshold: float) -> float:
    """The first alpha of ``grid`` where :func:`second_order_error` exceeds ``threshold`` (NaN if none).

    The same alpha as evaluating :func:`second_order_error` on every grid point (3000 of them, 24
    times per task: ~2 s), from the 3 x 3 Gram matrix of ``c`` instead:
    ``|c0 + a c1 + a^2 c2|^2 = v^T G v`` with ``v = (1, a, a^2)``. Its rounding error is at most
    ~P eps times ``kappa = (|c0| + a |c1| + a^2 |c2|)^2 / |c0 + a c1 + a^2 c2|^2`` relative (P the
    length of c: the dot products), so every grid point within 10 P eps kappa (and at least 1e-9)
    of the threshold is decided by :func:`second_order_error` itself: the answer is the one the
    direct evaluation gives (tests/test_verify_speed.py compares them)."""
    cs = torch.stack([ci.double() for ci in c])
    gram = (cs @ cs.T).numpy()
    norms = np.sqrt(np.diag(gram))
    a = np.asarray(grid, dtype=np.float64)
    v = np.stack([np.ones_like(a), a, a * a], 1)
    q = np.einsum("ni,ij,nj->n", v, gram, v)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = a * a * norms[2] / np.sqrt(np.maximum(q, 0.0))
        kappa = (v @ norms) ** 2 / q
    margin = np.maximum(1e-9, 10 * cs.shape[1] * np.finfo(np.float64).eps * np.where(np.isfinite(kappa), kappa, np.inf))
    unsure = ~(np.abs(err - threshold) > margin * threshold)     # NaN / inf count as unsure
    for i in np.nonzero(unsure)[0]:
        err[i] = second_order_error(c, float(a[i]))
    above = np.nonzero(err > threshold)[0]
    return float(a[above[0]]) if above.size else float("nan")


def breakdown_claim_for(prob, label: str, n_alphas: int, ks: Sequence[int], n_tasks: int, seed: int,
                        threshold: float = THRESHOLD, pb=None) -> tuple[Claim, pd.DataFrame]:
    """Where the leading order breaks down, measured against a prediction from the second-order term.

    Per task, k and algorithm: predicted alpha* solves ``alpha^2 |c2| = threshold |c0 + alpha c1 +
    alpha^2 c2|`` with ``c_n`` the alpha^n coefficients of the expansion (:func:`analysis.taylor.expand`,
    order 2); measured alpha* = the alpha at which |measured - leading| / |measured| first passes
    ``threshold`` (:func:`analysis.taylor.breakdown`) on ``n_alphas`` alphas from 1/10 to 3 times
    the task's predictions. Holds if every ratio measured/predicted is within :data:`BREAK_FACTOR`.
    """
    rows = []
    for t in range(n_tasks):
        batches = prob.sampler(max(ks), prob.batch_size)(np.random.default_rng([seed, t]))
        preds = {}
        for k in ks:
            exp = taylor.expand(prob.loss_fn, prob.phi, (batches[0][:k], batches[1][:k]), 2)
            for name in taylor.ALGORITHMS:
                c = [tree.flatten(p).double() for p in exp.coefficients(name)]
                n0, n2 = float(c[0].norm()), float(c[2].norm())
                grid = np.geomspace(1e-4, 1e2, 3000) * np.sqrt(n0 / max(n2, 1e-300))
                preds[(k, name)] = first_above(c, grid, threshold)
        finite = [v for v in preds.values() if np.isfinite(v)]
        alphas = np.geomspace(min(finite) / 10, max(finite) * 3, n_alphas)
        sw = taylor.alpha_sweep(prob.loss_fn, prob.phi, batches, alphas, ks=ks, orders=(1,), reptile=REPTILE_VIA,
                                callback=(lambda: pb.update(1)) if pb is not None else None)
        meas = taylor.breakdown(sw, threshold)
        for (k, name), pred in preds.items():
            m = meas[(meas.k == k) & (meas.algorithm == name)].iloc[0]
            rows.append(dict(task=t, k=k, algorithm=name, measured=float(m.alpha), status=m.status, predicted=pred,
                             ratio=float(m.alpha) / pred if m.status == "crossed" else float("nan"),
                             alpha_lo=alphas[0], alpha_hi=alphas[-1]))
    df = pd.DataFrame(rows)
    # a leading order that is exact (c2 = 0, e.g. least squares FOMAML/Reptile with k = 2) never
    # breaks down: predicted NaN and "not reached" agree
    exact = df.predicted.isna() & (df.status == "not reached")
    agree = exact | ((df.status == "crossed") & (df.ratio >= 1 / BREAK_FACTOR) & (df.ratio <= BREAK_FACTOR))
    ok = bool(agree.all())
    parts = [f"{plots.NAMES[n]} {g.measured.mul(g.k).median():.3g} vs {g.predicted.mul(g.k).median():.3g}"
             for n, g in df.groupby("algorithm", sort=False)]
    claim = Claim(f"Leading order breaks down where the second-order term predicts ({label})",
                  "alpha*k at 10% error, measured vs predicted (median): " + "; ".join(parts),
                  f"measured / predicted within a factor {BREAK_FACTOR:g}", ok,
                  f"{n_tasks} task(s), k in {list(ks)}; measured: first alpha where |measured - leading| / |measured| "
                  f"> {threshold:.0%} (log-interpolated on {n_alphas} alphas from 1/10 to 3x the task's predictions); "
                  f"predicted: alpha^2 |c2| / |c0 + alpha c1 + alpha^2 c2| = {threshold:.0%} from the expansion's "
                  f"coefficients; ratios {df.ratio.min():.2f}..{df.ratio.max():.2f}; statuses "
                  f"{df.status.value_counts().to_dict()} ({int(exact.sum())} exact: no alpha^2 term, never reached). A model whose leading-order error is not the second-order "
                  f"term (a wrong MAML/FOMAML/Reptile, or a non-smooth model) fails it")
    return claim, df
