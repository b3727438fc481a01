"""Shared pieces of the analyses: argument checks, predictor adapters, residual-stream naming,
confidence intervals and the hook guard. One home, so every analysis rejects bad input the same
way and never leaves a hook behind.

Conventions of every analysis function:
  * inputs: a `HookedICLModel` (or, where it makes sense, any predictor `f(xs, ys)` / baseline
    with `.predict`), prompts `xs (batch, n_points, n_dims)`, `ys (batch, n_points)`;
  * output: a tidy `pandas.DataFrame`, one row per layer / position / head / reference, with
    `mean`, `ci_low`, `ci_high` columns where sampling is involved.
  * "layer" indexes the residual stream: layer 0 is the embedding (`blocks.0.hook_resid_pre`),
    layer l >= 1 the output of block l-1 (`blocks.{l-1}.hook_resid_post`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def is_model(obj: Any) -> bool:
    from ..models import HookedICLModel

    return isinstance(obj, HookedICLModel)


def as_predictor(obj: Any, name: str = "predictor") -> Predict:
    """`f(xs, ys) -> (batch, n_points)` for a model, a callable, or a baseline with `.predict`."""
    if hasattr(obj, "predict") and callable(obj.predict):
        return obj.predict
    if callable(obj):
        return obj
    raise ValueError(f"{name} must be a model, a callable f(xs, ys) or have .predict(xs, ys); got {type(obj).__name__}")


def require_model(obj: Any, what: str) -> None:
    if not is_model(obj):
        raise ValueError(f"{what} needs a HookedICLModel (it reads hooks), got {type(obj).__name__}")


def check_prompts(xs: Any, ys: Any, n_dims: int | None = None) -> None:
    """Raise ValueError naming the problem unless xs (b, n, d) and ys (b, n) fit together."""
    if not isinstance(xs, torch.Tensor) or not isinstance(ys, torch.Tensor):
        raise ValueError(f"xs and ys must be torch tensors, got {type(xs).__name__} and {type(ys).__name__}")
    if xs.ndim != 3:
        raise ValueError(f"xs must be (batch, n_points, n_dims), got shape {tuple(xs.shape)}")
    if ys.ndim != 2 or ys.shape != xs.shape[:2]:
        raise ValueError(f"ys must be (batch, n_points) = {tuple(xs.shape[:2])}, got shape {tuple(ys.shape)}")
    if n_dims is not None and xs.shape[-1] != n_dims:
        raise ValueError(f"xs has n_dims={xs.shape[-1]} but the model expects n_dims={n_dims}")


def check_hooks(model: Any, names: list[str]) -> None:
    unknown = [n for n in names if n not in model.hook_dict]
    if unknown:
        raise ValueError(f"unknown hook(s) {unknown} for this model; see `hookedicl hooks {model.spec.name}`")


def n_resid_layers(model: Any) -> int:
    """Number of residual-stream layers: embedding + one per block."""
    return len(model.blocks) + 1


def check_layers(model: Any, layers: list[int] | None) -> list[int]:
    n = n_resid_layers(model)
    if layers is None:
        return list(range(n))
    bad = [l for l in layers if not isinstance(l, int) or not 0 <= l < n]
    if bad:
        raise ValueError(f"layer(s) {bad} out of range: this model's residual layers are 0..{n - 1}")
    return list(layers)


def resid_hook(layer: int) -> str:
    """Hook name of residual-stream layer `layer` (see the module docstring)."""
    return "blocks.0.hook_resid_pre" if layer == 0 else f"blocks.{layer - 1}.hook_resid_post"


def check_block(model: Any, layer: int, what: str = "layer") -> None:
    if not isinstance(layer, int) or not 0 <= layer < len(model.blocks):
        raise ValueError(f"{what}={layer!r} out of range: this model has blocks 0..{len(model.blocks) - 1}")


def mean_ci(values: np.ndarray | torch.Tensor, ci: float = 0.95, n_bootstrap: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 with a percentile-bootstrap CI over that axis (the examples)."""
    from ..evaluation.bootstrap import bootstrap_means, percentile_interval

    v = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, dtype=float)
    flat = v.reshape(v.shape[0], -1)
    boot = bootstrap_means(flat, n_bootstrap, seed)
    lo, hi = percentile_interval(boot, ci)
    shape = v.shape[1:]
    return flat.mean(0).reshape(shape), np.asarray(lo).reshape(shape), np.asarray(hi).reshape(shape)


@contextlib.contextmanager
def hook_guard(model: Any) -> Iterator[None]:
    """Run an analysis body; whatever happens, the model has no temporary hooks afterwards and
    its train/eval mode is restored."""
    was_training = model.training if hasattr(model, "training") else None
    try:
        yield
    finally:
        if hasattr(model, "reset_hooks"):
            model.reset_hooks(including_permanent=False)
        if was_training is not None:
            model.train(was_training)
