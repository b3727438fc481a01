"""Random binary decision trees (Garg et al.), evaluated for the whole batch at once."""

from __future__ import annotations

from typing import Any

import torch

from ._checks import check_int, rng
from .base import FunctionTask
from .samplers import XSampler


class DecisionTree(FunctionTask):
    """A complete binary tree of ``depth`` levels of splits (default 4) per prompt.

    Nodes are stored in heap order: the root is node 0 and node ``j`` has children ``2j + 1``
    (left) and ``2j + 2`` (right). Each of the ``2**depth - 1`` internal nodes splits on a
    coordinate drawn uniformly among the active ones and sends x right when ``x[c] > 0``; each
    of the ``2**depth`` leaves holds a value drawn from N(0, 1), so E[y²] = 1.

    params: ``{"split_coords": (batch, 2**depth - 1) int64, "leaf_values": (batch, 2**depth)}``;
    leaf ``l`` is heap node ``2**depth - 1 + l``.
    """

    name = "decision_tree"

    def __init__(
        self,
        n_dims: int,
        depth: int = 4,
        x_sampler: str | XSampler = "gaussian",
        x_sampler_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(n_dims, x_sampler, x_sampler_kwargs)
        self.depth = check_int("depth", depth, minimum=1, maximum=24)

    @property
    def n_internal(self) -> int:
        return 2**self.depth - 1

    def sample_params(self, batch_size, generator, n_dims_active):
        split = torch.randint(0, n_dims_active, (batch_size, self.n_internal), **rng(generator))
        leaves = torch.randn(batch_size, self.n_internal + 1, dtype=torch.float32, **rng(generator))
        return {"split_coords": split, "leaf_values": leaves}

    def evaluate(self, xs, params):
        self._check_evaluate(xs, params, ("split_coords", "leaf_values"))
        split, leaves = params["split_coords"], params["leaf_values"]
        batch, n_points, _ = xs.shape
        node = torch.zeros(batch, n_points, dtype=torch.long, device=xs.device)
        for _ in range(self.depth):
            coord = torch.gather(split, 1, node)  # (batch, n_points)
            value = torch.gather(xs, 2, coord.unsqueeze(-1)).squeeze(-1)
            node = 2 * node + 1 + (value > 0).long()
        return torch.gather(leaves, 1, node - self.n_internal)

    def _y_second_moment(self, n_dims_active):
        return 1.0
