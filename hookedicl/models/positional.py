"""Rotary position embedding (HF LLaMA convention: rotate the two halves of each head)."""

from __future__ import annotations

import torch
from torch import nn


class Rotary(nn.Module):
    """cos/sin tables for RoPE, cached per (length, device, dtype)."""

    def __init__(self, d_head: int, theta: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, d_head, 2, dtype=torch.float32) / d_head))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._cache: tuple[int, torch.device, torch.dtype, torch.Tensor, torch.Tensor] | None = None

    def tables(self, n: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape `(n, d_head)`."""
        c = self._cache
        if c is None or c[0] < n or c[1] != device or c[2] != dtype:
            pos = torch.arange(n, device=device, dtype=torch.float32)
            freqs = torch.outer(pos, self.inv_freq.to(device))
            emb = torch.cat([freqs, freqs], dim=-1)
            c = self._cache = (n, device, dtype, emb.cos().to(dtype), emb.sin().to(dtype))
        return c[3][:n], c[4][:n]

    @staticmethod
    def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate `x` `[batch, pos, head, d_head]` by tables `(pos, d_head)`."""
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos[:, None, :] + rotated * sin[:, None, :]
