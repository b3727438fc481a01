"""Vector-valued multi-query associative recall (Park et al. 2024)."""

from __future__ import annotations

import math

import torch

from ._checks import rng
from .base import Task
from .batch import TaskBatch


def _sphere(batch: int, count: int, n_dims: int, n_active: int, generator) -> torch.Tensor:
    """``(batch, count, n_dims)`` points uniform on the sphere of radius √n_active in the active
    coordinates (zero elsewhere)."""
    v = torch.randn(batch, count, n_dims, dtype=torch.float32, **rng(generator))
    if n_active < n_dims:
        v[..., n_active:] = 0.0
    return v * (math.sqrt(n_active) / v.norm(dim=-1, keepdim=True))


class VectorMQAR(Task):
    """Recall the value stored under a key.

    Layout of a prompt with ``n_points = n_pairs + 1`` (so ``n_pairs = n_points - 1 >= 1``):

    * positions ``0 .. n_pairs - 1``: ``xs[:, i] = key_i``, ``ys[:, i] = value_i``;
    * position ``n_pairs`` (the last): ``xs[:, -1] = key_j`` for ``j`` uniform in
      ``[0, n_pairs)``, and ``ys[:, -1] = value_j`` is the target.

    Keys and values are drawn independently and uniformly on the sphere of radius √d in the
    ``d = n_dims_active`` active coordinates (zero elsewhere); the interleaved sequence seen by a
    model is ``k_1, v_1, ..., k_n, v_n, k_j, v_j`` and only the prediction at the final key is
    scored (``loss_positions = "last"``). Targets are vectors: ``y_dim = n_dims``, ys has shape
    ``(batch, n_points, n_dims)``; E‖y‖² = d (every value has squared norm d).

    ``evaluate(xs, params)`` looks each x up among the prompt's keys (largest inner product) and
    returns that key's value, which reproduces every position of the sampled ys.

    params: ``{"keys": (batch, n_pairs, n_dims), "values": (batch, n_pairs, n_dims),
    "query_index": (batch,) int64}``.
    """

    name = "vector_mqar"
    loss_positions = "last"

    def __init__(self, n_dims: int) -> None:
        super().__init__(n_dims)
        self.y_dim = self.n_dims

    def _check_sample(self, n_points, n_dims_active):
        if n_points < 2:
            raise ValueError(f"n_points must be >= 2 for vector_mqar (n_pairs + 1 query), got {n_points}")

    def _sample(self, batch_size, n_points, generator, n_dims_active):
        n_pairs = n_points - 1
        keys = _sphere(batch_size, n_pairs, self.n_dims, n_dims_active, generator)
        values = _sphere(batch_size, n_pairs, self.n_dims, n_dims_active, generator)
        query = torch.randint(0, n_pairs, (batch_size,), **rng(generator))
        rows = torch.arange(batch_size, device=keys.device)
        xs = torch.cat([keys, keys[rows, query].unsqueeze(1)], dim=1)
        ys = torch.cat([values, values[rows, query].unsqueeze(1)], dim=1)
        return TaskBatch(xs=xs, ys=ys, params={"keys": keys, "values": values, "query_index": query})

    def evaluate(self, xs, params):
        self._check_evaluate(xs, params, ("keys", "values"))
        scores = torch.bmm(xs, params["keys"].transpose(1, 2))  # (batch, m, n_pairs)
        index = scores.argmax(dim=-1, keepdim=True).expand(-1, -1, self.n_dims)
        return torch.gather(params["values"], 1, index)

    def _y_second_moment(self, n_dims_active):
        return float(n_dims_active)
