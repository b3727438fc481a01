"""Conversion into `HookedICLModel` from HF backbones and Garg/Campbell-style checkpoints.

The in-context learning models of Garg et al. (2022) and Campbell et al. (2024) wrap an HF backbone
(`GPT2Model`, `LlamaModel` or `MambaModel`) between two Linear layers:

    preds = _read_out(_backbone(inputs_embeds=_read_in(interleave(xs, ys))).last_hidden_state)[:, ::2, 0]

with the Garg token layout (x token = x, y token = [y, 0, ..., 0]). Their state dicts have the keys
`_read_in.*`, `_backbone.*` and `_read_out.*`. This module maps such a state dict onto the `gpt2`,
`llama` or `mamba` preset, by key renaming and reshaping only:

* `from_state_dict(state_dict, arch, **sizes)`: sizes are inferred from tensor shapes wherever they
  can be (n_dims, y_dim, d_model, n_layers, n_ctx, d_mlp, K/V heads, d_state, expand, d_conv,
  dt_rank, biases); the rest (n_heads, and options such as `act`, `norm_eps`, `rope_theta`) come
  from `sizes`. transformers is not needed.
* `from_hf(backbone, read_in, read_out)`: reads the sizes and options from `backbone.config`,
  rejects options the presets cannot reproduce (ValueError naming the config field), assembles the
  wrapper's state dict and calls `from_state_dict`, so each architecture has one mapping.

Per architecture:

* gpt2: HF `Conv1D` weights are `(in, out)` and are transposed into `nn.Linear`'s `(out, in)`;
  `c_attn` already holds [q; k; v] in the layout of our fused `qkv_proj`. The token table `wte`
  (unused by an ICL model) and the legacy causal-mask buffers `attn.bias` / `attn.masked_bias`
  are ignored.
* llama: `qkv_proj` = [q_proj; k_proj; v_proj]. Grouped-query attention is supported by repeating each
  K/V head `n_heads / n_kv_heads` times (HF's `repeat_kv`), so the converted model has `n_heads`
  K/V heads (the `hook_k` / `hook_v` heads of one group are copies). `embed_tokens` and stored
  `rotary_emb.inv_freq` buffers are ignored; the RoPE frequencies come from `rope_theta`.
* mamba: the mixer parameters keep their names; `embeddings` / `embedding` (mamba-ssm's name) are
  ignored.

A wrapper whose `_read_in` / `_read_out` has no bias converts with a zero bias.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .model import HookedICLModel
from .presets import preset
from .spec import BlockSpec, ModelSpec

__all__ = ["ARCHS", "from_hf", "from_state_dict", "load_state_dict_file"]

#: Architectures `from_state_dict` accepts (each is also the preset it builds).
ARCHS: tuple[str, ...] = ("gpt2", "llama", "mamba")

#: HF `activation_function` -> `MLPSpec.act` (gelu_fast is the same tanh approximation as gelu_new).
_GPT2_ACTS = {
    "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh", "gelu": "gelu",
    "relu": "relu", "silu": "silu", "swish": "silu",
}

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------- loading
def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load a state dict from a `.safetensors` file or a torch file (with `weights_only=True`).

    A torch file holding a training state with a `"model_state_dict"` entry (Garg et al.'s
    `state.pt`) is unwrapped to that entry.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        obj: Any = load_file(path, device="cpu")
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    if "model_state_dict" in obj and not any(str(k).startswith("_read_in.") for k in obj):
        obj = obj["model_state_dict"]
    return dict(obj)


# ------------------------------------------------------------------------------------ the plan
@dataclass
class _Plan:
    """How to fill every tensor of the target model: target key -> (source keys, transform)."""

    spec: ModelSpec
    rules: dict[str, tuple[tuple[str, ...], Callable[..., Tensor]]] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()  # regexes of source keys that are known and deliberately unused
    zero: set[str] = field(default_factory=set)  # target keys filled with zeros (absent read-in/out bias)

    def copy(self, target: str, source: str, fn: Callable[[Tensor], Tensor] = lambda t: t) -> None:
        self.rules[target] = ((source,), fn)

    def combine(self, target: str, sources: tuple[str, ...], fn: Callable[..., Tensor]) -> None:
        self.rules[target] = (sources, fn)


def _require(sd: Mapping[str, Tensor], keys: list[str]) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise ValueError(f"state dict is missing keys: {_fmt(missing)}")


def _fmt(keys: list[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")


def _layer_count(sd: Mapping[str, Tensor], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in sd if (m := pat.match(k))}
    if not idx:
        others = [k for k in sd if k.startswith("_backbone.")]
        raise ValueError(
            f"state dict has no layers: missing keys: {prefix}0.* ...; unexpected keys: {_fmt(others) or 'none'}"
        )
    return max(idx) + 1


class _Sizes:
    """The keyword sizes of one call: unknown names are rejected; inferred values are checked against them."""

    def __init__(self, arch: str, sizes: dict[str, Any], allowed: set[str]) -> None:
        unknown = set(sizes) - allowed
        if unknown:
            raise ValueError(
                f"unknown size/option(s) for arch={arch!r}: {_fmt(list(unknown))}; valid: {_fmt(list(allowed))}"
            )
        self.arch = arch
        self.given = dict(sizes)

    def inferred(self, name: str, value: Any, where: str) -> Any:
        """`value` was read off the state dict; a given `name` must agree with it."""
        if name in self.given and self.given[name] != value:
            raise ValueError(f"{name}={self.given[name]!r} was given but the state dict has {name}={value!r} ({where})")
        return value

    def required(self, name: str, why: str) -> Any:
        if name not in self.given or self.given[name] is None:
            raise ValueError(f"arch={self.arch!r} needs {name}=... ({why}; it cannot be inferred from tensor shapes)")
        return self.given[name]

    def option(self, name: str, default: Any) -> Any:
        v = self.given.get(name)
        return default if v is None else v


_COMMON = {"n_dims", "y_dim", "d_model", "n_layers", "layout"}


def _read_sizes(sd: Mapping[str, Tensor], sz: _Sizes) -> dict[str, Any]:
    """n_dims, y_dim, d_model and layout from the read-in / read-out weights."""
    _require(sd, ["_read_in.weight", "_read_out.weight"])
    d_model, d_in = sd["_read_in.weight"].shape
    y_dim, d_out_in = sd["_read_out.weight"].shape
    if d_out_in != d_model:
        raise ValueError(f"_read_out.weight has in_features {d_out_in} but _read_in.weight gives d_model={d_model}")
    layout = sz.option("layout", "garg")
    if layout not in ("garg", "akyurek"):
        raise ValueError(f"layout must be 'garg' or 'akyurek', got {layout!r}")
    n_dims = d_in - (y_dim if layout == "akyurek" else 0)
    return dict(
        n_dims=sz.inferred("n_dims", int(n_dims), "_read_in.weight"),
        y_dim=sz.inferred("y_dim", int(y_dim), "_read_out.weight"),
        d_model=sz.inferred("d_model", int(d_model), "_read_in.weight"),
        layout=layout,
    )


def _read_rules(plan: _Plan, sd: Mapping[str, Tensor]) -> None:
    plan.copy("read_in.weight", "_read_in.weight")
    plan.copy("read_out.weight", "_read_out.weight")
    for ours, src in (("read_in.bias", "_read_in.bias"), ("read_out.bias", "_read_out.bias")):
        if src in sd:
            plan.copy(ours, src)
        else:
            plan.zero.add(ours)


def _respec(spec: ModelSpec, mixer: dict[str, Any] | None = None, ffn: dict[str, Any] | None = None) -> ModelSpec:
    """`spec` with the given fields set on every block's mixer / ffn (validated again)."""

    def upd(s: Any, u: dict[str, Any] | None) -> Any:
        return type(s).model_validate({**s.model_dump(), **u}) if u and s.kind != "none" else s

    blocks = [BlockSpec(mixer=upd(b.mixer, mixer), ffn=upd(b.ffn, ffn)) for b in spec.blocks]
    return ModelSpec.model_validate({**spec.model_dump(), "blocks": [b.model_dump() for b in blocks]})


def _t(w: Tensor) -> Tensor:
    return w.t()


# ----------------------------------------------------------------------------------------- gpt2
def _plan_gpt2(sd: Mapping[str, Tensor], sizes: dict[str, Any]) -> _Plan:
    sz = _Sizes("gpt2", sizes, _COMMON | {"n_heads", "n_ctx", "d_mlp", "act", "norm_eps"})
    base = _read_sizes(sd, sz)
    n_layers = sz.inferred("n_layers", _layer_count(sd, "_backbone.h."), "_backbone.h.N.*")
    _require(sd, ["_backbone.wpe.weight", "_backbone.h.0.mlp.c_fc.weight"])
    n_ctx = sz.inferred("n_ctx", int(sd["_backbone.wpe.weight"].shape[0]), "_backbone.wpe.weight")
    d_mlp = sz.inferred("d_mlp", int(sd["_backbone.h.0.mlp.c_fc.weight"].shape[1]), "_backbone.h.0.mlp.c_fc.weight")
    n_heads = sz.required("n_heads", "GPT-2's config.n_head")
    act = sz.option("act", "gelu_tanh")
    act = _GPT2_ACTS.get(act, act)  # HF names are accepted too
    spec = preset(
        "gpt2", n_layers=n_layers, n_heads=n_heads, d_mlp=d_mlp, n_ctx=n_ctx,
        norm_eps=sz.option("norm_eps", 1e-5), **base,
    )
    spec = _respec(spec, ffn={"act": act})
    plan = _Plan(spec, ignored=(r"_backbone\.wte\.weight", r"_backbone\.h\.\d+\.attn\.(bias|masked_bias)"))
    _read_rules(plan, sd)
    plan.copy("W_pos", "_backbone.wpe.weight")
    for i in range(n_layers):
        s, o = f"_backbone.h.{i}.", f"blocks.{i}."
        for ln_s, ln_o in (("ln_1", "ln1"), ("ln_2", "ln2")):
            plan.copy(o + ln_o + ".w", s + ln_s + ".weight")
            plan.copy(o + ln_o + ".b", s + ln_s + ".bias")
        for lin_s, lin_o in (("attn.c_attn", "attn.qkv_proj"), ("attn.c_proj", "attn.out_proj"),
                             ("mlp.c_fc", "mlp.W_in"), ("mlp.c_proj", "mlp.W_out")):
            plan.copy(o + lin_o + ".weight", s + lin_s + ".weight", _t)  # Conv1D (in, out) -> (out, in)
            plan.copy(o + lin_o + ".bias", s + lin_s + ".bias")
    plan.copy("ln_final.w", "_backbone.ln_f.weight")
    plan.copy("ln_final.b", "_backbone.ln_f.bias")
    return plan


# ---------------------------------------------------------------------------------------- llama
def _plan_llama(sd: Mapping[str, Tensor], sizes: dict[str, Any]) -> _Plan:
    sz = _Sizes("llama", sizes, _COMMON | {"n_heads", "n_kv_heads", "n_ctx", "d_mlp", "norm_eps", "rope_theta", "attn_bias", "mlp_bias"})
    base = _read_sizes(sd, sz)
    d = base["d_model"]
    n_layers = sz.inferred("n_layers", _layer_count(sd, "_backbone.layers."), "_backbone.layers.N.*")
    p0 = "_backbone.layers.0."
    _require(sd, [p0 + "mlp.gate_proj.weight", p0 + "self_attn.q_proj.weight", p0 + "self_attn.k_proj.weight"])
    d_mlp = sz.inferred("d_mlp", int(sd[p0 + "mlp.gate_proj.weight"].shape[0]), p0 + "mlp.gate_proj.weight")
    n_heads = int(sz.required("n_heads", "LLaMA's config.num_attention_heads"))
    if n_heads < 1 or d % n_heads:
        raise ValueError(f"n_heads={n_heads} must divide d_model={d}")
    d_head = d // n_heads
    q_rows = int(sd[p0 + "self_attn.q_proj.weight"].shape[0])
    if q_rows != d:
        raise ValueError(
            f"{p0}self_attn.q_proj.weight has {q_rows} rows but d_model={d}: a head_dim other than "
            f"d_model / n_heads is not supported"
        )
    kv_rows = int(sd[p0 + "self_attn.k_proj.weight"].shape[0])
    if kv_rows == 0 or kv_rows % d_head or n_heads % (kv_rows // d_head):
        raise ValueError(
            f"{p0}self_attn.k_proj.weight has {kv_rows} rows, not a number of K/V heads (d_head={d_head}) "
            f"that divides n_heads={n_heads}"
        )
    n_kv = sz.inferred("n_kv_heads", kv_rows // d_head, p0 + "self_attn.k_proj.weight")
    rep = n_heads // n_kv
    attn_bias = sz.inferred("attn_bias", p0 + "self_attn.q_proj.bias" in sd, p0 + "self_attn.q_proj.bias")
    mlp_bias = sz.inferred("mlp_bias", p0 + "mlp.gate_proj.bias" in sd, p0 + "mlp.gate_proj.bias")
    fields: dict[str, Any] = dict(norm_eps=sz.option("norm_eps", 1e-6))
    if "n_ctx" in sz.given:
        fields["n_ctx"] = sz.given["n_ctx"]
    spec = preset("llama", n_layers=n_layers, n_heads=n_heads, d_mlp=d_mlp, **base, **fields)
    spec = _respec(
        spec, mixer={"rope_theta": float(sz.option("rope_theta", 10000.0)), "bias": attn_bias}, ffn={"bias": mlp_bias}
    )
    plan = _Plan(spec, ignored=(r"_backbone\.embed_tokens\.weight", r"_backbone\.(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq"))
    _read_rules(plan, sd)

    def kv(t: Tensor) -> Tensor:  # (n_kv * d_head, ...) -> (n_heads * d_head, ...), head h uses K/V head h // rep
        return t.reshape(n_kv, d_head, *t.shape[1:]).repeat_interleave(rep, dim=0).reshape(n_heads * d_head, *t.shape[1:])

    def qkv(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return torch.cat([q, kv(k), kv(v)], dim=0)

    for i in range(n_layers):
        s, o = f"_backbone.layers.{i}.", f"blocks.{i}."
        plan.copy(o + "ln1.w", s + "input_layernorm.weight")
        plan.copy(o + "ln2.w", s + "post_attention_layernorm.weight")
        for kind in ("weight", "bias") if attn_bias else ("weight",):
            a = s + "self_attn."
            plan.combine(o + f"attn.qkv_proj.{kind}", (a + f"q_proj.{kind}", a + f"k_proj.{kind}", a + f"v_proj.{kind}"), qkv)
            plan.copy(o + f"attn.out_proj.{kind}", a + f"o_proj.{kind}")
        for kind in ("weight", "bias") if mlp_bias else ("weight",):
            for src, ours in (("gate_proj", "W_gate"), ("up_proj", "W_in"), ("down_proj", "W_out")):
                plan.copy(o + f"mlp.{ours}.{kind}", s + f"mlp.{src}.{kind}")
    plan.copy("ln_final.w", "_backbone.norm.weight")
    return plan


# ---------------------------------------------------------------------------------------- mamba
def _plan_mamba(sd: Mapping[str, Tensor], sizes: dict[str, Any]) -> _Plan:
    sz = _Sizes("mamba", sizes, _COMMON | {"d_state", "expand", "d_conv", "dt_rank", "bias", "conv_bias", "norm_eps"})
    base = _read_sizes(sd, sz)
    d = base["d_model"]
    n_layers = sz.inferred("n_layers", _layer_count(sd, "_backbone.layers."), "_backbone.layers.N.*")
    m0 = "_backbone.layers.0.mixer."
    _require(sd, [m0 + "in_proj.weight", m0 + "A_log", m0 + "conv1d.weight", m0 + "dt_proj.weight"])
    d_inner = int(sd[m0 + "in_proj.weight"].shape[0]) // 2
    if d_inner % d:
        raise ValueError(f"{m0}in_proj.weight gives d_inner={d_inner}, not an integer multiple (expand) of d_model={d}")
    expand = sz.inferred("expand", d_inner // d, m0 + "in_proj.weight")
    d_state = sz.inferred("d_state", int(sd[m0 + "A_log"].shape[1]), m0 + "A_log")
    d_conv = sz.inferred("d_conv", int(sd[m0 + "conv1d.weight"].shape[-1]), m0 + "conv1d.weight")
    dt_rank = sz.inferred("dt_rank", int(sd[m0 + "dt_proj.weight"].shape[1]), m0 + "dt_proj.weight")
    bias = sz.inferred("bias", m0 + "in_proj.bias" in sd, m0 + "in_proj.bias")
    conv_bias = sz.inferred("conv_bias", m0 + "conv1d.bias" in sd, m0 + "conv1d.bias")
    spec = preset(
        "mamba", n_layers=n_layers, d_state=d_state, expand=expand, d_conv=d_conv,
        norm_eps=sz.option("norm_eps", 1e-5), **base,
    )
    spec = _respec(spec, mixer={"dt_rank": dt_rank, "bias": bias, "conv_bias": conv_bias})
    plan = _Plan(spec, ignored=(r"_backbone\.embeddings?\.weight",))
    _read_rules(plan, sd)
    names = ["A_log", "D", "in_proj.weight", "conv1d.weight", "x_proj.weight", "dt_proj.weight", "dt_proj.bias",
             "out_proj.weight"]
    names += ["in_proj.bias", "out_proj.bias"] if bias else []
    names += ["conv1d.bias"] if conv_bias else []
    for i in range(n_layers):
        plan.copy(f"blocks.{i}.ln1.w", f"_backbone.layers.{i}.norm.weight")
        for n in names:
            plan.copy(f"blocks.{i}.mixer.{n}", f"_backbone.layers.{i}.mixer.{n}")
    plan.copy("ln_final.w", "_backbone.norm_f.weight")
    return plan


_PLANNERS: dict[str, Callable[[Mapping[str, Tensor], dict[str, Any]], _Plan]] = {
    "gpt2": _plan_gpt2, "llama": _plan_llama, "mamba": _plan_mamba,
}


# ---------------------------------------------------------------------------------------- public
def from_state_dict(
    state_dict: Mapping[str, Tensor] | str | os.PathLike, arch: str, **sizes: Any
) -> HookedICLModel:
    """Build the `arch` preset (gpt2 / llama / mamba) from a Garg/Campbell-style wrapper's state dict.

    `state_dict` maps `_read_in.*`, `_backbone.*` (HF key names) and `_read_out.*` to tensors, or is
    a path to a `.safetensors` / torch file (see `load_state_dict_file`). Sizes are inferred from
    tensor shapes; `sizes` supplies the rest and may repeat inferred ones (they are checked):

    * gpt2: `n_heads` (required), `act` (an `MLPSpec.act` or HF `activation_function` name;
      default "gelu_tanh" = HF `gelu_new`), `norm_eps` (1e-5); inferred: n_dims, y_dim, d_model,
      n_layers, n_ctx, d_mlp.
    * llama: `n_heads` (required), `norm_eps` (1e-6), `rope_theta` (10000), `n_ctx` (unused by
      RoPE; default the spec's); inferred: n_dims, y_dim, d_model, n_layers, d_mlp, `n_kv_heads`,
      attention / MLP bias.
    * mamba: `norm_eps` (1e-5); inferred: n_dims, y_dim, d_model, n_layers, d_state, expand,
      d_conv, dt_rank, in/out-projection and conv biases.
    * all: `layout` ("garg", default, or "akyurek").

    Missing or unexpected keys, wrong shapes, unknown `arch` or unknown sizes raise ValueError
    naming them. The model is built on CPU in float32 (tensors of other dtypes are cast).
    """
    if arch not in _PLANNERS:
        raise ValueError(f"unknown arch {arch!r} for conversion; valid: {', '.join(ARCHS)}")
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = load_state_dict_file(state_dict)
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a mapping of tensors or a path, got {type(state_dict).__name__}")
    bad = [str(k) for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"state dict entries are not str -> tensor: {_fmt(bad)}")
    sd = dict(state_dict)

    plan = _PLANNERS[arch](sd, sizes)
    used = {k for srcs, _ in plan.rules.values() for k in srcs}
    missing = sorted(used - set(sd))
    ignored = re.compile("|".join(f"(?:{p})" for p in plan.ignored)) if plan.ignored else None
    unexpected = sorted(k for k in sd if k not in used and not (ignored and ignored.fullmatch(k)))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt(unexpected)}")
        raise ValueError(f"state dict does not fit arch={arch!r} ({plan.spec.summary()}): " + "; ".join(parts))

    model = HookedICLModel(plan.spec)
    target = model.state_dict()
    new: dict[str, Tensor] = {}
    for ours, (srcs, fn) in plan.rules.items():
        try:
            t = fn(*(sd[k] for k in srcs))
        except RuntimeError as e:  # a reshape that does not fit
            raise ValueError(f"cannot map {', '.join(srcs)} to {ours}: {e}") from e
        if tuple(t.shape) != tuple(target[ours].shape):
            shapes = ", ".join(f"{k} {tuple(sd[k].shape)}" for k in srcs)
            raise ValueError(f"shape mismatch: {shapes} gives {tuple(t.shape)} for {ours}, expected {tuple(target[ours].shape)}")
        new[ours] = t
    for ours in plan.zero:
        new[ours] = torch.zeros_like(target[ours])
    not_filled = sorted(set(target) - set(new))
    if not_filled:  # a bug in a plan, not in the input
        raise RuntimeError(f"conversion plan for {arch!r} leaves {_fmt(not_filled)} unset")
    model.load_state_dict(new, strict=True)
    return model


def from_hf(backbone: Any, read_in: torch.nn.Linear, read_out: torch.nn.Linear) -> HookedICLModel:
    """Convert an HF `GPT2Model`, `LlamaModel` or `MambaModel` plus the wrapper's read-in / read-out.

    The result satisfies `model(xs, ys) == read_out(backbone(inputs_embeds=read_in(tokens))
    .last_hidden_state)[:, ::2, 0]` with Garg's token layout (for a 1-output read-out). The backbone
    kind is `backbone.config.model_type`; options the presets cannot reproduce raise ValueError
    naming the config field. transformers is not imported.
    """
    cfg = getattr(backbone, "config", None)
    arch = getattr(cfg, "model_type", None)
    if arch not in _CONFIG_READERS:
        raise ValueError(
            f"backbone.config.model_type={arch!r} is not supported; valid: {', '.join(ARCHS)} "
            f"(pass the base model, e.g. GPT2Model, not a model with a head)"
        )
    for name, lin in (("read_in", read_in), ("read_out", read_out)):
        if not isinstance(lin, torch.nn.Linear):
            raise ValueError(f"{name} must be a torch.nn.Linear, got {type(lin).__name__}")
    sizes = _CONFIG_READERS[arch](cfg)
    sd: dict[str, Tensor] = {}
    for prefix, mod in (("_read_in.", read_in), ("_backbone.", backbone), ("_read_out.", read_out)):
        sd.update({prefix + k: v for k, v in mod.state_dict().items()})
    return from_state_dict(sd, arch, **sizes)


# ------------------------------------------------------------------------------ config readers
def _cfg(cfg: Any, name: str, default: Any = None) -> Any:
    return getattr(cfg, name, default)


def _unsupported(field_name: str, value: Any, why: str) -> ValueError:
    return ValueError(f"unsupported config: {field_name}={value!r} ({why})")


def _gpt2_config(cfg: Any) -> dict[str, Any]:
    act = _cfg(cfg, "activation_function", "gelu_new")
    if act not in _GPT2_ACTS:
        raise _unsupported("activation_function", act, f"supported: {', '.join(_GPT2_ACTS)}")
    if not _cfg(cfg, "scale_attn_weights", True):
        raise _unsupported("scale_attn_weights", False, "attention scores are always scaled by 1/sqrt(d_head)")
    if _cfg(cfg, "scale_attn_by_inverse_layer_idx", False):
        raise _unsupported("scale_attn_by_inverse_layer_idx", True, "per-layer score scaling is not implemented")
    if _cfg(cfg, "add_cross_attention", False):
        raise _unsupported("add_cross_attention", True, "decoder-only models only")
    # reorder_and_upcast_attn only changes the order/precision of the score computation: same math.
    d = int(cfg.n_embd)
    return dict(
        n_heads=int(cfg.n_head),
        d_model=d,
        n_layers=int(cfg.n_layer),
        n_ctx=int(cfg.n_positions),
        d_mlp=int(cfg.n_inner) if _cfg(cfg, "n_inner") is not None else 4 * d,
        act=_GPT2_ACTS[act],
        norm_eps=float(cfg.layer_norm_epsilon),
    )


def _llama_rope(cfg: Any) -> float:
    """rope_theta from `config.rope_parameters` (transformers 5) or `rope_theta` / `rope_scaling` (4.x)."""
    params = _cfg(cfg, "rope_parameters")
    if isinstance(params, Mapping) and params and not ("rope_type" in params or "rope_theta" in params):
        raise _unsupported("rope_parameters", dict(params), "per-layer-type RoPE parameters are not supported")
    params = dict(params or {})
    legacy = _cfg(cfg, "rope_scaling")
    if legacy:
        params = {**params, **dict(legacy)}
    rope_type = params.get("rope_type", params.get("type", "default"))
    where = "rope_parameters" if _cfg(cfg, "rope_parameters") is not None else "rope_scaling"
    if rope_type != "default":
        raise _unsupported(f"{where}.rope_type", rope_type, "only the default (unscaled) RoPE is implemented")
    prf = params.get("partial_rotary_factor", _cfg(cfg, "partial_rotary_factor", 1.0))
    if prf is not None and float(prf) != 1.0:
        raise _unsupported("partial_rotary_factor", prf, "RoPE is applied to the whole head")
    theta = params.get("rope_theta", _cfg(cfg, "rope_theta", 10000.0))
    return float(theta)


def _llama_config(cfg: Any) -> dict[str, Any]:
    act = _cfg(cfg, "hidden_act", "silu")
    if act != "silu":
        raise _unsupported("hidden_act", act, "the SwiGLU MLP uses silu")
    d, h = int(cfg.hidden_size), int(cfg.num_attention_heads)
    head_dim = _cfg(cfg, "head_dim")
    if head_dim is not None and (d % h or int(head_dim) != d // h):
        raise _unsupported("head_dim", head_dim, f"must equal hidden_size / num_attention_heads = {d / h:g}")
    kv = _cfg(cfg, "num_key_value_heads") or h
    if h % int(kv):
        raise _unsupported("num_key_value_heads", kv, f"must divide num_attention_heads={h}")
    return dict(
        n_heads=h,
        n_kv_heads=int(kv),
        d_model=d,
        n_layers=int(cfg.num_hidden_layers),
        n_ctx=int(cfg.max_position_embeddings),
        d_mlp=int(cfg.intermediate_size),
        norm_eps=float(cfg.rms_norm_eps),
        rope_theta=_llama_rope(cfg),
        attn_bias=bool(_cfg(cfg, "attention_bias", False)),
        mlp_bias=bool(_cfg(cfg, "mlp_bias", False)),
    )


def _mamba_config(cfg: Any) -> dict[str, Any]:
    act = _cfg(cfg, "hidden_act", "silu")
    if act != "silu":
        raise _unsupported("hidden_act", act, "the Mamba mixer uses silu")
    d = int(cfg.hidden_size)
    expand = cfg.expand
    if float(expand) != int(expand) or int(expand) < 1:
        raise _unsupported("expand", expand, "must be a positive integer")
    inner = _cfg(cfg, "intermediate_size")
    if inner is not None and int(inner) != int(expand) * d:
        raise _unsupported("intermediate_size", inner, f"must equal expand * hidden_size = {int(expand) * d}")
    rank = cfg.time_step_rank
    rank = math.ceil(d / 16) if rank == "auto" else int(rank)
    return dict(
        d_model=d,
        n_layers=int(cfg.num_hidden_layers),
        d_state=int(cfg.state_size),
        expand=int(expand),
        d_conv=int(cfg.conv_kernel),
        dt_rank=rank,
        bias=bool(_cfg(cfg, "use_bias", False)),
        conv_bias=bool(_cfg(cfg, "use_conv_bias", True)),
        norm_eps=float(cfg.layer_norm_epsilon),
    )


_CONFIG_READERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "gpt2": _gpt2_config, "llama": _llama_config, "mamba": _mamba_config,
}
