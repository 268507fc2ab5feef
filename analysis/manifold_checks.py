"""Check provider: solution manifolds (Reptile paper section 5.2), on least squares and on networks.

Claims checked (REFERENCE.md section 3), least squares:

* the exact projection onto a least-squares solution set ``{w : A w = y}`` equals the closed
  form ``w - lstsq(A, A w - y)`` (scipy) to 1e-10 and is idempotent;
* the approximate projection (L-BFGS on the task loss from ``phi``) converges to it (1e-6);
* Reptile's update ``phi~ - phi`` after k inner SGD steps turns into the projection step
  ``P_tau(phi) - phi`` as k grows: cosine >= 0.999 at the largest k for every task and the mean
  relative error ``|phi~_k - P| / |phi - P|`` falling with k (full-batch and minibatch inner
  loops; the error is ``prod_i (I - alpha H_i) (phi - P)``, so its speed depends on the task's
  smallest nonzero Hessian eigenvalue);
* Reptile's fixed point on a family of lines in the plane (one example per task, |a| = 1 or 0.5)
  is joint training's minimizer at k = 1 and moves to the minimizer of the expected squared
  distance as k grows; batched Reptile run with the engine's ``meta_gradient`` converges to that
  closed-form fixed point, which differs from the joint-training minimizer.

Networks (:mod:`analysis.manifold_nets`; the sine MLP 1-64-64-1 tanh at its seeded init, solution
sets ``f(x_i) = y_i`` on 10 equally spaced points of an unseen sine task):

* the certified projection (:func:`analysis.manifolds.certified_projection`) is certified
  (violation <= 1e-9, KKT residual <= 1e-7) and no farther than the L-BFGS end point, which is
  reported with its ratio and its own KKT residual;
* Reptile's update against the projection step as k grows (full-batch GD, small alpha): a
  measurement -- the claim is that the cosine rises with k; where it peaks and how high is the finding;
* ``--full`` only: mean squared distance ``E D(phi, W_tau)^2`` over unseen tasks for the random
  init, joint training, MAML, FOMAML and Reptile (same budget; 95% CIs), and the few-shot CNN
  (5-way glyph tasks, constraint: mean cross-entropy on the 25 training examples <= ln(1/0.9))
  for a Reptile-trained init against the untrained one.

Files written to ``out_dir``: ``manifolds_reptile_vs_projection.csv``, ``manifolds_fixed_points.csv``,
``manifolds_mlp_update_vs_projection.csv``; full mode also ``manifolds_networks_{curve,summary}.csv``
and ``manifolds_cnn.csv``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.linalg
import torch

from reptile import tree
from reptile.losses import make_loss
from reptile.models import LinearModel
from reptile.tasks import LeastSquaresTask, LeastSquaresTaskDistribution

from . import artifacts
from .claims import Claim, check_mode
from .manifolds import (batched_reptile_gradients, ls_distance_minimizer, ls_joint_minimizer, ls_reptile_fixed_point,
                        reptile_vs_projection_many, solution_projection)
from .progress import bar

D, M, ALPHA = 10, 5, 0.05
CONFIG = {
    "quick": dict(tasks=2, ks=(1, 10, 100, 300), lbfgs_tasks=1, batched_iters=40, batched_k=10,
                  net_tasks=1, net_ks=(1, 10, 100), networks=False),
    "default": dict(tasks=5, ks=(1, 3, 10, 30, 100, 300, 600), lbfgs_tasks=3, batched_iters=60, batched_k=10,
                    net_tasks=1, net_ks=(1, 3, 10, 30, 100, 300), networks=False),
    "full": dict(tasks=20, ks=(1, 3, 10, 30, 100, 300, 1000), lbfgs_tasks=10, batched_iters=80, batched_k=30,
                 net_tasks=3, net_ks=(1, 3, 10, 30, 100, 300, 1000, 3000), networks=True),
}
NET_ALPHA = 0.01      # inner GD step on the 10 points: below 2 / lambda_max of the task loss at the init
NET_RISE = 0.05       # "the cosine rises with k": best cosine >= cosine at k = 1 plus this
PROJ_TOL = 1e-10      # float64 closed forms on well-conditioned 5x10 Gaussian systems agree to ~1e-15
LBFGS_TOL = 1e-6      # L-BFGS stops at |grad| <= 1e-9; the error is <= 1e-9 / (smallest nonzero Hessian eigenvalue)
COS_MIN = 0.999       # the bar at the largest k
FIXED_TOL = 1e-6      # batched Reptile iterate vs the closed-form fixed point (a linear contraction)

#: the lines of figures/solution_manifolds.py: normal angle (degrees), |a|, a point of the line
PLANE = ((0.0, 1.0, (2.0, 0.0)), (90.0, 1.0, (0.0, 2.0)), (30.0, 0.5, (-1.0, -1.0)), (120.0, 0.5, (-1.0, -1.0)),
         (160.0, 0.5, (0.0, -1.0)))
PLANE_ALPHA = 0.5


def plane_tasks() -> list[LeastSquaresTask]:
    """Five one-example tasks in the plane whose solution sets are lines (float64)."""
    out = []
    for deg, n, p in PLANE:
        a = n * np.array([np.cos(np.radians(deg)), np.sin(np.radians(deg))])
        out.append(LeastSquaresTask(torch.tensor(a[None]), torch.tensor([[float(a @ np.array(p))]]),
                                    torch.tensor(np.array(p, float))))
    return out


def _ls_setup(n: int, seed: int = 0):
    dist = LeastSquaresTaskDistribution(dim=D, n_points=M, noise=0.1)
    rng = np.random.default_rng(seed)
    tasks = [dist.sample(rng) for _ in range(n)]
    phis = [{"linear.weight": torch.as_tensor(rng.standard_normal((1, D)))} for _ in range(n)]
    return tasks, phis, make_loss(LinearModel(D).double(), "mse")


def _projection_claims(cfg: dict) -> list[Claim]:
    tasks, phis, loss_fn = _ls_setup(cfg["tasks"])
    err = idem = 0.0
    for t, phi in zip(tasks, phis):
        a, y = t.inputs.numpy(), t.targets.numpy()[:, 0]
        w = phi["linear.weight"][0].numpy()
        p = solution_projection(t, phi)
        pw = p.point["linear.weight"][0].numpy()
        err = max(err, float(np.abs(pw - (w - scipy.linalg.lstsq(a, a @ w - y)[0])).max()))
        idem = max(idem, float(np.abs(solution_projection(t, p.point).point["linear.weight"][0].numpy() - pw).max()))
    lb = 0.0
    its = []
    for t, phi in list(zip(tasks, phis))[: cfg["lbfgs_tasks"]]:
        exact = solution_projection(t, phi).point["linear.weight"]
        approx = solution_projection(t, phi, loss_fn=loss_fn, method="lbfgs", gtol=1e-9)
        lb = max(lb, float((approx.point["linear.weight"] - exact).abs().max()) if approx.converged else float("inf"))
        its.append(approx.iterations)
    setting = f"{len(tasks)} least-squares tasks, d = {D}, m = {M} examples (underdetermined), noise 0.1, random phi"
    return [
        Claim("least-squares projection = closed form", max(err, idem), f"max abs error <= {PROJ_TOL:g}",
              err <= PROJ_TOL and idem <= PROJ_TOL,
              f"{setting}; reference w - scipy.linalg.lstsq(A, A w - y); error {err:.2g}, idempotency "
              f"|P(P(w)) - P(w)| {idem:.2g}", unit="max abs error {}"),
        Claim("L-BFGS projection -> exact projection (least squares)", lb, f"max abs error <= {LBFGS_TOL:g}",
              lb <= LBFGS_TOL,
              f"{cfg['lbfgs_tasks']} tasks; L-BFGS on the task loss from phi until |grad| <= 1e-9 "
              f"({min(its)}-{max(its)} iterations)", unit="max abs error {}"),
    ]


def stable_alpha(task: LeastSquaresTask) -> float:
    """``min(ALPHA, 1 / max_i 2 |x_i|^2)``: every minibatch Hessian ``(2/b) X^T X`` has its largest
    eigenvalue below ``max_i 2 |x_i|^2``, so each SGD step is a non-expansive relaxed projection
    (Kaczmarz with relaxation <= 1) and the iterates converge to ``P(phi)``. A larger step on a
    single large example is expanding and SGD diverges for large k."""
    return min(ALPHA, 1.0 / float(2 * (task.inputs ** 2).sum(1).max()))


def _reptile_claims(cfg: dict, out_dir: Path, progress: bool) -> list[Claim]:
    tasks, phis, loss_fn = _ls_setup(cfg["tasks"], seed=1)
    ks, rows = list(cfg["ks"]), []
    projs = [solution_projection(t, phi).point for t, phi in zip(tasks, phis)]
    alphas = [stable_alpha(t) for t in tasks]
    with bar(progress, 2, "manifolds: Reptile vs projection") as b:
        for batch in (M, 1):
            batches = [t.minibatches(max(ks), batch, np.random.default_rng([1, i]), "cycle") for i, t in enumerate(tasks)]
            # all tasks' inner loops in one vmapped call (the numbers of a loop over tasks, to rounding)
            for i, res in enumerate(reptile_vs_projection_many(loss_fn, phis, batches, alphas, ks, projs)):
                for r in res:
                    rows.append(dict(batch=batch, task=i, k=r.k, cosine=r.cosine, relative_norm=r.relative_norm,
                                     relative_error=r.relative_error))
            b.update(1)
    df = pd.DataFrame(rows)
    artifacts.write_csv(out_dir / "manifolds_reptile_vs_projection.csv", df)
    claims = []
    for batch, g in df.groupby("batch"):
        mean = g.groupby("k")[["cosine", "relative_norm", "relative_error"]].mean()
        worst_cos = float(g[g.k == max(ks)].cosine.min())
        worst_err = float(g[g.k == max(ks)].relative_error.max())
        falling = bool(np.all(np.diff(mean.relative_error.to_numpy()) < 0))
        curve = ", ".join(f"k={k}: {c:.4f}" for k, c in mean.cosine.items())
        kind = "full-batch GD" if batch == M else "SGD, minibatches of 1 example"
        claims.append(Claim(
            f"Reptile update -> projection step as k grows (least squares, {kind})", worst_cos,
            f"cosine >= {COS_MIN} at k = {max(ks)} for every task; mean |phi~_k - P| / |phi - P| falls with k",
            worst_cos >= COS_MIN and falling,
            f"worst over {len(tasks)} tasks; mean cosine {curve}; mean |phi~|/|P - phi| at k = {max(ks)}: "
            f"{mean.relative_norm.iloc[-1]:.4f}; mean |phi~_k - P|/|phi - P| "
            + ", ".join(f"{e:.2g}" for e in mean.relative_error) + f" (worst at k = {max(ks)}: {worst_err:.2g}); "
            f"alpha = min({ALPHA}, 1 / max_i 2|x_i|^2) per task (stable steps)", unit=f"min cosine at k = {max(ks)}: {{}}"))
    return claims


def _fixed_point_claims(cfg: dict, out_dir: Path) -> list[Claim]:
    ts = plane_tasks()
    wd, wj = ls_distance_minimizer(ts), ls_joint_minimizer(ts)
    k = cfg["batched_k"]
    rows = [dict(k=kk, w1=fp[0], w2=fp[1], to_distance_minimizer=float(np.linalg.norm(fp - wd)),
                 to_joint_minimizer=float(np.linalg.norm(fp - wj)))
            for kk in (1, 2, 3, 5, 10, 20, 30, 50) for fp in [ls_reptile_fixed_point(ts, kk, PLANE_ALPHA)]]
    artifacts.write_csv(out_dir / "manifolds_fixed_points.csv", pd.DataFrame(rows))
    # batched Reptile with the engine: phi <- phi - eps * alpha * mean_tau g_Reptile(tau), eps = 1
    loss_fn = make_loss(LinearModel(2).double(), "mse")
    phi = {"linear.weight": torch.tensor([[-2.5, 3.0]], dtype=torch.float64)}
    x = torch.stack([t.inputs.expand(k, 1, 2) for t in ts])
    y = torch.stack([t.targets.expand(k, 1, 1) for t in ts])
    per_task = batched_reptile_gradients(loss_fn, PLANE_ALPHA)   # all tasks in one vmapped call
    for _ in range(cfg["batched_iters"]):
        phi = tree.add(phi, {n: v.mean(0) for n, v in per_task(phi, x, y).items()}, -PLANE_ALPHA)
    end = phi["linear.weight"][0].numpy()
    fp = ls_reptile_fixed_point(ts, k, PLANE_ALPHA)
    gap = float(np.linalg.norm(end - fp))
    d_dist, d_joint, apart = float(np.linalg.norm(end - wd)), float(np.linalg.norm(end - wj)), float(np.linalg.norm(wd - wj))
    k1 = float(np.linalg.norm(ls_reptile_fixed_point(ts, 1, PLANE_ALPHA) - wj))
    return [
        Claim("batched Reptile (engine) converges to the closed-form fixed point (least squares)", gap,
              f"|phi_T - w*_k| <= {FIXED_TOL:g}", gap <= FIXED_TOL,
              f"5 lines in the plane (figures/solution_manifolds.py), k = {k} SGD steps of {PLANE_ALPHA}, "
              f"outer step 1 on the mean over all tasks, {cfg['batched_iters']} iterations", unit="|phi_T - w*_k| = {}"),
        Claim("Reptile approaches the distance minimizer, not the joint-training minimizer", d_dist,
              "|phi_T - argmin E D^2| << |phi_T - argmin E L| (minimizers apart)",
              d_dist <= 0.1 * apart and d_joint >= 0.9 * apart and k1 <= 1e-10,
              f"minimizers {apart:.4f} apart; Reptile (k = {k}) ends {d_dist:.2g} from argmin 1/2 E D^2 and "
              f"{d_joint:.4f} from the joint minimizer; the k = 1 fixed point is the joint minimizer "
              f"(gap {k1:.1g}); fixed point vs k in manifolds_fixed_points.csv", unit="|phi_T - argmin E D^2| = {}"),
    ]


def _mlp_claims(cfg: dict, out_dir: Path, progress: bool) -> list[Claim]:
    from .manifold_nets import probe_tasks, sine_setup, update_vs_projection
    from .manifolds import KKT_TOL, VIOLATION_TOL, approximate_projection, certify

    loss_fn, phi, _ = sine_setup(0)
    p64 = {k: v.double() for k, v in phi.items()}
    datas = probe_tasks(cfg["net_tasks"], seed=7)
    rows, worst_v, worst_k, ratios, lb_kkt, cert_all, secs = [], 0.0, 0.0, [], [], True, []
    ks = list(cfg["net_ks"])
    with bar(progress, len(datas), "manifolds: sine MLP projections") as b:
        for i, d in enumerate(datas):
            tic = time.perf_counter()
            proj, res = update_vs_projection(loss_fn, p64, d, NET_ALPHA, ks)
            secs.append(time.perf_counter() - tic)
            c = proj.certificate
            cert_all = cert_all and proj.converged
            worst_v, worst_k = max(worst_v, c.violation), max(worst_k, c.kkt_residual)
            lb = approximate_projection(loss_fn, p64, d, gtol=1e-9, max_iter=1500)
            ratios.append(lb.distance / proj.distance)
            lb_kkt.append(certify(loss_fn, p64, lb.point, d).kkt_residual)
            for r in res:
                rows.append(dict(task=i, k=r.k, alpha=NET_ALPHA, cosine=r.cosine, relative_norm=r.relative_norm,
                                 relative_error=r.relative_error, projection_distance=proj.distance,
                                 lbfgs_distance=lb.distance))
            b.update(1)
    df = pd.DataFrame(rows)
    artifacts.write_csv(out_dir / "manifolds_mlp_update_vs_projection.csv", df)
    mean = df.groupby("k")[["cosine", "relative_norm", "relative_error"]].mean()
    best_k = int(mean.cosine.idxmax())
    best, first = float(mean.cosine.max()), float(mean.cosine.iloc[0])
    curve = ", ".join(f"k={k}: {c:.3f}" for k, c in mean.cosine.items())
    setting = (f"sine MLP 1-64-64-1 tanh at its seeded init (float64), {len(datas)} unseen task(s), solution set "
               f"f(x_i) = y_i on 10 equally spaced points of [-5, 5]")
    return [
        Claim("certified projection on the sine MLP (10 points): certified, nearer than L-BFGS", min(ratios),
              f"violation <= {VIOLATION_TOL:g}, KKT residual <= {KKT_TOL:g}; L-BFGS end point / certified distance >= 1",
              cert_all and min(ratios) >= 1.0 - 1e-9,
              f"{setting}; worst violation {worst_v:.1e}, worst KKT residual {worst_k:.1e}; L-BFGS end points "
              f"(|grad| <= 1e-9 or 1500 iterations) land " + ", ".join(f"{r:.2f}x" for r in ratios)
              + " farther, with KKT residuals " + ", ".join(f"{v:.2f}" for v in lb_kkt)
              + f" (not projections); projection + Reptile comparison {np.mean(secs):.1f} s per task",
              unit="min L-BFGS / certified distance = {}"),
        Claim("Reptile update vs projection step on the sine MLP: cosine rises with k", best,
              f"mean cosine at its best k >= cosine at k = 1 + {NET_RISE} (least squares: -> 1)",
              best >= first + NET_RISE,
              f"{setting}; full-batch GD on those points, alpha = {NET_ALPHA}; mean cosine {curve}; best at k = "
              f"{best_k}; mean |phi~_k - P| / |phi - P| " + ", ".join(f"{e:.3f}" for e in mean.relative_error)
              + "; |phi~_k - phi| / |P - phi| " + ", ".join(f"{e:.3f}" for e in mean.relative_norm)
              + " -- gradient descent converges to a fitting point that is not the projection",
              unit="best mean cosine {}"),
    ]


def _network_claims(out_dir: Path, progress: bool) -> list[Claim]:
    """``--full`` only: the sine MLP's E D^2 per initialization and the few-shot CNN's distances."""
    from .manifold_nets import cnn_experiment, run_network_experiment

    _, summary = run_network_experiment(iterations=1500, every=500, n_probe=4, n_eval=12, out_dir=out_dir,
                                        progress=progress)
    by = {r["init"]: r for r in summary}
    text = "; ".join(f"{k} {v['mean_sq']:.2f} +- {v['ci95']:.2f} ({v['certified']}/{v['n']} certified)"
                     for k, v in by.items())
    rep = by["reptile"]
    d_rand, h_rand = rep["paired_vs_random"], rep["paired_vs_random_ci95"]
    d_joint, h_joint = rep["paired_vs_joint"], rep["paired_vs_joint_ci95"]
    below = d_rand + h_rand < 0 and d_joint + h_joint < 0
    claims = [Claim("sine MLP: E D(phi, W_tau)^2 lower for Reptile than for joint training and random init",
                    d_joint, "paired differences Reptile - joint and Reptile - random over the same unseen tasks: "
                    "95% CI below 0 (paper 5.2)", below,
                    f"12 unseen tasks (10 grid points each), 1500 meta-iterations per algorithm from the same seeded "
                    f"init (blog settings: k = 5 SGD steps of 0.02, outer step 0.1 annealed to 0); Reptile - joint "
                    f"{d_joint:.3f} +- {h_joint:.3f}, Reptile - random {d_rand:.3f} +- {h_rand:.3f}; "
                    + "; ".join(f"{k} - random {v['paired_vs_random']:.3f} +- {v['paired_vs_random_ci95']:.3f}"
                                for k, v in by.items() if k != "random")
                    + f"; per init mean +- 95% CI over tasks: {text}; curves in manifolds_networks_curve.csv",
                    unit="Reptile - joint = {}")]
    cnn = cnn_experiment(out_dir=out_dir, progress=progress)
    tr, un = cnn["reptile"], cnn["untrained"]
    claims.append(Claim("few-shot CNN: Reptile init nearer the glyph tasks' solution sets than the untrained init",
                        cnn["paired"], "paired difference Reptile - untrained of D^2 over the same tasks: 95% CI below 0",
                        cnn["paired"] + cnn["paired_ci95"] < 0,
                        f"OmniglotCNN ({cnn['filters']} filters, batch norm with batch statistics), 5-way 5-shot glyph "
                        f"tasks of the test split; solution set: mean cross-entropy on the 25 training examples <= "
                        f"ln(1/0.9); Reptile {cnn['iterations']} iterations (Adam inner loop); untrained "
                        f"{un['mean_sq']:.3f} +- {un['ci95']:.3f} ({un['certified']}/{un['n']} certified), Reptile "
                        f"{tr['mean_sq']:.3f} +- {tr['ci95']:.3f} ({tr['certified']}/{tr['n']} certified); paired "
                        f"difference {cnn['paired']:.3f} +- {cnn['paired_ci95']:.3f}", unit="Reptile - untrained = {}"))
    return claims


def checks(mode: str, out_dir: Path, progress: bool) -> list[Claim]:
    """Solution-manifold claims (modes ``quick`` < 10 s, ``default`` < 30 s, ``full`` tens of minutes)."""
    cfg = CONFIG[check_mode(mode)]
    out_dir = Path(out_dir)
    claims = _projection_claims(cfg) + _reptile_claims(cfg, out_dir, progress) + _fixed_point_claims(cfg, out_dir)
    claims += _mlp_claims(cfg, out_dir, progress)
    if cfg["networks"]:
        claims += _network_claims(out_dir, progress)
    return claims


if __name__ == "__main__":
    import sys
    tic = time.perf_counter()
    for c in checks(sys.argv[1] if len(sys.argv) > 1 else "quick", Path("/tmp/manifold_checks"), False):
        print(("HOLDS " if c.holds else "FAILS ") + c.name, "|", c.measured_text(), "|", c.prediction, "|", c.detail)
    print(f"{time.perf_counter() - tic:.1f} s")
