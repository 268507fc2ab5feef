"""Least-squares regression tasks on a linear model, with their exact solution sets.

Task tau: inputs ``A[m, d]`` with i.i.d. N(0, 1) entries, targets ``y = A w_tau + noise`` with
``w_tau = mean + std * z``, ``z ~ N(0, I_d)``. The minibatch loss is ``mean((x . w - y)^2)``, so
each minibatch Hessian ``(2/b) X^T X`` is constant and third derivatives vanish -- the Taylor
analysis has closed forms here. With ``m < d`` (underdetermined) the minimizers of the task
loss form the affine subspace ``W_tau = {w : A w = y} = pinv(A) y + null(A)``, of dimension
``d - m``; :meth:`LeastSquaresTask.solution_set` returns it (paper section 5.2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from .schedules import gather, minibatch_indices


@dataclass(frozen=True)
class AffineSubspace:
    """``{point + basis @ c}``: ``point[d]`` is the min-norm element, ``basis[d, r]`` orthonormal (r may be 0)."""

    point: torch.Tensor
    basis: torch.Tensor

    @property
    def dim(self) -> int:
        return self.basis.shape[1]

    def project(self, w: torch.Tensor) -> torch.Tensor:
        """Closest point of the subspace to ``w[d]`` (Euclidean): ``point + B B^T (w - point)``."""
        if w.shape != self.point.shape:
            raise ValueError(f"expected a point of shape {tuple(self.point.shape)}, got {tuple(w.shape)}")
        return self.point + self.basis @ (self.basis.T @ (w - self.point))

    def distance(self, w: torch.Tensor) -> torch.Tensor:
        """Euclidean distance ``D(w, W)`` from ``w[d]`` to the subspace."""
        return torch.linalg.vector_norm(w - self.project(w))


@dataclass(frozen=True)
class LeastSquaresTask:
    """One least-squares problem: ``inputs[m, d]``, ``targets[m, 1]``, true weights ``w[d]``."""

    inputs: torch.Tensor
    targets: torch.Tensor
    w: torch.Tensor

    def examples(self, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs, self.targets

    def minibatches(self, k: int, batch_size: int, rng: np.random.Generator,
                    schedule: str = "cycle") -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` minibatches ``(x[k, b, d], y[k, b, 1])`` of the task's ``m`` examples."""
        return gather(self.inputs, self.targets, minibatch_indices(len(self.inputs), k, batch_size, schedule, rng))

    def solution_set(self) -> AffineSubspace:
        """The minimizers of the full-task loss, ``pinv(A) y + null(A)`` (computed in float64)."""
        a = self.inputs.detach().cpu().double().numpy()
        y = self.targets.detach().cpu().double().numpy()[:, 0]
        point = np.linalg.pinv(a) @ y
        basis = scipy.linalg.null_space(a)
        like = dict(dtype=self.inputs.dtype, device=self.inputs.device)
        return AffineSubspace(torch.as_tensor(point, **like), torch.as_tensor(basis, **like))


@dataclass(frozen=True)
class LeastSquaresTaskDistribution:
    """Tasks with ``dim`` weights and ``n_points`` examples; ``n_points < dim`` is underdetermined."""

    dim: int = 10
    n_points: int = 5
    noise: float = 0.0
    mean: float = 1.0
    std: float = 1.0
    dtype: torch.dtype = torch.float64
    device: str | torch.device = "cpu"

    def __post_init__(self) -> None:
        if self.dim < 1 or self.n_points < 1:
            raise ValueError(f"dim and n_points must be >= 1, got dim={self.dim}, n_points={self.n_points}")
        if self.noise < 0 or self.std < 0:
            raise ValueError(f"noise and std must be >= 0, got noise={self.noise}, std={self.std}")

    def sample_arrays(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The draws of :meth:`sample` as float64 numpy arrays ``(w[d], inputs[m, d], targets[m])``,
        taking the same numbers from ``rng`` (callers that index minibatches in numpy before
        making tensors, e.g. the ``reptile verify`` samplers, skip the small-tensor overhead)."""
        w = self.mean + self.std * rng.standard_normal(self.dim)
        a = rng.standard_normal((self.n_points, self.dim))
        y = a @ w + self.noise * rng.standard_normal(self.n_points)
        return w, a, y

    def sample(self, rng: np.random.Generator) -> LeastSquaresTask:
        w, a, y = self.sample_arrays(rng)
        like = dict(dtype=self.dtype, device=self.device)
        return LeastSquaresTask(torch.as_tensor(a, **like), torch.as_tensor(y[:, None], **like), torch.as_tensor(w, **like))
