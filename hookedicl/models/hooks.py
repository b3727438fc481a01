"""Small helpers around TransformerLens `HookPoint`s."""

from __future__ import annotations

from transformer_lens.hook_points import HookPoint

__all__ = ["HookPoint", "is_hooked"]


def is_hooked(hp: HookPoint) -> bool:
    """True when a forward or backward hook is attached to `hp`.

    Components use it to skip work nobody asked for (materialising the attention pattern or the
    Mamba state) and to pick fused kernels only when no inner hook must fire.
    """
    return bool(hp._forward_hooks) or bool(hp._backward_hooks)
