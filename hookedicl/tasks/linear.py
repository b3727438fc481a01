"""Linear function classes: dense, noisy, sparse, and linear in the squared inputs."""

from __future__ import annotations

import math
from typing import Any

import torch

from ._checks import active_mask, check_float, check_int, random_subsets, rng
from .base import FunctionTask
from .samplers import XSampler


def _apply_w(xs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-prompt inner products: ``xs`` (b, n, d), ``w`` (b, d) -> (b, n)."""
    return torch.bmm(xs, w.unsqueeze(-1)).squeeze(-1)


class LinearRegression(FunctionTask):
    """y = wᵀx with w ~ N(0, I) per prompt (zero on inactive coordinates).

    params: ``{"w": (batch, n_dims)}``. E[y²] = Σ_{i active} E[x_i²] (= d for x ~ N(0, I)).
    """

    name = "linear_regression"

    def __init__(
        self,
        n_dims: int,
        x_sampler: str | XSampler = "gaussian",
        x_sampler_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(n_dims, x_sampler, x_sampler_kwargs)

    def sample_params(self, batch_size, generator, n_dims_active):
        w = torch.randn(batch_size, self.n_dims, dtype=torch.float32, **rng(generator))
        return {"w": w * active_mask(self.n_dims, n_dims_active, w.device)}

    def evaluate(self, xs, params):
        self._check_evaluate(xs, params, ("w",))
        return _apply_w(xs, params["w"])

    def _y_second_moment(self, n_dims_active):
        return float(self._active_second_moments(n_dims_active).sum()) + self.noise_std**2


class NoisyLinearRegression(LinearRegression):
    """y = wᵀx + ε, w ~ N(0, I), ε ~ N(0, noise_std²) i.i.d. per point (default noise_std = 1).

    ``evaluate`` returns the noise-free wᵀx. E[y²] = Σ_{i active} E[x_i²] + noise_std².
    """

    name = "noisy_linear_regression"

    def __init__(
        self,
        n_dims: int,
        noise_std: float = 1.0,
        x_sampler: str | XSampler = "gaussian",
        x_sampler_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(n_dims, x_sampler, x_sampler_kwargs)
        self.noise_std = check_float("noise_std", noise_std, minimum=0.0)


class SparseLinearRegression(FunctionTask):
    """y = wᵀx where w ~ N(0, I) is restricted to ``k`` coordinates chosen uniformly per prompt
    among the active ones (default k = 3, Garg et al.; no rescaling).

    params: ``{"w": (batch, n_dims), "mask": (batch, n_dims) bool}`` with exactly ``k`` True
    entries per row. E[y²] = (k / n_active) Σ_{i active} E[x_i²] (= k for x ~ N(0, I)).
    """

    name = "sparse_linear_regression"

    def __init__(
        self,
        n_dims: int,
        k: int = 3,
        x_sampler: str | XSampler = "gaussian",
        x_sampler_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(n_dims, x_sampler, x_sampler_kwargs)
        self.k = check_int("k", k, minimum=1, maximum=self.n_dims, maximum_name="n_dims")

    def _check_sample(self, n_points, n_dims_active):
        if n_dims_active < self.k:
            raise ValueError(f"n_dims_active={n_dims_active} must be >= k={self.k}")

    def sample_params(self, batch_size, generator, n_dims_active):
        w = torch.randn(batch_size, self.n_dims, dtype=torch.float32, **rng(generator))
        support = random_subsets(batch_size, n_dims_active, self.k, generator)
        mask = torch.zeros(batch_size, self.n_dims, dtype=torch.bool, device=w.device)
        mask.scatter_(1, support, True)
        return {"w": w * mask, "mask": mask}

    def evaluate(self, xs, params):
        self._check_evaluate(xs, params, ("w",))
        return _apply_w(xs, params["w"])

    def _y_second_moment(self, n_dims_active):
        m2 = self._active_second_moments(n_dims_active)
        return self.k * float(m2.mean())


class QuadraticRegression(LinearRegression):
    """y = wᵀ(x ⊙ x) / √3 with w ~ N(0, I) (Garg et al.'s quadratic regression).

    The 1/√3 makes E[y²] = Σ_{i active} E[x_i⁴] / 3 equal to d for x ~ N(0, I) (E[x⁴] = 3).
    params: ``{"w": (batch, n_dims)}``.
    """

    name = "quadratic_regression"

    def evaluate(self, xs, params):
        self._check_evaluate(xs, params, ("w",))
        return _apply_w(xs * xs, params["w"]) / math.sqrt(3.0)

    def _y_second_moment(self, n_dims_active):
        return float(self._active_fourth_moments(n_dims_active).sum()) / 3.0
