"""`HookedICLModel`: one model family for GPT-2, LLaMA, Mamba and their hybrids.

    tokens = interleave(xs, ys)                 [batch, 2*n_points, d_in]   x_1, y_1, x_2, y_2, ...
    resid  = hook_embed(read_in(tokens)) (+ hook_pos_embed(W_pos))
    for block in blocks:                        pre-norm residual slots
        resid = resid + mixer(ln1(resid))       (hook_attn_out / hook_mixer_out)
        resid = resid + ffn(ln2(resid))         (hook_mlp_out / hook_ffn_out), if the block has one
    out    = hook_readout(read_out(ln_final(resid)))   [batch, 2*n_points, y_dim]
    preds  = out[:, 0::2]                       predictions made at the x tokens

Every hook name is listed by `hookedicl.models.hook_catalogue(spec)` (with its shape) and printed
by `hookedicl hooks ARCH`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.config import TransformerLensConfig

from .attention import Attention
from .cache import ICLActivationCache, tl_config
from .hooks import HookPoint
from .mamba import MambaMixer
from .mlp import MLP, SwiGLU
from .norms import make_norm
from .spec import AttentionSpec, BlockSpec, MambaSpec, MLPSpec, ModelSpec, SwiGLUSpec, mamba_dt_rank, module_name


ReturnType = Literal["preds", "loss", "both"]
RETURN_TYPES: tuple[str, ...] = ("preds", "loss", "both")


def _component(s: Any, d_model: int) -> nn.Module:
    if isinstance(s, AttentionSpec):
        return Attention(d_model, s.n_heads, bias=s.bias, rope=s.rope, rope_theta=s.rope_theta, softmax=s.softmax)
    if isinstance(s, MLPSpec):
        return MLP(d_model, s.d_mlp or 4 * d_model, act=s.act, bias=s.bias)
    if isinstance(s, SwiGLUSpec):
        return SwiGLU(d_model, s.d_mlp or 4 * d_model, bias=s.bias)
    if isinstance(s, MambaSpec):
        return MambaMixer(
            d_model, d_state=s.d_state, expand=s.expand, d_conv=s.d_conv,
            dt_rank=mamba_dt_rank(s, d_model), bias=s.bias, conv_bias=s.conv_bias,
            dt_min=s.dt_min, dt_max=s.dt_max, dt_init_floor=s.dt_init_floor,
        )
    raise ValueError(f"unknown block component {s!r}")


class Block(nn.Module):
    """Two pre-norm residual slots. Submodules: `ln1`, the mixer (`attn` or `mixer`), and when the
    block has an ffn, `ln2` and the ffn (`mlp` or `ffn`)."""

    def __init__(self, spec: BlockSpec, d_model: int, norm: str, eps: float) -> None:
        super().__init__()
        self.spec = spec
        self.mixer_name = module_name(spec.mixer, "mixer")
        self.ln1 = make_norm(norm, d_model, eps)
        self.add_module(self.mixer_name, _component(spec.mixer, d_model))
        self.hook_resid_pre = HookPoint()
        self.add_module(f"hook_{self.mixer_name}_out", HookPoint())
        self.ffn_name: str | None = None
        if spec.ffn.kind != "none":
            self.ffn_name = module_name(spec.ffn, "ffn")
            self.hook_resid_mid = HookPoint()
            self.ln2 = make_norm(norm, d_model, eps)
            self.add_module(self.ffn_name, _component(spec.ffn, d_model))
            self.add_module(f"hook_{self.ffn_name}_out", HookPoint())
        self.hook_resid_post = HookPoint()

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        mixer_out = getattr(self, f"hook_{self.mixer_name}_out")(getattr(self, self.mixer_name)(self.ln1(resid)))
        resid = resid + mixer_out
        if self.ffn_name is not None:
            resid = self.hook_resid_mid(resid)
            ffn_out = getattr(self, f"hook_{self.ffn_name}_out")(getattr(self, self.ffn_name)(self.ln2(resid)))
            resid = resid + ffn_out
        return self.hook_resid_post(resid)


class HookedICLModel(HookedRootModule):
    """A sequence model over interleaved (x, y) prompts with TransformerLens hook points.

    `forward(xs, ys)` takes xs `(batch, n_points, n_dims)` and ys `(batch, n_points)` (or
    `(batch, n_points, y_dim)` when `spec.y_dim > 1`) and returns the predictions made at the x
    tokens, `(batch, n_points)` (or `(batch, n_points, y_dim)`). Prediction i sees (x_j, y_j) for
    j < i, and x_i.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        d = spec.d_model
        self.read_in = nn.Linear(spec.d_in, d)
        self.hook_embed = HookPoint()
        if spec.pos_embed == "learned":
            self.W_pos = nn.Parameter(torch.zeros(spec.n_ctx, d))
            self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(b, d, spec.norm, spec.norm_eps) for b in spec.blocks)
        self.ln_final = make_norm(spec.norm, d, spec.norm_eps)
        self.read_out = nn.Linear(d, spec.y_dim)
        self.hook_readout = HookPoint()
        self.init_weights()
        self.setup()

    # ------------------------------------------------------------------ init
    def init_weights(self) -> None:
        """The standard initialisation, applied identically to every architecture (hybrids too):

        read-in and read-out keep PyTorch's default Linear init (uniform ±1/sqrt(fan_in)), as the
        Garg/Campbell wrappers do: with N(0, 0.02) the inputs would start 10x smaller than the
        position table; every other Linear weight and the position table ~ N(0, init_std); biases
        0; norm weights 1;
        residual-output projections (attention and Mamba out_proj, MLP W_out) ~ N(0,
        init_std / sqrt(2 * n_blocks)) (GPT-2); Mamba's A, D, Δ-projection and conv as in Mamba, with
        Δ at init log-uniform in the spec's [dt_min, dt_max], floored at dt_init_floor.
        """
        std = self.spec.init_std
        out_std = std / math.sqrt(2 * len(self.blocks))
        for name, mod in self.named_modules():
            if mod is self.read_in or mod is self.read_out:
                mod.reset_parameters()  # PyTorch's default, as in the Garg/Campbell wrappers
            elif isinstance(mod, nn.Linear):
                is_out = name.endswith(("W_out", "out_proj"))
                nn.init.normal_(mod.weight, std=out_std if is_out else std)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Conv1d):
                mod.reset_parameters()
        for mod in self.modules():
            if isinstance(mod, MambaMixer):
                mod.reset_ssm_parameters()  # after the Linear loop: dt_proj has its own init
        if self.spec.pos_embed == "learned":
            nn.init.normal_(self.W_pos, std=std)

    # ---------------------------------------------------------------- inputs
    def check_inputs(self, xs: torch.Tensor, ys: torch.Tensor) -> None:
        """Raise ValueError naming the problem if (xs, ys) do not fit this model.

        `xs` `(batch, n_points, n_dims)` and `ys` `(batch, n_points)` (or `(..., y_dim)`) must be
        finite, have the dtype of the model's parameters (float32 unless the model was cast;
        inputs are never cast silently), hold at least one prompt of at least one point, and
        stay within `MAX_INPUT_MAGNITUDE` (larger values overflow float32 inside the model and
        would come out as NaN).
        """
        from .spec import MAX_INPUT_MAGNITUDE

        s = self.spec
        if not isinstance(xs, torch.Tensor) or not isinstance(ys, torch.Tensor):
            raise ValueError(f"xs and ys must be torch tensors, got {type(xs).__name__} and {type(ys).__name__}")
        if xs.ndim != 3:
            raise ValueError(f"xs must be (batch, n_points, n_dims), got shape {tuple(xs.shape)}")
        if xs.shape[-1] != s.n_dims:
            raise ValueError(f"xs has n_dims={xs.shape[-1]} but the model expects n_dims={s.n_dims}")
        want = xs.shape[:2] if s.y_dim == 1 else (*xs.shape[:2], s.y_dim)
        if tuple(ys.shape) != tuple(want):
            raise ValueError(
                f"ys must have shape {tuple(want)} to match xs {tuple(xs.shape)} (y_dim={s.y_dim}), "
                f"got {tuple(ys.shape)}"
            )
        if xs.shape[0] == 0 or xs.shape[1] == 0:
            raise ValueError(f"empty prompts: xs has shape {tuple(xs.shape)}; give at least one prompt of at least one point")
        if not xs.is_floating_point() or not ys.is_floating_point():
            raise ValueError(f"xs and ys must be floating point, got {xs.dtype} and {ys.dtype}")
        p = next(self.parameters())
        if xs.dtype != p.dtype or ys.dtype != p.dtype:
            raise ValueError(
                f"xs and ys have dtype {xs.dtype} and {ys.dtype}, the model's parameters {p.dtype}; "
                f"cast the inputs (xs.to({p.dtype})) or the model (model.to({p.dtype}))"
            )
        if s.pos_embed == "learned" and 2 * xs.shape[1] > s.n_ctx:
            raise ValueError(
                f"n_points={xs.shape[1]} needs {2 * xs.shape[1]} tokens > n_ctx={s.n_ctx} learned positions"
            )
        if xs.device.type == "meta":  # shapes only (hook catalogues): there are no values to check
            return
        biggest = max(float(xs.detach().abs().max()), float(ys.detach().abs().max()))
        if not math.isfinite(biggest):
            raise ValueError("xs or ys contains NaN or inf")
        if biggest > MAX_INPUT_MAGNITUDE:
            raise ValueError(
                f"xs or ys holds a value of magnitude {biggest:.3g} > {MAX_INPUT_MAGNITUDE:.0e}: it would overflow "
                f"inside the model; rescale the inputs"
            )

    def interleave(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Token sequence `[batch, 2*n_points, d_in]`: x_1, y_1, x_2, y_2, ..."""
        s = self.spec
        b, n, d = xs.shape
        ys3 = ys.reshape(b, n, s.y_dim)
        if s.layout == "garg":  # x -> x, y -> [y, 0]
            y_tok = torch.cat([ys3, xs.new_zeros(b, n, d - s.y_dim)], dim=-1)
            x_tok = xs
        elif s.layout == "akyurek":  # x -> [0_y, x], y -> [y, 0_d]
            x_tok = torch.cat([xs.new_zeros(b, n, s.y_dim), xs], dim=-1)
            y_tok = torch.cat([ys3, xs.new_zeros(b, n, d)], dim=-1)
        else:  # paired: x -> [x, 0_y], y -> [x, y]
            x_tok = torch.cat([xs, xs.new_zeros(b, n, s.y_dim)], dim=-1)
            y_tok = torch.cat([xs, ys3], dim=-1)
        return torch.stack([x_tok, y_tok], dim=2).reshape(b, 2 * n, s.d_in)

    # --------------------------------------------------------------- forward
    def forward(
        self, xs: torch.Tensor, ys: torch.Tensor, return_type: ReturnType = "preds",
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """`return_type="preds"` (default): the predictions at the x tokens, `(batch, n_points)` or
        `(batch, n_points, y_dim)`; `"loss"`: their mean squared error against `ys` (a scalar, so
        `run_with_cache(..., return_type="loss", incl_bwd=True)` caches gradients); `"both"`:
        `(preds, loss)`."""
        if return_type not in RETURN_TYPES:
            raise ValueError(f"return_type must be one of {RETURN_TYPES}, got {return_type!r}")
        self.check_inputs(xs, ys)
        resid = self.hook_embed(self.read_in(self.interleave(xs, ys)))
        if self.spec.pos_embed == "learned":
            b, n, _ = resid.shape
            resid = resid + self.hook_pos_embed(self.W_pos[:n].unsqueeze(0).expand(b, -1, -1))
        for block in self.blocks:
            resid = block(resid)
        out = self.hook_readout(self.read_out(self.ln_final(resid)))
        preds = out[:, 0::2]
        preds = preds.squeeze(-1) if self.spec.y_dim == 1 else preds
        if not self.training and not bool(torch.isfinite(preds).all()):
            # the inputs were checked finite: the model itself overflowed (training has its own
            # non-finite policy, optim.on_nonfinite, so this check is for evaluation and analyses)
            raise ValueError(
                f"{self.spec.name}: finite inputs gave {int((~torch.isfinite(preds)).sum())} non-finite predictions "
                f"of {preds.numel()} (the weights or activations overflow float32; check the checkpoint)"
            )
        if return_type == "preds":
            return preds
        loss = (preds - ys.to(preds.dtype)).pow(2).mean()
        return loss if return_type == "loss" else (preds, loss)

    def run_with_cache(
        self, *model_args: Any, return_cache_object: bool = True, remove_batch_dim: bool = False, **kwargs: Any,
    ) -> tuple[Any, ICLActivationCache | dict[str, torch.Tensor]]:
        """`(output, cache)` as in TransformerLens: `cache` is a `transformer_lens.ActivationCache`
        (an `ICLActivationCache`) whose helpers read this model's `cfg` and weight views; with
        `return_cache_object=False` a plain dict. Other keyword arguments (`names_filter`,
        `incl_bwd`, `return_type`, ...) are TransformerLens's / `forward`'s."""
        out, cache = super().run_with_cache(*model_args, remove_batch_dim=remove_batch_dim, **kwargs)
        if return_cache_object:
            return out, ICLActivationCache(cache, self, has_batch_dim=not remove_batch_dim)
        return out, cache

    @property
    def cfg(self) -> TransformerLensConfig:
        """TransformerLens config fields derived from `spec` on each access (see `tl_config`)."""
        p = next(self.parameters())
        return tl_config(self.spec, p.device, p.dtype)

    # ------------------------------------------------------------ utilities
    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def hook_shapes(self, n_points: int = 4, batch_size: int = 2) -> dict[str, tuple[int, ...]]:
        """Every hook name with the shape it sees on a small example input (in forward order)."""
        shapes: dict[str, tuple[int, ...]] = {}

        def record(t: torch.Tensor, hook: HookPoint) -> None:
            shapes[hook.name] = tuple(t.shape)

        p = next(self.parameters())
        xs = torch.randn(batch_size, n_points, self.spec.n_dims, device=p.device, dtype=p.dtype)
        ys_shape = (batch_size, n_points) if self.spec.y_dim == 1 else (batch_size, n_points, self.spec.y_dim)
        ys = torch.randn(ys_shape, device=p.device, dtype=p.dtype)
        with torch.no_grad(), self.hooks(fwd_hooks=[(lambda name: True, record)]):
            self(xs, ys)
        return shapes
