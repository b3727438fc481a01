"""Causal multi-head self-attention with TransformerLens hook points.

Hooks: `hook_q`, `hook_k`, `hook_v` `[batch, pos, head, d_head]`; `hook_rot_q`, `hook_rot_k`
(RoPE only); `hook_attn_scores`, `hook_pattern` `[batch, head, query_pos, key_pos]`; `hook_z`
`[batch, pos, head, d_head]`. Q, K and V come from one fused projection `W_qkv`.

Fast path: with softmax attention and neither `hook_attn_scores` nor `hook_pattern` hooked, the
pattern is never materialised (`scaled_dot_product_attention`). `softmax=False` gives linear
self-attention (von Oswald et al. 2023): pattern = causally masked `q·k / sqrt(d_head)`, no
normalisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import HookPoint, is_hooked
from .positional import Rotary


class Attention(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        bias: bool = True,
        rope: bool = False,
        rope_theta: float = 10000.0,
        softmax: bool = True,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.softmax = softmax
        self.W_qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.W_O = nn.Linear(d_model, d_model, bias=bias)
        self.rotary = Rotary(self.d_head, rope_theta) if rope else None
        self._mask: torch.Tensor | None = None
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        if rope:
            self.hook_rot_q = HookPoint()
            self.hook_rot_k = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()

    def causal_mask(self, n: int, device: torch.device) -> torch.Tensor:
        """Boolean `(n, n)` lower-triangular mask (True = may attend), cached."""
        m = self._mask
        if m is None or m.shape[0] < n or m.device != device:
            m = self._mask = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        return m[:n, :n]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` `[batch, pos, d_model]` -> `[batch, pos, d_model]`."""
        b, n, d = x.shape
        q, k, v = self.W_qkv(x).view(b, n, 3, self.n_heads, self.d_head).unbind(2)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        if self.rotary is not None:
            cos, sin = self.rotary.tables(n, x.device, x.dtype)
            q = self.hook_rot_q(Rotary.apply(q, cos, sin))
            k = self.hook_rot_k(Rotary.apply(k, cos, sin))
        if self.softmax and not (is_hooked(self.hook_attn_scores) or is_hooked(self.hook_pattern)):
            z = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
            ).transpose(1, 2)
        else:
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.d_head)
            mask = self.causal_mask(n, x.device)
            if self.softmax:
                scores = self.hook_attn_scores(scores.masked_fill(~mask, float("-inf")))
                pattern = self.hook_pattern(scores.softmax(dim=-1))
            else:
                scores = self.hook_attn_scores(scores.masked_fill(~mask, 0.0))
                pattern = self.hook_pattern(scores)
            z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        z = self.hook_z(z)
        return self.W_O(z.reshape(b, n, d))
