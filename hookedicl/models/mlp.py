"""Feed-forward slots: GELU MLP (GPT-2) and SwiGLU (LLaMA).

Hooks (TransformerLens names): `hook_pre` `[batch, pos, d_mlp]` (pre-activation; the gate for
SwiGLU), `hook_pre_linear` (SwiGLU's linear branch), `hook_post` (input to the output projection).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import HookPoint

_ACTS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


class MLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int, act: str = "gelu_tanh", bias: bool = True) -> None:
        super().__init__()
        self.W_in = nn.Linear(d_model, d_mlp, bias=bias)
        self.W_out = nn.Linear(d_mlp, d_model, bias=bias)
        self.act = _ACTS[act]
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.W_out(self.hook_post(self.act(self.hook_pre(self.W_in(x)))))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_mlp: int, bias: bool = False) -> None:
        super().__init__()
        self.W_gate = nn.Linear(d_model, d_mlp, bias=bias)
        self.W_in = nn.Linear(d_model, d_mlp, bias=bias)
        self.W_out = nn.Linear(d_mlp, d_model, bias=bias)
        self.hook_pre = HookPoint()
        self.hook_pre_linear = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.hook_pre(self.W_gate(x))
        lin = self.hook_pre_linear(self.W_in(x))
        return self.W_out(self.hook_post(F.silu(gate) * lin))
