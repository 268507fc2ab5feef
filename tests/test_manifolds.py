"""Solution manifolds (analysis.manifolds): exact and approximate projections, the objective (5.2),
Reptile's update against the projection, and the least-squares closed-form minimizers."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from analysis.manifolds import (KKT_TOL, VIOLATION_TOL, Projection, certified_projection, certify,
                                compare_with_lbfgs, distance, distance_objective, distance_objective_gradient,
                                ls_distance_minimizer, ls_distance_objective, ls_joint_loss, ls_joint_minimizer,
                                ls_reptile_fixed_point, reptile_vs_projection, solution_projection)
from reptile import tree
from reptile.algorithms import meta_gradient
from reptile.losses import make_loss, params_of
from reptile.models import MLP, LinearModel
from reptile.tasks import LeastSquaresTask, LeastSquaresTaskDistribution, SineTaskDistribution

torch.set_num_threads(1)
D, M = 10, 5


@pytest.fixture(scope="module")
def ls():
    dist = LeastSquaresTaskDistribution(dim=D, n_points=M, noise=0.1)
    rng = np.random.default_rng(0)
    tasks = [dist.sample(rng) for _ in range(4)]
    loss_fn = make_loss(LinearModel(D).double(), "mse")
    phi = {"linear.weight": torch.as_tensor(rng.standard_normal((1, D)))}
    return tasks, loss_fn, phi


def _w(p: dict) -> np.ndarray:
    return p["linear.weight"][0].numpy()


def test_exact_projection_matches_closed_forms_and_is_idempotent(ls):
    tasks, loss_fn, phi = ls
    w = _w(phi)
    for t in tasks:
        a, y = t.inputs.numpy(), t.targets.numpy()[:, 0]
        proj = solution_projection(t, phi)
        assert proj.exact and proj.converged
        p = _w(proj.point)
        # two independent closed forms: the min-norm correction from scipy's lstsq, and the explicit
        # formula w - A^T (A A^T)^{-1} (A w - y); A is a well-conditioned 5x10 Gaussian matrix, so
        # float64 agreement to 1e-10 leaves a margin of ~1e4 over rounding (cond(A) ~ 10)
        lstsq = w - scipy.linalg.lstsq(a, a @ w - y)[0]
        explicit = w - a.T @ np.linalg.solve(a @ a.T, a @ w - y)
        assert np.abs(p - lstsq).max() < 1e-10
        assert np.abs(p - explicit).max() < 1e-10
        assert np.abs(a @ p - y).max() < 1e-10                      # on W
        assert proj.loss < 1e-20                                     # optimal loss 0 (underdetermined)
        assert abs(proj.distance - np.linalg.norm(w - p)) < 1e-12
        again = solution_projection(t, proj.point)                   # idempotent: P(P(w)) = P(w)
        assert np.abs(_w(again.point) - p).max() < 1e-10 and again.distance < 1e-10
        # a bare tensor gives the same point
        bare = solution_projection(t, torch.as_tensor(w))
        assert np.abs(bare.point.numpy() - p).max() < 1e-14
        assert distance(t, phi) == pytest.approx(proj.distance, abs=1e-14)


def test_overdetermined_task_projects_onto_its_least_squares_solution():
    # m > d with noise: no exact solution; W is the single least-squares minimizer pinv(A) y
    t = LeastSquaresTaskDistribution(dim=3, n_points=8, noise=1.0).sample(np.random.default_rng(1))
    a, y = t.inputs.numpy(), t.targets.numpy()[:, 0]
    w = np.array([0.3, -1.0, 2.0])
    proj = solution_projection(t, torch.as_tensor(w))
    ref = scipy.linalg.lstsq(a, y)[0]
    assert np.abs(proj.point.numpy() - ref).max() < 1e-10        # 8x3 Gaussian system, cond ~ 3: rounding only
    assert proj.distance == pytest.approx(np.linalg.norm(w - ref), abs=1e-12)
    assert proj.loss == pytest.approx(np.mean((a @ ref - y) ** 2), rel=1e-10) and proj.loss > 0.01


def test_exact_projection_rejects_bad_input(ls):
    tasks, _, phi = ls
    with pytest.raises(ValueError, match="entries"):
        solution_projection(tasks[0], {"w": torch.zeros(D + 1, dtype=torch.float64)})
    with pytest.raises(ValueError, match="least-squares"):
        solution_projection(object(), phi, method="exact")
    with pytest.raises(ValueError, match="loss_fn"):
        solution_projection(tasks[0], phi, method="lbfgs")
    with pytest.raises(ValueError, match="loss_fn"):
        solution_projection(tasks[0], phi, method="certified")


@pytest.mark.parametrize("method,options", [("lbfgs", {}), ("gd", {"lr": 0.05, "max_iter": 20000})])
def test_approximate_projection_converges_to_exact_on_least_squares(ls, method, options):
    tasks, loss_fn, phi = ls
    for t in tasks[:2]:
        exact = solution_projection(t, phi)
        approx = solution_projection(t, phi, loss_fn=loss_fn, method=method, gtol=1e-9,
                                     optimal_loss=0.0, loss_tol=1e-12, **options)
        assert isinstance(approx, Projection) and not approx.exact
        assert approx.converged and approx.optimal
        # |gradient| <= 1e-9 bounds the distance to W inside phi + rowspace(A) by 1e-9 / lambda_min(H),
        # with lambda_min of (2/5) A A^T >= ~0.1 here: 1e-6 is a safe bound
        assert np.abs(_w(approx.point) - _w(exact.point)).max() < 1e-6
        assert approx.distance == pytest.approx(exact.distance, abs=1e-6)


def test_approximate_projection_sine_mlp_reaches_near_zero_loss():
    # an MLP can fit a sine on 50 grid points only approximately: optimal loss 0 is claimed to 1e-3
    # (the task's variance a^2/2 is ~ 3 here) after at most 300 L-BFGS iterations
    torch.manual_seed(0)
    model = MLP((1, 16, 16, 1), "tanh").double()
    loss_fn, phi = make_loss(model, "mse"), params_of(model)
    task = SineTaskDistribution(dtype=torch.float64).sample(np.random.default_rng(3))
    x, y = task.grid(50)
    start = float(loss_fn(phi, (x, y)))
    proj = solution_projection(task, phi, loss_fn=loss_fn, method="lbfgs", max_iter=300, gtol=1e-8, optimal_loss=0.0,
                               loss_tol=1e-3)
    assert proj.upper_bound and proj.method == "lbfgs"
    assert proj.optimal, proj
    assert proj.loss < 1e-3 * start
    assert proj.distance > 0 and np.isfinite(proj.distance)


def test_distance_objective_gradient_is_phi_minus_projection(ls):
    tasks, _, phi = ls
    g = tree.flatten(distance_objective_gradient(tasks, phi)).numpy()
    w, h = _w(phi), 1e-5
    fd = np.zeros(D)
    for i in range(D):
        e = np.zeros(D)
        e[i] = h
        plus = distance_objective(tasks, torch.as_tensor(w + e))
        minus = distance_objective(tasks, torch.as_tensor(w - e))
        fd[i] = (plus - minus) / (2 * h)
    # the objective is quadratic, so central differences are exact up to rounding ~1e-16 / h
    assert np.abs(g - fd).max() < 1e-8
    assert distance_objective(tasks, phi) == pytest.approx(ls_distance_objective(tasks, w), rel=1e-12)


@pytest.mark.parametrize("batch", [M, 2])
def test_reptile_update_tends_to_projection_as_k_grows(ls, batch):
    tasks, loss_fn, phi = ls
    t = tasks[0]
    proj = solution_projection(t, phi).point
    ks = [1, 10, 100, 400]
    batches = t.minibatches(max(ks), batch, np.random.default_rng(0), "cycle")
    res = reptile_vs_projection(loss_fn, phi, batches, 0.05, ks, proj)
    cos = [r.cosine for r in res]
    err = [r.relative_error for r in res]
    assert cos[-1] >= 0.999, cos
    assert cos[-1] > cos[0]
    assert all(b < a for a, b in zip(err, err[1:])), err          # |phi~_k - P| shrinks with k
    assert res[-1].relative_norm == pytest.approx(1.0, abs=0.02)


def _plane_tasks() -> list[LeastSquaresTask]:
    # four lines in the plane with different |a|: two steep (|a| = 1), two shallow (|a| = 0.5)
    rows = [((1.0, 0.0), 2.0), ((0.0, 1.0), 2.0), ((0.25, 0.433), -0.5), ((-0.25, 0.433), 0.2)]
    return [LeastSquaresTask(torch.tensor([a], dtype=torch.float64), torch.tensor([[y]], dtype=torch.float64),
                             torch.zeros(2, dtype=torch.float64)) for a, y in rows]


def test_least_squares_minimizers_closed_forms():
    ts = _plane_tasks()
    wd, wj = ls_distance_minimizer(ts), ls_joint_minimizer(ts)
    # each minimizes its own objective: zero gradient, and no better neighbours
    g = tree.flatten(distance_objective_gradient(ts, {"w": torch.as_tensor(wd)})).numpy()
    assert np.abs(g).max() < 1e-12
    for delta in (np.array([1e-3, 0]), np.array([0, -1e-3])):
        assert ls_distance_objective(ts, wd + delta) > ls_distance_objective(ts, wd)
        assert ls_joint_loss(ts, wj + delta) > ls_joint_loss(ts, wj)
    assert np.linalg.norm(wd - wj) > 0.5                           # they differ on this family
    # Reptile's fixed point: k = 1 is joint training, large k the distance minimizer
    assert np.abs(ls_reptile_fixed_point(ts, 1, 0.4) - wj).max() < 1e-12
    assert np.abs(ls_reptile_fixed_point(ts, 200, 0.4) - wd).max() < 1e-8
    gaps = [np.linalg.norm(ls_reptile_fixed_point(ts, k, 0.4) - wd) for k in (1, 2, 5, 20)]
    assert all(b < a for a, b in zip(gaps, gaps[1:]))


def test_engine_reptile_update_vanishes_at_closed_form_fixed_point():
    ts, k, alpha = _plane_tasks(), 5, 0.4
    loss_fn = make_loss(LinearModel(2).double(), "mse")
    for w_star, name in ((ls_reptile_fixed_point(ts, k, alpha), "fixed point"), (ls_distance_minimizer(ts), "distance")):
        phi = {"linear.weight": torch.as_tensor(w_star)[None]}
        mean_g = tree.mean([meta_gradient("reptile", loss_fn, phi, (t.inputs.expand(k, 1, 2), t.targets.expand(k, 1, 1)), alpha)
                            for t in ts])
        size = float(tree.norm(mean_g))
        if name == "fixed point":
            assert size < 1e-12, size                               # the expected update is exactly 0 there
        else:
            assert size > 1e-4, size                                # but not at the k = infinity point


def test_verify_provider_quick_claims_hold(tmp_path):
    from analysis.claims import Claim
    from analysis.manifold_checks import checks
    claims = checks("quick", tmp_path, False)
    assert claims and all(isinstance(c, Claim) for c in claims)
    assert [c.name for c in claims if not c.holds] == []
    assert (tmp_path / "manifolds_reptile_vs_projection.csv").exists()
    assert (tmp_path / "manifolds_fixed_points.csv").exists()


# -- the certified projection ----------------------------------------------------------------------
def test_certified_projection_equals_closed_form_on_least_squares(ls):
    tasks, loss_fn, phi = ls
    for t in tasks:
        exact = solution_projection(t, phi)
        cert = solution_projection(t, phi, loss_fn=loss_fn, method="certified")
        assert cert.method == "certified" and cert.converged and not cert.upper_bound
        c = cert.certificate
        assert c.certified and c.constraint == "fit" and c.n_constraints == M and c.rank == M
        # a linear constraint set: one Newton step from phi is the closed form; both are float64
        # solutions of a 5x5 system with cond ~ 10, so 1e-10 leaves ~1e4 over rounding
        assert np.abs(_w(cert.point) - _w(exact.point)).max() < 1e-10
        assert cert.distance == pytest.approx(exact.distance, abs=1e-10)
        assert c.violation <= 1e-12 and c.kkt_residual <= 1e-10


def _hyperbola_loss():
    """A two-parameter 'model' whose output is w1 * w2 (the input is ignored): the solution set of the
    one-example task y = c is the hyperbola w1 w2 = c."""
    def predict(p, x):
        return (p["w"][0] * p["w"][1]).reshape(1, 1).expand(len(x), 1)

    def loss(p, batch):
        return ((predict(p, batch[0]) - batch[1]) ** 2).mean()
    return loss, predict


def _nearest_on_hyperbola(p: float, q: float, c: float) -> np.ndarray:
    """Analytic nearest point of {x y = c} to (p, q): the Lagrange conditions x - p = l y, y - q = l x give
    x = (p + l q) / (1 - l^2), y = (q + l p) / (1 - l^2), and x y = c is the quartic
    (p + l q)(q + l p) = c (1 - l^2)^2 in l; the nearest of its real-root points."""
    poly = np.polynomial.Polynomial
    quartic = poly([p, q]) * poly([q, p]) - c * poly([1, 0, -1]) ** 2
    pts = []
    for root in quartic.roots():
        if abs(root.imag) < 1e-12 and abs(abs(root.real) - 1) > 1e-9:
            lam = root.real
            pts.append(np.array([(p + lam * q) / (1 - lam * lam), (q + lam * p) / (1 - lam * lam)]))
    return min(pts, key=lambda z: np.hypot(z[0] - p, z[1] - q))


@pytest.mark.parametrize("start,c", [((3.0, -0.5), 2.0), ((0.3, 0.2), 1.0), ((-1.0, 2.5), -0.7)])
def test_certified_projection_onto_a_hyperbola_matches_the_analytic_nearest_point(start, c):
    loss, predict = _hyperbola_loss()
    phi = {"w": torch.tensor(start, dtype=torch.float64)}
    data = (torch.zeros(1, 1, dtype=torch.float64), torch.tensor([[c]], dtype=torch.float64))
    proj = certified_projection(loss, phi, data, predict=predict)
    ref = _nearest_on_hyperbola(*start, c)
    assert proj.converged, proj.certificate
    # Newton converges quadratically to a simple root; numpy's quartic roots are accurate to ~1e-14
    assert np.abs(proj.point["w"].numpy() - ref).max() < 1e-8
    assert proj.distance == pytest.approx(float(np.hypot(*(ref - np.array(start)))), abs=1e-8)


def test_certified_projection_onto_a_circle():
    # output w1^2 + w2^2 = R^2: the nearest point is phi R / |phi|, from outside and from inside
    def predict(p, x):
        return (p["w"] ** 2).sum().reshape(1, 1).expand(len(x), 1)
    loss = lambda p, b: ((predict(p, b[0]) - b[1]) ** 2).mean()  # noqa: E731
    for start in ((3.0, 4.0), (0.1, -0.2)):
        phi = {"w": torch.tensor(start, dtype=torch.float64)}
        proj = certified_projection(loss, phi, (torch.zeros(1, 1, dtype=torch.float64),
                                                torch.tensor([[4.0]], dtype=torch.float64)), predict=predict)
        ref = np.array(start) * 2.0 / np.hypot(*start)
        assert proj.converged
        assert np.abs(proj.point["w"].numpy() - ref).max() < 1e-8


@pytest.fixture(scope="module")
def mlp_task():
    """A 1-16-16-1 tanh MLP at a seeded init and a sine task of 6 points (float64)."""
    from reptile.models import seeded_init
    model = seeded_init(0, lambda: MLP((1, 16, 16, 1), "tanh")).double()
    loss_fn, phi = make_loss(model, "mse"), params_of(model)
    task = SineTaskDistribution(dtype=torch.float64).sample(np.random.default_rng(3))
    x = torch.linspace(-4, 4, 6, dtype=torch.float64)[:, None]
    return loss_fn, phi, (x, task.f(x))


def test_certified_projection_mlp_satisfies_constraints_kkt_and_beats_lbfgs(mlp_task):
    loss_fn, phi, data = mlp_task
    cmp = compare_with_lbfgs(loss_fn, phi, data)
    proj, c = cmp.certified, cmp.certified.certificate
    assert proj.converged and c.certified and not proj.upper_bound
    assert c.violation <= VIOLATION_TOL and c.kkt_residual <= KKT_TOL
    # the constraints checked independently of the certificate: f(x_i) = y_i
    out = loss_fn.model and torch.func.functional_call(loss_fn.model, proj.point, (data[0],))
    assert float((out - data[1]).abs().max()) <= VIOLATION_TOL
    # and the first-order condition: theta - phi in the row space of J, from a separately computed
    # Jacobian (jacrev of the whole output) and a least-squares fit
    from torch.func import jacrev
    jac = jacrev(lambda p: torch.func.functional_call(loss_fn.model, p, (data[0],)).reshape(-1))(proj.point)
    j = torch.cat([jac[k].reshape(len(data[0]), -1) for k in proj.point], 1)
    r = tree.flatten(proj.point) - tree.flatten(phi)
    lam = torch.linalg.lstsq(j.T, r[:, None]).solution
    assert float(torch.linalg.vector_norm(r - (j.T @ lam)[:, 0]) / torch.linalg.vector_norm(r)) <= KKT_TOL
    # never farther than the L-BFGS end point (a feasible point too, so an upper bound), within the
    # L-BFGS end point's own infeasibility (its loss ~1e-20: |f - y| ~ 1e-10)
    assert cmp.lbfgs.upper_bound and cmp.lbfgs.loss < 1e-16
    assert proj.distance <= cmp.lbfgs.distance + 1e-8
    assert cmp.ratio >= 1.0 - 1e-8
    # the L-BFGS end point is feasible but not a projection: its certificate says so
    assert cmp.lbfgs_certificate.kkt_residual > 1e3 * KKT_TOL and not cmp.lbfgs_certificate.certified


def test_certified_projection_from_the_manifold_returns_the_point(mlp_task):
    loss_fn, phi, data = mlp_task
    on = certified_projection(loss_fn, phi, data).point
    again = certified_projection(loss_fn, on, data)
    assert again.converged and again.distance <= 1e-10     # |c| <= 1e-11 there: at most a tiny restoration
    assert max(float((again.point[k] - on[k]).abs().max()) for k in on) <= 1e-10
    cert = certify(loss_fn, on, on, data)
    assert cert.certified and cert.kkt_residual == 0.0


def test_certified_projection_loss_level_constraint_for_classification():
    # a 2-8-3 tanh classifier on 9 labelled points: the set {mean cross-entropy <= level}
    from reptile.models import seeded_init
    model = seeded_init(1, lambda: MLP((2, 8, 3), "tanh")).double()
    loss_fn, phi = make_loss(model, "cross_entropy"), params_of(model)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 2, generator=g, dtype=torch.float64)
    y = torch.arange(9) % 3
    proj = certified_projection(loss_fn, phi, (x, y), level=0.3)
    c = proj.certificate
    assert c.constraint == "loss_level" and c.n_constraints == 1 and c.multiplier_ok
    assert proj.converged and abs(proj.loss - 0.3) <= VIOLATION_TOL
    # first order: theta - phi is a negative multiple of grad L(theta)
    from torch.func import grad
    gl = tree.flatten(grad(loss_fn)(proj.point, (x, y)))
    r = tree.flatten(proj.point) - tree.flatten(phi)
    assert float(r @ gl) / float(torch.linalg.vector_norm(r) * torch.linalg.vector_norm(gl)) < -1 + 1e-12
    # a level already met at phi: the projection is phi
    start = float(loss_fn(phi, (x, y)))
    same = certified_projection(loss_fn, phi, (x, y), level=start + 0.1)
    assert same.distance == 0.0 and same.converged


def test_certified_projection_rejects_bad_input(mlp_task):
    loss_fn, phi, data = mlp_task
    with pytest.raises(ValueError, match="constraint"):
        certified_projection(loss_fn, phi, data, constraint="margin")
    with pytest.raises(ValueError, match="level"):
        certified_projection(loss_fn, phi, data, constraint="fit", level=0.1)
    with pytest.raises(ValueError, match="predict"):
        certified_projection(lambda p, b: loss_fn(p, b), phi, data)  # no .model attached
    with pytest.raises(ValueError, match="method"):
        solution_projection(object(), phi, loss_fn=loss_fn, data=data, method="newton")


def test_per_example_jacobian_only_when_it_equals_the_full_one():
    from analysis.manifolds import _Problem
    w = {"w": torch.tensor([0.5, -1.0], dtype=torch.float64)}
    x = torch.linspace(-1, 1, 4, dtype=torch.float64)[:, None]
    y = torch.zeros(4, 1, dtype=torch.float64)

    def separate(p, x):
        return p["w"][0] * x + p["w"][1] * x ** 2

    def coupled(p, x):                                      # subtracts the batch mean: examples interact
        out = separate(p, x)
        return out - out.mean() + p["w"][1]
    loss = lambda p, b: torch.zeros(())  # noqa: E731  (unused by the fit constraint)
    assert _Problem(loss, w, (x, y), "fit", float("nan"), separate).per_example
    assert not _Problem(loss, w, (x, y), "fit", float("nan"), coupled).per_example
