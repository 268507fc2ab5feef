"""The few-shot CNN provider of `reptile verify`, and third derivatives on a CNN against finite differences."""
from __future__ import annotations

import pytest
import torch

from analysis import fewshot_checks
from analysis.hessian import hvp, third_derivative
from reptile import tree


def test_fewshot_cnn_claims_hold_in_quick_mode(tmp_path):
    claims = fewshot_checks.checks("quick", tmp_path, False)
    assert len(claims) == 8
    assert all(c.holds for c in claims), [c.name for c in claims if not c.holds]
    assert (tmp_path / "fewshot_taylor_sweep.csv").stat().st_size > 0


def _third_derivative_by_differences(norm: str):
    """The few-shot CNN with ``norm``, one synthetic batch, seeded directions u, v, and the central
    difference ``(H(phi + h u) v - H(phi - h u) v) / 2h`` of rev-rev HVPs, h = 1e-7: small enough
    that no ReLU flips between phi - h u and phi + h u (1e-4 does flip one); on group norm these
    differences agree with both third-derivative methods to 1e-5."""
    loss_fn, phi = fewshot_checks._problem(norm)
    x, y = fewshot_checks.synthetic_batches(1)
    b = (x[0], y[0])
    g = torch.Generator().manual_seed(1)
    u = {k: torch.randn(p.shape, generator=g, dtype=p.dtype) for k, p in phi.items()}
    v = {k: torch.randn(p.shape, generator=g, dtype=p.dtype) for k, p in phi.items()}
    h = 1e-7
    fd = tree.scale(tree.sub(hvp(loss_fn, tree.add(phi, u, h), b, v, "rev-rev"),
                             hvp(loss_fn, tree.add(phi, u, -h), b, v, "rev-rev")), 1 / (2 * h))
    return loss_fn, phi, b, u, v, fd


def test_cnn_third_derivative_matches_finite_differences_of_hvps():
    loss_fn, phi, b, u, v, fd = _third_derivative_by_differences("group")
    for method in ("fwd-rev", "rev-rev"):
        t = third_derivative(loss_fn, phi, b, u, v, method=method)
        # central differences of HVPs of size ~1e2: truncation ~h^2, rounding ~1e-16 * 1e2 / h = 1e-7
        assert float(tree.norm(tree.sub(t, fd))) < 1e-5 * float(tree.norm(fd))


def test_batch_norm_third_derivatives_still_disagree_with_finite_differences():
    """Pins the README's finding: torch's third derivatives of batch norm with batch statistics
    (both fwd-rev and rev-rev) disagree with central differences of its (correct) HVPs, and with
    each other. The day torch fixes it this test fails, loudly, so that the README and
    analysis/fewshot_checks.py (which checks the second-order terms on group norm only) get updated."""
    loss_fn, phi, b, u, v, fd = _third_derivative_by_differences("batch")
    errs = {m: float(tree.norm(tree.sub(third_derivative(loss_fn, phi, b, u, v, method=m), fd)) / tree.norm(fd))
            for m in ("fwd-rev", "rev-rev")}
    # measured with torch 2.13: relative errors 0.24 (fwd-rev) and 0.38 (rev-rev), while the finite
    # differences at h = 1e-6 and 1e-7 agree to 1e-9 (|fd| = 2002, the README's figure)
    if max(errs.values()) < 1e-3:
        pytest.fail(f"torch {torch.__version__} now computes batch norm's third derivatives correctly "
                    f"(relative errors {errs}): update the README's batch-norm finding and run the second-order "
                    f"claims of analysis/fewshot_checks.py on batch norm too", pytrace=False)
    assert min(errs.values()) > 1e-3, errs
