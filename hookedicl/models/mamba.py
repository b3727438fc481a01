"""Mamba mixer (Gu & Dao 2023) in pure PyTorch, numerically equal to HF `MambaMixer`.

Hooks, in forward order (all `[batch, pos, ...]`; the names of TransformerLens 4.3's SSM
vocabulary where it has one: `hook_ssm_dt`, `hook_ssm_write`, `hook_ssm_state`):
  hook_in_proj   `[b, L, 2*d_inner]`  in_proj output (x and gate halves)
  hook_gate      `[b, L, d_inner]`    gate branch z (before SiLU)
  hook_conv      `[b, L, d_inner]`    causal depthwise conv output (before SiLU)
  hook_x         `[b, L, d_inner]`    SSM input u = SiLU(conv)
  hook_ssm_dt    `[b, L, d_inner]`    Δ = softplus(dt_proj(...))
  hook_B, hook_C `[b, L, d_state]`
  hook_ssm_write `[b, L, d_inner, d_state]`  the per-step write Δ_t u_t ⊗ B_t; when hooked, the
                                   recurrence h_t = exp(Δ_t A) ⊙ h_{t-1} + write_t is run from the
                                   (possibly edited) writes, so an edit carries forward
  hook_ssm_state `[b, L, d_inner, d_state]`  the post-scan state h_t; when hooked, y is computed
                                   from the (possibly edited) states, so an edit at t changes y_t only
  hook_y         `[b, L, d_inner]`    SSM output h_t C_t + D u_t (before gating)
Output: out_proj(y * SiLU(z)).

The writes and states are materialised only when `hook_ssm_write` or `hook_ssm_state` is hooked
(a hook added by `run_with_hooks`, `hooks()`, or `run_with_cache` whose names_filter lets them
through); otherwise the fast scan (`scan_method`) computes y without them.

`compute_effective_attention` makes the mixer a TransformerLens `SSMMixerProtocol`, so
`ActivationCache.compute_ssm_effective_attention(layer)` works for a Mamba in a block's `mixer`
slot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import MAMBA_HOOKS, HookPoint, is_hooked
from .scan import (
    ScanMethod, cuda_scan_available, effective_attention, selective_scan, ssm_states, ssm_write, states_from_writes,
    y_from_state,
)


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
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if not dt_init_floor > 0:
            raise ValueError(f"dt_init_floor must be > 0, got {dt_init_floor}")
        #: Δ at init is log-uniform in [dt_min, dt_max], clamped below at dt_init_floor
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
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
        #: "auto": the fused CUDA kernel when available, else the chunked scan; the writes and
        #: states themselves (hook_ssm_write / hook_ssm_state hooked) come from the parallel scan.
        self.scan_method: ScanMethod | Literal["auto"] = "auto"
        for name in MAMBA_HOOKS:
            setattr(self, name, HookPoint())

    @property
    def A(self) -> torch.Tensor:
        """The state matrix A = −exp(A_log) `(d_inner, d_state)`, float32, as the scan uses it."""
        return -torch.exp(self.A_log.float())

    def reset_ssm_parameters(self) -> None:
        """Mamba's initialisation of A, D and Δ (as in `mamba_simple.py` / HF): A_log = log(1..d_state)
        per channel, D = 1, dt_proj.weight ~ U(±dt_rank^-½), and dt_proj.bias = softplus⁻¹(Δ) with
        Δ = max(exp(U(log dt_min, log dt_max)), dt_init_floor) per channel."""
        with torch.no_grad():
            self.A_log.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
            self.D.fill_(1.0)
            std = self.dt_rank**-0.5
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            lo, hi = math.log(self.dt_min), math.log(self.dt_max)
            dt = torch.exp(torch.rand(self.d_inner) * (hi - lo) + lo).clamp(min=self.dt_init_floor)
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
        dt = self.hook_ssm_dt(F.softplus(self.dt_proj(dt_low)))
        B, C = self.hook_B(B), self.hook_C(C)
        A = self.A
        hook_write, hook_state = is_hooked(self.hook_ssm_write), is_hooked(self.hook_ssm_state)
        if hook_write or hook_state:
            method = "sequential" if self.scan_method == "sequential" else "parallel"
            if hook_write:
                h = states_from_writes(dt, A, self.hook_ssm_write(ssm_write(u, dt, B)), method=method)
            else:
                h = ssm_states(u, dt, A, B, method=method)
            y = y_from_state(self.hook_ssm_state(h), C, u, self.D)
        else:
            y = selective_scan(u, dt, A, B, C, self.D, method=self._method(u))
        y = self.hook_y(y)
        return self.out_proj(y * F.silu(z))

    # ------------------------------------------- TransformerLens SSMMixerProtocol
    def _hook_prefix(self) -> str:
        """`blocks.{l}.{slot}.`: where this mixer's hooks sit in its model."""
        name = self.hook_ssm_dt.name
        if not name:
            raise ValueError("this MambaMixer's hook points have no names: it is not part of a hooked model")
        return name[: -len("hook_ssm_dt")]

    def compute_effective_attention(
        self,
        cache: Mapping[str, torch.Tensor] | Any,
        layer_idx: int,
        include_dt_scaling: bool = False,
        per_state_coord: bool = False,
        *,
        channels: Sequence[int] | None = None,
        reduce: Literal["mean", "abs_mean"] | None = None,
    ) -> torch.Tensor:
        """This mixer's effective (hidden) attention from a cache, float64 (TransformerLens's
        `SSMMixerProtocol`; formula and options in `hookedicl.models.scan.effective_attention`).

        Reads `blocks.{layer_idx}.{slot}.hook_ssm_dt`, `hook_B` and `hook_C` from `cache` (a dict
        or a TransformerLens `ActivationCache`) and A from the module; no forward is run.

        Returns `[batch, d_inner, query_pos, key_pos]` (TransformerLens's Mamba-1 layout), or
        `[batch, d_inner, d_state, query_pos, key_pos]` with `per_state_coord=True`; causal
        (zero above the diagonal). With `include_dt_scaling=True`,
        `einsum("bcts,bsc->btc", M, hook_x) + D * hook_x` is `hook_y`. `channels` selects channels
        and `reduce` ("mean" / "abs_mean") averages over them (dropping that axis).
        """
        prefix = self._hook_prefix()
        if not prefix.startswith(f"blocks.{layer_idx}."):
            raise ValueError(f"this Mamba mixer is {prefix[:-1]}, not in block layer_idx={layer_idx}")
        tensors = []
        for hook in ("hook_ssm_dt", "hook_B", "hook_C"):
            key = prefix + hook
            if key not in cache:
                raise KeyError(f"the effective attention needs {key!r} in the cache; cache it with run_with_cache")
            tensors.append(cache[key])
        dt, B, C = tensors
        return effective_attention(
            dt, self.A.detach(), B, C, include_dt_scaling=include_dt_scaling, per_state_coord=per_state_coord,
            channels=channels, reduce=reduce,
        )
