"""The theory check: measures the claims of the Reptile paper's section 5 on any LossFn.

Public entry points (see each module for shapes and equations):

* ``analysis.hvp(loss_fn, phi, batch, v, method="auto")``, ``hvp_fn`` (reusable, compilable) and
  :class:`HVPOperator`,
  ``dense_hessian``, ``hessian_operator``, ``top_eigenvalues``, ``power_iteration``,
  ``third_derivative`` (module :mod:`analysis.hessian`);
* :mod:`analysis.taylor`: ``leading_order``, ``second_order``, ``measured``, ``expand``,
  ``alpha_sweep``, ``slopes``, ``breakdown``;
* :mod:`analysis.expectations`: ``avg_grad``, ``avg_grad_inner``, ``expected_meta_gradients``,
  ``monte_carlo``, ``coefficient_table``;
* :mod:`analysis.closed_forms` (least squares), :mod:`analysis.problems` (embedded problems);
* :mod:`analysis.verify` and :mod:`analysis.cli` (``reptile verify``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from reptile.lazy import lazy_getattr

# names are imported on first use (PEP 562), so that `reptile --help`, which loads analysis.cli
# through the verify entry point, does not import torch
_NAMES = {"avg_grad": "expectations", "avg_grad_inner": "expectations", "expected_meta_gradients": "expectations",
          **{n: "hessian" for n in ("HVPOperator", "dense_hessian", "hessian_operator", "hvp", "hvp_fn",
                                    "power_iteration", "third_derivative", "top_eigenvalues")}}


#: a public name (imported from its submodule on first use) or a submodule ``<package>.<name>``
__getattr__ = lazy_getattr(__name__, _NAMES, globals())


if TYPE_CHECKING:
    from . import closed_forms, expectations, taylor
    from .expectations import avg_grad, avg_grad_inner, expected_meta_gradients
    from .hessian import (HVPOperator, dense_hessian, hessian_operator, hvp, hvp_fn, power_iteration,
                          third_derivative, top_eigenvalues)

__all__ = ["hvp", "hvp_fn", "HVPOperator", "dense_hessian", "hessian_operator", "top_eigenvalues", "power_iteration",
           "third_derivative", "taylor", "expectations", "closed_forms", "avg_grad", "avg_grad_inner",
           "expected_meta_gradients"]
