"""``reptile verify --problem``: a user problem through the CLI, its errors, float32, and the
reworked claims failing on deliberately broken engines (mutation tests)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.func import grad

import analysis.expectations
import analysis.taylor
from analysis import cli, expectation_checks, taylor_checks
from analysis.problem_checks import problem_checks
from analysis.problems import ProblemError, load_problem, to_device
from analysis.stepsize import coefficient_alpha, measure_scale
from reptile.algorithms import meta_gradient as real_meta_gradient

ROOT = Path(__file__).resolve().parents[1]
SPEC = "tests.user_problem:factory"


def test_user_problem_through_the_cli(tmp_path):
    """A model defined outside the package, its arguments from a TOML file and --problem-arg."""
    args_file = tmp_path / "args.toml"
    args_file.write_text("width = 6\nseed = 1\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "report"
    res = subprocess.run([sys.executable, "-m", "reptile", "verify", "--quick", "--no-progress", "--problem", SPEC,
                          "--problem-args", str(args_file), "--problem-arg", "batch=6", "--out", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    text = res.stdout
    assert "MLP 3-6-6-1" in text and "dense Hessian" in text and "E[g_MAML] = c1 AvgGrad" in text
    assert "skipped: Estimators = closed forms" in text and "1/1 certified" in text
    assert "0 failed" in text and (out / "report.md").exists()
    assert "claims.csv" in {p.name for p in out.iterdir()}


@pytest.mark.parametrize("argv, message", [
    (["--problem", "tests.user_problem:batch_norm_factory"], "track_running_stats=False"),
    (["--problem", "tests.user_problem:wrong_factory"], "returned a dict, not an analysis.problems.Problem"),
    (["--problem", "tests.no_such_module:factory"], "cannot be imported"),
    (["--problem", "tests.user_problem:nope"], "has no 'nope'; callables there: "),
    (["--problem", "no_colon"], "must look like package.module:factory"),
    (["--problem", SPEC, "--problem-arg", "depth=3"], "unexpected keyword argument 'depth'"),
])
def test_problem_errors_name_the_fix(tmp_path, capsys, argv, message):
    assert cli.main(["verify", "--quick", "--no-progress", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_problem_arg_needs_a_problem_and_files_must_parse(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["verify", "--problem-arg", "width=3"])
    assert "must follow a --problem" in capsys.readouterr().err
    bad = tmp_path / "args.json"
    bad.write_text("{width: 3")
    with pytest.raises(SystemExit):
        cli.main(["verify", "--problem", SPEC, "--problem-args", str(bad)])
    assert "is not valid JSON" in capsys.readouterr().err


def test_manifold_claims_on_a_user_problem(tmp_path, monkeypatch):
    """The certified projections hold on the user MLP (16 fit constraints, 41 parameters) and are no
    farther than L-BFGS; a projection stopped before its Newton descent (restored onto the set but
    not stationary) fails the claim with its numbers, not a crash; a problem above the constraint
    limit is skipped with the limit named."""
    import pandas as pd

    from analysis import problem_manifolds as pm

    # repeated examples (minibatches drawn with replacement) are one constraint, not two
    x, y = torch.tensor([[[1.0], [2.0]], [[2.0], [3.0]]]), torch.tensor([[[0.0], [1.0]], [[1.0], [5.0]]])
    ux, uy = pm.union_of_minibatches(x, y)
    assert ux[:, 0].tolist() == [1.0, 2.0, 3.0] and uy[:, 0].tolist() == [0.0, 1.0, 5.0]
    prob = load_problem(SPEC, {"width": 4})
    monkeypatch.setitem(pm.CONFIG, "quick", dict(tasks=1, k=2, lbfgs_iter=100))
    cert, near = pm.manifold_claims_for(prob, "user", "quick", tmp_path)
    assert cert.holds and not cert.skipped and cert.measured == "1/1 certified", cert.detail
    assert near.holds and near.measured >= 1.0 and "L-BFGS" in near.detail
    rows = pd.read_csv(tmp_path / "user_manifolds.csv")
    assert rows.n_constraints.tolist() == [16] and rows.n_params.tolist() == [41]
    assert (rows.violation <= pm.VIOLATION_TOL).all() and (rows.kkt_residual <= pm.KKT_TOL).all()
    real = pm.compare_with_lbfgs
    monkeypatch.setattr(pm, "compare_with_lbfgs", lambda *a, **kw: real(*a, **kw, max_iter=0))
    cert, near = pm.manifold_claims_for(prob, "user", "quick", tmp_path)
    assert not cert.holds and cert.measured == "0/1 certified" and "worst KKT residual" in cert.detail
    assert near.skipped
    monkeypatch.setattr(pm, "MAX_CONSTRAINTS", 10)
    skipped = pm.manifold_claims_for(prob, "user", "quick", tmp_path)
    assert all(c.skipped and "MAX_CONSTRAINTS = 10" in c.skipped for c in skipped)


def test_batch_norm_with_batch_statistics_is_accepted():
    from torch import nn

    from analysis.problems import Problem, check_problem
    from reptile.losses import make_loss, params_of

    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 1)).double()
    base = load_problem(SPEC, {"width": 4})
    check_problem(Problem("bn", model, make_loss(model, "mse"), params_of(model), base.sampler))
    with pytest.raises(ProblemError, match="batch norm with running statistics"):
        model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).double()
        check_problem(Problem("bn", model, make_loss(model, "mse"), params_of(model), base.sampler))


def test_float32_problem_fits_slopes_above_the_rounding_floor(tmp_path):
    """float32: HVPs still match the dense Hessian (to float32 rounding); slopes are fitted only
    above the rounding floor, and a fit left with < 3 alphas is skipped with the reason, not failed."""
    prob = load_problem(SPEC, {"width": 6}, dtype=torch.float32)
    assert prob.dtype == torch.float32
    claims = problem_checks(prob, "quick", tmp_path, label="f32")
    hvp = [c for c in claims if c.name.startswith("HVP")]
    assert hvp and all(c.holds and not c.skipped for c in hvp), [c.detail for c in hvp]
    leading = [c for c in claims if c.name.startswith("leading-order residual")]
    second = [c for c in claims if c.name.startswith("second-order residual")]
    assert len(leading) == len(second) == 3
    assert all(c.holds and not c.skipped for c in leading), [(c.name, c.measured, c.skipped) for c in leading]
    # on this model the second-order residual (~1e-7 |g|) sits at float32 rounding: reported, not fitted
    assert all(c.holds for c in second) and any("rounding" in c.skipped for c in second)


def test_hvp_against_finite_differences_above_the_dense_limit(monkeypatch):
    prob = load_problem(SPEC, {"width": 6})
    monkeypatch.setattr(taylor_checks, "DENSE_MAX", 10)       # as if the model were too big for a dense Hessian
    claims = taylor_checks.hvp_claims_for(prob, "fd")
    assert [c.name for c in claims] == ["HVP fwd-rev = finite differences of gradients (fd)",
                                        "HVP rev-rev = finite differences of gradients (fd)"]
    assert all(c.holds for c in claims), [(c.measured, c.prediction) for c in claims]
    # and the check has teeth: an HVP that is off by 1e-4 relative fails it
    import analysis.hessian
    real = taylor_checks.hvp
    monkeypatch.setattr(taylor_checks, "hvp", lambda *a, **k: {n: v * (1 + 1e-4) for n, v in real(*a, **k).items()})
    assert not any(c.holds for c in taylor_checks.hvp_claims_for(prob, "fd"))
    assert analysis.hessian.hvp is real


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_problem(tmp_path):
    prob = load_problem(SPEC, {"width": 6}, device="cuda")
    assert prob.device.type == "cuda"
    claims = problem_checks(prob, "quick", tmp_path, label="cuda")
    assert all(c.holds for c in claims), [(c.name, c.measured) for c in claims if not c.holds]


# -- mutation tests: each reworked claim fails on a deliberately broken engine --------------------
def _maml_is_fomaml(name, loss_fn, phi, batches, alpha, **kw):
    return real_meta_gradient("fomaml" if name == "maml" else name, loss_fn, phi, batches, alpha, **kw)


def _fomaml_one_step_short(name, loss_fn, phi, batches, alpha, **kw):
    if name != "fomaml":
        return real_meta_gradient(name, loss_fn, phi, batches, alpha, **kw)
    x, y = batches
    if x.shape[0] == 2:   # k - 2 = 0 inner steps: the gradient at phi
        return grad(loss_fn)(phi, (x[-1], y[-1]))
    return real_meta_gradient("fomaml", loss_fn, phi, (x[1:], y[1:]), alpha, **kw)


def _reptile_mean(name, loss_fn, phi, batches, alpha, **kw):
    g = real_meta_gradient(name, loss_fn, phi, batches, alpha, **kw)
    if name != "reptile":
        return g
    return {n: v / batches[0].shape[0] for n, v in g.items()}


BROKEN = {"maml": _maml_is_fomaml, "fomaml": _fomaml_one_step_short, "reptile": _reptile_mean}
NAMES = {"maml": "MAML", "fomaml": "FOMAML", "reptile": "Reptile"}


@pytest.fixture(scope="module")
def small():
    prob = load_problem(SPEC, {"width": 6})
    return prob, measure_scale(prob.loss_fn, prob.phi, prob.sampler(2, prob.batch_size))


def _failing(claims):
    return {c.name for c in claims if not c.holds}


@pytest.mark.parametrize("broken", list(BROKEN))
def test_coefficient_claims_catch_a_broken_engine(small, monkeypatch, broken):
    prob, scale = small
    alpha = coefficient_alpha(scale, 2)

    def run():
        return expectation_checks.coefficient_claims_for(prob, "t", 2, 200, 200, 4, alpha, 3)[0]

    assert not _failing(run())                      # the real engine passes
    monkeypatch.setattr(analysis.expectations, "meta_gradient", BROKEN[broken])
    failing = _failing(run())
    coefficient_claims = {f"E[g_{NAMES[a]}] = c1 AvgGrad + c2 alpha AvgGradInner (t, k=2)" for a in NAMES}
    # the broken algorithm's claim fails, the other two (independent draws) still hold
    assert failing & coefficient_claims == {f"E[g_{NAMES[broken]}] = c1 AvgGrad + c2 alpha AvgGradInner (t, k=2)"}


@pytest.mark.parametrize("broken", list(BROKEN))
def test_taylor_claims_catch_a_broken_engine(small, monkeypatch, broken, tmp_path):
    prob, scale = small
    from analysis.stepsize import slope_alphas

    def run():
        fits = taylor_checks.fit_above_floor(taylor_checks.sweep_tasks(prob, slope_alphas(scale, 3, 4), (2, 3), (1, 2),
                                                                       1, 100))
        claims = taylor_checks.slope_claims_for("t", fits, "")
        claims.append(taylor_checks.breakdown_claim_for(prob, "t", 9, (2, 3), 1, 200)[0])
        return claims

    assert not _failing(run())
    monkeypatch.setattr(analysis.taylor, "meta_gradient", BROKEN[broken])
    failing = _failing(run())
    assert f"leading-order residual ~ alpha^2 ({NAMES[broken]}, t)" in failing
    assert "Leading order breaks down where the second-order term predicts (t)" in failing
    others = [a for a in NAMES if a != broken]
    assert not any(f"({NAMES[a]}, t)" in name for a in others for name in failing)


def test_to_device_keeps_integer_targets():
    prob = load_problem(SPEC, {"width": 4})
    moved = to_device(prob, "cpu", torch.float32)
    x, y = moved.sampler(2, 3)(__import__("numpy").random.default_rng(0))
    assert x.dtype == torch.float32 and moved.dtype == torch.float32
