"""Closed-form linear estimators: min-norm least squares, ridge, averaging, and the zero predictor.

All are batched over prompts and prefixes in torch (float64 internally, float32 out); see
:mod:`hookedicl.baselines._prefix_solve` for how every prefix is solved without a loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._prefix_solve import prefix_ridge_weights
from .base import LinearPredictor, check_real, exclusive_cumsum

__all__ = ["LeastSquares", "Ridge", "Averaging", "Zero"]


class LeastSquares(LinearPredictor):
    """Min-norm least squares on each prefix: ``ŵ_i = X_i⁺ y_i``.

    For prefixes with fewer points than dimensions (``i < d``) this is the minimum-norm
    interpolant; from ``i >= d`` (full column rank) it is the ordinary least-squares solution.

    All prompts and prefixes are solved together in float64 from a few small factorizations per
    prompt (see :mod:`hookedicl.baselines._prefix_solve`); prompts whose leading points are
    rank-deficient or ill-conditioned (e.g. duplicated points) are solved exactly by an SVD of
    every prefix instead, which is slower and, where singular values repeat, not
    differentiable. Gradients through the fast path are available.

    Parameters
    ----------
    rcond : float, default 1e-6
        Singular values of a prefix design ``X_i`` at or below ``rcond * σ_max(X_i)`` are treated
        as zero (as in ``numpy.linalg.lstsq(rcond=...)``). Inputs are usually float32, whose
        relative precision (~6e-8) cannot resolve smaller singular values, hence 1e-6.
    """

    name = "least_squares"

    def __init__(self, *, rcond: float = 1e-6) -> None:
        self.rcond = check_real(self.name, "rcond", rcond, low=0.0, high=1.0, low_open=True)

    def _weights(self, xs: Tensor, ys: Tensor) -> Tensor:
        return prefix_ridge_weights(xs.to(torch.float64), ys.to(torch.float64), 0.0, self.rcond)


class Ridge(LinearPredictor):
    """Ridge regression on each prefix: ``ŵ_i = (X_iᵀX_i + αI)⁻¹ X_iᵀ y_i`` (no intercept).

    Same objective as ``sklearn.linear_model.Ridge(alpha, fit_intercept=False)``:
    ``‖y − Xw‖² + α‖w‖²`` (sum, not mean, of squared errors). For ``y = wᵀx + ε`` with
    ``w ~ N(0, τ²I)`` and ``ε ~ N(0, σ²)`` the Bayes-optimal choice is ``alpha = σ²/τ²``.

    Solved for all prompts and prefixes at once like :class:`LeastSquares`.

    Parameters
    ----------
    alpha : float, default 1.0
        Regularisation strength λ > 0 (use :class:`LeastSquares` for λ = 0).
    """

    name = "ridge"

    def __init__(self, *, alpha: float = 1.0) -> None:
        self.alpha = check_real(self.name, "alpha", alpha, low=0.0, low_open=True)

    def _weights(self, xs: Tensor, ys: Tensor) -> Tensor:
        # rcond is unused for alpha > 0 (the ridge filter s/(s²+α) needs no cut-off).
        return prefix_ridge_weights(xs.to(torch.float64), ys.to(torch.float64), self.alpha, 1e-6)


class Averaging(LinearPredictor):
    """Averaging estimator: ``ŵ_i = (1/i) Σ_{j<i} x_j y_j`` (0 for ``i = 0``).

    Equals one step of :class:`~hookedicl.baselines.gradient.GradientDescent` from 0 with
    ``lr = 1`` under its mean-loss convention. No hyperparameters.
    """

    name = "averaging"

    def __init__(self) -> None:
        pass

    def _weights(self, xs: Tensor, ys: Tensor) -> Tensor:
        x, y = xs.to(torch.float64), ys.to(torch.float64)
        s = exclusive_cumsum(x * y[..., None], dim=1)
        count = torch.arange(x.shape[1], dtype=x.dtype, device=x.device).clamp(min=1)
        return s / count[None, :, None]


class Zero(LinearPredictor):
    """Always predicts 0 (ŵ = 0); its error is E[y²], the reference level of the ICL score."""

    name = "zero"

    def __init__(self) -> None:
        pass

    def _weights(self, xs: Tensor, ys: Tensor) -> Tensor:
        return torch.zeros(xs.shape, dtype=torch.float64, device=xs.device)
