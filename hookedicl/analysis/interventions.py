"""Interventions as data: a `Site` (where) plus a kind (what), as in pyvene.

    Intervention(Site.head_of(1, 0), "mean")                       mean-ablate head 1.0
    Intervention(Site.resid(2, positions=[6]), "patch", source=clean_cache["blocks.1.hook_resid_post"])
    Intervention(Site.along(3, w), "project_out")                  remove the component along w
    Intervention(Site("blocks.1.hook_resid_post"), "sae", sae=sae) replace by the SAE reconstruction
    Intervention(Site.resid(2, "last"), "add", vector=v, scale=4.0) steer

Kinds (`KINDS`):
  * `"zero"`        the site's values become 0 (for a direction site: its component becomes 0,
                    i.e. the same as `"project_out"`);
  * `"mean"`        the mean over a calibration batch at the same token position (default
                    calibration: the prompts themselves);
  * `"resample"`    the activation of another prompt: a different prompt of the same batch when no
                    calibration batch is given (never itself), else a random calibration prompt;
                    seeded;
  * `"patch"`       the activation from a source run (`source`: the hook's activation on source
                    prompts, `[batch, ...]` like the run's);
  * `"project_out"` remove the component along the site's direction (direction sites only);
  * `"sae"`         replace by a sparse autoencoder's reconstruction (`sae`, over the hook's
                    flattened features per token);
  * `"add"`         add `scale * vector` (a direction site adds `scale` × its unit direction).

`intervened_predictions(model, prompts, interventions)` runs the model with every intervention
applied at once and returns `(batch, n_points)` predictions; `intervention_hooks` gives the
`(hook name, function)` pairs for `model.hooks(...)` when you want to run the model yourself.
Ablation (`ablate`), patching (`patch`), SAE splicing (`sae_eval`) and the nnsight adapter are
built on these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from ..models.sites import Site
from ..tasks import TaskBatch
from .common import hook_guard, model_device, require_model

__all__ = ["KINDS", "Intervention", "intervened_predictions", "intervention_hooks", "prepare"]

Kind = Literal["zero", "mean", "resample", "patch", "project_out", "sae", "add"]
KINDS: tuple[str, ...] = ("zero", "mean", "resample", "patch", "project_out", "sae", "add")
_NEEDS_CALIBRATION = ("mean", "resample")


@dataclass(frozen=True, eq=False)
class Intervention:
    """`site` + `kind` (see the module docstring) and what the kind needs: `source` for
    `"patch"`, `sae` for `"sae"`, `vector` / `scale` for `"add"`. `value` is filled in by
    `prepare` for `"mean"` / `"resample"` (the replacement activations)."""

    site: Site
    kind: Kind = "zero"
    source: torch.Tensor | None = field(default=None, repr=False)
    sae: Any = field(default=None, repr=False)
    vector: torch.Tensor | None = field(default=None, repr=False)
    scale: float = 1.0
    value: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.site, Site):
            raise ValueError(f"site must be a hookedicl Site, got {type(self.site).__name__}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown intervention kind {self.kind!r}; valid: {KINDS}")
        if self.kind == "patch" and not isinstance(self.source, torch.Tensor):
            raise ValueError("a 'patch' intervention needs source= (the hook's activation on the source prompts)")
        if self.kind == "sae" and self.sae is None:
            raise ValueError("an 'sae' intervention needs sae= (a SparseAutoencoder)")
        if self.kind == "project_out" and self.site.direction is None:
            raise ValueError(f"'project_out' needs a direction site (Site.along), got {self.site.label}")
        if self.kind == "add":
            if self.vector is None and self.site.direction is None:
                raise ValueError("an 'add' intervention needs vector= or a direction site (Site.along)")
            if not np.isfinite(self.scale):
                raise ValueError(f"scale must be finite, got {self.scale!r}")

    @property
    def label(self) -> str:
        return self.site.label

    def apply(self, act: torch.Tensor) -> torch.Tensor:
        """The hook's activation `act` `[batch, ...]` with this intervention applied (a new tensor)."""
        site, kind = self.site, self.kind
        if kind in ("zero", "project_out"):
            return site.replace_in(act, torch.zeros((), dtype=act.dtype, device=act.device))
        if kind in _NEEDS_CALIBRATION:
            if self.value is None:
                raise ValueError(f"a {kind!r} intervention must be prepared first (prepare / intervened_predictions)")
            return site.replace_in(act, _fit(self.value, act, f"{kind} values for {site.hook}"))
        if kind == "patch":
            return site.replace_in(act, _fit(self.source, act, f"source for {site.hook}"))  # type: ignore[arg-type]
        if kind == "sae":
            return site.replace_in(act, _sae_reconstruct(self.sae, act, site.hook))
        vec = site.unit_direction(act) if self.vector is None else self.vector
        return site.add_to(act, self.scale * vec)


def _fit(src: torch.Tensor, act: torch.Tensor, what: str) -> torch.Tensor:
    """`src` on `act`'s device, checked to match `act` (a batch of 1 broadcasts)."""
    if tuple(src.shape[1:]) != tuple(act.shape[1:]) or src.shape[0] not in (1, act.shape[0]):
        raise ValueError(f"{what} has shape {tuple(src.shape)}; the run's activation is {tuple(act.shape)}")
    return src.to(act.device, act.dtype)


def _sae_reconstruct(sae: Any, act: torch.Tensor, hook: str) -> torch.Tensor:
    from .sae import SparseAutoencoder

    if not isinstance(sae, SparseAutoencoder):
        raise ValueError(f"sae must be a hookedicl SparseAutoencoder, got {type(sae).__name__}")
    flat = act.reshape(act.shape[0], act.shape[1], -1)
    if flat.shape[-1] != sae.d_in:
        raise ValueError(f"{hook} has {flat.shape[-1]} features per token but the SAE expects d_in={sae.d_in}")
    p = next(sae.parameters())
    return sae(flat.to(p.device, p.dtype)).to(act.device, act.dtype).reshape(act.shape)


def _as_list(interventions: Intervention | Sequence[Intervention]) -> list[Intervention]:
    out = [interventions] if isinstance(interventions, Intervention) else list(interventions)
    bad = [i for i in out if not isinstance(i, Intervention)]
    if bad:
        raise ValueError(f"interventions must be Intervention objects, got {bad!r}")
    if not out:
        raise ValueError("no interventions given")
    return out


def prepare(
    model: Any,
    interventions: Intervention | Sequence[Intervention],
    prompts: TaskBatch,
    *,
    calibration: TaskBatch | None = None,
    seed: int = 0,
) -> list[Intervention]:
    """The interventions with their sites resolved against `model` and the `"mean"` /
    `"resample"` values computed (from `calibration`, or the prompts themselves)."""
    require_model(model, "interventions")
    items = [replace(i, site=i.site.resolve(model)) for i in _as_list(interventions)]
    need = sorted({i.site.hook for i in items if i.kind in _NEEDS_CALIBRATION and i.value is None})
    if not need:
        return items
    cal = prompts if calibration is None else calibration
    if not isinstance(cal, TaskBatch):
        raise ValueError(f"calibration must be a TaskBatch, got {type(cal).__name__}")
    model.check_inputs(cal.xs, cal.ys)
    if cal.xs.shape[1] != prompts.xs.shape[1]:
        raise ValueError(f"calibration has n_points={cal.xs.shape[1]} but the prompts have n_points={prompts.xs.shape[1]}")
    dev, dt = model_device(model)
    with hook_guard(model), torch.no_grad():
        model.eval()
        _, cache = model.run_with_cache(cal.xs.to(dev, dt), cal.ys.to(dev, dt), names_filter=need)
    b, bc = prompts.xs.shape[0], cal.xs.shape[0]
    rng = np.random.default_rng(seed)
    if calibration is None:
        if b < 2 and any(i.kind == "resample" for i in items):
            raise ValueError("resample needs at least 2 prompts (or a calibration batch)")
        src = (np.arange(b) + rng.integers(1, max(b, 2), size=b)) % b  # another prompt, never itself
    else:
        src = rng.integers(0, bc, size=b)
    index = torch.as_tensor(src, device=dev)
    out = []
    for i in items:
        if i.kind == "mean" and i.value is None:
            i = replace(i, value=cache[i.site.hook].mean(0, keepdim=True))
        elif i.kind == "resample" and i.value is None:
            i = replace(i, value=cache[i.site.hook].index_select(0, index))
        out.append(i)
    return out


def intervention_hooks(interventions: Sequence[Intervention]) -> list[tuple[str, Any]]:
    """`(hook name, fn)` pairs applying prepared `interventions` (in order, per hook) — for
    `with model.hooks(fwd_hooks=...)`."""
    by_hook: dict[str, list[Intervention]] = {}
    for i in interventions:
        by_hook.setdefault(i.site.hook, []).append(i)

    def make(items: list[Intervention]) -> Any:
        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            for i in items:
                act = i.apply(act)
            return act

        return fn

    return [(name, make(items)) for name, items in by_hook.items()]


def intervened_predictions(
    model: Any,
    prompts: TaskBatch,
    interventions: Intervention | Sequence[Intervention],
    *,
    calibration: TaskBatch | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Predictions `(batch, n_points)` (or `(batch, n_points, y_dim)`) of `model` on `prompts`
    with every intervention applied together. Hooks are removed afterwards, even on error."""
    if not isinstance(prompts, TaskBatch):
        raise ValueError(f"prompts must be a TaskBatch, got {type(prompts).__name__}")
    require_model(model, "interventions")
    model.check_inputs(prompts.xs, prompts.ys)
    items = prepare(model, interventions, prompts, calibration=calibration, seed=seed)
    dev, dt = model_device(model)
    with hook_guard(model), torch.no_grad():
        model.eval()
        with model.hooks(fwd_hooks=intervention_hooks(items)):
            return model(prompts.xs.to(dev, dt), prompts.ys.to(dev, dt))
