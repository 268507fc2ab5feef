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
* where the leading order stops being accurate: the alpha * k at which its relative error
  passes 10 %.

Files written to ``out_dir``: ``taylor_sweep.csv``, ``taylor_slopes.csv``,
``taylor_breakdown.csv``, ``taylor_residuals.png``, ``taylor_breakdown.png``.
"""
from __future__ import annotations

from pathlib import Path

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

# Per mode: tasks (seeds) for the slope fits and for the breakdown sweep, and the alpha grids.
# The slope grid stays in the asymptotic regime of the sine MLP (top Hessian eigenvalue up to
# ~40 for large amplitudes, so alpha * k * lambda <= 0.6 at the largest alpha and k = 5) and
# above float64 rounding (second-order residuals at the smallest alpha are ~1e-10 or more).
CONFIG = {
    "quick": dict(slope_tasks=1, alphas=np.logspace(-4.5, -2.5, 4), break_tasks=1,
                  break_alphas=np.logspace(-3.5, -0.5, 9)),
    "default": dict(slope_tasks=3, alphas=np.logspace(-4.5, -2.5, 5), break_tasks=4,
                    break_alphas=np.logspace(-3.5, -0.5, 13)),
    "full": dict(slope_tasks=8, alphas=np.logspace(-4.5, -2.5, 7), break_tasks=12,
                 break_alphas=np.logspace(-3.5, -0.5, 19)),
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
                            f"torch.autograd.functional.hessian"))
    # the full sine MLP: the two methods against each other, and the top eigenvalue two ways
    xb, yb = prob.sampler(1, BATCH)(np.random.default_rng(8))
    b = (xb[0], yb[0])
    v = tree.unflatten(torch.randn(tree.numel(prob.phi), generator=gen, dtype=torch.float64), prob.phi)
    a, c = hvp(prob.loss_fn, prob.phi, b, v, "fwd-rev"), hvp(prob.loss_fn, prob.phi, b, v, "rev-rev")
    diff = float(tree.norm(tree.sub(a, c)) / tree.norm(a))
    claims.append(Claim("HVP fwd-rev = rev-rev (sine MLP)", diff, f"relative difference <= {HVP_TOL:g}",
                        diff <= HVP_TOL, f"{prob.name}, {tree.numel(prob.phi)} params, one random v"))
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
                 + "; ".join(cases))


def checks(mode: str, out_dir: Path, progress: bool) -> list[Claim]:
    """Run the Taylor-expansion checks (see the module docstring) and write their files."""
    cfg = CONFIG[check_mode(mode)]
    out_dir = Path(out_dir)
    prob = sine_problem(0)
    claims = _hvp_claims()
    claims.append(_exact_least_squares())

    sweeps, breaks = [], []
    n_eval = len(KS) * (cfg["slope_tasks"] * len(cfg["alphas"]) + cfg["break_tasks"] * len(cfg["break_alphas"]))
    with bar(progress, n_eval, "taylor: alpha sweeps") as pb:
        for t in range(cfg["slope_tasks"]):
            batches = prob.sampler(max(KS), BATCH)(np.random.default_rng([100, t]))
            df = taylor.alpha_sweep(prob.loss_fn, prob.phi, batches, cfg["alphas"], ks=KS, orders=(1, 2),
                                    callback=lambda: pb.update(1))
            sweeps.append(df.assign(task=t))
        for t in range(cfg["break_tasks"]):
            batches = prob.sampler(max(KS), BATCH)(np.random.default_rng([200, t]))
            df = taylor.alpha_sweep(prob.loss_fn, prob.phi, batches, cfg["break_alphas"], ks=KS, orders=(1,),
                                    callback=lambda: pb.update(1))
            breaks.append(df.assign(task=t))
    sweep = pd.concat(sweeps, ignore_index=True)
    slope_df = pd.concat([taylor.slopes(s).assign(task=t) for t, s in enumerate(sweeps)], ignore_index=True)
    for order, (lo, hi) in SLOPE_BANDS.items():
        for name in taylor.ALGORITHMS:
            s = slope_df[(slope_df.order == order) & (slope_df.algorithm == name)]
            ok = bool(((s.slope >= lo) & (s.slope <= hi)).all())
            per_k = ", ".join(f"k={k}: {g.slope.min():.3f}" + (f"..{g.slope.max():.3f}" if len(g) > 1 else "")
                              for k, g in s.groupby("k"))
            what = "leading-order" if order == 1 else "second-order"
            claims.append(Claim(f"{what} residual ~ alpha^{order + 1} ({plots.NAMES[name]})", per_k,
                                f"slope {order + 1} (in [{lo}, {hi}])", ok,
                                f"{prob.name}, b={BATCH}, {cfg['slope_tasks']} task(s), alphas "
                                f"{cfg['alphas'][0]:.2g}..{cfg['alphas'][-1]:.2g} ({len(cfg['alphas'])} points), "
                                f"least-squares fit of log residual on log alpha"))

    brk = pd.concat(breaks, ignore_index=True)
    per_task = pd.concat([taylor.breakdown(b, THRESHOLD).assign(task=t) for t, b in enumerate(breaks)],
                         ignore_index=True)
    crossed = per_task[per_task.status == "crossed"]
    summary = crossed.groupby(["algorithm", "k"]).alpha_k.median().unstack("k")
    parts = []
    for name in taylor.ALGORITHMS:
        if name in summary.index:
            row = summary.loc[name]
            parts.append(f"{plots.NAMES[name]} {row.min():.3g}..{row.max():.3g}")
    ok = bool((per_task.status == "crossed").all())
    claims.append(Claim("Leading order accurate only while alpha*k is small", "alpha*k at 10% error: " + "; ".join(parts),
                        "relative error small for small alpha*k, growing with it", ok,
                        f"median over {cfg['break_tasks']} task(s) of the alpha*k where |measured - leading| / "
                        f"|measured| first passes {THRESHOLD:.0%} (k = 2..5; range over k shown); holds if every "
                        f"(task, algorithm, k) starts below {THRESHOLD:.0%} at alpha = {cfg['break_alphas'][0]:.2g} "
                        f"and crosses it within the sweep (up to alpha = {cfg['break_alphas'][-1]:.2g}); "
                        f"statuses: {per_task.status.value_counts().to_dict()}"))

    artifacts.write_csv(out_dir / "taylor_sweep.csv", sweep)
    artifacts.write_csv(out_dir / "taylor_slopes.csv", slope_df)
    artifacts.write_csv(out_dir / "taylor_breakdown.csv", per_task)
    artifacts.save_figure(plots.residual_figure(sweep[sweep.task == 0]), out_dir / "taylor_residuals.png")
    artifacts.save_figure(plots.breakdown_figure(brk, THRESHOLD), out_dir / "taylor_breakdown.png")
    return claims
