"""Architecture presets: data, not classes.

The 12 architectures of Campbell et al. 2024 (Table 3), Park et al.'s MambaFormer (= Campbell's
2.3 "LLaMA RoPE,SwiGLU-less"), Park et al.'s standard hybrid, and von Oswald et al.'s linear
self-attention model (`linear_attention`; use n_layers=1 for the one-step-GD setting). Every preset is one row of
`_TABLE`; `preset(name, **sizes)` turns it into a `ModelSpec` at the paper's standard size
(12 layers, d_model 256, 8 heads; Mamba d_state 16, expand 4, d_conv 4) unless overridden.

A "leading Mamba block" (the positional substitute of Park et al.) is block 0 with a Mamba mixer
and no ffn; it comes in addition to the `n_layers` standard blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .spec import AttentionSpec, BlockSpec, MambaSpec, MLPSpec, ModelSpec, NoneSpec, SwiGLUSpec


@dataclass(frozen=True)
class _Row:
    title: str
    norm: Literal["layernorm", "rmsnorm", "none"]
    pos: Literal["learned", "rope", "none"]
    mixer: Literal["attention", "mamba"]
    ffn: Literal["mlp", "swiglu", "mamba", "none"]
    lead_mamba: bool = False
    attn_bias: bool = True
    norm_eps: float = 1e-5
    softmax: bool = True
    layout: Literal["garg", "akyurek", "paired"] = "garg"


_TABLE: dict[str, _Row] = {
    "gpt2": _Row("1 GPT-2", "layernorm", "learned", "attention", "mlp"),
    "gpt2_rms": _Row("1.1 GPT-2 RMS", "rmsnorm", "learned", "attention", "mlp"),
    "gpt2_rope": _Row("1.2 GPT-2 RoPE", "layernorm", "rope", "attention", "mlp"),
    "gpt2_swiglu": _Row("1.3 GPT-2 SwiGLU", "layernorm", "learned", "attention", "swiglu"),
    "gpt2_rms_swiglu": _Row("1.4 GPT-2 RMS SwiGLU", "rmsnorm", "learned", "attention", "swiglu"),
    "gpt2_rms_rope": _Row("1.5 GPT-2 RMS RoPE", "rmsnorm", "rope", "attention", "mlp"),
    "gpt2_rope_swiglu": _Row("1.6 GPT-2 RoPE SwiGLU", "layernorm", "rope", "attention", "swiglu"),
    "llama": _Row("2 LLaMA", "rmsnorm", "rope", "attention", "swiglu", attn_bias=False, norm_eps=1e-6),
    "llama_nope_mamba": _Row(
        "2.1 LLaMA RoPE-less (leading Mamba block)", "rmsnorm", "none", "attention", "swiglu",
        lead_mamba=True, attn_bias=False, norm_eps=1e-6,
    ),
    "llama_mamba_ffn": _Row(
        "2.2 LLaMA SwiGLU-less (Mamba ffn)", "rmsnorm", "rope", "attention", "mamba",
        attn_bias=False, norm_eps=1e-6,
    ),
    "mambaformer": _Row(
        "2.3 LLaMA RoPE,SwiGLU-less = MambaFormer (Park et al.)", "rmsnorm", "none", "attention", "mamba",
        lead_mamba=True, attn_bias=False, norm_eps=1e-6,
    ),
    "mamba": _Row("3 Mamba", "rmsnorm", "none", "mamba", "none"),
    "standard_hybrid": _Row(
        "Standard hybrid (Park et al.): attention and Mamba interleaved", "layernorm", "learned",
        "attention", "mamba",
    ),
    "linear_attention": _Row(
        "Linear self-attention (von Oswald et al.): no softmax, no norm, no MLP, (x, y) tokens",
        "none", "none", "attention", "none", attn_bias=False, softmax=False, layout="paired",
    ),
}

CAMPBELL_ZOO: tuple[str, ...] = tuple(k for k in _TABLE if k not in ("standard_hybrid", "linear_attention"))


def list_architectures() -> list[str]:
    """Names of all presets (the 12 Campbell et al. models, incl. mambaformer, and standard_hybrid)."""
    return list(_TABLE)


def describe(name: str) -> str:
    return _row(name).title


def _row(name: str) -> _Row:
    if name not in _TABLE:
        raise ValueError(f"unknown architecture {name!r}; valid: {', '.join(_TABLE)}")
    return _TABLE[name]


def preset(
    name: str,
    *,
    n_dims: int = 20,
    y_dim: int = 1,
    d_model: int = 256,
    n_layers: int = 12,
    n_heads: int = 8,
    d_mlp: int | None = None,
    d_state: int = 16,
    expand: int = 4,
    d_conv: int = 4,
    **model_fields: Any,
) -> ModelSpec:
    """Build the `ModelSpec` of preset `name` with the given sizes.

    `model_fields` are passed to `ModelSpec` (e.g. `n_ctx`, `layout`, `norm_eps`, `init_std`).
    """
    r = _row(name)
    if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
    mamba = MambaSpec(d_state=d_state, expand=expand, d_conv=d_conv)
    attn = AttentionSpec(n_heads=n_heads, rope=r.pos == "rope", bias=r.attn_bias, softmax=r.softmax)
    mixer = attn if r.mixer == "attention" else mamba
    ffn = {
        "mlp": lambda: MLPSpec(d_mlp=d_mlp),
        "swiglu": lambda: SwiGLUSpec(d_mlp=d_mlp),
        "mamba": lambda: mamba,
        "none": lambda: NoneSpec(),
    }[r.ffn]()
    blocks = [BlockSpec(mixer=mamba, ffn=NoneSpec())] if r.lead_mamba else []
    blocks += [BlockSpec(mixer=mixer, ffn=ffn) for _ in range(n_layers)]
    fields: dict[str, Any] = dict(
        name=name,
        n_dims=n_dims,
        y_dim=y_dim,
        d_model=d_model,
        norm=r.norm,
        norm_eps=r.norm_eps,
        pos_embed="learned" if r.pos == "learned" else "none",
        layout=r.layout,
        blocks=blocks,
    )
    fields.update(model_fields)
    return ModelSpec(**fields)
