"""Ablations: knock out sites of the model and measure what it loses in context.

An ablation is an `Intervention` (`hookedicl.analysis.interventions`) of kind `"zero"`, `"mean"`
or `"resample"` at a `Site` (`hookedicl.models.sites`):

    Site.head_of(l, h)        one attention head: `blocks.{l}.attn.hook_z[:, :, h]`
    Site.slot(l, "mixer")     a whole residual branch (`hook_attn_out` / `hook_mixer_out`, or the ffn's)
    Site.state(l, slot)       the Mamba state h (`hook_ssm_state`); an edit of h_t changes that layer's
                              y_t at t only (the scan has already run). `Site.write` edits the
                              per-step write instead, which carries through the recurrence.
    Site.along(l, u)          the component of residual layer l along u ("zero" projects it out)

Sites carry their token positions (`Site.head_of(1, 0, positions="x")`; default all).

Measures, with percentile-bootstrap CIs over prompts (clean and ablated runs on the same prompts,
resampled jointly; scores and intervals from `hookedicl.evaluation`):
  * `ablation_curve`: per point i (the prediction at x_i after i examples), the normalised
    squared error (squared error / E[y²]) clean vs ablated; `mean` = ablated − clean;
  * `ablation_sweep`: one row per site (or group of sites); `mean` = change of the ICL regression
    score against a baseline (least squares by default; Campbell et al. eq. 1, same-prompts mode)
    or, with `metric="error"`, the change of the normalised error averaged over positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..evaluation import icl_score_change
from ..evaluation.bootstrap import bootstrap_means, percentile_interval
from ..models.sites import PositionSpec, Site
from ..tasks import TaskBatch
from .common import as_batch, as_predictor, hook_guard, model_device, require_model
from .interventions import Intervention, intervened_predictions

__all__ = ["ABLATION_KINDS", "ablation_curve", "ablation_sweep", "analyze_run", "plot_sweep", "sites_of"]

ABLATION_KINDS = ("zero", "mean", "resample")
METRICS = ("icl_score", "error")
SWEEP_COLUMNS = ["site", "unit", "layer", "head", "hook", "kind", "metric", "clean", "ablated", "mean", "ci_low",
                 "ci_high", "n"]


def _ablations(sites: Site | Sequence[Site], kind: str) -> list[Intervention]:
    if kind not in ABLATION_KINDS:
        raise ValueError(f"unknown ablation kind {kind!r}; valid: {ABLATION_KINDS}")
    items = [sites] if isinstance(sites, Site) else list(sites)
    bad = [s for s in items if not isinstance(s, Site)]
    if bad or not items:
        raise ValueError(f"sites must be Site objects (Site.head_of, Site.slot, ...), got {bad or items!r}")
    return [Intervention(s, kind) for s in items]  # type: ignore[arg-type]


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


def _clean(model: Any, prompts: TaskBatch) -> torch.Tensor:
    dev, dt = model_device(model)
    with hook_guard(model), torch.no_grad():
        model.eval()
        return model(prompts.xs.to(dev, dt), prompts.ys.to(dev, dt))


def ablation_curve(
    model: Any,
    prompts: TaskBatch,
    sites: Site | Sequence[Site],
    *,
    kind: str = "zero",
    calibration: TaskBatch | None = None,
    y_second_moment: float | None = None,
    seed: int = 0,
    ci: float = 0.95,
    n_bootstrap: int = 1000,
) -> pd.DataFrame:
    """Per-position error curve with `sites` ablated together by `kind`.

    One row per point i (`k` = i examples seen, `pos` = token 2i): `clean` and `ablated` mean
    normalised squared errors (squared error / E[y²]; E[y²] from the prompts unless given) and
    `mean` = ablated − clean with a bootstrap CI over prompts (`ci_low`, `ci_high`), `n` prompts.
    Columns: k, pos, kind, clean, ablated, mean, ci_low, ci_high, n.
    """
    _check_ci(ci, n_bootstrap)
    prompts = as_batch(prompts)
    abl = intervened_predictions(model, prompts, _ablations(sites, kind), calibration=calibration, seed=seed)
    clean = _clean(model, prompts)
    ys = prompts.ys
    m2 = _second_moment(ys, y_second_moment)
    e_c, e_a = _sq_err(clean, ys) / m2, _sq_err(abl, ys) / m2
    boot = bootstrap_means(e_a - e_c, n_bootstrap, seed)
    lo, hi = percentile_interval(boot, ci)
    n = ys.shape[1]
    return pd.DataFrame({
        "k": np.arange(n), "pos": 2 * np.arange(n), "kind": kind, "clean": e_c.mean(0), "ablated": e_a.mean(0),
        "mean": (e_a - e_c).mean(0), "ci_low": lo, "ci_high": hi, "n": ys.shape[0],
    })


# ------------------------------------------------------------------------------------- sweeps
def sites_of(model: Any, what: str, positions: PositionSpec = "all") -> list[Site]:
    """Every site of one unit: `"heads"` (attention heads), `"slots"` (residual branches),
    `"states"` (Mamba states) or `"resid"` (residual layers 1..n_blocks)."""
    if what == "heads":
        out = [Site.head_of(l, h, positions) for l, b in enumerate(model.blocks) if hasattr(b, "attn")
               for h in range(b.attn.n_heads)]
    elif what == "slots":
        out = [Site.slot(l, s, positions) for l, b in enumerate(model.blocks) for s in ("mixer", "ffn")
               if s == "mixer" or b.ffn_name]
    elif what == "states":
        out = [Site.state(l, s, positions) for l in range(len(model.blocks)) for s in ("mixer", "ffn")
               if f"blocks.{l}.{s}.hook_ssm_state" in model.hook_dict]
    elif what == "resid":
        out = [Site.resid(l, positions) for l in range(1, len(model.blocks) + 1)]
    else:
        raise ValueError(f"unknown what={what!r}; use 'heads', 'slots', 'states', 'resid' or a list of sites")
    if not out:
        raise ValueError(f"what={what!r}: this model ({model.spec.name}) has no such sites")
    return out


def _groups(model: Any, what: Any, positions: PositionSpec) -> list[list[Site]]:
    if isinstance(what, str):
        return [[s] for s in sites_of(model, what, positions)]
    groups = [[g] if isinstance(g, Site) else list(g) for g in what]
    bad = [s for g in groups for s in g if not isinstance(s, Site)]
    if not groups or any(not g for g in groups) or bad:
        raise ValueError(f"what must list Sites (or groups of Sites); got {bad or what!r}")
    return groups


def ablation_sweep(
    model: Any,
    prompts: TaskBatch,
    *,
    what: Any = "heads",
    kind: str = "zero",
    metric: str = "icl_score",
    baseline: Any = "least_squares",
    calibration: TaskBatch | None = None,
    positions: PositionSpec = "all",
    y_second_moment: float | None = None,
    seed: int = 0,
    ci: float = 0.95,
    n_bootstrap: int = 1000,
) -> pd.DataFrame:
    """Ablate each site (or group of sites) of `what` in turn: one row per site.

    `what`: `"heads"`, `"slots"`, `"states"`, `"resid"` (every site of that unit, at `positions`)
    or a list of `Site`s / lists of sites (a list is ablated together). `metric="icl_score"`:
    `clean` / `ablated` are ICL regression scores against `baseline` (a name for
    `hookedicl.baselines.get`, or a predictor) and `mean` = ablated − clean
    (`hookedicl.evaluation.icl_score_change`); `metric="error"`: mean normalised error over
    positions. Columns: `SWEEP_COLUMNS` (site, unit, layer, head, hook, kind, metric, clean,
    ablated, mean, ci_low, ci_high, n); `head` is -1 for sites without one, `layer` -1 for a group.
    """
    require_model(model, "ablation_sweep")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {METRICS}")
    if kind not in ABLATION_KINDS:
        raise ValueError(f"unknown ablation kind {kind!r}; valid: {ABLATION_KINDS}")
    _check_ci(ci, n_bootstrap)
    prompts = as_batch(prompts)
    groups = [[s.resolve(model) for s in g] for g in _groups(model, what, positions)]
    xs, ys = prompts.xs, prompts.ys
    model.check_inputs(xs, ys)
    m2 = _second_moment(ys, y_second_moment)
    e_clean = _sq_err(_clean(model, prompts), ys)
    zero = _sq_err(torch.zeros_like(ys), ys)
    e_base = None
    if metric == "icl_score":
        from ..baselines import get

        base = get(baseline) if isinstance(baseline, str) else baseline
        e_base = _sq_err(as_predictor(base, "baseline")(xs, ys), ys)
        if not (zero - e_base).sum(1).mean() > 0:
            raise ValueError(
                f"baseline {baseline!r} is no better than predicting 0 on these prompts (Σ_i ξ_zero − ξ_base ≤ 0); "
                "the ICL score is undefined: use metric='error' or another baseline"
            )
    rows = []
    for g in groups:
        abl = intervened_predictions(model, prompts, _ablations(g, kind), calibration=calibration, seed=seed)
        # icl_score: zero = y² per prompt; error: a constant E[y²] normalises the errors
        ch = icl_score_change(e_clean, _sq_err(abl, ys), e_base, zero if e_base is not None else np.full_like(zero, m2),
                              ci=ci, n_bootstrap=n_bootstrap, seed=seed)
        one = g[0] if len(g) == 1 else None
        rows.append({
            "site": "+".join(s.label for s in g),
            "unit": one.unit if one else "group",
            "layer": one.layer if one else -1,
            "head": one.head if one is not None and one.head is not None else -1,
            "hook": ",".join(dict.fromkeys(s.hook for s in g)),
            "kind": kind, "metric": metric, "clean": ch.before, "ablated": ch.after, "mean": ch.delta,
            "ci_low": ch.ci_low, "ci_high": ch.ci_high, "n": ch.n_prompts,
        })
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


# ----------------------------------------------------------------------------- run + figure
def plot_sweep(df: pd.DataFrame) -> Any:
    """Horizontal error bars: the effect of ablating each site (mean with its CI)."""
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
    ax.set_yticklabels(df["site"])
    ax.invert_yaxis()
    metric, kind = df["metric"].iloc[0], df["kind"].iloc[0]
    ax.set_xlabel("Δ ICL score (ablated − clean)" if metric == "icl_score" else "Δ normalised error (ablated − clean)")
    ax.set_title(f"{kind} ablation, one site at a time")
    fig.tight_layout()
    return fig


def analyze_run(run: Any, *, n_prompts: int = 256, seed: int = 0, **kw: Any) -> tuple[pd.DataFrame, Any]:
    """Mean-ablate every attention head (every slot when the model has no attention) of the run's
    final model on `n_prompts` fresh prompts (calibration: another fresh batch), measuring the
    change of the ICL score against the run's score baseline (`config.eval.score_baseline`;
    normalised error for vector targets). `kw` overrides `ablation_sweep` arguments."""
    from ..training.run import Run

    run = Run.of(run)
    model = run.load_model()
    batch = run.prompts(n_prompts, seed)
    kw.setdefault("calibration", run.prompts(n_prompts, seed + 1))
    kw.setdefault("what", "heads" if any(hasattr(b, "attn") for b in model.blocks) else "slots")
    kw.setdefault("kind", "mean")
    kw.setdefault("metric", "icl_score" if batch.ys.ndim == 2 else "error")
    if "baseline" not in kw:
        kw["baseline"] = run.score_baseline()
    df = ablation_sweep(model, batch, seed=seed, **kw)
    return df, plot_sweep(df)
