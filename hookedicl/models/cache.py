"""The TransformerLens side of `HookedICLModel`: its `cfg` and the `ActivationCache` that
`run_with_cache` returns.

`tl_config(spec)` derives a `transformer_lens.config.TransformerLensConfig` from a `ModelSpec`
(never stored: `model.cfg` recomputes it). `ICLActivationCache` is TransformerLens's own
`ActivationCache` (every helper — `accumulated_resid`, `decompose_resid`, `stack_activation`,
`apply_ln_to_stack`, `stack_head_results`, `compute_ssm_effective_attention`, ... — is TL's code),
with one addition: when a helper asks for a hook this architecture does not have (for example
`decompose_resid` asking for `blocks.1.hook_attn_out` where block 1's mixer is Mamba), the
KeyError says why instead of naming a missing key only.
"""

from __future__ import annotations

from typing import Any

import torch
from transformer_lens import ActivationCache
from transformer_lens.config import TransformerLensConfig

from .spec import AttentionSpec, MLPSpec, ModelSpec, SwiGLUSpec

_NORM = {"layernorm": "LN", "rmsnorm": "RMS", "none": None}
_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


def tl_config(spec: ModelSpec, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TransformerLensConfig:
    """The TransformerLens config fields its cache helpers and patching code read, from `spec`.

    `n_layers` counts blocks (a MambaFormer's leading Mamba block included); `n_heads` / `d_head`
    come from the first attention block (0 when there is none); `d_mlp` / `act_fn` /
    `gated_mlp` from the first MLP or SwiGLU ffn (`d_mlp` None and `attn_only` True when no block
    has an MLP); `normalization_type` is "LN" / "RMS" / None; `positional_embedding_type` is
    "standard" (learned absolute), "rotary" or "none"; `d_vocab` is -1 (there is no vocabulary:
    inputs are real vectors, `n_dims` of them per token).
    """
    attn = [b.mixer for b in spec.blocks if isinstance(b.mixer, AttentionSpec)]
    mlps = [b.ffn for b in spec.blocks if isinstance(b.ffn, (MLPSpec, SwiGLUSpec))]
    n_heads = attn[0].n_heads if attn else 0
    if spec.pos_embed == "learned":
        pos = "standard"
    else:
        pos = "rotary" if any(a.rope for a in attn) else "none"
    mlp = mlps[0] if mlps else None
    act = "silu" if isinstance(mlp, SwiGLUSpec) else (_ACT[mlp.act] if mlp is not None else "relu")
    norm = _NORM[spec.norm]
    cfg = TransformerLensConfig(
        d_model=spec.d_model,
        d_head=spec.d_model // n_heads if n_heads else 0,
        n_layers=len(spec.blocks),
        n_ctx=spec.n_ctx,
        n_heads=n_heads,
        d_mlp=(mlp.d_mlp or 4 * spec.d_model) if mlp is not None else None,
        d_vocab=-1,
        device=str(device),
        positional_embedding_type=pos,
        attn_only=not any(b.ffn.kind != "none" for b in spec.blocks),
        gated_mlp=isinstance(mlp, SwiGLUSpec),
        uses_rms_norm=norm == "RMS",
        eps=spec.norm_eps,
        act_fn=act,
        normalization_type=norm,
        final_rms=norm == "RMS",
        dtype=dtype,
    )
    if mlp is None:
        cfg.d_mlp = None  # TransformerLensConfig fills in 4 * d_model; there is no MLP here
    return cfg


def _why_missing(model: Any, key: str) -> str | None:
    """Why hook `key` is absent from this architecture, or None if it is not a block hook."""
    parts = key.split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
        return None
    layer = int(parts[1])
    if layer >= len(model.blocks):
        return f"the model has blocks 0..{len(model.blocks) - 1}"
    block = model.blocks[layer]
    spec = block.spec
    rest = ".".join(parts[2:])
    slots = f"mixer: {spec.mixer.kind}, ffn: {spec.ffn.kind}"
    if rest.startswith("attn.") or rest == "hook_attn_out":
        if not isinstance(spec.mixer, AttentionSpec):
            return (f"block {layer} has no attention ({slots}); its mixer's output is "
                    f"blocks.{layer}.hook_{block.mixer_name}_out. TransformerLens helpers that read "
                    "attention in every block (decompose_resid, stack_head_results, compute_head_results) "
                    "do not apply to this architecture")
    if rest.startswith("mlp.") or rest == "hook_mlp_out":
        if not isinstance(spec.ffn, (MLPSpec, SwiGLUSpec)):
            where = f"blocks.{layer}.hook_{block.ffn_name}_out" if block.ffn_name else "nothing (no ffn slot)"
            return (f"block {layer} has no MLP ({slots}); its ffn output is {where}. TransformerLens "
                    "helpers that read an MLP in every block (decompose_resid with mode='all'/'mlp', "
                    "stack_neuron_results) do not apply to this architecture")
    if rest in ("hook_resid_mid", "ln2.hook_scale", "ln2.hook_normalized") and block.ffn_name is None:
        return f"block {layer} has a single residual slot ({slots}): it has no resid_mid and no ln2"
    if rest.startswith("attn.hook_rot_") and isinstance(spec.mixer, AttentionSpec) and not spec.mixer.rope:
        return f"block {layer}'s attention has no RoPE"
    if rest.startswith(("ln1.", "ln2.")) and model.spec.norm == "none":
        return "this architecture has no norms"
    return None


class ICLActivationCache(ActivationCache):
    """TransformerLens's `ActivationCache` for a `HookedICLModel` (see the module docstring)."""

    def __getitem__(self, key: Any) -> torch.Tensor:
        try:
            return super().__getitem__(key)
        except KeyError:
            name = key if isinstance(key, str) else _act_name(key)
            why = _why_missing(self.model, name) if name is not None else None
            if why is not None and name not in self.model.hook_dict:
                raise KeyError(f"{name}: {why}") from None
            if name is not None and name in self.model.hook_dict:
                raise KeyError(f"{name} was not cached (names_filter excluded it)") from None
            raise

    def __contains__(self, key: object) -> bool:
        return key in self.cache_dict


def _act_name(key: Any) -> str | None:
    from transformer_lens.utilities import get_act_name

    try:
        if isinstance(key, tuple):
            return get_act_name(*key)
        return get_act_name(key)
    except Exception:  # noqa: BLE001 - not a TL shorthand: report the original KeyError
        return None
