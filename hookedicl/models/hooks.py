"""Small helpers around TransformerLens `HookPoint`s, and the hook catalogue.

`hook_catalogue(spec)` is the one list of every hook name a `HookedICLModel` built from `spec`
has, in forward order, with the shape each sees; docs/models.md describes the names, and the
tests assert that every preset's `hook_dict` and `run_with_cache` shapes equal it.
"""

from __future__ import annotations

from typing import Any

from transformer_lens.hook_points import HookPoint

from .spec import AttentionSpec, MambaSpec, MLPSpec, ModelSpec, SwiGLUSpec, module_name

__all__ = ["HookPoint", "MAMBA_HOOKS", "hook_catalogue", "is_hooked"]

#: The hook names of a Mamba mixer (either slot), in forward order. The SSM ones use
#: TransformerLens 4.3's names: hook_ssm_dt (Δ), hook_ssm_write (Δ u ⊗ B), hook_ssm_state (h).
MAMBA_HOOKS: tuple[str, ...] = (
    "hook_in_proj", "hook_gate", "hook_conv", "hook_x", "hook_ssm_dt", "hook_B", "hook_C",
    "hook_ssm_write", "hook_ssm_state", "hook_y",
)


def is_hooked(hp: HookPoint) -> bool:
    """True when a forward or backward hook is attached to `hp`.

    Components use it to skip work nobody asked for (materialising the attention pattern or the
    Mamba writes and states) and to pick fused kernels only when no inner hook must fire.
    """
    return bool(hp._forward_hooks) or bool(hp._backward_hooks)


def _component_hooks(s: Any, prefix: str, d: int, b: int, t: int) -> dict[str, tuple[int, ...]]:
    """The hooks inside one slot's component (module at `prefix`), `t` tokens."""
    if isinstance(s, AttentionSpec):
        h, dh = s.n_heads, d // s.n_heads
        out = {f"{prefix}hook_{k}": (b, t, h, dh) for k in ("q", "k", "v")}
        if s.rope:
            out |= {f"{prefix}hook_rot_q": (b, t, h, dh), f"{prefix}hook_rot_k": (b, t, h, dh)}
        out |= {f"{prefix}hook_attn_scores": (b, h, t, t), f"{prefix}hook_pattern": (b, h, t, t)}
        return out | {f"{prefix}hook_z": (b, t, h, dh)}
    if isinstance(s, (MLPSpec, SwiGLUSpec)):
        dm = s.d_mlp or 4 * d
        names = ("hook_pre", "hook_pre_linear", "hook_post") if isinstance(s, SwiGLUSpec) else ("hook_pre", "hook_post")
        return {prefix + n: (b, t, dm) for n in names}
    if isinstance(s, MambaSpec):
        di, n = s.expand * d, s.d_state
        shape = {"hook_in_proj": (b, t, 2 * di), "hook_B": (b, t, n), "hook_C": (b, t, n),
                 "hook_ssm_write": (b, t, di, n), "hook_ssm_state": (b, t, di, n)}
        return {prefix + k: shape.get(k, (b, t, di)) for k in MAMBA_HOOKS}
    return {}


def hook_catalogue(spec: ModelSpec, batch: int = 2, n_points: int = 4) -> dict[str, tuple[int, ...]]:
    """Every hook name of a model built from `spec`, in forward order, with the shape it sees on
    `batch` prompts of `n_points` points (`2 * n_points` tokens)."""
    b, t, d = batch, 2 * n_points, spec.d_model
    norm = spec.norm != "none"
    cat: dict[str, tuple[int, ...]] = {"hook_embed": (b, t, d)}
    if spec.pos_embed == "learned":
        cat["hook_pos_embed"] = (b, t, d)

    def ln(prefix: str) -> dict[str, tuple[int, ...]]:
        return {f"{prefix}hook_scale": (b, t, 1), f"{prefix}hook_normalized": (b, t, d)} if norm else {}

    for l, blk in enumerate(spec.blocks):
        p = f"blocks.{l}."
        cat[p + "hook_resid_pre"] = (b, t, d)
        for slot, s, norm_name in (("mixer", blk.mixer, "ln1"), ("ffn", blk.ffn, "ln2")):
            if s.kind == "none":
                continue
            if slot == "ffn":
                cat[p + "hook_resid_mid"] = (b, t, d)
            module = module_name(s, slot)
            cat |= ln(f"{p}{norm_name}.") | _component_hooks(s, f"{p}{module}.", d, b, t)
            cat[f"{p}hook_{module}_out"] = (b, t, d)
        cat[p + "hook_resid_post"] = (b, t, d)
    cat |= ln("ln_final.")
    cat["hook_readout"] = (b, t, spec.y_dim)
    return cat
