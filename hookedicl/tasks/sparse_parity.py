"""Sparse parity: the product of k input coordinates chosen per prompt."""

from __future__ import annotations

from typing import Any

import torch

from ._checks import check_int, random_subsets
from .base import FunctionTask
from .samplers import XSampler


class SparseParity(FunctionTask):
    """x ∈ {±1}^d (default d = 10), y = ∏_{i ∈ S} x_i for a set S of ``k`` coordinates (default
    2) chosen uniformly per prompt among the active ones (Campbell et al.).

    Any x sampler may replace the default ``"rademacher"``; y is still the product of the chosen
    coordinates. E[y²] = 1 for ±1 inputs; for other samplers with independent coordinates it is
    the mean of ∏_{i∈S} E[x_i²] over all k-subsets S (a Monte Carlo estimate otherwise).

    params: ``{"support": (batch, k) int64, "mask": (batch, n_dims) bool}``.
    """

    name = "sparse_parity"

    def __init__(
        self,
        n_dims: int = 10,
        k: int = 2,
        x_sampler: str | XSampler = "rademacher",
        x_sampler_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(n_dims, x_sampler, x_sampler_kwargs)
        self.k = check_int("k", k, minimum=1, maximum=self.n_dims, maximum_name="n_dims")

    def _check_sample(self, n_points, n_dims_active):
        if n_dims_active < self.k:
            raise ValueError(f"n_dims_active={n_dims_active} must be >= k={self.k}")

    def sample_params(self, batch_size, generator, n_dims_active):
        support = random_subsets(batch_size, n_dims_active, self.k, generator)
        mask = torch.zeros(batch_size, self.n_dims, dtype=torch.bool, device=support.device)
        mask.scatter_(1, support, True)
        return {"support": support, "mask": mask}

    def evaluate(self, xs, params):
        self._check_evaluate(xs, params, ("support",))
        support = params["support"]
        index = support.unsqueeze(1).expand(-1, xs.shape[1], -1)  # (batch, n_points, k)
        return torch.gather(xs, 2, index).prod(dim=-1)

    def _y_second_moment(self, n_dims_active):
        if not self.x_sampler.independent:
            return self._monte_carlo_second_moment(n_dims_active)
        # Mean over k-subsets of the product of second moments = e_k(m) / C(n, k), with e_k the
        # elementary symmetric polynomial (computed by the standard recurrence).
        m2 = self._active_second_moments(n_dims_active).tolist()
        e = [1.0] + [0.0] * self.k
        count = [1.0] + [0.0] * self.k  # e_k of all-ones = C(n, k)
        for v in m2:
            for j in range(self.k, 0, -1):
                e[j] += e[j - 1] * v
                count[j] += count[j - 1]
        return e[self.k] / count[self.k]
