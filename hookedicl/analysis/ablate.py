"""Ablations: knock out a component and measure what the model loses in context.

Components (typed, validated against the model):
  * `Head(layer, head)`            one attention head: `blocks.{layer}.attn.hook_z[:, :, head]`;
  * `Slot(layer, "mixer" | "ffn")` a whole residual branch: `blocks.{layer}.hook_{attn|mixer}_out`
                                   or `hook_{mlp|ffn}_out`;
  * `ResidDirection(layer, u)`     the component of residual layer `layer` (0 = embedding, see
                                   `common`) along direction `u` (`(d_model,)`, normalised here);
  * `SSMState(layer, slot)`        the Mamba state `blocks.{layer}.{slot}.hook_ssm_state`
                                   `[b, pos, d_inner, d_state]`. The scan has already run when
                                   this hook fires, so an edit of h_t changes that layer's output
                                   y_t = h_t·C_t + D·u_t at position t only (not later states).

Methods: `"zero"` (replace by 0; for a direction: project it out), `"mean"` (replace by the mean
over a calibration batch at the same token position; default calibration = the prompts
themselves), `"resample"` (replace by the activation of another prompt: a different prompt of
the same batch when no calibration batch is given, else a random calibration prompt; seeded).
`positions` restricts the ablation to some token positions (default: all).

Measures, with percentile-bootstrap CIs over prompts (clean and ablated runs on the same prompts,
resampled jointly):
  * `ablation_curve`: per point i (the prediction at x_i after i examples), the normalised
    squared error (squared error / E[y²]) clean vs ablated; `mean` = ablated − clean;
  * `ablation_sweep`: one row per component; `mean` = change of the ICL regression score against
    a baseline (least squares by default; Campbell et al. eq. 1, same-prompts mode:
    S = Σ_i(ξ_zero − ξ_model) / Σ_i(ξ_zero − ξ_base)) or, with `metric="error"`, the change of the
    normalised error averaged over positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from ..evaluation.bootstrap import bootstrap_means, percentile_interval
from ..tasks import Task, TaskBatch
from .common import as_predictor, check_block, check_layers, hook_guard, require_model, resid_hook, run_prompts

__all__ = [
    "Head", "ResidDirection", "SSMState", "Slot", "ablated_predictions", "ablation_curve", "ablation_sweep",
    "analyze_run", "plot_sweep",
]

METHODS = ("zero", "mean", "resample")
METRICS = ("icl_score", "error")
SlotName = Literal["mixer", "ffn"]


# ------------------------------------------------------------------------------- components
def _check_slot(model: Any, layer: int, slot: str) -> Any:
    check_block(model, layer)
    if slot not in ("mixer", "ffn"):
        raise ValueError(f"slot must be 'mixer' or 'ffn', got {slot!r}")
    block = model.blocks[layer]
    if slot == "ffn" and block.ffn_name is None:
        raise ValueError(f"block {layer} has no ffn slot (architecture {model.spec.name})")
    return block


@dataclass(frozen=True)
class Head:
    """Attention head `head` of block `layer` (ablated through `hook_z`)."""

    layer: int
    head: int
    kind = "head"

    def site(self, model: Any) -> str:
        check_block(model, self.layer)
        attn = getattr(model.blocks[self.layer], "attn", None)
        if attn is None:
            raise ValueError(f"block {self.layer} has no attention (its mixer is {model.blocks[self.layer].mixer_name})")
        if not isinstance(self.head, int) or not 0 <= self.head < attn.n_heads:
            raise ValueError(f"head={self.head!r} out of range: block {self.layer} has heads 0..{attn.n_heads - 1}")
        return f"blocks.{self.layer}.attn.hook_z"

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}"

    def edit(self, act: torch.Tensor, rep: torch.Tensor, pos: Any) -> torch.Tensor:
        act[:, pos, self.head] = rep[:, pos, self.head]
        return act


@dataclass(frozen=True)
class Slot:
    """The output of a residual branch of block `layer`: its mixer or its ffn."""

    layer: int
    slot: SlotName = "mixer"
    kind = "slot"

    def site(self, model: Any) -> str:
        block = _check_slot(model, self.layer, self.slot)
        module = block.mixer_name if self.slot == "mixer" else block.ffn_name
        return f"blocks.{self.layer}.hook_{module}_out"

    @property
    def label(self) -> str:
        return f"L{self.layer}.{self.slot}"

    def edit(self, act: torch.Tensor, rep: torch.Tensor, pos: Any) -> torch.Tensor:
        act[:, pos] = rep[:, pos]
        return act


@dataclass(frozen=True)
class SSMState:
    """The Mamba state h of the Mamba module in slot `slot` of block `layer`."""

    layer: int
    slot: SlotName = "mixer"
    kind = "state"

    def site(self, model: Any) -> str:
        block = _check_slot(model, self.layer, self.slot)
        name = f"blocks.{self.layer}.{self.slot}.hook_ssm_state"
        if name not in model.hook_dict:
            module = block.mixer_name if self.slot == "mixer" else block.ffn_name
            raise ValueError(f"block {self.layer}'s {self.slot} ({module}) is not a Mamba module: no {name}")
        return name

    @property
    def label(self) -> str:
        return f"L{self.layer}.{self.slot}.state"

    def edit(self, act: torch.Tensor, rep: torch.Tensor, pos: Any) -> torch.Tensor:
        act[:, pos] = rep[:, pos]
        return act


@dataclass(frozen=True, eq=False)
class ResidDirection:
    """The component along `direction` `(d_model,)` of residual layer `layer`."""

    layer: int
    direction: torch.Tensor = field(repr=False)
    name: str = "direction"
    kind = "direction"

    def site(self, model: Any) -> str:
        check_layers(model, [self.layer])
        d = self.direction
        if not isinstance(d, torch.Tensor) or d.shape != (model.spec.d_model,):
            shape = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
            raise ValueError(f"direction must be a tensor of shape ({model.spec.d_model},), got {shape}")
        if not torch.isfinite(d).all() or float(d.norm()) == 0.0:
            raise ValueError("direction must be finite and non-zero")
        return resid_hook(self.layer)

    @property
    def label(self) -> str:
        return f"resid{self.layer}.{self.name}"

    def edit(self, act: torch.Tensor, rep: torch.Tensor, pos: Any) -> torch.Tensor:
        u = (self.direction / self.direction.norm()).to(act.device, act.dtype)
        a, r = act[:, pos], rep[:, pos]
        act[:, pos] = a + ((r - a) @ u)[..., None] * u
        return act


Component = Head | Slot | SSMState | ResidDirection
_COMPONENT_TYPES = (Head, Slot, SSMState, ResidDirection)


# ----------------------------------------------------------------------------- running ablations
def _as_xy(prompts: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(prompts, TaskBatch):
        return prompts.xs, prompts.ys
    if isinstance(prompts, (tuple, list)) and len(prompts) == 2:
        return prompts[0], prompts[1]
    raise ValueError(f"{what} must be a TaskBatch or (xs, ys), got {type(prompts).__name__}")


def _components(components: Any) -> list[Component]:
    comps = [components] if isinstance(components, _COMPONENT_TYPES) else list(components)
    bad = [c for c in comps if not isinstance(c, _COMPONENT_TYPES)]
    if bad:
        raise ValueError(f"components must be Head / Slot / SSMState / ResidDirection, got {bad!r}")
    return comps


def _positions(positions: Sequence[int] | None, n_tokens: int) -> Any:
    if positions is None:
        return slice(None)
    pos = list(positions)
    bad = [p for p in pos if not isinstance(p, (int, np.integer)) or not 0 <= p < n_tokens]
    if bad or not pos:
        raise ValueError(f"position(s) {bad or pos} out of range: the prompts have token positions 0..{n_tokens - 1}")
    return torch.tensor(pos, dtype=torch.long)


def _device(model: Any) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


def ablated_predictions(
    model: Any,
    xs: torch.Tensor,
    ys: torch.Tensor,
    components: Component | Sequence[Component],
    *,
    method: str = "zero",
    calibration: TaskBatch | tuple[torch.Tensor, torch.Tensor] | None = None,
    positions: Sequence[int] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Predictions `(batch, n_points)` (or `(batch, n_points, y_dim)`) with `components` ablated
    together by `method` ("zero" | "mean" | "resample") at token `positions` (default all)."""
    require_model(model, "ablation")
    model.check_inputs(xs, ys)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {METHODS}")
    comps = _components(components)
    sites = [c.site(model) for c in comps]
    pos = _positions(positions, 2 * xs.shape[1])
    dev, dt = _device(model)
    xs, ys = xs.to(dev, dt), ys.to(dev, dt)
    rep_source: dict[str, torch.Tensor] = {}
    with hook_guard(model), torch.no_grad():
        model.eval()
        if method != "zero":
            cx, cy = (xs, ys) if calibration is None else _as_xy(calibration, "calibration")
            model.check_inputs(cx, cy)
            if cx.shape[1] != xs.shape[1]:
                raise ValueError(f"calibration has n_points={cx.shape[1]} but the prompts have n_points={xs.shape[1]}")
            _, cache = model.run_with_cache(cx.to(dev, dt), cy.to(dev, dt), names_filter=sorted(set(sites)))
            rng = np.random.default_rng(seed)
            b, bc = xs.shape[0], cx.shape[0]
            if method == "resample":
                if calibration is None:
                    if b < 2:
                        raise ValueError("resample ablation needs at least 2 prompts (or a calibration batch)")
                    src = (np.arange(b) + rng.integers(1, b, size=b)) % b  # another prompt, never itself
                else:
                    src = rng.integers(0, bc, size=b)
                index = torch.as_tensor(src, device=dev)
                rep_source = {s: cache[s].index_select(0, index) for s in set(sites)}
            else:
                rep_source = {s: cache[s].mean(0, keepdim=True) for s in set(sites)}

        def hook_fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            act = act.clone()
            rep = rep_source[hook.name].expand_as(act) if method != "zero" else torch.zeros_like(act)
            for c, s in zip(comps, sites):
                if s == hook.name:
                    act = c.edit(act, rep, pos)
            return act

        with model.hooks(fwd_hooks=[(s, hook_fn) for s in sorted(set(sites))]):
            return model(xs, ys)


def _sq_err(preds: torch.Tensor, ys: torch.Tensor) -> np.ndarray:
    e = (preds.detach().double() - ys.to(preds.device).double()) ** 2
    return (e.reshape(*e.shape[:2], -1).sum(-1)).cpu().numpy()


def _second_moment(ys: torch.Tensor, value: float | None) -> float:
    if value is None:
        value = float((ys.double().reshape(*ys.shape[:2], -1) ** 2).sum(-1).mean())
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"y_second_moment must be finite and > 0, got {value!r}")
    return float(value)


def _check_ci(ci: float, n_bootstrap: int) -> None:
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    if not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive int, got {n_bootstrap!r}")


def ablation_curve(
    model: Any,
    xs: torch.Tensor,
    ys: torch.Tensor,
    components: Component | Sequence[Component],
    *,
    method: str = "zero",
    calibration: TaskBatch | tuple[torch.Tensor, torch.Tensor] | None = None,
    positions: Sequence[int] | None = None,
    y_second_moment: float | None = None,
    seed: int = 0,
    ci: float = 0.95,
    n_bootstrap: int = 1000,
) -> pd.DataFrame:
    """Per-position error curve with `components` ablated together.

    One row per point i (`k` = i examples seen, `pos` = token 2i): `clean` and `ablated` mean
    normalised squared errors (squared error / E[y²]; E[y²] from `ys` unless given) and `mean` =
    ablated − clean with a bootstrap CI over prompts (`ci_low`, `ci_high`), `n` prompts.
    """
    _check_ci(ci, n_bootstrap)
    abl = ablated_predictions(model, xs, ys, components, method=method, calibration=calibration, positions=positions, seed=seed)
    with hook_guard(model), torch.no_grad():
        model.eval()
        clean = model(xs.to(abl.device, abl.dtype), ys.to(abl.device, abl.dtype))
    m2 = _second_moment(ys, y_second_moment)
    e_c, e_a = _sq_err(clean, ys) / m2, _sq_err(abl, ys) / m2
    boot = bootstrap_means(e_a - e_c, n_bootstrap, seed)
    lo, hi = percentile_interval(boot, ci)
    n = xs.shape[1]
    return pd.DataFrame({
        "k": np.arange(n), "pos": 2 * np.arange(n), "method": method, "clean": e_c.mean(0), "ablated": e_a.mean(0),
        "mean": (e_a - e_c).mean(0), "ci_low": lo, "ci_high": hi, "n": xs.shape[0],
    })


# ------------------------------------------------------------------------------------- sweeps
def _sweep_components(model: Any, what: Any) -> list[list[Component]]:
    if isinstance(what, str):
        if what == "heads":
            out = [[Head(l, h)] for l, b in enumerate(model.blocks) if hasattr(b, "attn") for h in range(b.attn.n_heads)]
        elif what == "slots":
            out = [[Slot(l, s)] for l, b in enumerate(model.blocks) for s in ("mixer", "ffn") if s == "mixer" or b.ffn_name]
        elif what == "states":
            out = [
                [SSMState(l, s)] for l in range(len(model.blocks)) for s in ("mixer", "ffn")
                if f"blocks.{l}.{s}.hook_ssm_state" in model.hook_dict
            ]
        else:
            raise ValueError(f"unknown what={what!r}; use 'heads', 'slots', 'states' or a list of components")
        if not out:
            raise ValueError(f"what={what!r}: this model ({model.spec.name}) has no such components")
        return out
    groups = [[g] if isinstance(g, _COMPONENT_TYPES) else _components(g) for g in what]
    if not groups or any(not g for g in groups):
        raise ValueError("what must list at least one component (or group of components)")
    return groups


def _prompts(prompts: Any, n_prompts: int, n_points: int | None, seed: int) -> tuple[TaskBatch, TaskBatch | None]:
    """The prompts, plus a separate calibration batch when they are sampled from a task."""
    if isinstance(prompts, Task):
        if n_points is None:
            raise ValueError("n_points is required when prompts is a Task")
        g = torch.Generator().manual_seed(seed)
        batch = prompts.sample(batch_size=n_prompts, n_points=n_points, generator=g)
        return batch, prompts.sample(batch_size=n_prompts, n_points=n_points, generator=g)
    xs, ys = _as_xy(prompts, "prompts")
    return TaskBatch(xs, ys), None


def _gain(err: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """Per-prompt Σ_i (ξ_zero − ξ) (the score's numerator terms)."""
    return (zero - err).sum(1)


def ablation_sweep(
    model: Any,
    prompts: Task | TaskBatch | tuple[torch.Tensor, torch.Tensor],
    *,
    what: Any = "heads",
    method: str = "zero",
    metric: str = "icl_score",
    baseline: Any = "least_squares",
    calibration: TaskBatch | tuple[torch.Tensor, torch.Tensor] | None = None,
    positions: Sequence[int] | None = None,
    n_prompts: int = 256,
    n_points: int | None = None,
    y_second_moment: float | None = None,
    seed: int = 0,
    ci: float = 0.95,
    n_bootstrap: int = 1000,
) -> pd.DataFrame:
    """Ablate each component (or group) of `what` in turn: one row per component.

    `what`: `"heads"`, `"slots"`, `"states"` (every Mamba state) or a list of components /
    lists of components (a list is ablated together). `prompts`: a task (then `n_prompts`
    prompts of `n_points` are sampled, plus a separate calibration batch for mean/resample), a
    `TaskBatch` or `(xs, ys)`. `metric="icl_score"`: `clean` / `ablated` are ICL regression scores
    against `baseline` (a name for `hookedicl.baselines.get`, or a predictor) and `mean` =
    ablated − clean; `metric="error"`: mean normalised error over positions. CIs: bootstrap over
    prompts. Columns: component, kind, layer, head, hook, method, metric, clean, ablated, mean,
    ci_low, ci_high, n.
    """
    require_model(model, "ablation_sweep")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {METRICS}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {METHODS}")
    _check_ci(ci, n_bootstrap)
    groups = _sweep_components(model, what)
    batch, sampled_cal = _prompts(prompts, n_prompts, n_points, seed)
    calibration = calibration if calibration is not None else sampled_cal
    xs, ys = batch.xs, batch.ys
    model.check_inputs(xs, ys)
    for g in groups:
        for c in g:
            c.site(model)
    dev, dt = _device(model)
    with hook_guard(model), torch.no_grad():
        model.eval()
        clean = model(xs.to(dev, dt), ys.to(dev, dt))
    m2 = _second_moment(ys, y_second_moment)
    e_clean = _sq_err(clean, ys) / m2
    zero = _sq_err(torch.zeros_like(ys), ys) / m2
    gain_base = None
    if metric == "icl_score":
        from ..baselines import get

        base = get(baseline) if isinstance(baseline, str) else baseline
        e_base = _sq_err(as_predictor(base, "baseline")(xs, ys), ys) / m2
        gain_base = _gain(e_base, zero)
        if not gain_base.mean() > 0:
            raise ValueError(
                f"baseline {baseline!r} is no better than predicting 0 on these prompts (Σ_i ξ_zero − ξ_base ≤ 0); "
                "the ICL score is undefined: use metric='error' or another baseline"
            )
    rows = []
    for g in groups:
        abl = ablated_predictions(model, xs, ys, g, method=method, calibration=calibration, positions=positions, seed=seed)
        e_abl = _sq_err(abl, ys) / m2
        if gain_base is not None:
            stats = np.stack([_gain(e_clean, zero), _gain(e_abl, zero), gain_base], axis=1)
            boot = bootstrap_means(stats, n_bootstrap, seed)
            delta = (boot[:, 1] - boot[:, 0]) / boot[:, 2]
            m = stats.mean(0)
            clean_v, abl_v = m[0] / m[2], m[1] / m[2]
            ok = boot[:, 2] > 0
            lo, hi = np.quantile(delta[ok], [(1 - ci) / 2, (1 + ci) / 2]) if ok.any() else (np.nan, np.nan)
        else:
            diff = (e_abl - e_clean).mean(1)
            lo, hi = percentile_interval(bootstrap_means(diff, n_bootstrap, seed), ci)
            clean_v, abl_v = float(e_clean.mean()), float(e_abl.mean())
        rows.append({
            "component": "+".join(c.label for c in g),
            "kind": g[0].kind if len(g) == 1 else "group",
            "layer": g[0].layer if len(g) == 1 else -1,
            "head": g[0].head if len(g) == 1 and isinstance(g[0], Head) else -1,
            "hook": ",".join(dict.fromkeys(c.site(model) for c in g)),
            "method": method, "metric": metric, "clean": clean_v, "ablated": abl_v, "mean": abl_v - clean_v,
            "ci_low": float(lo), "ci_high": float(hi), "n": xs.shape[0],
        })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- run + figure
def plot_sweep(df: pd.DataFrame) -> Any:
    """Horizontal error bars: the effect of ablating each component (mean with its CI)."""
    from ..viz._backend import pyplot

    if df.empty:
        raise ValueError("nothing to plot: the sweep table has no rows")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(df) + 1.5))
    y = np.arange(len(df))
    err = np.vstack([df["mean"] - df["ci_low"], df["ci_high"] - df["mean"]]).clip(min=0)
    ax.errorbar(df["mean"], y, xerr=err, fmt="o", capsize=2)
    ax.axvline(0.0, color="grey", lw=0.5)
    ax.set_yticks(y)
    ax.set_yticklabels(df["component"])
    ax.invert_yaxis()
    metric, method = df["metric"].iloc[0], df["method"].iloc[0]
    ax.set_xlabel("Δ ICL score (ablated − clean)" if metric == "icl_score" else "Δ normalised error (ablated − clean)")
    ax.set_title(f"{method} ablation, one component at a time")
    fig.tight_layout()
    return fig


def analyze_run(run: Any, *, n_prompts: int = 256, seed: int = 0, **kw: Any) -> tuple[pd.DataFrame, Any]:
    """Mean-ablate every attention head (every slot when the model has no attention) of the run's
    final model on `n_prompts` fresh prompts (calibration: another fresh batch), measuring the
    change of the ICL score against the run's score baseline (`config.eval.score_baseline`;
    normalised error for vector targets). `kw` overrides `ablation_sweep` arguments."""
    from ..training.run import Run

    run = run if isinstance(run, Run) else Run(run)
    model = run.load_model()
    batch = run_prompts(run, n_prompts, seed)
    kw.setdefault("calibration", run_prompts(run, n_prompts, seed + 1))
    kw.setdefault("what", "heads" if any(hasattr(b, "attn") for b in model.blocks) else "slots")
    kw.setdefault("method", "mean")
    kw.setdefault("metric", "icl_score" if batch.ys.ndim == 2 else "error")
    if "baseline" not in kw:
        from ..baselines import get

        name = run.config.eval.score_baseline
        kw["baseline"] = get(name, **run.config.eval.baseline_kwargs.get(name, {}))
    df = ablation_sweep(model, batch, seed=seed, **kw)
    return df, plot_sweep(df)
