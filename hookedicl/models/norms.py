"""LayerNorm and RMSNorm with TransformerLens hook points.

Hooks: `hook_scale` `[batch, pos, 1]` (the divisor) and `hook_normalized` `[batch, pos, d_model]`
(the output, after the affine weights). With neither hooked, the fused torch kernel is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import HookPoint, is_hooked


class LayerNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (is_hooked(self.hook_scale) or is_hooked(self.hook_normalized)):
            return F.layer_norm(x, x.shape[-1:], self.w, self.b, self.eps)
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale * self.w + self.b)


class RMSNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (is_hooked(self.hook_scale) or is_hooked(self.hook_normalized)):
            return F.rms_norm(x, x.shape[-1:], self.w, self.eps)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale * self.w)


def make_norm(kind: str, d_model: int, eps: float) -> nn.Module:
    if kind == "layernorm":
        return LayerNorm(d_model, eps)
    if kind == "rmsnorm":
        return RMSNorm(d_model, eps)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; valid: layernorm, rmsnorm, none")
