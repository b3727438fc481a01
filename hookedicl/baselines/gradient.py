"""First-order in-context learners: full-batch GD, online SGD and GD++ (von Oswald et al. 2023).

Loss convention (GD and GD++). For a prefix of ``i`` points the full-batch loss is the *mean*

    L_i(w) = 1/(2i) Σ_{j<i} (w·x_j − y_j)²,    ∇L_i(w) = (1/i)(G_i w − b_i),

with ``G_i = Σ_{j<i} x_j x_jᵀ`` and ``b_i = Σ_{j<i} x_j y_j = X_iᵀy_i``. Hence one GD step
from 0 gives ``ŵ = (lr/i) X_iᵀ y_i``: the "η Xᵀy" of the one-step-GD literature with
``η = lr/i`` (Akyürek et al. write it as 2α Xᵀy for their loss scaling). Online SGD uses the
per-point loss ``½(w·x_j − y_j)²``. Step sizes are therefore dimensionless for GD: with
``x ~ N(0, I)`` and many points ``G_i/i ≈ I``; for short prefixes ``G_i/i`` has eigenvalues up
to ``‖x‖²`` (≈ d at i = 1), so multi-step GD needs ``lr < 2/λ_max(G_i/i)`` to not diverge.

Everything is batched over prompts and prefixes; the only Python loops run over GD steps and
over SGD points. Inputs are promoted to float64 internally and the predictions are
differentiable with respect to ``xs`` and ``ys`` (e.g. for sensitivity analyses by autograd).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import LinearPredictor, check_int, check_real, exclusive_cumsum, prefix_mask

__all__ = ["GradientDescent", "OnlineSGD", "GDPlusPlus"]


def _prefix_counts(n: int, x: Tensor) -> Tensor:
    """``1/i`` for prefix lengths ``i = 0..n-1`` (0 for the empty prefix)."""
    i = torch.arange(n, dtype=x.dtype, device=x.device)
    return torch.where(i > 0, 1.0 / i.clamp(min=1), torch.zeros_like(i))


class GradientDescent(LinearPredictor):
    """``steps`` steps of full-batch GD from ``w = 0`` on each prefix's mean squared loss.

    ``w ← w − lr · (1/i) Σ_{j<i} (w·x_j − y_j) x_j``. With the defaults (one step, lr = 1)
    ŵ = (1/i) Xᵀy, identical to :class:`~hookedicl.baselines.linear.Averaging`.

    Parameters
    ----------
    steps : int, default 1
        Number of GD steps (>= 0; 0 gives ŵ = 0).
    lr : float, default 1.0
        Step size on the mean loss (see the module docstring for stability).
    loss : {"mean", "sum"}, default "mean"
        ``"sum"`` steps on ``½ Σ_{j<i} (w·x_j − y_j)²`` instead, so one step gives
        ``ŵ = lr · Xᵀy`` with the same ``lr`` at every prefix length: what one layer of linear
        self-attention computes (von Oswald et al. 2023).
    """

    name = "gd"

    def __init__(self, *, steps: int = 1, lr: float = 1.0, loss: str = "mean") -> None:
        self.steps = check_int(self.name, "steps", steps, low=0)
        self.lr = check_real(self.name, "lr", lr, low=0.0, low_open=True)
        if loss not in ("mean", "sum"):
            raise ValueError(f"gd: loss must be 'mean' or 'sum', got {loss!r}")
        self.loss = loss

    def _weights(self, xs: Tensor, ys: Tensor) -> Tensor:
        x, y = xs.to(torch.float64), ys.to(torch.float64)
        n = x.shape[1]
        mask = prefix_mask(n, x.device).to(x.dtype)          # [i, j] = j < i
        scale = _prefix_counts(n, x) if self.loss == "mean" else torch.ones(n, dtype=x.dtype, device=x.device)
        step = (self.lr * scale)[None, :, None]
        w = torch.zeros_like(x)                               # row i: the iterate of prefix i
        for _ in range(self.steps):
            resid = (w @ x.mT - y[:, None, :]) * mask         # [b, i, j] = w_i·x_j − y_j, j < i
            w = w - step * (resid @ x)
        return w


class OnlineSGD(LinearPredictor):
    """One pass of online SGD over the prefix points, in order, from ``w = 0``.

    ``w_{j+1} = w_j − lr (w_j·x_j − y_j) x_j``; ŵ for prefix ``i`` is ``w_i`` (after points
    ``0..i-1``), so all prefixes share one trajectory. Unlike full-batch GD and least squares
    it depends on the order of the points.

    Parameters
    ----------
    lr : float, default 0.01
        Step size on the per-point loss ½(w·x − y)². Each update contracts the error along
        ``x_j`` by ``1 − lr‖x_j‖²``; it diverges when ``lr‖x‖² > 2`` (for x ~ N(0, I_d),
        ‖x‖² ≈ d, so the default is stable up to d ≈ 200; lr = 1/d is the Kaczmarz step).
    """

    name = "sgd"

    def __init__(self, *, lr: float = 0.01) -> None:
        self.lr = check_real(self.name, "lr", lr, low=0.0, low_open=True)

    def _weights(self, xs: Tensor, ys: Tensor) -> Tensor:
        x, y = xs.to(torch.float64), ys.to(torch.float64)
        B, n, d = x.shape
        w = x.new_zeros(B, d)
        rows = [w]
        for j in range(n - 1):
            err = (w * x[:, j]).sum(-1) - y[:, j]
            w = w - self.lr * err[:, None] * x[:, j]
            rows.append(w)
        return torch.stack(rows, dim=1)


class GDPlusPlus(LinearPredictor):
    """GD++ (von Oswald et al. 2023): GD with a curvature correction of the inputs at every step.

    Each step is what one layer of their trained linear self-attention model computes: a GD
    step on the targets using the current inputs and, simultaneously, a transformation of all
    inputs (context points *and* query) ``x ← (I − γ Ĝ_t) x`` where ``Ĝ_t`` is the mean
    ``(1/i) Σ_{j<i} x_j x_jᵀ`` of the *current* (already transformed) context inputs. In terms
    of the original inputs, with ``A_0 = I`` the accumulated input transform and
    ``Ĝ = G_i/i``, ``b̂ = b_i/i``:

        M_t     = A_tᵀ A_t
        ω_{t+1} = ω_t − lr · M_t (Ĝ ω_t − b̂)                 (GD step with transformed inputs)
        A_{t+1} = (I − γ A_t Ĝ A_tᵀ) A_t                    (x ← (I − γ Ĝ_t) x)

    and the prediction for query ``x`` is ``ω·x``, so ŵ = ω after ``steps`` steps. The mean
    normalisation by ``i`` matches :class:`GradientDescent` (``γ`` here is ``i`` times the γ of
    an un-normalised ``(I − γ XᵀX)``); with ``gamma = 0`` GD++ is exactly GD, and the first
    step is always a plain GD step (the transform acts from the second step on).

    Batched over prompts and prefixes with ``(batch, n_points, d, d)`` float64 tensors.

    Parameters
    ----------
    steps : int, default 2
        Number of layers/steps (>= 0).
    lr : float, default 0.1
        GD step size on the mean loss.
    gamma : float, default 0.02
        Strength of the input transformation (>= 0). The transform shrinks the large
        eigenvalues of Ĝ relative to the small ones when ``0 < γλ < 1`` for Ĝ's eigenvalues λ,
        improving the conditioning seen by the following GD steps.
    """

    name = "gd_plus_plus"

    def __init__(self, *, steps: int = 2, lr: float = 0.1, gamma: float = 0.02) -> None:
        self.steps = check_int(self.name, "steps", steps, low=0)
        self.lr = check_real(self.name, "lr", lr, low=0.0, low_open=True)
        self.gamma = check_real(self.name, "gamma", gamma, low=0.0)

    def _weights(self, xs: Tensor, ys: Tensor) -> Tensor:
        x, y = xs.to(torch.float64), ys.to(torch.float64)
        B, n, d = x.shape
        inv = _prefix_counts(n, x)
        gram = exclusive_cumsum(x[..., :, None] * x[..., None, :], dim=1) * inv[None, :, None, None]
        b = exclusive_cumsum(x * y[..., None], dim=1) * inv[None, :, None]
        w = torch.zeros_like(x)
        a = None                                             # None stands for A = I
        for t in range(self.steps):
            grad = (gram @ w[..., None])[..., 0] - b
            if a is None:
                w = w - self.lr * grad
            else:
                m = a.mT @ a
                w = w - self.lr * (m @ grad[..., None])[..., 0]
            if t + 1 < self.steps and self.gamma > 0:
                if a is None:
                    a = torch.eye(d, dtype=x.dtype, device=x.device) - self.gamma * gram
                else:
                    a = a - self.gamma * ((a @ gram @ a.mT) @ a)
        return w
