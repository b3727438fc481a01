"""Selective scan (Mamba's S6 recurrence), three implementations of one function.

    h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t u_t) B_t        h_{-1} = 0,  h_t: (d_inner, d_state)
    y_t = h_t C_t + D ⊙ u_t

Shapes: u, Δ `(batch, L, d_inner)`; A `(d_inner, d_state)`; B, C `(batch, L, d_state)`;
D `(d_inner,)`. `selective_scan` returns y `(batch, L, d_inner)`; `ssm_states` returns the states h
`(batch, L, d_inner, d_state)`.

* `sequential`: the definition, one step per position (the reference; HF's slow path).
* `chunked` (default on CPU when nobody hooks the states): y directly, one position at a time on
  `(batch, d_inner, d_state)` tensors that stay in cache, keeping only every √L-th state for the
  backward pass (`ChunkedSelectiveScan`), so memory grows with √L, not L. It cannot return h.
* `parallel` (the states, for `hook_ssm_state`): a work-efficient odd/even parallel scan. It combines neighbouring
  pairs (a₁a₀, a₁b₀ + b₁), recurses on the half-length sequence, then fills the even positions:
  O(L) work in log₂L levels of whole-tensor ops, no Python loop over positions, and only products
  of decays ≤ 1 (no exp of differences), so it is as accurate as the sequential loop. Its backward
  is written by hand (`SelectiveStates`): the adjoint g_t = ∂L/∂h_t + a_{t+1} g_{t+1} is the same
  scan run in reverse, and the decays and inputs are recomputed from (u, Δ, A, B) instead of being
  stored, so training keeps one (batch, L, d_inner, d_state) tensor per layer, not a dozen.
* `cuda`: `mamba_ssm.selective_scan_fn` (fused kernel; optional `hookedicl[cuda]` extra); it
  cannot return h either, so the mixer uses `parallel` when `hook_ssm_state` or `hook_ssm_write`
  is hooked.

The per-step write is write_t = (Δ_t u_t) ⊗ B_t `(batch, L, d_inner, d_state)` (`ssm_write`);
`states_from_writes` runs the recurrence h_t = exp(Δ_t A) ⊙ h_{t-1} + write_t from given (possibly
edited) writes. `effective_attention` is the scan written as causal attention (Ali et al. 2024).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

ScanMethod = Literal["chunked", "parallel", "sequential", "cuda"]


def linear_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve h_t = a_t ⊙ h_{t-1} + b_t (h_{-1} = 0) along dim 1 for tensors `(batch, L, ...)`."""
    n = a.shape[1]
    if n == 1:
        return b.clone()  # never the input itself: hooks may edit the states in place
    if n % 2:
        h = linear_scan(a[:, :-1], b[:, :-1])
        return torch.cat([h, a[:, -1:] * h[:, -1:] + b[:, -1:]], dim=1)
    a0, a1 = a[:, 0::2], a[:, 1::2]
    b0, b1 = b[:, 0::2], b[:, 1::2]
    h_odd = linear_scan(a1 * a0, a1 * b0 + b1)  # states at positions 1, 3, 5, ...
    h = torch.empty_like(b)  # a fresh tensor, not a view: hooks may edit the states in place
    h[:, 0::2] = torch.cat([b0[:, :1], a0[:, 1:] * h_odd[:, :-1] + b0[:, 1:]], dim=1)
    h[:, 1::2] = h_odd
    return h


class SelectiveStates(torch.autograd.Function):
    """h = linear_scan(exp(Δ ⊗ A), (Δ u) ⊗ B) with a reverse-scan backward (see module docstring)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            h = linear_scan(*_discretize(u, dt, A, B))
        ctx.save_for_backward(u, dt, A, B, h)
        return h

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor):
        u, dt, A, B, h = ctx.saved_tensors
        decay = torch.exp(dt.unsqueeze(-1) * A)  # (b, L, d, n)
        # adjoint: g_t = grad_h_t + a_{t+1} g_{t+1}, a reverse linear scan
        a_next = torch.cat([decay[:, 1:], torch.zeros_like(decay[:, :1])], dim=1)
        g = linear_scan(a_next.flip(1), grad_h.flip(1)).flip(1)
        del a_next
        h_prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        g_logdecay = g * h_prev * decay  # ∂L/∂(Δ A) elementwise
        del h_prev, decay
        g_dt = (g_logdecay * A).sum(-1)
        g_A = torch.einsum("bldn,bld->dn", g_logdecay, dt)
        del g_logdecay
        g_B_drive = torch.einsum("bldn,bld->bln", g, dt * u)  # ∂L/∂B
        g_dtu = (g * B.unsqueeze(2)).sum(-1)  # ∂L/∂(Δ u)
        return g_dtu * dt, g_dt + g_dtu * u, g_A, g_B_drive


class ChunkedSelectiveScan(torch.autograd.Function):
    """y of the selective scan, one position at a time, never holding all states at once.

    Forward keeps only the states at chunk boundaries (every `chunk` positions); backward walks
    the chunks in reverse, recomputes a chunk's states from its boundary state and runs the
    adjoint recurrence g_t = C_t ∂L/∂y_t + a_{t+1} g_{t+1} through it. Every tensor touched per
    step is one state `(batch, d_state, d_inner)` (channels last, so the reductions over d_state
    are vectorised adds), small enough to stay in cache on a CPU; memory is
    O((L / chunk + chunk) · batch · d_inner · d_state) instead of O(L · ...).
    """

    @staticmethod
    def forward(ctx, u, dt, A, B, C, D, chunk: int):  # type: ignore[override]
        b, n_pos, d = u.shape
        At = A.t().contiguous()  # (n, d)
        h = u.new_zeros(b, At.shape[0], d)
        ys = u.new_empty(b, n_pos, d)
        boundary = u.new_empty(b, -(-n_pos // chunk), At.shape[0], d)
        dtu = dt * u
        for t in range(n_pos):
            if t % chunk == 0:
                boundary[:, t // chunk] = h
            a = torch.exp(dt[:, t, None, :] * At)
            h = torch.addcmul(B[:, t, :, None] * dtu[:, t, None, :], a, h)
            ys[:, t] = (h * C[:, t, :, None]).sum(1)
        ctx.save_for_backward(u, dt, At, B, C, D, boundary)
        ctx.chunk = chunk
        return torch.addcmul(ys, u, D)

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        u, dt, At, B, C, D, boundary = ctx.saved_tensors
        chunk, n_pos = ctx.chunk, u.shape[1]
        dtu = dt * u
        g_B, g_C = torch.empty_like(B), torch.empty_like(C)
        g_dtu = torch.empty_like(u)  # ∂L/∂(Δ_t u_t)
        g_dt_decay = torch.empty_like(dt)  # the part of ∂L/∂Δ_t through the decay
        g_At = torch.zeros_like(At)
        g = torch.zeros_like(boundary[:, 0])  # adjoint of h_t, carried backwards
        a_next = None  # decay a_{t+1}
        for c in reversed(range(boundary.shape[1])):
            lo, hi = c * chunk, min((c + 1) * chunk, n_pos)
            decays, states, h = [], [], boundary[:, c]
            for t in range(lo, hi):  # recompute this chunk's decays and states
                a = torch.exp(dt[:, t, None, :] * At)
                h = torch.addcmul(B[:, t, :, None] * dtu[:, t, None, :], a, h)
                decays.append(a)
                states.append(h)
            for t in reversed(range(lo, hi)):
                i = t - lo
                a, h_t = decays[i], states[i]
                h_prev = states[i - 1] if i > 0 else boundary[:, c]
                gy = grad_y[:, t, None, :]  # (b, 1, d)
                g_C[:, t] = (h_t * gy).sum(-1)
                g = gy * C[:, t, :, None] if a_next is None else torch.addcmul(gy * C[:, t, :, None], a_next, g)
                g_logdecay = g * h_prev * a  # ∂L/∂(Δ_t A), (b, n, d)
                g_dtu[:, t] = (g * B[:, t, :, None]).sum(1)
                g_B[:, t] = (g * dtu[:, t, None, :]).sum(-1)
                g_dt_decay[:, t] = (g_logdecay * At).sum(1)
                g_At += (g_logdecay * dt[:, t, None, :]).sum(0)
                a_next = a
        g_u = torch.addcmul(grad_y * D, g_dtu, dt)
        g_dt = torch.addcmul(g_dt_decay, g_dtu, u)
        g_D = (grad_y * u).sum((0, 1))
        return g_u, g_dt, g_At.t(), g_B, g_C, g_D, None


def ssm_write(u: torch.Tensor, dt: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """The per-step write (Δ_t u_t) ⊗ B_t `(batch, L, d_inner, d_state)` (`hook_ssm_write`)."""
    return (dt * u).unsqueeze(-1) * B.unsqueeze(2)


def _discretize(u, dt, A, B):
    return torch.exp(dt.unsqueeze(-1) * A), ssm_write(u, dt, B)  # decay, write: (b, L, d, n)


def states_from_writes(
    dt: torch.Tensor, A: torch.Tensor, write: torch.Tensor, *, method: ScanMethod = "parallel"
) -> torch.Tensor:
    """h_t = exp(Δ_t A) ⊙ h_{t-1} + write_t (h_{-1} = 0) for writes `(batch, L, d_inner, d_state)`;
    returns the states, same shape, by the `parallel` or `sequential` method (autograd through
    plain tensor ops)."""
    decay = torch.exp(dt.unsqueeze(-1) * A)
    if method == "parallel":
        return linear_scan(decay, write)
    if method == "sequential":
        h_t = torch.zeros_like(write[:, 0])
        states = []
        for t in range(write.shape[1]):
            h_t = decay[:, t] * h_t + write[:, t]
            states.append(h_t)
        return torch.stack(states, dim=1)
    raise ValueError(f"the {method!r} scan does not return states; use 'parallel' or 'sequential'")


def ssm_states(
    u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, *, method: ScanMethod = "parallel"
) -> torch.Tensor:
    """All states h `(batch, L, d_inner, d_state)` by the `parallel` or `sequential` method."""
    if method == "parallel":
        return SelectiveStates.apply(u, dt, A, B)
    return states_from_writes(dt, A, ssm_write(u, dt, B), method=method)


def selective_scan(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    *,
    method: ScanMethod = "parallel",
) -> torch.Tensor:
    """Run the selective scan; returns y `(batch, L, d_inner)`."""
    if method == "cuda":
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        y = selective_scan_fn(
            u.transpose(1, 2).contiguous(), dt.transpose(1, 2).contiguous(), A.contiguous(),
            B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), D.float(),
            z=None, delta_bias=None, delta_softplus=False,
        )
        return y.transpose(1, 2)
    if method == "chunked":
        chunk = max(1, math.isqrt(u.shape[1]))
        return ChunkedSelectiveScan.apply(u, dt, A, B, C, D, chunk)
    return y_from_state(ssm_states(u, dt, A, B, method=method), C, u, D)


def y_from_state(h: torch.Tensor, C: torch.Tensor, u: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """y_t = h_t C_t + D ⊙ u_t for states `(batch, L, d_inner, d_state)`."""
    return (h * C.unsqueeze(2)).sum(-1) + u * D


def cuda_scan_available(x: torch.Tensor) -> bool:
    """True when `x` is on CUDA and `mamba_ssm`'s kernels import."""
    if not x.is_cuda:
        return False
    try:
        import mamba_ssm.ops.selective_scan_interface  # noqa: F401
    except Exception:
        return False
    return True


def effective_attention(
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    *,
    include_dt_scaling: bool,
    per_state_coord: bool = False,
    channels: Sequence[int] | None = None,
    reduce: Literal["mean", "abs_mean"] | None = None,
    method: Literal["auto", "direct", "factored"] = "auto",
    max_elements: int = 1 << 23,
) -> torch.Tensor:
    """The selective scan as causal attention per channel (Ali et al. 2024), float64.

    Unrolling h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t u_t) B_t, y_t = h_t C_t + D u_t gives, for every
    channel c, y_t[c] = Σ_{s ≤ t} M[c, t, s] u_s[c] + D[c] u_t[c] with

        M[c, t, s] = Σ_n C_t[n] · exp(Σ_{r=s+1..t} Δ_r[c] A[c, n]) · B_s[n] · (Δ_s[c])

    where the factor Δ_s[c] is included only with `include_dt_scaling=True` (the reconstruction
    form; False gives TransformerLens's default attention-like form). Entries with s > t are 0.

    Args:
        dt: Δ `(batch, L, d_inner)`; A: `(d_inner, d_state)` (negative, = −exp(A_log));
        B, C: `(batch, L, d_state)`; channels: channel indices (default all d_inner).
        per_state_coord: keep the state axis: `(batch, channels, d_state, L, L)` instead of the sum
            over it, `(batch, channels, L, L)`.
        reduce: None keeps the channel axis; "mean" / "abs_mean" average M / |M| over the chosen
            channels (the channel axis is dropped).
        method: with S_t = Σ_{r<=t} Δ_r A (per channel and state), "direct" evaluates
            exp(S_t − S_s) for every (t, s) pair (memory `L² d_state` per prompt and channel);
            "factored" writes it as exp(S_t) · exp(−S_s), so M is one matmul over the state
            (memory `L d_state`), valid while |S| stays below 600 (no overflow in float64);
            "auto" uses "factored" for the chunks where that holds and "direct" elsewhere.
        max_elements: prompts and channels are processed in chunks of about this many
            `prompts * L * L * channels * d_state` entries (at least one prompt and channel).
    """
    if reduce not in (None, "mean", "abs_mean"):
        raise ValueError(f"reduce must be None, 'mean' or 'abs_mean', got {reduce!r}")
    if method not in ("auto", "direct", "factored"):
        raise ValueError(f"method must be 'auto', 'direct' or 'factored', got {method!r}")
    b, L, d = dt.shape
    n = A.shape[-1]
    if A.shape != (d, n) or B.shape != (b, L, n) or C.shape != (b, L, n):
        shapes = f"dt {tuple(dt.shape)}, A {tuple(A.shape)}, B {tuple(B.shape)}, C {tuple(C.shape)}"
        raise ValueError(f"shape mismatch: {shapes}; expected (b, L, d), (d, n), (b, L, n), (b, L, n)")
    ch = list(range(d)) if channels is None else [int(c) for c in channels]
    if not ch or any(not 0 <= c < d for c in ch):
        raise ValueError(f"channels must be a non-empty list of indices in 0..{d - 1}")
    out = "bcnts" if per_state_coord else "bcts"
    causal = torch.ones(L, L, dtype=torch.bool, device=dt.device).tril()
    per_prompt = L * L * n
    bc = max(1, min(b, max_elements // per_prompt))  # prompts per chunk
    cc = max(1, max_elements // (bc * per_prompt))  # channels per chunk
    rows = []
    for p0 in range(0, b, bc):
        Bd, Cd = B[p0 : p0 + bc].double(), C[p0 : p0 + bc].double()
        acc: torch.Tensor | list[torch.Tensor] = []
        for i in range(0, len(ch), cc):
            idx = torch.tensor(ch[i : i + cc], device=dt.device)
            dtc = dt[p0 : p0 + bc, :, idx].double()  # (bc, L, c)
            S = torch.cumsum(dtc[..., None] * A[idx].double(), dim=1)  # (bc, L, c, n), <= 0, decreasing
            key = Bd[:, :, None, :] * (dtc[..., None] if include_dt_scaling else 1.0)  # (bc, L, c|1, n)
            key = key.expand(-1, -1, len(idx), -1)
            safe = float(S.abs().max()) < 600.0
            if method == "factored" and not safe:
                raise ValueError("method='factored' would overflow here (|Σ Δ A| >= 600); use 'direct' or 'auto'")
            if safe and method != "direct":
                m = torch.einsum(f"btcn,bscn->{out}", Cd[:, :, None, :] * torch.exp(S), key * torch.exp(-S))
                m = m.masked_fill(~causal, 0.0)
            else:
                diff = S[:, :, None] - S[:, None, :]  # (bc, t, s, c, n)
                diff = diff.masked_fill(~causal[None, :, :, None, None], -torch.inf)
                m = torch.einsum(f"btn,btscn->{out}", Cd, torch.exp(diff) * key[:, None])
            if reduce is None:
                acc.append(m)
            else:
                part = (m.abs() if reduce == "abs_mean" else m).sum(1)
                acc = part if isinstance(acc, list) else acc + part
        rows.append(torch.cat(acc, 1) if reduce is None else acc / len(ch))
    return torch.cat(rows, 0)
