"""Causal multi-head self-attention with TransformerLens hook points.

Hooks: `hook_q`, `hook_k`, `hook_v` `[batch, pos, head, d_head]`; `hook_rot_q`, `hook_rot_k`
(RoPE only); `hook_attn_scores`, `hook_pattern` `[batch, head, query_pos, key_pos]`; `hook_z`
`[batch, pos, head, d_head]`. Q, K and V come from one fused projection `qkv_proj`; the output
projection is `out_proj`.

TransformerLens weight views (read-only tensors that share storage with the projections, so they
follow training and in-place edits): `W_Q`, `W_K`, `W_V` `[n_heads, d_model, d_head]`, `W_O`
`[n_heads, d_head, d_model]`, `b_Q`, `b_K`, `b_V` `[n_heads, d_head]`, `b_O` `[d_model]` (zeros
when the projections have no bias). With them TransformerLens's `ActivationCache` helpers work:
`stack_head_results` gives each head's write into the residual stream, `z[:, :, h] @ W_O[h]`, and
their sum over heads plus `b_O` is `hook_attn_out`.

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
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
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
        self._register_load_state_dict_pre_hook(_rename_legacy_keys)

    # ------------------------------------------------- TransformerLens-shaped weight views
    def _qkv(self, i: int) -> torch.Tensor:
        d = self.qkv_proj.in_features
        return self.qkv_proj.weight.view(3, self.n_heads, self.d_head, d)[i].transpose(1, 2)

    def _qkv_bias(self, i: int) -> torch.Tensor:
        b = self.qkv_proj.bias
        if b is None:
            return self.qkv_proj.weight.new_zeros(self.n_heads, self.d_head)
        return b.view(3, self.n_heads, self.d_head)[i]

    @property
    def W_Q(self) -> torch.Tensor:
        """`[n_heads, d_model, d_head]`: q[..., h, :] = x @ W_Q[h] + b_Q[h]."""
        return self._qkv(0)

    @property
    def W_K(self) -> torch.Tensor:
        """`[n_heads, d_model, d_head]`."""
        return self._qkv(1)

    @property
    def W_V(self) -> torch.Tensor:
        """`[n_heads, d_model, d_head]`."""
        return self._qkv(2)

    @property
    def b_Q(self) -> torch.Tensor:
        """`[n_heads, d_head]`."""
        return self._qkv_bias(0)

    @property
    def b_K(self) -> torch.Tensor:
        """`[n_heads, d_head]`."""
        return self._qkv_bias(1)

    @property
    def b_V(self) -> torch.Tensor:
        """`[n_heads, d_head]`."""
        return self._qkv_bias(2)

    @property
    def W_O(self) -> torch.Tensor:
        """`[n_heads, d_head, d_model]`: attn_out = Σ_h z[..., h, :] @ W_O[h] + b_O."""
        return self.out_proj.weight.t().view(self.n_heads, self.d_head, -1)

    @property
    def b_O(self) -> torch.Tensor:
        """`[d_model]` (zeros without bias)."""
        b = self.out_proj.bias
        return b if b is not None else self.out_proj.weight.new_zeros(self.out_proj.out_features)

    def causal_mask(self, n: int, device: torch.device) -> torch.Tensor:
        """Boolean `(n, n)` lower-triangular mask (True = may attend), cached."""
        m = self._mask
        if m is None or m.shape[0] < n or m.device != device:
            m = self._mask = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        return m[:n, :n]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` `[batch, pos, d_model]` -> `[batch, pos, d_model]`."""
        b, n, d = x.shape
        q, k, v = self.qkv_proj(x).view(b, n, 3, self.n_heads, self.d_head).unbind(2)
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
        return self.out_proj(z.reshape(b, n, d))


_LEGACY = {"W_qkv.": "qkv_proj.", "W_O.": "out_proj."}


def _rename_legacy_keys(state_dict: dict, prefix: str, *args: object) -> None:
    """Checkpoints written before the projections were renamed (`W_qkv` -> `qkv_proj`, `W_O` ->
    `out_proj`, when `W_O` became the TransformerLens view) load unchanged."""
    for old, new in _LEGACY.items():
        for key in [k for k in state_dict if k.startswith(prefix + old)]:
            state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
