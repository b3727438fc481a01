"""A 2-layer ReLU network trained from scratch on every prompt and prefix (batched Adam)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Predictor, check_int, check_real

__all__ = ["ReLUNet"]


class ReLUNet(Predictor):
    """``f(x) = a·ReLU(W x + c) + e`` with ``hidden`` units, fitted by Adam on each prefix.

    One independent network per (prompt, prefix length ``i >= 1``), all trained together as
    one batched computation (their losses are summed and Adam is elementwise, so each network
    gets exactly the update it would get alone). Each step draws ``batch_size`` context points
    uniformly with replacement from the prefix, and minimises their mean squared error. Weights use PyTorch's ``nn.Linear``
    initialisation (uniform in ±1/√fan_in for weights and biases).

    Published settings: Garg et al. (2022) use hidden 100, Adam, 5000 steps, batch 10, lr 5e-3
    (5e-2 on linear data); Campbell et al. (2024) use 1000 steps with one random context point
    per step (``batch_size=1``). The default here is deliberately cheaper (500 steps) so that
    evaluation batches finish in seconds to minutes on a CPU (measured: about 40 s for 64 prompts
    of 41 points with d = 20, one torch thread, on a busy 2-core machine; time grows linearly
    with steps and with batch·n_points); pass ``steps=5000`` to reproduce Garg.

    Parameters
    ----------
    hidden : int, default 100
    steps : int, default 500
    lr : float, default 5e-3
    batch_size : int or None, default 10
        Points per step drawn with replacement from the prefix; None uses every prefix point
        each step (full-batch Adam).
    seed : int, default 0
        Seeds initialisation and minibatch sampling (a private generator; global RNG untouched).

    Memory: about ``4·batch·n_points·(hidden·(n_dims + 2) + 1)`` parameters and optimiser
    values in float32.
    """

    name = "relu_net"

    def __init__(self, *, hidden: int = 100, steps: int = 500, lr: float = 5e-3,
                 batch_size: int | None = 10, seed: int = 0) -> None:
        self.hidden = check_int(self.name, "hidden", hidden, low=1)
        self.steps = check_int(self.name, "steps", steps, low=0)
        self.lr = check_real(self.name, "lr", lr, low=0.0, low_open=True)
        self.batch_size = check_int(self.name, "batch_size", batch_size, low=1, allow_none=True)
        self.seed = check_int(self.name, "seed", seed, low=0)

    def _predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        x = xs.detach().to(torch.float32)
        y = ys.detach().to(torch.float32)
        B, n, d = x.shape
        out = x.new_zeros(B, n)
        if n < 2:
            return out
        device = x.device
        gen = torch.Generator(device=device)
        gen.manual_seed(self.seed)
        N, H = B * (n - 1), self.hidden                      # one net per (prompt, prefix 1..n-1)
        prompt = torch.arange(B, device=device).repeat_interleave(n - 1)
        length = torch.arange(1, n, device=device).repeat(B)  # prefix length of each net

        def uniform(shape: tuple[int, ...], fan_in: int) -> Tensor:
            bound = 1.0 / math.sqrt(fan_in)
            u = torch.rand(shape, generator=gen, device=device)
            return ((2 * u - 1) * bound).requires_grad_(True)

        w1, b1 = uniform((N, d, H), d), uniform((N, 1, H), d)
        w2, b2 = uniform((N, H, 1), H), uniform((N, 1, 1), H)
        params = [w1, b1, w2, b2]
        # Adam (PyTorch's defaults: betas 0.9 / 0.999, eps 1e-8, no weight decay), written out
        # elementwise so that one update serves all networks at once.
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        m1 = [torch.zeros_like(t) for t in params]
        m2 = [torch.zeros_like(t) for t in params]

        def net(inp: Tensor) -> Tensor:                       # (N, k, d) -> (N, k)
            return (torch.relu(inp @ w1 + b1) @ w2 + b2)[..., 0]

        if self.batch_size is None:
            xb, yb = x[prompt, : n - 1], y[prompt, : n - 1]   # (N, n-1, d), (N, n-1)
            keep = (torch.arange(n - 1, device=device)[None, :] < length[:, None]).float()
            scale = (1.0 / length.float())[:, None]
        for step in range(1, self.steps + 1):
            with torch.enable_grad():
                if self.batch_size is not None:
                    u = torch.rand((N, self.batch_size), generator=gen, device=device)
                    j = torch.minimum((u * length[:, None]).long(), length[:, None] - 1)
                    err = net(x[prompt[:, None], j]) - y[prompt[:, None], j]
                    loss = err.square().mean(-1).sum()
                else:
                    err = net(xb) - yb
                    loss = (err.square() * keep * scale).sum()
                grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                c1, c2 = 1 - beta1**step, 1 - beta2**step
                for t, g, a, b in zip(params, grads, m1, m2):
                    a.mul_(beta1).add_(g, alpha=1 - beta1)
                    b.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    denom = (b / c2).sqrt_().add_(eps)
                    t.addcdiv_(a, denom, value=-self.lr / c1)
        with torch.no_grad():
            query = x[prompt, length][:, None, :]              # (N, 1, d)
            pred = net(query)[:, 0]
        out[:, 1:] = pred.reshape(B, n - 1)
        return out
