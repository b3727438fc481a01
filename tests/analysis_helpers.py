"""Tiny models and prompts shared by the analysis tests."""

from __future__ import annotations

import torch

import hookedicl as hi
from hookedicl.models.hooks import is_hooked
from hookedicl.tasks import make_task

N_DIMS, N_POINTS = 3, 6


def tiny(arch: str, n_layers: int = 1, seed: int = 0) -> hi.HookedICLModel:
    torch.manual_seed(seed)
    return hi.build_model(
        arch, n_dims=N_DIMS, d_model=16, n_layers=n_layers, n_heads=2, d_state=4, expand=2, init_std=0.2
    )


def prompts(batch: int = 12, n_points: int = N_POINTS, seed: int = 0):
    task = make_task("linear_regression", n_dims=N_DIMS)
    b = task.sample(batch_size=batch, n_points=n_points, generator=torch.Generator().manual_seed(seed))
    return b.xs, b.ys


def no_hooks(model) -> bool:
    return not any(is_hooked(hp) for hp in model.hook_dict.values())


def assert_only_callers_hook(model, name: str) -> None:
    """The analysis removed its own hooks and kept the one the caller attached (then drop it)."""
    hooked = {n: len(hp._forward_hooks) for n, hp in model.hook_dict.items() if is_hooked(hp)}
    assert hooked == {name: 1}
    model.reset_hooks()
    assert no_hooks(model)
