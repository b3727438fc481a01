"""Hooked model zoo: specs, presets, components, `HookedICLModel`, conversion from HF."""

from __future__ import annotations

from typing import Any

from . import convert
from .convert import from_hf, from_state_dict
from .hooks import hook_catalogue
from .model import Block, HookedICLModel
from .presets import CAMPBELL_ZOO, describe, list_architectures, preset
from .spec import AttentionSpec, BlockSpec, MambaSpec, MLPSpec, ModelSpec, NoneSpec, SwiGLUSpec

__all__ = [
    "AttentionSpec", "Block", "BlockSpec", "CAMPBELL_ZOO", "HookedICLModel", "MLPSpec", "MambaSpec",
    "ModelSpec", "NoneSpec", "SwiGLUSpec", "build_model", "convert", "describe", "from_hf", "from_state_dict",
    "hook_catalogue", "list_architectures", "preset",
]


def build_model(arch: str | ModelSpec | dict[str, Any], **overrides: Any) -> HookedICLModel:
    """Build a model from a preset name (with size overrides), a `ModelSpec`, or its dict form.

    >>> build_model("gpt2", n_dims=5, d_model=64, n_layers=4, n_heads=2)
    """
    if isinstance(arch, str):
        spec = preset(arch, **overrides)
    elif isinstance(arch, ModelSpec):
        spec = arch.model_copy(update=overrides) if overrides else arch
        if overrides:
            spec = ModelSpec.model_validate(spec.model_dump())
    elif isinstance(arch, dict):
        spec = ModelSpec.model_validate({**arch, **overrides})
    else:
        raise ValueError(f"arch must be a preset name, a ModelSpec or a dict, got {type(arch).__name__}")
    return HookedICLModel(spec)
