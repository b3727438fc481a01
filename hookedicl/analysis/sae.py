"""Sparse autoencoders (SAEs) on activations: a small, batched trainer that runs well on a CPU.

    z  = act(W_encᵀ (s·x − b_dec) + b_enc)        (d_sae,)   s = input scale (fixed at fit time)
    x̂  = (W_decᵀ z + b_dec) / s                   (d_in,)

Variants (`SAEConfig.kind`):
  * ``"topk"`` (Gao et al. 2024): keep the k largest pre-activations per token (then ReLU); the
    sparsity is k by construction.
  * ``"relu"``: ReLU with an L1 penalty `l1_coeff · Σ_i z_i` (Bricken et al. 2023).

Decoder-norm constraint: every decoder row (a feature's direction) has unit norm; the gradient
component along the row is removed before each step and the rows are renormalised after it, so
sparsity cannot be bought by shrinking z and growing W_dec.

Dead features (`SAEConfig.dead`): a feature that has not fired for `dead_steps` steps is dead.
  * ``"auxk"`` (Gao et al.): an auxiliary loss makes the `aux_k` largest dead pre-activations
    reconstruct the main reconstruction's error, `aux_coeff · ‖e − ê‖² / ‖e‖²`.
  * ``"resample"`` (Bricken et al.): every `resample_every` steps (during the first
    `resample_until` of training) dead features are re-initialised towards inputs the SAE
    reconstructs badly (sampled with probability ∝ squared error), and their Adam moments reset.
  * ``"none"``.

Inputs are scaled by `s` so that E‖s·(x − mean)‖² = d_in (`normalize=True`), which makes
`l1_coeff` and the learning rate transferable between hooks; `b_dec` starts at the data mean.
The loss's reconstruction term is the mean squared error per input dimension in scaled units.
Training draws minibatches from an `(n_tokens, d_in)` matrix with a seeded generator and uses Adam
with a linear learning-rate decay over the last `lr_decay_frac` of the steps.

Collecting activations, metrics (FVU, L0, dead fraction) and splicing an SAE into a model live in
:mod:`hookedicl.analysis.sae_eval`; matching features across models in
:mod:`hookedicl.analysis.features`.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Literal

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator
from torch import nn

from ..progress import progress_bar

__all__ = ["SAEConfig", "SparseAutoencoder", "as_token_matrix", "load_sae", "sae_loss", "save_sae", "train_sae"]


class SAEConfig(BaseModel):
    """Hyperparameters of an SAE and its training (validated; unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid")

    d_sae: PositiveInt = 256
    kind: Literal["topk", "relu"] = "topk"
    k: PositiveInt = 8  # topk: active features per token
    l1_coeff: NonNegativeFloat = 0.05  # relu: weight of Σ_i z_i (scaled units)
    dead: Literal["auxk", "resample", "none"] = "auxk"
    dead_steps: PositiveInt = 100  # a feature silent for this many steps counts as dead
    aux_k: PositiveInt | None = None  # auxk: dead features used per token (default d_in // 2)
    aux_coeff: NonNegativeFloat = 1.0 / 32.0
    resample_every: PositiveInt = 250
    resample_until: float = Field(0.6, gt=0.0, le=1.0)  # fraction of the steps during which resampling happens
    steps: PositiveInt = 3000
    batch_size: PositiveInt = 1024
    lr: PositiveFloat = 1e-3
    lr_decay_frac: float = Field(0.2, ge=0.0, le=1.0)
    normalize: bool = True
    seed: int = 0
    log_every: PositiveInt = 100

    @model_validator(mode="after")
    def _consistent(self) -> "SAEConfig":
        if self.kind == "topk" and self.k > self.d_sae:
            raise ValueError(f"k={self.k} exceeds d_sae={self.d_sae}")
        return self


class SparseAutoencoder(nn.Module):
    """An SAE over `d_in`-dimensional activations with `d_sae` features.

    Parameters: `W_enc (d_in, d_sae)`, `b_enc (d_sae,)`, `W_dec (d_sae, d_in)` (unit-norm rows),
    `b_dec (d_in,)`; buffer `input_scale` (scalar s). `encode`, `decode` and `forward` take and
    return tensors of shape `(..., d_in)` / `(..., d_sae)` in the activations' own units.
    """

    def __init__(self, d_in: int, d_sae: int, kind: str = "topk", k: int | None = 8) -> None:
        super().__init__()
        for name, v in (("d_in", d_in), ("d_sae", d_sae)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if kind not in ("topk", "relu"):
            raise ValueError(f"kind must be 'topk' or 'relu', got {kind!r}")
        if kind == "topk" and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d_sae):
            raise ValueError(f"k must be an int in 1..d_sae={d_sae} for a topk SAE, got {k!r}")
        self.d_in, self.d_sae, self.kind = d_in, d_sae, kind
        self.k = k if kind == "topk" else None
        dec = torch.randn(d_sae, d_in)
        dec /= dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(dec)
        self.W_enc = nn.Parameter(dec.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("input_scale", torch.ones(()))

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_sae={self.d_sae}, kind={self.kind!r}, k={self.k}"

    # ------------------------------------------------------------------ maths
    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"activations must be a floating-point tensor, got {type(x).__name__}")
        if x.ndim < 1 or x.shape[-1] != self.d_in:
            raise ValueError(f"activations must have shape (..., d_in={self.d_in}), got {tuple(x.shape)}")

    def pre_acts(self, x_scaled: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations `(..., d_sae)` of inputs already multiplied by `input_scale`."""
        return (x_scaled - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Feature activations `(..., d_sae)` from pre-activations (TopK or ReLU)."""
        if self.kind == "relu":
            return torch.relu(pre)
        vals, idx = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations `(..., d_sae)` of activations `x (..., d_in)`."""
        self._check(x)
        return self.activate(self.pre_acts(x.to(self.W_enc.dtype) * self.input_scale))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction `(..., d_in)` (activation units) from features `z (..., d_sae)`."""
        if not isinstance(z, torch.Tensor) or z.shape[-1] != self.d_sae:
            raise ValueError(f"features must have shape (..., d_sae={self.d_sae}), got {tuple(getattr(z, 'shape', ()))}")
        return (z @ self.W_dec + self.b_dec) / self.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction `(..., d_in)` of `x (..., d_in)`."""
        return self.decode(self.encode(x))

    @property
    def directions(self) -> torch.Tensor:
        """Unit feature directions `(d_sae, d_in)` (the decoder rows), detached."""
        w = self.W_dec.detach()
        return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)

    # ------------------------------------------------------ norm constraint
    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the component of W_dec's gradient along each (unit) decoder row."""
        if self.W_dec.grad is not None:
            w = self.directions
            self.W_dec.grad -= (self.W_dec.grad * w).sum(1, keepdim=True) * w

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every decoder row to unit norm."""
        self.W_dec.copy_(self.directions)


def as_token_matrix(acts: torch.Tensor, what: str = "activations") -> torch.Tensor:
    """`(n_tokens, d_in)` float32 view of activations `(..., d_in)`; ValueError for bad input."""
    if not isinstance(acts, torch.Tensor) or not acts.is_floating_point():
        raise ValueError(f"{what} must be a floating-point torch tensor, got {type(acts).__name__}")
    if acts.ndim < 2:
        raise ValueError(f"{what} must have shape (n_tokens, d_in) or (..., d_in), got {tuple(acts.shape)}")
    x = acts.detach().reshape(-1, acts.shape[-1]).float()
    if x.shape[0] < 2:
        raise ValueError(f"{what} must hold at least 2 tokens, got shape {tuple(acts.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or inf")
    return x


def _reset_adam_rows(opt: torch.optim.Optimizer, param: torch.Tensor, idx: torch.Tensor, dim: int) -> None:
    state = opt.state.get(param, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key].index_fill_(dim, idx, 0.0)


@torch.no_grad()
def _resample(sae: SparseAutoencoder, opt: torch.optim.Optimizer, dead: torch.Tensor, x: torch.Tensor, g: torch.Generator) -> int:
    """Point dead features at inputs with large reconstruction error (scaled units); returns how many."""
    idx = dead.nonzero().squeeze(1)
    if idx.numel() == 0:
        return 0
    sample = x[torch.randint(0, x.shape[0], (min(x.shape[0], 8192),), generator=g)]
    err = sample - (sae.activate(sae.pre_acts(sample)) @ sae.W_dec + sae.b_dec)
    weight = err.pow(2).sum(1)
    if not weight.sum() > 0:
        return 0
    pick = torch.multinomial(weight.pow(2) / weight.pow(2).sum(), idx.numel(), replacement=True, generator=g)
    new = err[pick]
    new = new / new.norm(dim=1, keepdim=True).clamp_min(1e-12)
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    sae.W_dec[idx] = new
    sae.W_enc[:, idx] = new.T * enc_norm * 0.2
    sae.b_enc[idx] = 0.0
    _reset_adam_rows(opt, sae.W_dec, idx, 0)
    _reset_adam_rows(opt, sae.W_enc, idx, 1)
    _reset_adam_rows(opt, sae.b_enc, idx, 0)
    return int(idx.numel())


def sae_loss(
    sae: SparseAutoencoder, xb: torch.Tensor, cfg: SAEConfig, dead: torch.Tensor | None = None, aux_k: int | None = None,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """Training loss on a minibatch `xb (batch, d_in)` already in scaled units.

    loss = ‖x̂ − x‖² / d_in (mean over the batch) [+ `l1_coeff` · Σ_i z_i for ReLU SAEs]
    [+ `aux_coeff` · ‖ê − e‖² / ‖e‖² with e = x − x̂ (detached) and ê the decoding of the `aux_k`
    largest pre-activations among the `dead` features (boolean `(d_sae,)`), when given].
    Returns `(loss, {"mse", "fvu", "aux"} as floats, z (batch, d_sae))`.
    """
    d_in = xb.shape[1]
    pre = sae.pre_acts(xb)
    z = sae.activate(pre)
    recon = z @ sae.W_dec + sae.b_dec
    sq = (recon - xb).pow(2).sum(1)
    mse = sq.mean() / d_in
    loss = mse
    if sae.kind == "relu":
        loss = loss + cfg.l1_coeff * z.sum(1).mean()
    aux = torch.zeros(())
    if dead is not None and bool(dead.any()) and cfg.aux_coeff > 0:
        kk = min(aux_k or max(d_in // 2, 1), int(dead.sum()))
        vals, idx = pre.masked_fill(~dead, float("-inf")).topk(kk, dim=-1)
        z_aux = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
        e = (xb - recon).detach()
        aux = (z_aux @ sae.W_dec - e).pow(2).sum(1).mean() / e.pow(2).sum(1).mean().clamp_min(1e-12)
        loss = loss + cfg.aux_coeff * aux
    with torch.no_grad():
        fvu = float(sq.sum() / (xb - xb.mean(0)).pow(2).sum().clamp_min(1e-12))
    return loss, {"mse": float(mse.detach()), "fvu": fvu, "aux": float(aux.detach())}, z


def train_sae(acts: torch.Tensor, config: SAEConfig | None = None, **overrides: Any) -> tuple[SparseAutoencoder, pd.DataFrame]:
    """Train an SAE on activations `(n_tokens, d_in)` (or `(..., d_in)`, flattened).

    `config` (default `SAEConfig()`) with keyword `overrides` (e.g. `d_sae=512, kind="relu"`).
    Returns the SAE (eval mode, float32, CPU) and the training history: one row every
    `log_every` steps with `step, loss, mse, fvu` (on the minibatch), `l0`, `aux`, `dead_fraction`
    (features silent for `dead_steps` steps) and `resampled` (features re-initialised so far).
    """
    cfg = config if config is not None else SAEConfig()
    if not isinstance(cfg, SAEConfig):
        raise ValueError(f"config must be an SAEConfig, got {type(cfg).__name__}")
    if overrides:
        cfg = SAEConfig.model_validate({**cfg.model_dump(), **overrides})
    x = as_token_matrix(acts).cpu()
    n, d_in = x.shape
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        sae = SparseAutoencoder(d_in, cfg.d_sae, cfg.kind, cfg.k)
    mean = x.mean(0)
    if cfg.normalize:
        var = (x - mean).pow(2).sum(1).mean()
        if not var > 0:
            raise ValueError("activations are constant: nothing to learn (their variance is 0)")
        sae.input_scale.fill_(float(math.sqrt(d_in / var)))
    x = x * sae.input_scale
    with torch.no_grad():
        sae.b_dec.copy_(mean * sae.input_scale)
    aux_k = min(cfg.aux_k or max(d_in // 2, 1), cfg.d_sae)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    decay_start = cfg.steps * (1.0 - cfg.lr_decay_frac)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 if s < decay_start else max(0.0, (cfg.steps - s) / max(cfg.steps - decay_start, 1.0))
    )
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long)
    bs = min(cfg.batch_size, n)
    perm, pos = torch.randperm(n, generator=g), 0
    rows, resampled = [], 0
    acc = {"loss": 0.0, "mse": 0.0, "fvu": 0.0, "l0": 0.0, "aux": 0.0}
    n_acc = 0
    sae.train()
    for step in progress_bar(range(cfg.steps), desc="sae", unit="step"):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=g), 0
        xb = x[perm[pos : pos + bs]]
        pos += bs
        dead = since_fired >= cfg.dead_steps
        loss, parts, z = sae_loss(sae, xb, cfg, dead if cfg.dead == "auxk" else None, aux_k)
        since_fired += 1
        since_fired[(z > 0).any(0)] = 0
        dead = since_fired >= cfg.dead_steps
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.project_decoder_grad()
        opt.step()
        sched.step()
        sae.normalize_decoder()
        if cfg.dead == "resample" and step > 0 and step % cfg.resample_every == 0 and step < cfg.resample_until * cfg.steps:
            count = _resample(sae, opt, dead, x, g)
            since_fired[dead] = 0
            resampled += count
        with torch.no_grad():
            acc["loss"] += float(loss)
            for key in ("mse", "fvu", "aux"):
                acc[key] += parts[key]
            acc["l0"] += float((z > 0).sum(1).float().mean())
        n_acc += 1
        if (step + 1) % cfg.log_every == 0 or step == cfg.steps - 1:
            rows.append({
                "step": step + 1, **{k: v / n_acc for k, v in acc.items()},
                "dead_fraction": float(dead.float().mean()), "resampled": resampled,
            })
            acc = dict.fromkeys(acc, 0.0)
            n_acc = 0
    sae.eval()
    return sae, pd.DataFrame(rows)


# ------------------------------------------------------------------------------- files
def save_sae(sae: SparseAutoencoder, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None) -> str:
    """Write `sae` to a safetensors file (atomically) with JSON `metadata`; returns its sha256."""
    from ..io import save_safetensors

    if not isinstance(sae, SparseAutoencoder):
        raise ValueError(f"sae must be a SparseAutoencoder, got {type(sae).__name__}")
    meta = {"d_in": sae.d_in, "d_sae": sae.d_sae, "kind": sae.kind, "k": sae.k, "metadata": metadata or {}}
    return save_safetensors(path, dict(sae.state_dict()), metadata={"sae": json.dumps(meta)})


def load_sae(path: str | os.PathLike[str]) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """`(sae, metadata)` from a file written by `save_sae`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise ValueError(f"SAE file not found: {path}")
    with safe_open(str(path), framework="pt") as fh:
        raw = (fh.metadata() or {}).get("sae")
    if raw is None:
        raise ValueError(f"{path} is not an SAE file (no 'sae' metadata)")
    meta = json.loads(raw)
    sae = SparseAutoencoder(meta["d_in"], meta["d_sae"], meta["kind"], meta["k"])
    sae.load_state_dict(load_file(str(path)))
    return sae.eval(), meta["metadata"]
