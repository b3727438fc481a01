"""Mamba mixer (Gu & Dao 2023) in pure PyTorch, numerically equal to HF `MambaMixer`.

Hooks, in forward order (all `[batch, pos, ...]`):
  hook_in_proj  `[b, L, 2*d_inner]`  in_proj output (x and gate halves)
  hook_gate     `[b, L, d_inner]`    gate branch z (before SiLU)
  hook_conv     `[b, L, d_inner]`    causal depthwise conv output (before SiLU)
  hook_x        `[b, L, d_inner]`    SSM input u = SiLU(conv)
  hook_dt       `[b, L, d_inner]`    Δ = softplus(dt_proj(...))
  hook_B, hook_C `[b, L, d_state]`
  hook_ssm_state `[b, L, d_inner, d_state]`  h_t; materialised only when hooked, and y is then
                                   recomputed from the (possibly edited) state
  hook_y        `[b, L, d_inner]`    SSM output h_t C_t + D u_t (before gating)
Output: out_proj(y * SiLU(z)).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import HookPoint, is_hooked
from .scan import ScanMethod, cuda_scan_available, selective_scan, ssm_states, y_from_state


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Causal depthwise conv along positions, channels last: what `nn.Conv1d(d, d, k, groups=d,
    padding=k - 1)` computes on `x.transpose(1, 2)`, cut to the first L outputs.

    `x` `[batch, L, d]`, `weight` `[d, 1, k]` (the Conv1d layout), `bias` `[d]` -> `[batch, L, d]`.
    k shifted multiply-adds: on CPU about 2x faster than Conv1d forward + backward at these sizes
    (no transposes; Conv1d's depthwise backward is the slow part).
    """
    k, n = weight.shape[-1], x.shape[1]
    xp = F.pad(x, (0, 0, k - 1, 0))
    w = weight[:, 0, :].t()  # [k, d]
    y = xp[:, k - 1:] * w[k - 1] if bias is None else torch.addcmul(bias, xp[:, k - 1:], w[k - 1])
    for j in range(k - 1):
        y = torch.addcmul(y, xp[:, j : j + n], w[j])
    return y


class MambaMixer(nn.Module):
    def __init__(
        self,
        d_model: int,
        *,
        d_state: int = 16,
        expand: int = 4,
        d_conv: int = 4,
        dt_rank: int | None = None,
        bias: bool = False,
        conv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.d_inner = d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        #: "auto": the fused CUDA kernel when available, else the chunked scan; the states
        #: themselves (hook_ssm_state hooked) come from the parallel scan.
        self.scan_method: ScanMethod | Literal["auto"] = "auto"
        for name in ("in_proj", "gate", "conv", "x", "dt", "B", "C", "ssm_state", "y"):
            setattr(self, f"hook_{name}", HookPoint())

    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> None:
        """Mamba's initialisation of A, D and Δ (as in `mamba_simple.py` / HF)."""
        with torch.no_grad():
            self.A_log.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
            self.D.fill_(1.0)
            std = self.dt_rank**-0.5
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def _method(self, x: torch.Tensor) -> ScanMethod:
        if self.scan_method != "auto":
            return self.scan_method
        return "cuda" if cuda_scan_available(x) else "chunked"

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """`hidden` `[batch, pos, d_model]` -> `[batch, pos, d_model]`."""
        xz = self.hook_in_proj(self.in_proj(hidden))
        x, z = xz.chunk(2, dim=-1)
        z = self.hook_gate(z)
        conv = self.hook_conv(causal_depthwise_conv(x, self.conv1d.weight, self.conv1d.bias))
        u = self.hook_x(F.silu(conv))
        dt_low, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = self.hook_dt(F.softplus(self.dt_proj(dt_low)))
        B, C = self.hook_B(B), self.hook_C(C)
        A = -torch.exp(self.A_log.float())
        if is_hooked(self.hook_ssm_state):
            method = "parallel" if self.scan_method in ("auto", "cuda", "chunked") else self.scan_method
            h = self.hook_ssm_state(ssm_states(u, dt, A, B, method=method))
            y = y_from_state(h, C, u, self.D)
        else:
            y = selective_scan(u, dt, A, B, C, self.D, method=self._method(u))
        y = self.hook_y(y)
        return self.out_proj(y * F.silu(z))
