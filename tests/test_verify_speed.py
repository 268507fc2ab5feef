"""The speed-ups of ``reptile verify`` (issue 17) change no result.

Each faster path is compared with the slower computation it replaced: the least-squares sampler
(numpy indexing) with ``dist.sample(rng).minibatches(...)`` bit for bit, the breakdown
prediction's Gram-matrix evaluation with the per-alpha loop, the vmapped batched Reptile with a
Python loop over the tasks.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import taylor_checks
from analysis.manifolds import batched_reptile_gradients
from analysis.problems import least_squares_problem
from provider_package import provider_package
from reptile import tree
from reptile.algorithms import meta_gradient
from reptile.losses import make_loss
from reptile.models import LinearModel


@pytest.mark.parametrize("dim,n_points", [(10, 20), (3, 7)])
def test_least_squares_sampler_draws_the_same_batches_bit_for_bit(dim, n_points):
    prob = least_squares_problem(0, dim=dim, n_points=n_points)
    dist, d = prob.distribution, prob.info["input_scales"]
    for k, b in [(1, 5), (2, 5), (3, 5), (4, 5), (2, n_points)]:
        sampler = prob.sampler(k, b)
        for s in range(40):
            x, y = sampler(np.random.default_rng([2027, s]))
            rng = np.random.default_rng([2027, s])             # the generic path it replaced
            x0, y0 = dist.sample(rng).minibatches(k, b, rng, "replacement")
            x0 = x0 * d
            assert x.dtype == x0.dtype == torch.float64 and y.dtype == y0.dtype
            assert x.shape == x0.shape and y.shape == y0.shape
            assert torch.equal(x, x0) and torch.equal(y, y0), (k, b, s)


def test_sample_arrays_are_the_draws_of_sample():
    dist = least_squares_problem(0).distribution
    w, a, y = dist.sample_arrays(np.random.default_rng(5))
    task = dist.sample(np.random.default_rng(5))
    assert np.array_equal(task.w.numpy(), w) and np.array_equal(task.inputs.numpy(), a)
    assert np.array_equal(task.targets.numpy()[:, 0], y)


def _plain_draws(sampler, seed, start, stop):
    part = [sampler(np.random.default_rng([seed, s])) for s in range(start, stop)]
    return torch.stack([x for x, _ in part]), torch.stack([y for _, y in part])


@pytest.mark.parametrize("dim,n_points", [(10, 20), (3, 7)])
def test_many_draws_equal_the_plain_sampler_bit_for_bit(dim, n_points):
    prob = least_squares_problem(0, dim=dim, n_points=n_points)
    for k, b in [(1, 1), (2, 5), (3, 5), (4, 5), (2, n_points - 1), (2, n_points)]:
        sampler = prob.sampler(k, b)
        x, y = sampler.many(2031, 3, 603)
        xr, yr = _plain_draws(sampler, 2031, 3, 603)
        assert x.dtype == xr.dtype and torch.equal(x, xr) and torch.equal(y, yr), (k, b)
        assert sampler.many.trusted == (b < n_points)      # b = m: drawn the plain way


def test_many_draws_fall_back_to_the_plain_sampler(monkeypatch):
    from analysis import draws

    sampler = least_squares_problem(0).sampler(3, 5)
    xr, yr = _plain_draws(sampler, 7, 0, 50)
    # every draw "unsure" (as when Lemire's method might have rejected): each redrawn the plain way
    real = draws.choice_integers
    monkeypatch.setattr(draws, "choice_integers", lambda raw, bounds: (real(raw, bounds)[0], np.ones(len(raw), bool)))
    x, y = sampler.many(7, 0, 50)
    assert torch.equal(x, xr) and torch.equal(y, yr)
    # numpy drawing differently from what analysis.draws assumes: the self-check falls back for good
    monkeypatch.setattr(draws, "choice_integers", lambda raw, bounds: (real(raw, bounds)[0] // 2, real(raw, bounds)[1]))
    sampler = least_squares_problem(0).sampler(3, 5)
    x, y = sampler.many(7, 0, 50)
    assert torch.equal(x, xr) and torch.equal(y, yr) and sampler.many.trusted is False


def test_sample_many_uses_many_draws_and_gives_the_same_samples():
    from analysis import expectations

    prob = least_squares_problem(0)
    sampler = prob.sampler(4, 5)

    def plain(rng):
        return sampler(rng)                                # no .many: one draw at a time

    per = lambda x, y: {"v": torch.cat([x.reshape(-1), y.reshape(-1)])}   # noqa: E731
    a = expectations.sample_many(per, sampler, 300, seed=11, chunk=128)["v"]
    b = expectations.sample_many(per, plain, 300, seed=11, chunk=128)["v"]
    assert torch.equal(a, b)


def _first_above_loop(c, grid, threshold):
    """The per-alpha loop ``breakdown_claim_for`` ran before (the reference)."""
    err = np.array([float((a * a * c[2]).norm() / (c[0] + a * c[1] + a * a * c[2]).norm()) for a in grid])
    above = np.nonzero(err > threshold)[0]
    return float(grid[above[0]]) if above.size else float("nan")


def _same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == b


def test_first_above_equals_the_loop_on_random_coefficients():
    gen = torch.Generator().manual_seed(0)
    for trial in range(30):
        p = [5, 50, 4353][trial % 3]
        c = [torch.randn(p, generator=gen, dtype=torch.float64) * float(10.0 ** torch.randint(-3, 4, (1,), generator=gen))
             for _ in range(3)]
        grid = np.geomspace(1e-4, 1e2, 3000) * np.sqrt(float(c[0].norm()) / float(c[2].norm()))
        assert _same(taylor_checks.first_above(c, grid, 0.1), _first_above_loop(c, grid, 0.1)), trial


def test_first_above_equals_the_loop_in_hard_cases():
    gen = torch.Generator().manual_seed(1)
    c0, c1 = torch.randn(40, generator=gen, dtype=torch.float64), torch.randn(40, generator=gen, dtype=torch.float64)
    grid = np.geomspace(1e-3, 1e1, 3000)
    cases = {
        "c2 = 0 (exact leading order: never crosses)": [c0, c1, torch.zeros(40, dtype=torch.float64)],
        "c0 + a c1 + a^2 c2 = 0 at a grid point (cancellation)": [c0, -c0 / grid[1500] - grid[1500] * c1, c1],
        "parallel coefficients": [c0, -2.0 * c0, 0.9 * c0],
    }
    for name, c in cases.items():
        assert _same(taylor_checks.first_above(c, grid, 0.1), _first_above_loop(c, grid, 0.1)), name
    # strong cancellation (c0 + a c1 ~ 0 near the crossing): the Gram matrix alone misplaces the
    # crossing here (in most of these draws); the points near the threshold are re-evaluated directly
    for trial in range(12):
        a_star = float(grid[1500])
        c1 = -c0 / a_star + 10.0 ** -(4 + trial % 5) * torch.randn(40, generator=gen, dtype=torch.float64)
        c2 = 10.0 ** -(3 + trial % 6) * torch.randn(40, generator=gen, dtype=torch.float64)
        c = [c0, c1, c2]
        t = taylor_checks.second_order_error(c, float(grid[1500 - 3 * trial]))
        for thr in (t, np.nextafter(t, 0), np.nextafter(t, 1)):
            assert _same(taylor_checks.first_above(c, grid, thr), _first_above_loop(c, grid, thr)), trial
    # the threshold exactly at a grid point's error: decided by the direct evaluation, as the loop did
    c = [c0, c1, torch.randn(40, generator=gen, dtype=torch.float64)]
    t = taylor_checks.second_order_error(c, float(grid[700]))
    for thr in (t, np.nextafter(t, 0), np.nextafter(t, 1)):
        assert _same(taylor_checks.first_above(c, grid, thr), _first_above_loop(c, grid, thr))


def test_breakdown_predictions_unchanged_on_the_sine_mlp():
    from analysis import taylor
    from analysis.problems import sine_problem

    prob = sine_problem(0)
    batches = prob.sampler(3, prob.batch_size)(np.random.default_rng([200, 0]))
    exp = taylor.expand(prob.loss_fn, prob.phi, batches, 2)
    for name in taylor.ALGORITHMS:
        c = [tree.flatten(p).double() for p in exp.coefficients(name)]
        grid = np.geomspace(1e-4, 1e2, 3000) * np.sqrt(float(c[0].norm()) / float(c[2].norm()))
        assert _same(taylor_checks.first_above(c, grid, 0.1), _first_above_loop(c, grid, 0.1)), name


def test_batched_reptile_gradients_match_the_loop_over_tasks():
    loss_fn = make_loss(LinearModel(3).double(), "mse")
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 5, 2, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(6, 5, 2, 1, generator=gen, dtype=torch.float64)
    phi = {"linear.weight": torch.randn(1, 3, generator=gen, dtype=torch.float64)}
    got = batched_reptile_gradients(loss_fn, 0.3)(phi, x, y)["linear.weight"]
    ref = torch.stack([meta_gradient("reptile", loss_fn, phi, (x[i], y[i]), 0.3)["linear.weight"] for i in range(6)])
    # float64: the batched matmuls may sum in another order, a few eps relative at most
    torch.testing.assert_close(got, ref, rtol=1e-13, atol=1e-14)


# -- providers in 2 processes (reptile verify --jobs) -----------------------------------------------
PROVIDER_MODULES = {
    "slow": """
        import time
        from analysis.claims import Claim
        def checks(mode, out_dir, progress):
            time.sleep(1.5)   # keeps the parent busy, so the worker takes the next provider
            (out_dir / "slow.csv").write_text("a\\n1\\n")
            return [Claim("slow holds", 1.0, "1", True)]
    """,
    "killer": """
        import multiprocessing, os
        from analysis.claims import Claim
        def checks(mode, out_dir, progress):
            if multiprocessing.parent_process() is not None:   # in a worker: die without a word
                os._exit(3)
            return [Claim("killer ran in the parent", 1.0, "1", True)]
    """,
    "crash": """
        def checks(mode, out_dir, progress):
            raise RuntimeError("boom in provider")
    """,
    "threads": """
        import torch
        from analysis.claims import Claim
        def checks(mode, out_dir, progress):
            n = torch.get_num_threads()
            torch.set_num_threads(2)           # must not leak into the next provider
            return [Claim("threads at start", n, "1", n == 1)]
    """,
}


@pytest.fixture()
def fake_providers(tmp_path, monkeypatch):
    from analysis import verify

    provider_package(tmp_path, monkeypatch, "speedproviders", PROVIDER_MODULES)
    monkeypatch.setattr(verify, "COST_HINT", {**verify.COST_HINT, "speedproviders.slow": 100.0,
                                              "speedproviders.killer": 90.0})
    return "speedproviders"


def _fork_available() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


needs_fork = pytest.mark.skipif(not _fork_available(), reason="--jobs > 1 forks worker processes")


@needs_fork
def test_two_processes_give_the_same_claims_files_and_order(tmp_path):
    from analysis import fewshot_checks, fixed_point_checks, verify

    mods = [fixed_point_checks.checks, fewshot_checks.checks]
    one = verify.run_verify("quick", tmp_path / "one", providers=mods, jobs=1)
    two = verify.run_verify("quick", tmp_path / "two", providers=mods, jobs=2)
    assert one.jobs == 1 and two.jobs == 2
    assert [p.module for p in two.providers] == [p.module for p in one.providers]   # report order, not finish order
    assert [(c.name, c.measured, c.prediction, c.holds, c.detail) for c in two.claims] == \
        [(c.name, c.measured, c.prediction, c.holds, c.detail) for c in one.claims]
    files = sorted(p.name for p in (tmp_path / "one").glob("*.csv"))
    assert files == sorted(p.name for p in (tmp_path / "two").glob("*.csv")) and "claims.csv" in files
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert two.cpu_seconds > 0 and all(p.cpu_seconds > 0 for p in two.providers)
    assert "(2 processes)" in (tmp_path / "two" / "report.md").read_text()


@needs_fork
def test_a_worker_that_dies_or_raises_becomes_a_failing_claim(tmp_path, fake_providers):
    from analysis import verify

    names = [f"{fake_providers}.{m}" for m in ("slow", "killer", "crash")]
    res = verify.run_verify("quick", tmp_path, providers=names, jobs=2)
    by = {p.module: p for p in res.providers}
    assert [p.module for p in res.providers] == names
    assert by[names[0]].claims[0].holds
    killed = by[names[1]].claims[0]      # taken by the worker while the parent ran "slow"
    assert not killed.holds and killed.name == f"{names[1]} ran" and "exited with code 3" in killed.detail
    crashed = by[names[2]].claims[0]
    assert not crashed.holds and "boom in provider" in crashed.detail
    assert not res.ok and (tmp_path / "report.md").exists()


def test_each_provider_starts_from_the_run_thread_count(tmp_path, fake_providers):
    from analysis import verify

    res = verify.run_verify("quick", tmp_path, providers=[f"{fake_providers}.threads"] * 2, jobs=1)
    assert [c.measured for c in res.claims] == [1, 1] and res.ok
    assert torch.get_num_threads() == 1


def test_jobs_must_be_a_positive_whole_number(tmp_path):
    from analysis import verify

    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="jobs"):
            verify.run_verify("quick", tmp_path, providers=["analysis.fixed_point_checks"], jobs=bad)


def test_default_jobs_follows_cpus_and_load(monkeypatch):
    import os

    from analysis import verify
    from reptile import threads

    monkeypatch.setattr(verify, "_can_fork", lambda: True)
    for cpus, load, want in [(1, 0.0, 1), (2, 0.0, 2), (2, 0.5, 2), (2, 1.2, 1), (8, 5.0, 2), (8, 7.0, 1)]:
        monkeypatch.setattr(threads, "available_cpus", lambda c=cpus: c)
        monkeypatch.setattr(os, "getloadavg", lambda v=load: (v, v, v))
        assert verify.default_jobs() == want, (cpus, load)
    monkeypatch.setattr(verify, "_can_fork", lambda: False)
    assert verify.default_jobs() == 1


def test_cli_jobs_flag(tmp_path, fake_providers, capsys, monkeypatch):
    import argparse

    from analysis import cli, verify

    parser = argparse.ArgumentParser(prog="reptile")
    cli.register(parser.add_subparsers(dest="command", required=True))
    assert parser.parse_args(["verify"]).jobs is None                  # None: verify.default_jobs()
    for bad in ("0", "-2", "x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["verify", "--jobs", bad])
    monkeypatch.setattr(verify, "OPTIONAL_PROVIDERS", verify.OPTIONAL_PROVIDERS + [f"{fake_providers}.threads"])
    seen = []
    real = verify.run_verify
    monkeypatch.setattr(verify, "run_verify", lambda *a, **k: seen.append(k["jobs"]) or real(*a, **k))
    args = parser.parse_args(["verify", "--quick", "--out", str(tmp_path), "--no-progress", "--jobs", "1",
                              "--only", f"{fake_providers}.threads"])
    assert cli.run(args) == 0 and seen == [1]
    assert "in 2 processes" not in capsys.readouterr().out


@needs_fork
def test_output_printed_before_the_run_is_not_repeated_by_a_worker(tmp_path):
    # a forked child flushes its copy of the parent's buffers when it ends, unless they were flushed
    # before the fork (multiprocessing does)
    import subprocess
    import sys

    code = ("import sys; print('printed once', end=''); "
            "from analysis import verify, fewshot_checks, fixed_point_checks; "
            f"verify.run_verify('quick', {str(tmp_path)!r}, providers=[fixed_point_checks.checks, "
            "fewshot_checks.checks], jobs=2)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("printed once") == 1


def test_reptile_vs_projection_many_matches_task_by_task():
    from analysis import manifold_checks
    from analysis.manifolds import reptile_vs_projection, reptile_vs_projection_many, solution_projection

    tasks, phis, loss_fn = manifold_checks._ls_setup(4, seed=3)
    ks = [1, 3, 10, 60]
    projs = [solution_projection(t, p).point for t, p in zip(tasks, phis)]
    alphas = [manifold_checks.stable_alpha(t) for t in tasks]
    for batch in (manifold_checks.M, 1):
        batches = [t.minibatches(max(ks), batch, np.random.default_rng([1, i]), "cycle") for i, t in enumerate(tasks)]
        got = reptile_vs_projection_many(loss_fn, phis, batches, alphas, ks, projs)
        ref = [reptile_vs_projection(loss_fn, p, b, a, ks, q) for p, b, a, q in zip(phis, batches, alphas, projs)]
        for g_task, r_task in zip(got, ref):
            for g, r in zip(g_task, r_task):
                # float64, the same operations batched: only the rounding of a few sums can differ (measured
                # <= 5e-16 on these O(1) ratios); a wrong step size or minibatch would differ by >= 1e-3
                assert g.k == r.k
                assert abs(g.cosine - r.cosine) <= 1e-13 and abs(g.relative_norm - r.relative_norm) <= 1e-13
                assert abs(g.relative_error - r.relative_error) <= 1e-13
    # minibatches of different shapes: task by task, the same numbers exactly
    batches = [tasks[0].minibatches(20, 5, np.random.default_rng(0), "cycle"),
               tasks[1].minibatches(20, 1, np.random.default_rng(1), "cycle")]
    got = reptile_vs_projection_many(loss_fn, phis[:2], batches, alphas[:2], [1, 20], projs[:2])
    ref = [reptile_vs_projection(loss_fn, p, b, a, [1, 20], q) for p, b, a, q in zip(phis, batches, alphas, projs)]
    assert got == ref
    with pytest.raises(ValueError):
        reptile_vs_projection_many(loss_fn, phis[:2], batches, alphas[:1], [1, 20], projs[:2])
