"""Readout lens (Grazzi et al. 2024): decode every residual-stream layer with the model's own final
norm and read-out, as if the network stopped there.

    lens_l = read_out(ln_final(resid_l))[:, 0::2]      prediction at the x tokens, (batch, n_points)

Layer l follows the residual naming of `common` (0 = embedding, l >= 1 = output of block l-1), so
the last layer's lens is exactly the model's output. The error of the lens vs depth shows whether
the model refines its prediction layer by layer. A per-layer affine calibration (scale and offset
fitted by least squares on held-out prompts) separates "the information is there but on another
scale" from "the information is not there yet".

`lens_match` runs the predictor matching of `match.py` on every layer's lens ("which reference
does layer l implement?").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..models.sites import resid_hook
from .common import check_layers, check_prompts, hook_guard, mean_ci, require_model


def _check_scalar(model: Any) -> None:
    if model.spec.y_dim != 1:
        raise ValueError(f"the readout lens needs scalar targets (y_dim=1); this model has y_dim={model.spec.y_dim}")


def lens_predictions(
    model: Any, xs: torch.Tensor, ys: torch.Tensor, layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """Raw lens predictions `(len(layers), batch, n_points)` at the x tokens.

    Runs one forward pass with hooks that keep the residual streams (not detached: under
    autograd the lens predictions are differentiable w.r.t. xs and ys), then applies
    `model.ln_final` and `model.read_out` to every requested layer, over the whole token sequence
    as the model's forward does, so the last layer reproduces `model(xs, ys)` bit for bit.
    """
    require_model(model, "the readout lens")
    _check_scalar(model)
    check_prompts(xs, ys, model.spec.n_dims)
    layers = check_layers(model, None if layers is None else list(layers))
    names = [resid_hook(layer) for layer in layers]
    store: dict[str, torch.Tensor] = {}

    def keep(t: torch.Tensor, hook: Any) -> None:
        store[hook.name] = t

    with hook_guard(model), model.hooks(fwd_hooks=[(n, keep) for n in dict.fromkeys(names)]):
        model(xs, ys)
    return torch.stack([model.read_out(model.ln_final(store[n]))[:, 0::2, 0] for n in names])


class LensPredictor:
    """The lens of one residual layer as a predictor: `predict(xs, ys) -> (batch, n_points)`.

    Lets every predictor analysis (`match.spd`, `match.ilwd`, `match.sensitivity`,
    `order.order_sensitivity`) run on an intermediate layer.
    """

    def __init__(self, model: Any, layer: int) -> None:
        require_model(model, "LensPredictor")
        _check_scalar(model)
        check_layers(model, [layer])
        self.model, self.layer = model, layer

    def predict(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return lens_predictions(self.model, xs, ys, [self.layer])[0]

    __call__ = predict

    def __repr__(self) -> str:
        return f"LensPredictor(layer={self.layer})"


def _affine_fit(p: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Least-squares (scale, offset) with y ≈ scale * p + offset over all entries."""
    p, y = p.double().flatten(), y.double().flatten()
    design = torch.stack([p, torch.ones_like(p)], dim=1)
    coef = torch.linalg.lstsq(design, y[:, None], driver="gelsd").solution[:, 0]
    return float(coef[0]), float(coef[1])


def readout_lens(
    model: Any,
    xs: torch.Tensor,
    ys: torch.Tensor,
    layers: Sequence[int] | None = None,
    calibrate: bool = False,
    *,
    y_scale: float | None = None,
    calib_frac: float = 0.5,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Normalised squared error of every layer's lens, per layer x position.

    Args:
        model: a `HookedICLModel` with scalar targets.
        xs, ys: prompts `(batch, n_points, n_dims)`, `(batch, n_points)`.
        layers: residual layers (default: all, 0..n_blocks).
        calibrate: also fit, per layer, `y ≈ scale * lens + offset` by least squares (pooled over
            positions) on the first `round(calib_frac * batch)` prompts, and report the
            calibrated error on the remaining prompts. The raw error is then reported on the
            same held-out prompts, so the two are comparable.
        y_scale: the normaliser E[y²] (e.g. `task.y_second_moment()`); default: the mean of ys²
            over the prompts given.

    Returns:
        one row per (layer, k, calibrated): `layer, hook, k` (k = number of in-context examples
        before the query), `calibrated`, `scale`, `offset` (NaN for raw rows), and `mean, ci_low,
        ci_high` of (lens − y)² / y_scale over prompts (bootstrap CI).
    """
    require_model(model, "readout_lens")
    check_prompts(xs, ys, model.spec.n_dims)
    layers = check_layers(model, None if layers is None else list(layers))
    if not isinstance(calibrate, bool):
        raise ValueError(f"calibrate must be True or False, got {calibrate!r}")
    b = xs.shape[0]
    if y_scale is None:
        y_scale = float(ys.double().pow(2).mean())
    if not (isinstance(y_scale, (int, float)) and np.isfinite(y_scale) and y_scale > 0):
        raise ValueError(f"y_scale must be a positive finite number (E[y²]), got {y_scale!r}")
    with torch.no_grad():
        preds = lens_predictions(model, xs, ys, layers).double()  # (L, b, n)
    y = ys.double()
    frames = []
    if calibrate:
        if not 0.0 < calib_frac < 1.0:
            raise ValueError(f"calib_frac must lie in (0, 1), got {calib_frac!r}")
        if b < 4:
            raise ValueError(f"calibrate=True needs at least 4 prompts (fit and held-out splits), got batch={b}")
        n_fit = min(max(int(round(calib_frac * b)), 2), b - 2)
        fits = [_affine_fit(preds[i, :n_fit], y[:n_fit]) for i in range(len(layers))]
        held, y_eval = preds[:, n_fit:], y[n_fit:]
        scale = torch.tensor([f[0] for f in fits], dtype=torch.float64)[:, None, None]
        offset = torch.tensor([f[1] for f in fits], dtype=torch.float64)[:, None, None]
        variants = [(False, held, None), (True, scale * held + offset, fits)]
    else:
        y_eval = y
        variants = [(False, preds, None)]
    n = xs.shape[1]
    for calibrated, p, fits in variants:
        err = ((p - y_eval) ** 2 / y_scale).permute(1, 0, 2)  # (prompts, L, n)
        m, lo, hi = mean_ci(err, ci, seed=seed)
        for i, layer in enumerate(layers):
            frames.append(pd.DataFrame({
                "layer": layer, "hook": resid_hook(layer), "k": np.arange(n), "calibrated": calibrated,
                "scale": fits[i][0] if fits else np.nan, "offset": fits[i][1] if fits else np.nan,
                "mean": m[i], "ci_low": lo[i], "ci_high": hi[i],
            }))
    return pd.concat(frames, ignore_index=True)


def lens_match(
    model: Any,
    xs: torch.Tensor,
    ys: torch.Tensor,
    references: Any = None,
    layers: Sequence[int] | None = None,
    *,
    metrics: Sequence[str] = ("spd",),
    **match_kw: Any,
) -> pd.DataFrame:
    """`match.match` on every layer's lens: the match table with a leading `layer` column.

    References are resolved once (GD/SGD step sizes by line search on the task error, unless
    `lr_search` in `match_kw` says otherwise) and shared by all layers. Pass the result to
    `match.best_match` for the best reference per layer and k.
    """
    from .match import match, resolve_references

    require_model(model, "lens_match")
    check_prompts(xs, ys, model.spec.n_dims)
    layers = check_layers(model, None if layers is None else list(layers))
    ref_kw = {k: match_kw.pop(k) for k in ("ridge_alphas", "gd_steps", "gd_lrs", "knn_k") if k in match_kw}
    lr_search = match_kw.pop("lr_search", "task")
    if lr_search == "model":
        with torch.no_grad():
            target = model(xs, ys)
    else:
        target = None
    refs = resolve_references(references, xs, ys, lr_search=lr_search, target=target, **ref_kw)
    frames = []
    for layer in layers:
        t = match(LensPredictor(model, layer), xs, ys, refs, metrics=metrics, name=f"lens {layer}", **match_kw)
        frames.append(t.assign(layer=layer))
    out = pd.concat(frames, ignore_index=True)
    return out[["layer", *[c for c in out.columns if c != "layer"]]]


def analyze_run(run: Any, *, n_prompts: int = 256, seed: int = 0, **kw: Any) -> tuple[pd.DataFrame, Any]:
    """Readout lens of a run's model on `n_prompts` fresh prompts of its task, normalised by the
    task's E[y²], with per-layer calibration (`calibrate=True` unless overridden in `kw`).

    Returns the `readout_lens` table and a figure: lens error vs k, one line per layer (raw and,
    when calibrated, calibrated panels).
    """
    from ..training.run import Run
    from ..viz._backend import pyplot

    run = Run.of(run)
    batch = run.prompts(n_prompts, seed)
    model, task = run.load_model(), run.task()
    kw.setdefault("calibrate", True)
    kw.setdefault("y_scale", task.y_second_moment())
    kw.setdefault("seed", seed)
    table = readout_lens(model, batch.xs, batch.ys, **kw)
    plt = pyplot()
    panels = [False, True] if table["calibrated"].any() else [False]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    layers = sorted(table["layer"].unique())
    for ax, cal in zip(axes[0], panels):
        for i, layer in enumerate(layers):
            d = table[(table["layer"] == layer) & (table["calibrated"] == cal)]
            color = cmap(i / max(1, len(layers) - 1))
            ax.plot(d["k"], d["mean"], color=color, label=f"layer {layer}")
            ax.fill_between(d["k"], d["ci_low"], d["ci_high"], color=color, alpha=0.15)
        ax.set_yscale("log")
        ax.set_xlabel("in-context examples k")
        ax.set_title("calibrated lens" if cal else "raw lens")
    axes[0][0].set_ylabel("normalised squared error")
    axes[0][-1].legend(fontsize="small", ncol=2)
    fig.suptitle(f"Readout lens: {model.spec.name}")
    fig.tight_layout()
    return table, fig
