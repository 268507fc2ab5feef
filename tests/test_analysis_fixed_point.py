"""Reptile's fixed point on lines where inner steps are not projections (analysis.fixed_point_checks)."""
from __future__ import annotations

import numpy as np

import analysis.fixed_point_checks as F
from reptile.algorithms import meta_gradient as real_meta_gradient


def test_closed_form_fixed_point_equals_the_composed_affine_maps():
    """w*_k from the beta-weighted formula against an independent computation: compose the k-step
    SGD maps T_tau^k(w) = M_tau w + m_tau as matrices and solve mean_tau (w - T_tau^k(w)) = 0."""
    a, y = F.tasks()
    for k in (1, 2, 5, 20):
        lhs, rhs = np.zeros((2, 2)), np.zeros(2)
        for ai, yi in zip(a, y):
            step_m = np.eye(2) - 2 * F.ALPHA * np.outer(ai, ai)
            step_b = 2 * F.ALPHA * ai * yi
            m, b = np.eye(2), np.zeros(2)
            for _ in range(k):
                m, b = step_m @ m, step_m @ b + step_b
            lhs += np.eye(2) - m
            rhs += b
        # a 2x2 solve either way: float64 rounding only
        np.testing.assert_allclose(F.reptile_fixed_point(a, y, k), np.linalg.solve(lhs, rhs), rtol=1e-10, atol=1e-12)


def test_claims_hold_and_fail_on_a_reptile_one_step_short(tmp_path, monkeypatch):
    claims = F.checks("quick", tmp_path, False)
    assert all(c.holds for c in claims), [(c.name, c.measured) for c in claims if not c.holds]

    def short(name, loss_fn, phi, batches, alpha, **kw):   # k - 1 inner steps
        return real_meta_gradient(name, loss_fn, phi, (batches[0][1:], batches[1][1:]), alpha, **kw)

    monkeypatch.setattr(F, "meta_gradient", short)
    assert not F.checks("quick", tmp_path, False)[0].holds
