"""Iterative Newton's method for the pseudo-inverse (Newton–Schulz), as used by Fu et al. (2023).

For a prefix with ``S = X_iᵀX_i`` and ``b = X_iᵀy_i``:

    M_0     = α S,          α = init_scale / λ_max(S)²
    M_{k+1} = 2 M_k − M_k S M_k
    ŵ_k     = M_k b

``M_k → S⁺`` quadratically once it is close; on an eigen-direction of ``S`` with eigenvalue λ the
error ``e_k = 1 − λ·p_k(λ)`` (``M_k = p_k(S)``) obeys ``e_{k+1} = e_k²`` from
``e_0 = 1 − αλ²``, so the iteration converges for ``0 < init_scale < 2`` and directions with
small λ need about ``log2(λ_max²/λ²)`` steps before the quadratic phase. Directions with λ = 0
stay at 0, so the limit is the min-norm least-squares solution. ``λ_max`` is computed exactly
(batched ``eigvalsh`` of each prefix Gram matrix).

Batched over prompts and prefixes with ``(batch, n_points, d, d)`` float64 tensors; the Python
loop runs over Newton iterations only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import LinearPredictor, check_int, check_real, exclusive_cumsum

__all__ = ["IterativeNewton"]


class IterativeNewton(LinearPredictor):
    """``steps`` iterations of Newton–Schulz for ``(XᵀX)⁺``, then ``ŵ = M_k Xᵀy``.

    Parameters
    ----------
    steps : int, default 10
        Number of iterations ``k`` (>= 0; 0 returns the initialisation ``α XᵀX Xᵀy``).
    init_scale : float, default 1.0
        ``α = init_scale / λ_max(XᵀX)²``; must lie in (0, 2) for convergence. At 1 the top
        eigen-direction is solved exactly by the initialisation.
    """

    name = "newton"

    def __init__(self, *, steps: int = 10, init_scale: float = 1.0) -> None:
        self.steps = check_int(self.name, "steps", steps, low=0)
        self.init_scale = check_real(self.name, "init_scale", init_scale, low=0.0, low_open=True)
        if self.init_scale >= 2.0:
            raise ValueError(f"{self.name}: hyperparameter 'init_scale' must be < 2 for the "
                             f"iteration to converge, got {init_scale!r}")

    def _weights(self, xs: Tensor, ys: Tensor) -> Tensor:
        x, y = xs.to(torch.float64), ys.to(torch.float64)
        s = exclusive_cumsum(x[..., :, None] * x[..., None, :], dim=1)   # (B, n, d, d)
        b = exclusive_cumsum(x * y[..., None], dim=1)                    # (B, n, d)
        lam_max = torch.linalg.eigvalsh(s)[..., -1]
        pos = lam_max > 0
        alpha = torch.where(pos, self.init_scale / torch.where(pos, lam_max, 1.0) ** 2, 0.0)
        m = alpha[..., None, None] * s
        for _ in range(self.steps):
            m = 2 * m - m @ s @ m
        return (m @ b[..., None])[..., 0]
