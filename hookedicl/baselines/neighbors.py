"""k-nearest-neighbour regression on each prefix, batched over prompts and prefixes."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Predictor, check_choice, check_int, check_real, prefix_mask

__all__ = ["KNearestNeighbors"]


class KNearestNeighbors(Predictor):
    """Average the targets of the ``k`` context points nearest (Euclidean) to the query.

    Prefixes with fewer than ``k`` points use all of them; prediction 0 is 0.

    Parameters
    ----------
    k : int, default 3
        Number of neighbours.
    weights : {"uniform", "distance"}, default "uniform"
        ``"distance"`` weights each neighbour by ``1 / dist**power``; when some neighbours are
        at distance 0 exactly, only those are averaged (as scikit-learn does).
    power : float, default 2.0
        Exponent for ``"distance"`` weights. The default 2 gives the inverse-squared-distance
        weighting; scikit-learn's ``KNeighborsRegressor(weights="distance")`` is ``power=1``.

    Ties in distance are broken by ``torch.topk`` (scikit-learn may pick a different one of
    several equidistant points).
    """

    name = "knn"

    def __init__(self, *, k: int = 3, weights: str = "uniform", power: float = 2.0) -> None:
        self.k = check_int(self.name, "k", k, low=1)
        self.weights = check_choice(self.name, "weights", weights, ("uniform", "distance"))
        self.power = check_real(self.name, "power", power, low=0.0, low_open=True)

    def _predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        x, y = xs.to(torch.float64), ys.to(torch.float64)
        B, n, _ = x.shape
        # exact pairwise distances (no |a|²+|b|²−2ab expansion, so duplicates give exactly 0)
        dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
        ctx = prefix_mask(n, x.device)                           # [i, j] = j < i
        dist = dist.masked_fill(~ctx, float("inf"))
        k = min(self.k, n)
        dk, idx = torch.topk(dist, k, dim=-1, largest=False)     # (B, n, k)
        valid = torch.isfinite(dk)
        yk = torch.gather(y[:, None, :].expand(B, n, n), 2, idx)
        if self.weights == "uniform":
            wk = valid.to(x.dtype)
        else:
            exact = (dk == 0) & valid
            has_exact = exact.any(-1, keepdim=True)
            safe = torch.where(valid & (dk > 0), dk, torch.ones_like(dk))
            inv = torch.where(valid & (dk > 0), safe ** (-self.power), torch.zeros_like(dk))
            wk = torch.where(has_exact, exact.to(x.dtype), inv)
        total = wk.sum(-1)
        num = (wk * yk).sum(-1)
        return torch.where(total > 0, num / torch.where(total > 0, total, 1.0), 0.0)
