"""Every claim of ``reptile verify`` that applies to one :class:`~analysis.problems.Problem`.

:func:`problem_checks` runs, on a user's problem (``reptile verify --problem module:factory``):

* HVPs against a dense Hessian (<= 2000 parameters) or finite differences of gradients;
* the residual slopes of the leading- (alpha^2) and second-order (alpha^3) predictions of MAML,
  FOMAML and Reptile, fitted above the rounding floor;
* where the leading order breaks down, against the second-order term's prediction;
* the coefficients of AvgGrad and AvgGradInner as independent tests with a stated power, with the
  truncation check of the chosen alpha;
* the exchangeability check (the two forms of AvgGradInner);
* gradient alignment: a short meta-training run per seed (>= 3 seeds), Reptile against joint;
* distances to the tasks' solution manifolds: certified projections of phi onto a few tasks'
  solution sets, beside the L-BFGS upper bound (:data:`MANIFOLD_HOOK`, by default
  :func:`analysis.problem_manifolds.manifold_claims_for`);
* claims that need what the problem lacks are skipped with the reason: the closed forms (least
  squares only).

All step sizes come from the problem's measured scale (:mod:`analysis.stepsize`); each section
that crashes becomes a failing claim with its traceback, and the others still run.
"""
from __future__ import annotations

import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import artifacts
from .alignment import AlignmentCallback
from .claims import Claim, check_mode
from .expectation_checks import coefficient_claims_for, exchangeability_claim_for, truncation_claim_for
from .problem_manifolds import manifold_claims_for, slug as file_slug
from .problems import Problem
from .progress import bar
from .stepsize import Scale, coefficient_alpha, measure_scale, slope_alphas
from .taylor_checks import breakdown_claim_for, fit_above_floor, hvp_claims_for, slope_claims_for, sweep_tasks

CONFIG = {
    "quick": dict(slope_ks=(2,), slope_tasks=1, slope_points=4, break_tasks=1, break_points=9, coef_k=2, n_alg=64,
                  n_reg=64, k_reg=4, exch_n=64, align_seeds=3, align_iters=40, align_probe=4),
    "default": dict(slope_ks=(2, 3), slope_tasks=2, slope_points=5, break_tasks=2, break_points=11, coef_k=2,
                    n_alg=400, n_reg=400, k_reg=4, exch_n=400, align_seeds=3, align_iters=600, align_probe=6),
    "full": dict(slope_ks=(2, 3, 4), slope_tasks=4, slope_points=7, break_tasks=4, break_points=15, coef_k=3,
                 n_alg=2000, n_reg=2000, k_reg=4, exch_n=2000, align_seeds=5, align_iters=2000, align_probe=10),
}
ALIGN_K = 5          # inner steps of the alignment runs (the blog's sine setting)
ALIGN_LR_RHO = 0.5   # their inner step size, alpha lambda = 0.5 (the blog's sine run: 0.02 x ~30)

#: The solution-manifold claims: ``(problem, label, mode, out_dir, progress) -> list[Claim]``
#: (:func:`analysis.problem_manifolds.manifold_claims_for`: certified projections onto a few tasks'
#: solution sets); replace it to measure something else, or set it to ``None`` to skip the claims.
MANIFOLD_HOOK: Callable[[Problem, str, str, Path, bool], list[Claim]] | None = manifold_claims_for


def _guard(section: str, label: str, fn: Callable[[], list[Claim]]) -> list[Claim]:
    try:
        return list(fn())
    except Exception as e:  # one section's crash is a failing claim; the others still run
        return [Claim(f"{section} ran ({label})", f"crashed: {type(e).__name__}: {e}", "runs to completion", False,
                      traceback.format_exc())]


def scale_claim(prob: Problem, label: str, scale: Scale, alphas: dict[str, str]) -> Claim:
    """Not a test: records the measured scale and the step sizes chosen from it."""
    return Claim(f"Step sizes from the problem's scale ({label})", f"lambda {scale.lam:.3g}",
                 "alpha = rho / (k lambda) (analysis.stepsize)", True,
                 scale.describe() + "; " + "; ".join(f"{k}: {v}" for k, v in alphas.items()))


def alignment_claim_for(prob: Problem, label: str, seeds: int, iterations: int, n_probe: int, scale: Scale,
                        progress: bool = False) -> Claim:
    """Within-task gradient alignment after short meta-training: Reptile against joint training,
    on ``seeds`` training seeds (task streams) from the problem's phi, k = 5 inner SGD steps of
    ``0.5 / lambda``, outer step 0.1 annealed to 0. Holds if Reptile's within-task cosine on
    fixed probe tasks ends above joint training's for every seed."""
    from reptile.train import MetaTrainer, TrainConfig

    lr = ALIGN_LR_RHO / scale.lam
    sampler = prob.sampler(ALIGN_K, prob.batch_size)
    probe = AlignmentCallback(prob.loss_fn, sampler, every=iterations, n_tasks=n_probe, seed=10_000,
                              dtype=prob.dtype)
    diffs, ends = [], []
    with bar(progress, 2 * seeds * iterations, f"alignment: {label}") as pb:
        for s in range(seeds):
            end = {}
            for alg in ("reptile", "joint"):
                cfg = TrainConfig(algorithm=alg, inner_steps=ALIGN_K, inner_batch=prob.batch_size, inner_lr=lr,
                                  iterations=iterations, seed=s, log_every=iterations, checkpoint_every=iterations,
                                  keep_checkpoints=1)
                res = MetaTrainer(prob.loss_fn, {n: p.detach().clone() for n, p in prob.phi.items()}, sampler, cfg,
                                  callbacks=[probe]).run(progress=False)
                end[alg] = float(probe.measure(res.params).within_cos)
                pb.update(iterations)
            diffs.append(end["reptile"] - end["joint"])
            ends.append(end)
    d = np.array(diffs)
    return Claim(f"Reptile raises within-task gradient alignment more than joint training ({label})",
                 f"Reptile - joint {d.mean():+.3f} ± {d.std(ddof=1) if len(d) > 1 else 0:.3f} over {len(d)} seeds (min {d.min():+.3f})",
                 "Reptile - joint within-task cosine > 0 on every seed", bool((d > 0).all()),
                 f"{iterations} iterations per run, k={ALIGN_K} SGD steps of {lr:.3g} (= {ALIGN_LR_RHO} / lambda), "
                 f"outer step 0.1 annealed to 0; mean cosine between gradients of distinct minibatches of one task on "
                 f"{n_probe} fixed probe tasks; per seed (Reptile, joint): "
                 + ", ".join(f"({e['reptile']:.3f}, {e['joint']:.3f})" for e in ends))


def manifold_claims(prob: Problem, label: str, mode: str, out_dir: Path, progress: bool) -> list[Claim]:
    """Distances to the tasks' solution manifolds: :data:`MANIFOLD_HOOK`, else skipped with the reason."""
    if MANIFOLD_HOOK is not None:
        return MANIFOLD_HOOK(prob, label, mode, out_dir, progress)
    return [Claim.skip(f"certified projections onto the tasks' solution sets ({label})",
                       "analysis.problem_checks.MANIFOLD_HOOK is None")]


def problem_checks(prob: Problem, mode: str, out_dir: Path, progress: bool = False, label: str | None = None
                   ) -> list[Claim]:
    """Run every claim that applies to ``prob`` (module docstring); write ``<slug>_*.csv`` into out_dir."""
    cfg = CONFIG[check_mode(mode)]
    label = label or prob.name
    slug = file_slug(label)
    out_dir = Path(out_dir)
    claims: list[Claim] = []
    scale = measure_scale(prob.loss_fn, prob.phi, prob.sampler(2, prob.batch_size))
    k = cfg["coef_k"]
    s_alphas = slope_alphas(scale, max(cfg["slope_ks"]), cfg["slope_points"] + (prob.dtype != torch.float64),
                            prob.dtype)
    c_alpha = coefficient_alpha(scale, k)
    note = f" (= 0.02 / (k lambda), lambda = {scale.lam:.3g})"
    claims.append(scale_claim(prob, label, scale, {
        "slope fits": f"alpha {s_alphas[0]:.2g}..{s_alphas[-1]:.2g} (alpha k lambda "
                      f"{s_alphas[0] * max(cfg['slope_ks']) * scale.lam:.2g}..{s_alphas[-1] * max(cfg['slope_ks']) * scale.lam:.2g})",
        "coefficients": f"alpha {c_alpha:.3g} (alpha k lambda = 0.02)",
        "alignment runs": f"inner step {ALIGN_LR_RHO / scale.lam:.3g} (alpha lambda = {ALIGN_LR_RHO})"}))
    claims += _guard("HVP checks", label, lambda: hvp_claims_for(prob, label))

    def slopes() -> list[Claim]:
        with bar(progress, cfg["slope_tasks"] * len(s_alphas) * len(cfg["slope_ks"]), f"taylor: {label}") as pb:
            sw = sweep_tasks(prob, s_alphas, cfg["slope_ks"], (1, 2), cfg["slope_tasks"], 100, pb)
        fits = fit_above_floor(sw)
        artifacts.write_csv(out_dir / f"{slug}_taylor_sweep.csv", sw)
        return slope_claims_for(label, fits, f"{prob.name}, {prob.dtype}, b={prob.batch_size}, {cfg['slope_tasks']} "
                                f"task(s), {len(s_alphas)} alphas {s_alphas[0]:.2g}..{s_alphas[-1]:.2g} from the "
                                f"problem's scale; fitted where the residual exceeds 10 rounding floors (2 k eps |g|"
                                + (", or 10x the difference of the predictions computed with fwd-rev and rev-rev HVPs)"
                                   if prob.dtype != torch.float64 else ")"))

    claims += _guard("Taylor slopes", label, slopes)

    def brk() -> list[Claim]:
        c, df = breakdown_claim_for(prob, label, cfg["break_points"], cfg["slope_ks"], cfg["break_tasks"], 200)
        artifacts.write_csv(out_dir / f"{slug}_breakdown.csv", df)
        return [c]

    claims += _guard("Breakdown", label, brk)

    def coef() -> list[Claim]:
        cl, table = coefficient_claims_for(prob, label, k, cfg["n_alg"], cfg["n_reg"], cfg["k_reg"], c_alpha, 1,
                                           progress=progress, alpha_note=note)
        artifacts.write_csv(out_dir / f"{slug}_coefficients.csv", table)
        return cl + [truncation_claim_for(prob, label, k, c_alpha, 1, alpha_note=note)]

    claims += _guard("Coefficients", label, coef)
    claims += _guard("Exchangeability", label, lambda: [exchangeability_claim_for(prob, label, 2, cfg["exch_n"], 5)])
    if mode == "quick":
        claims.append(Claim.skip(f"Reptile raises within-task gradient alignment more than joint training ({label})",
                                 "quick mode: a few dozen meta-iterations are too few to move the alignment; run "
                                 "the default or --full mode"))
    else:
        claims += _guard("Alignment", label, lambda: [alignment_claim_for(
            prob, label, cfg["align_seeds"], cfg["align_iters"], cfg["align_probe"], scale, progress)])
    if prob.info.get("closed_form") != "least_squares":
        claims.append(Claim.skip(f"Estimators = closed forms ({label})",
                                 "needs closed forms of AvgGrad/AvgGradInner (least squares only: analysis.closed_forms)"))
    claims += _guard("Manifolds", label, lambda: manifold_claims(prob, label, mode, out_dir, progress))
    return claims
