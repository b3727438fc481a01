"""Random two-layer ReLU networks."""

from __future__ import annotations

import math
from typing import Any

import torch

from ._checks import active_mask, check_choice, check_int, rng
from .base import FunctionTask
from .samplers import XSampler

SCALINGS = ("garg", "campbell")


class Relu2NNRegression(FunctionTask):
    """y = c · ReLU(x W1) W2 with W1 ∈ R^{d×hidden}, W2 ∈ R^{hidden}, all entries N(0, 1).

    ``scaling`` picks c:

    * ``"garg"`` (default, Garg et al.): c = √(2 / hidden), so E[y²] = E‖x‖² (= d for
      x ~ N(0, I));
    * ``"campbell"`` (Campbell et al.): c = 1, so E[y²] = hidden · E‖x‖² / 2 (= 1000 for d = 20,
      hidden = 100).

    (Given x, each hidden pre-activation is N(0, ‖x‖²), so E[ReLU²] = E‖x‖²/2 for any x
    distribution.) Rows of W1 for inactive coordinates are zero.
    params: ``{"W1": (batch, n_dims, hidden), "W2": (batch, hidden)}``.
    """

    name = "relu_2nn_regression"

    def __init__(
        self,
        n_dims: int,
        hidden: int = 100,
        scaling: str = "garg",
        x_sampler: str | XSampler = "gaussian",
        x_sampler_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(n_dims, x_sampler, x_sampler_kwargs)
        self.hidden = check_int("hidden", hidden, minimum=1)
        self.scaling = check_choice("scaling", scaling, SCALINGS)

    @property
    def output_scale(self) -> float:
        return math.sqrt(2.0 / self.hidden) if self.scaling == "garg" else 1.0

    def sample_params(self, batch_size, generator, n_dims_active):
        w1 = torch.randn(batch_size, self.n_dims, self.hidden, dtype=torch.float32, **rng(generator))
        w2 = torch.randn(batch_size, self.hidden, dtype=torch.float32, **rng(generator))
        w1 = w1 * active_mask(self.n_dims, n_dims_active, w1.device).unsqueeze(-1)
        return {"W1": w1, "W2": w2}

    def evaluate(self, xs, params):
        self._check_evaluate(xs, params, ("W1", "W2"))
        hidden = torch.relu(torch.bmm(xs, params["W1"]))
        return torch.bmm(hidden, params["W2"].unsqueeze(-1)).squeeze(-1) * self.output_scale

    def _y_second_moment(self, n_dims_active):
        expected_sq_norm = float(self._active_second_moments(n_dims_active).sum())
        return self.output_scale**2 * self.hidden * expected_sq_norm / 2.0
