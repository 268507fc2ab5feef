"""Check provider: AvgGrad, AvgGradInner and the paper's coefficient table, by Monte Carlo.

Claims checked (REFERENCE.md section 2):

* least squares: the Monte-Carlo estimators equal the closed forms of
  :mod:`analysis.closed_forms` -- sample by sample (to rounding) and in expectation (within
  3 standard errors);
* the two forms of AvgGradInner, E[Hbar_2 gbar_1] and 1/2 grad E[gbar_1 . gbar_2], agree within
  3 standard errors (least squares and sine waves);
* the expected meta-gradients of MAML, FOMAML and Reptile have the paper's coefficients
  (1, -2(k-1) alpha), (1, -(k-1) alpha), (k, -k(k-1)/2 alpha) on AvgGrad and AvgGradInner, within
  3 standard errors, as *independent* tests: each algorithm's g0 and g1 (g = g0 + alpha g1 +
  O(alpha^2), from the engine at alpha, 2 alpha, 3 alpha) from its own draws, against AvgGrad and
  AvgGradInner from two more independent sets (:func:`coefficient_claims_for`); each claim states
  the smallest relative error it detects with 80 % power, and in default mode a claim checks that
  this is <= 10 %; alpha = 0.02 / (k lambda) from the measured Hessian scale, with the
  truncation check beside it (:func:`truncation_claim_for`); and the AvgGradInner/AvgGrad ratio
  orders MAML > FOMAML > Reptile.

Files written: ``coefficients.csv``, ``expectations.csv``, ``coefficients.png``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import artifacts, closed_forms, expectations, plots
from .claims import Claim, check_mode
from .problems import Problem, least_squares_problem, sine_problem
from .progress import bar
from .stepsize import coefficient_alpha, measure_scale
from .stats import compare, ratio_coefficient

# Per mode: ``ls`` (k, n) runs for the closed-form claims; ``ls_coef``/``sine_coef`` (k, n) for
# the independent coefficient tests (n draws for each of the five estimates); ``sine_exch`` draws
# for the exchangeability check. Samples are vmapped in chunks (least squares: thousands per
# second; sine MLP, one thread: ~1 ms per draw and estimate). The default sizes make every
# coefficient test detect a 10 % error with 80 % power (measured: <= 9 %).
CONFIG = {
    "quick": dict(ls=[(2, 600), (3, 600)], ls_coef=[(2, 1500)], sine_coef=[(2, 150)], sine_exch=200),
    "default": dict(ls=[(2, 2000), (3, 2000)], ls_coef=[(2, 8000), (3, 7000)], sine_coef=[(2, 500)], sine_exch=600),
    "full": dict(ls=[(2, 16000), (3, 16000), (5, 8000)], ls_coef=[(2, 20000), (3, 20000), (5, 20000)],
                 sine_coef=[(2, 2000), (3, 2000)], sine_coef_b10=[(2, 8000)], sine_exch=3000),
}
LS_BATCH, SINE_BATCH = 5, 10
# The sine coefficient tests use minibatches of the whole 50-point grid: at b = 10 the choice of
# points makes each draw's Hbar_i gbar_j ~2.6 times its mean (relative s.d.), at b = 50 ~0.3, so a
# 10 % detectable error needs ~100x fewer draws (b = 10 runs in --full, with its power stated).
# What b = 50 gives up: the minibatches of a task coincide, so Hbar_i gbar_j = Hbar_j gbar_i and
# the orientation of the pairs (exchangeability) is not exercised; the exchangeability claim
# runs at b = 10. --full adds b = 10 with 8,000 draws per estimate: detectable errors 9.7-17.4 %
# (28 s of CPU, ~2 GB for the [n, 4353] per-draw tensors); 10 % would need ~24,000 draws (~6 GB
# as stored now: the estimates keep every draw's vector).
SINE_COEF_BATCH = 50
K_REG = 4   # minibatches per draw for the AvgGrad/AvgGradInner estimates (more pairs, less noise)
# The least-squares closed-form runs (sample-by-sample meta-gradients against numpy) use these
# alphas; the coefficient claims choose theirs from the measured Hessian scale (analysis.stepsize).
ALPHA = 1e-4
ALPHA_2 = 1e-3
LS_EXTRA_ALPHAS = (1e-2,)
N_SE = 3.0               # "within 3 standard errors": 0.3 % false alarms per comparison
EXACT_TOL = 1e-10        # relative, sample-by-sample closed forms (float64 rounding ~1e-15)
SEED = 2024


def _closed_form_claims(prob: Problem, runs: dict[int, expectations.MonteCarloResult]) -> list[Claim]:
    w = prob.phi["linear.weight"].numpy()[0]
    d = prob.info["input_scales"].numpy()
    m = prob.distribution.n_points
    mu = prob.distribution.mean
    refs = {"AvgGrad": closed_forms.avg_grad(w, mu, d), "AvgGradInner": closed_forms.avg_grad_inner(w, mu, d, m)}
    claims = []
    # expectations: Monte-Carlo means against the closed forms
    worst = {}
    for k, mc in runs.items():
        for name, est in [("AvgGrad", mc.avg_grad), ("AvgGradInner", mc.avg_grad_inner),
                          ("AvgGradInner", mc.avg_grad_inner_dot)]:
            ratio = float(np.linalg.norm(est.mean_flat.numpy() - refs[name]) / est.se_norm)
            worst[name] = max(worst.get(name, 0.0), ratio)
    for name in refs:
        claims.append(Claim(f"{name} estimator = closed form (least squares)", worst[name],
                            f"|MC mean - closed form| <= {N_SE:g} s.e.", worst[name] <= N_SE, unit="s.e.", detail=
                            f"{prob.name}, b={LS_BATCH}, k in {sorted(runs)}; figure = largest "
                            f"|mean - exact| / sqrt(tr Cov / n) over k (and both AvgGradInner forms); closed form "
                            + ("2 D (D w - mu)" if name == "AvgGrad" else "4 D ((1 + 1/m) D^2 + tr(D^2)/m) (D w - mu)")))
    # sample by sample: the same batches through numpy
    worst_s = 0.0
    for k, mc in runs.items():
        sampler = prob.sampler(k, LS_BATCH)
        orders = expectations.orderings(k, mc.ordering)
        for s in range(8):
            x, y = (t.numpy() for t in sampler(np.random.default_rng([SEED + k, s])))
            t = closed_forms.taylor_terms(w, x, y)
            hg = t["hbar_gbar"]
            pairs_gt = [hg[i, j] for i in range(k) for j in range(i)]
            pairs_all = [hg[i, j] for i in range(k) for j in range(k) if i != j]
            exact = {"avg_grad": t["gbar"].mean(0), "inner": np.mean(pairs_gt, 0), "inner_dot": np.mean(pairs_all, 0)}
            got = {"avg_grad": mc.avg_grad, "inner": mc.avg_grad_inner, "inner_dot": mc.avg_grad_inner_dot}
            for alg in expectations.ALGORITHMS:
                exact[alg] = np.mean([closed_forms.meta_gradients(w, x[list(o)], y[list(o)], ALPHA)[alg]
                                      for o in orders], 0)
                got[alg] = mc.meta[(alg, ALPHA)]
            for key, ref in exact.items():
                v = got[key].samples[s].numpy()
                worst_s = max(worst_s, float(np.linalg.norm(v - ref) / max(np.linalg.norm(ref), 1e-300)))
    claims.append(Claim("Estimators = least-squares closed forms, sample by sample", worst_s,
                        f"relative error <= {EXACT_TOL:g}", worst_s <= EXACT_TOL, unit="relative error {}", detail=
                        "first 8 samples per k: mean gbar_i, mean_{i>j} Hbar_i gbar_j, the grad-dot form, and the "
                        f"order-averaged MAML/FOMAML/Reptile meta-gradients at alpha={ALPHA:g}, against numpy "
                        "(2/b) X^T X algebra"))
    return claims


def _run(prob: Problem, plan: list[tuple[int, int]], batch: int, alphas: list[float], chunk: int,
         progress: bool, label: str) -> dict[int, expectations.MonteCarloResult]:
    runs = {}
    with bar(progress, sum(n for _, n in plan), f"expectations: {label}") as pb:
        for k, n in plan:
            runs[k] = expectations.monte_carlo(prob.loss_fn, prob.phi, prob.sampler(k, batch), n, seed=SEED + k,
                                               k=k, alphas=alphas, chunk=chunk, callback=pb.update)
    return runs


def _inner_rows(label: str, runs: dict[int, expectations.MonteCarloResult]) -> list[dict]:
    rows = []
    for k, mc in runs.items():
        for name, est in [("AvgGrad", mc.avg_grad), ("AvgGradInner (hvp)", mc.avg_grad_inner),
                          ("AvgGradInner (grad_dot)", mc.avg_grad_inner_dot)]:
            rows.append(dict(problem=label, k=k, quantity=name, norm=est.norm, se_norm=est.se_norm, n=est.n))
        c = compare(mc.avg_grad_inner, mc.avg_grad_inner_dot)
        rows.append(dict(problem=label, k=k, quantity="hvp - grad_dot", norm=c.diff_norm, se_norm=c.se_norm, n=mc.n))
    return rows


def checks(mode: str, out_dir: Path, progress: bool) -> list[Claim]:
    """Run the expectation checks (see the module docstring) and write their files."""
    cfg = CONFIG[check_mode(mode)]
    out_dir = Path(out_dir)
    ls, sine = least_squares_problem(0), sine_problem(0)
    ls_runs = _run(ls, cfg["ls"], LS_BATCH, [ALPHA, ALPHA_2, *LS_EXTRA_ALPHAS], 1000, progress, "least squares")
    claims = _closed_form_claims(ls, ls_runs)
    for k, mc in ls_runs.items():
        ok, ratio = expectations.inner_forms_agree(mc, N_SE)
        claims.append(Claim(f"E[Hbar_2 gbar_1] = 1/2 grad E[gbar_1.gbar_2] (least squares, k={k})", ratio,
                            f"difference <= {N_SE:g} s.e.", ok, f"n={mc.n}; paired over samples (exchangeability)",
                            unit="|difference| = {} s.e."))
    claims.append(exchangeability_claim_for(sine, "sine", 2, cfg["sine_exch"], SEED, chunk=64))
    power = None if mode == "quick" else POWER_TARGET
    tables = []
    for label, prob, batch, plans in [("least squares", ls, LS_BATCH, cfg["ls_coef"]),
                                      ("sine", sine, SINE_COEF_BATCH, cfg["sine_coef"]),
                                      ("sine, b=10", sine, SINE_BATCH, cfg.get("sine_coef_b10", []))]:
        if not plans:
            continue
        scale = measure_scale(prob.loss_fn, prob.phi, prob.sampler(2, batch))
        for k, n in plans:
            alpha = coefficient_alpha(scale, k)
            note = f" (= 0.02 / (k lambda), lambda = {scale.lam:.3g})"
            cl, table = coefficient_claims_for(prob, label, k, n, n, K_REG, alpha, SEED + k, batch=batch,
                                               chunk=1000 if prob is ls else 250, progress=progress,
                                               power_target=power if label != "sine, b=10" else None, alpha_note=note)
            claims += cl
            claims.append(truncation_claim_for(prob, label, k, alpha, SEED + k, batch=batch, alpha_note=note))
            tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    artifacts.write_csv(out_dir / "coefficients.csv", table)
    artifacts.write_csv(out_dir / "expectations.csv", pd.DataFrame(_inner_rows("least squares", ls_runs)))
    artifacts.save_figure(plots.coefficient_figure(table), out_dir / "coefficients.png")
    return claims


# -- independent coefficient claims on any Problem ---------------------------------------------
POWER_TARGET = 0.10   # default mode: each coefficient test must detect a 10 % error (80 % power)
TRUNCATION_TOL = 0.01  # relative O(alpha^2) truncation of the coefficients at the chosen alpha
EXACT_CHANGE = 1e-9    # relative change of E[g1] that is rounding (float64 ~1e-14), not truncation
PAPER_NAMES = {"maml": "MAML", "fomaml": "FOMAML", "reptile": "Reptile"}
PAPER_TEXT = {"maml": "1, -2(k-1)", "fomaml": "1, -(k-1)", "reptile": "k, -k(k-1)/2"}


def coefficient_claims_for(prob: Problem, label: str, k: int, n_alg: int, n_reg: int, k_reg: int, alpha: float,
                           seed: int, *, batch: int | None = None, chunk: int = 256, progress: bool = False,
                           power_target: float | None = None, alpha_note: str = "") -> tuple[list[Claim], pd.DataFrame]:
    """The paper's coefficient table as independent tests with a stated power.

    Five independent sets of draws (seeds ``10 seed + 1..5``): AvgGrad (``n_reg`` tasks, ``k_reg``
    minibatches each, ``mean_i gbar_i``), AvgGradInner (``n_reg`` tasks, the symmetric
    ``mean_{i != j} Hbar_i gbar_j``), and for each of MAML, FOMAML, Reptile its own ``n_alg`` tasks of
    k minibatches, where the engine (``reptile.algorithms.meta_gradient``) gives ``g(alpha)``,
    ``g(2 alpha)``, ``g(3 alpha)`` and hence ``g0`` and ``g1`` with ``g = g0 + alpha g1 + O(alpha^2)``
    (:func:`analysis.expectations.alpha_derivatives`, one minibatch order per draw). Then
    ``c1 = E[g0] / AvgGrad`` and ``c2 = E[g1] / AvgGradInner`` (:func:`analysis.stats.ratio_coefficient`:
    projections with a U-statistic denominator, delta-method standard errors covering both sets).
    Each algorithm's claim holds if both |z| <= 3; its detail states the smallest relative error
    that the test detects with 80 % power at these sample sizes.
    """
    b = prob.batch_size if batch is None else batch
    claims, rows = [], []
    with bar(progress, 2 * n_reg + 3 * n_alg, f"expectations: {label}") as pb:
        ag = expectations.regressor_samples(prob.loss_fn, prob.phi, prob.sampler(k_reg, b), n_reg, "avg_grad",
                                            seed=10 * seed + 1, chunk=chunk, callback=pb.update)
        agi = expectations.regressor_samples(prob.loss_fn, prob.phi, prob.sampler(k_reg, b), n_reg,
                                             "avg_grad_inner", seed=10 * seed + 2, chunk=chunk, callback=pb.update)
        for i, name in enumerate(("maml", "fomaml", "reptile")):
            g0, g1 = expectations.alpha_derivatives(name, prob.loss_fn, prob.phi, prob.sampler(k, b), n_alg, alpha,
                                                    seed=10 * seed + 3 + i, chunk=chunk, callback=pb.update)
            p1, p2 = expectations.paper_coefficients(name, k)
            c1, c2 = ratio_coefficient(g0.samples, ag.samples), ratio_coefficient(g1.samples, agi.samples)
            rows.append(dict(problem=label, algorithm=name, k=k, alpha=alpha, avg_grad_coef=c1.value,
                             avg_grad_coef_se=c1.se, avg_grad_coef_paper=p1, inner_coef=c2.value, inner_coef_se=c2.se,
                             inner_coef_paper=p2, z_avg_grad=c1.z(p1), z_inner=c2.z(p2), n=n_alg, n_regressors=n_reg,
                             detectable_avg_grad=c1.detectable(p1), detectable_inner=c2.detectable(p2)))
    table = pd.DataFrame(rows)
    setting = (f"{prob.name}, b={b}, k={k}, alpha={alpha:.3g}{alpha_note}; independent draws: {n_alg} tasks per "
               f"algorithm (g0, g1 from the engine at alpha, 2 alpha, 3 alpha), {n_reg} tasks x {k_reg} minibatches "
               f"for AvgGrad and another {n_reg} for AvgGradInner (symmetric Hbar_i gbar_j); c = mean(y).mean(x) / "
               f"U-statistic |E x|^2, delta-method s.e.")
    for r in table.itertuples():
        zmax = max(abs(r.z_avg_grad), abs(r.z_inner))
        claims.append(Claim(
            f"E[g_{PAPER_NAMES[r.algorithm]}] = c1 AvgGrad + c2 alpha AvgGradInner ({label}, k={k})",
            f"c1 {r.avg_grad_coef:.3f}±{r.avg_grad_coef_se:.3f}, c2 {r.inner_coef:.3f}±{r.inner_coef_se:.3f}",
            f"{PAPER_TEXT[r.algorithm]} = {r.avg_grad_coef_paper:g}, {r.inner_coef_paper:g} (|z| <= {N_SE:g})",
            zmax <= N_SE,
            f"z = {r.z_avg_grad:.2f}, {r.z_inner:.2f}; power: detects a relative error of {r.detectable_avg_grad:.1%} "
            f"in c1 and {r.detectable_inner:.1%} in c2 with 80% probability; {setting}"))
    det = float(table[["detectable_avg_grad", "detectable_inner"]].to_numpy().max())
    if power_target is not None:
        claims.append(Claim(f"Coefficient tests have power ({label}, k={k})", det,
                            f"every detectable relative error <= {power_target:.0%}", det <= power_target,
                            "largest over the six coefficients of (3 + 0.84) s.e. / |paper value|: the error a "
                            "|z| <= 3 test misses with at most 20% probability", unit="detectable relative error {}"))
    r = {row.algorithm: abs(row.inner_coef / row.avg_grad_coef) for row in table.itertuples()}
    claims.append(Claim(f"AvgGradInner/AvgGrad weight: MAML > FOMAML > Reptile ({label}, k={k})",
                        f"{r['maml']:.2f} > {r['fomaml']:.2f} > {r['reptile']:.2f}",
                        f"{2 * (k - 1):g} > {k - 1:g} > {(k - 1) / 2:g} (times alpha)",
                        bool(r["maml"] > r["fomaml"] > r["reptile"]),
                        "|c2 / c1| from the independent estimates above"))
    return claims, table


def truncation_claim_for(prob: Problem, label: str, k: int, alpha: float, seed: int, n: int = 16,
                         batch: int | None = None, alpha_note: str = "") -> Claim:
    """The O(alpha) convergence check beside the chosen alpha: on the same n draws, the coefficient
    estimate ``E[g1]`` at alpha, 2 alpha and 4 alpha (paired, so draw noise cancels). Its change
    is O(alpha^2) (three-point estimates); holds if the truncation at alpha, estimated as the change
    from alpha to 2 alpha divided by 3 (= (2^2 - 1)), is <= :data:`TRUNCATION_TOL` and the change
    grows with alpha."""
    b = prob.batch_size if batch is None else batch
    worst, parts, grows = 0.0, [], True
    for name in ("maml", "fomaml", "reptile"):
        means = [expectations.alpha_derivatives(name, prob.loss_fn, prob.phi, prob.sampler(k, b), n, m * alpha,
                                                seed=10 * seed + 9, chunk=n)[1].mean_flat for m in (1, 2, 4)]
        ref = float(means[0].norm())
        d1, d2 = float((means[1] - means[0]).norm()) / ref, float((means[2] - means[1]).norm()) / ref
        trunc = d1 / 3
        worst = max(worst, trunc)
        grows &= d2 > d1 or max(d1, d2) <= EXACT_CHANGE   # exact polynomials (least squares) change by rounding only
        parts.append(f"{PAPER_NAMES[name]} {trunc:.1e} (x{d2 / d1 if d1 > 0 else float('inf'):.1f} from 2a to 4a)")
    return Claim(f"Coefficient step size: truncation at alpha <= {TRUNCATION_TOL:.0%} ({label}, k={k})", worst,
                 f"<= {TRUNCATION_TOL:g}, growing with alpha (O(alpha^2): x4 from 2 alpha to 4 alpha)",
                 bool(worst <= TRUNCATION_TOL and grows),
                 f"alpha = {alpha:.3g}{alpha_note}; relative change of E[g1] on {n} paired draws: " + "; ".join(parts),
                 unit="relative change {}")


def exchangeability_claim_for(prob: Problem, label: str, k: int, n: int, seed: int, chunk: int = 256,
                              batch: int | None = None) -> Claim:
    """E[Hbar_2 gbar_1] = 1/2 grad E[gbar_1 . gbar_2]: the two AvgGradInner forms agree within 3 s.e.
    (paired over n draws); their per-sample difference has mean zero only if the minibatches are
    exchangeable."""
    b = prob.batch_size if batch is None else batch
    mc = expectations.monte_carlo(prob.loss_fn, prob.phi, prob.sampler(k, b), n, seed=seed, k=k, chunk=chunk)
    ok, ratio = expectations.inner_forms_agree(mc, N_SE)
    return Claim(f"E[Hbar_2 gbar_1] = 1/2 grad E[gbar_1.gbar_2] ({label}, k={k})", ratio,
                 f"difference <= {N_SE:g} s.e.", ok,
                 f"{prob.name}, b={b}, n={n}; figure = |mean difference| / sqrt(tr Cov / n), paired over samples; "
                 f"the difference per sample is 1/2 mean_(i>j) (Hbar_i gbar_j - Hbar_j gbar_i), zero in expectation "
                 f"when the minibatches are exchangeable", unit="|difference| = {} s.e.")
