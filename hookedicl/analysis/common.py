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

from ..models.sites import hook_layer, resid_hook

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def model_device(model: Any) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of a model's parameters."""
    p = next(model.parameters())
    return p.device, p.dtype


def as_batch(prompts: Any, what: str = "prompts") -> Any:
    """`prompts` if it is a `TaskBatch` (the one prompt type every analysis takes), else a
    ValueError naming `what`. Build one with `task.sample(...)` or `TaskBatch(xs, ys)`."""
    from ..tasks import TaskBatch

    if not isinstance(prompts, TaskBatch):
        raise ValueError(f"{what} must be a hookedicl TaskBatch (task.sample(...) or TaskBatch(xs, ys)), "
                         f"got {type(prompts).__name__}")
    return prompts


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
    """Run an analysis body; whatever happens, every hook it attached is removed afterwards (hooks
    the caller had attached before stay) and the model's train/eval mode is restored."""
    was_training = model.training if hasattr(model, "training") else None
    points = list(getattr(model, "hook_dict", {}).values())
    before = [(set(hp._forward_hooks), set(hp._backward_hooks)) for hp in points]
    try:
        yield
    finally:
        for hp, (fwd, bwd) in zip(points, before):
            _remove_new_hooks(hp, fwd, bwd)
        if was_training is not None:
            model.train(was_training)


def _remove_new_hooks(hp: Any, fwd: set[int], bwd: set[int]) -> None:
    """Remove the hooks of HookPoint `hp` whose torch handle ids are not in `fwd` / `bwd`."""
    for attr, keep in (("fwd_hooks", fwd), ("bwd_hooks", bwd)):
        handles = getattr(hp, attr, [])
        for h in [h for h in handles if h.hook.id not in keep]:
            h.hook.remove()
            handles.remove(h)
    for registry, keep in ((hp._forward_hooks, fwd), (hp._backward_hooks, bwd)):
        for key in [k for k in registry if k not in keep]:
            del registry[key]


def nan_mean_ci(values: np.ndarray | torch.Tensor, ci: float = 0.95, n_bootstrap: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`mean_ci` that ignores NaN examples per entry: values `(n_examples, *rest)` -> three arrays
    of shape `rest`; an entry that is NaN for every example gets NaN mean and CI."""
    v = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, dtype=float)
    nan = np.isnan(v)
    if not nan.any():
        return mean_ci(v, ci, n_bootstrap, seed)
    flat, bad = v.reshape(v.shape[0], -1), nan.reshape(v.shape[0], -1)
    out = np.full((3, flat.shape[1]), np.nan)
    for j in range(flat.shape[1]):
        keep = ~bad[:, j]
        if keep.any():
            out[:, j] = [float(a) for a in mean_ci(flat[keep, j], ci, n_bootstrap, seed)]
    m, lo, hi = (o.reshape(v.shape[1:]) for o in out)
    return m, lo, hi


# ---------------------------------------------------------------- hook sites (probe, ablate, patch)
RESID = "resid"
"""Shorthand accepted wherever a list of hooks is: every residual-stream layer (`resid_hook`)."""

def resolve_sites(model: Any, hooks: str | list[str] | tuple[str, ...], layers: list[int] | None = None) -> list[tuple[str, int]]:
    """Expand hook specs into `(hook name, layer)` pairs, in the order given.

    Each spec is `"resid"` (the residual layers `layers`, default all), a full hook name
    (e.g. `"blocks.0.attn.hook_z"`, taken as given), or a block-relative name such as
    `"attn.hook_z"`, `"hook_attn_out"` or `"mixer.hook_ssm_state"`, which expands to every block
    that has it (restricted to blocks whose index is in `layers` when given). `layers` are validated as
    residual layers (0..n_blocks). Raises ValueError naming an unknown hook or a bad layer.
    """
    specs = [hooks] if isinstance(hooks, str) else list(hooks)
    if not specs:
        raise ValueError("hooks is empty; name at least one hook (or 'resid')")
    chosen = check_layers(model, layers)
    out: list[tuple[str, int]] = []
    for spec in specs:
        if not isinstance(spec, str):
            raise ValueError(f"hook specs must be strings, got {spec!r}")
        if spec == RESID:
            found = [(resid_hook(l), l) for l in chosen]
        elif spec in model.hook_dict:
            found = [(spec, hook_layer(spec))]
        else:
            found = [
                (f"blocks.{l}.{spec}", l) for l in range(len(model.blocks))
                if f"blocks.{l}.{spec}" in model.hook_dict and (layers is None or l in chosen)
            ]
            if not found:
                any_block = any(f"blocks.{l}.{spec}" in model.hook_dict for l in range(len(model.blocks)))
                if any_block:
                    raise ValueError(f"hook {spec!r} exists in no block among layers {layers}")
                check_hooks(model, [spec])
        out += [s for s in found if s not in out]
    return out
