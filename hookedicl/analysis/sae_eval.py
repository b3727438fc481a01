"""SAEs and models together: collecting activations of any hook, SAE metrics, and splicing an SAE's
reconstruction into the model to measure what the model loses.

  * `collect_activations(model, xs, ys, hooks)`  hook -> `(n_prompts, n_tokens, *shape)`
  * `run_activations(run, hook, source=...)`     `(n_tokens, d_in)` from a run: the activations
                                                 captured during training, or fresh prompts
  * `sae_metrics(sae, acts)`                     FVU, L0, dead fraction, MSE, cosine
  * `spliced_predictions(model, sae, hook, xs, ys)`  predictions with the hook replaced by x̂
  * `splice_effect(model, sae, hook, prompts)`   error curves and ICL scores: clean, spliced, and
                                                 mean-ablated (the hook replaced by its mean)

Fraction of variance unexplained: FVU = Σ‖x − x̂‖² / Σ‖x − x̄‖² over tokens. L0: mean number of
active features per token. Dead fraction: features that never fire on the given activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..models.sites import PositionSpec, Site, hook_pos_dim, token_positions
from ..tasks import TaskBatch
from .common import as_batch, as_predictor, check_hooks, hook_guard, model_device, require_model
from .interventions import Intervention, intervened_predictions
from .sae import SparseAutoencoder, as_token_matrix

__all__ = [
    "collect_activations", "feature_activations", "run_activations", "sae_metrics", "splice_effect",
    "spliced_predictions",
]


def _check_sae(sae: Any) -> None:
    if not isinstance(sae, SparseAutoencoder):
        raise ValueError(f"sae must be a SparseAutoencoder, got {type(sae).__name__}")


def _check_site(model: Any, hook: str) -> None:
    if not isinstance(hook, str):
        raise ValueError(f"hook must be a hook name (str), got {hook!r}")
    check_hooks(model, [hook])
    if hook_pos_dim(hook) != 1:
        raise ValueError(f"{hook}: SAEs need activations shaped [batch, pos, ...]; attention patterns/scores are not supported")


def collect_activations(
    model: Any, prompts: TaskBatch, hooks: str | Sequence[str], *, batch_size: int = 512,
) -> dict[str, torch.Tensor]:
    """Activations of `hooks` on `prompts` (xs `(batch, n_points, n_dims)`, ys `(batch, n_points)`).

    Returns hook -> float32 CPU tensor `(batch, 2 * n_points, *feature_shape)` (e.g. `d_model`
    for residual hooks, `(n_heads, d_head)` for `attn.hook_z`). Runs in eval mode without grad,
    `batch_size` prompts at a time; hooks are removed afterwards even on error.
    """
    require_model(model, "collect_activations")
    names = [hooks] if isinstance(hooks, str) else list(hooks)
    if not names:
        raise ValueError("hooks is empty; name at least one hook")
    for h in names:
        _check_site(model, h)
    xs, ys = as_batch(prompts).xs, prompts.ys
    model.check_inputs(xs, ys)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    dev, dt = model_device(model)
    parts: dict[str, list[torch.Tensor]] = {h: [] for h in names}
    with hook_guard(model), torch.no_grad():
        model.eval()
        for s in range(0, xs.shape[0], batch_size):
            _, cache = model.run_with_cache(xs[s : s + batch_size].to(dev, dt), ys[s : s + batch_size].to(dev, dt), names_filter=names)
            for h in names:
                parts[h].append(cache[h].float().cpu())
    return {h: torch.cat(p) for h, p in parts.items()}


def _tokens(act: torch.Tensor, positions: PositionSpec) -> torch.Tensor:
    """`(batch, n_tokens, *f)` -> `(batch * n_kept, prod(f))` at `positions`."""
    if positions != "all":
        act = act.index_select(1, torch.tensor(token_positions(positions, act.shape[1]), dtype=torch.long))
    return act.reshape(act.shape[0] * act.shape[1], -1)


def run_activations(
    run: Any,
    hook: str,
    *,
    source: str = "sample",
    step: int | None = None,
    n_prompts: int = 2048,
    seed: int = 0,
    task: Any = None,
    positions: PositionSpec = "all",
) -> torch.Tensor:
    """Activations `(n_tokens, d_in)` of `hook` for a run (a `Run` or its path).

    `source="capture"`: the activations recorded during training (`RUN/activations`), at capture
    step `step` (default: the last one); `positions` then selects among the captured tokens.
    `source="sample"`: the model at checkpoint `step` (default newest) on `n_prompts` fresh prompts
    from `task` (default the run's task at its final length and dimension; a merged run has its
    first parent's config), seeded by `seed`.
    """
    from ..training import Run

    run = Run.of(run)
    if source == "capture":
        store = run.activations
        if not store.steps:
            raise ValueError(f"{run.path} holds no captured activations (capture.hooks was empty)")
        if hook not in store.hooks:
            raise ValueError(f"hook {hook!r} was not captured in {run.path}; captured: {store.hooks}")
        s = store.steps[-1] if step is None else step
        act = store.load(s)["act"][hook].float()
        return _tokens(act, positions)
    if source != "sample":
        raise ValueError(f"source must be 'capture' or 'sample', got {source!r}")
    model = run.load_model(step)
    if task is None:
        batch = run.prompts(n_prompts, seed)
    else:
        batch = task.sample(batch_size=n_prompts, n_points=run.config.task.n_points, generator=torch.Generator().manual_seed(seed))
    return _tokens(collect_activations(model, batch, hook)[hook], positions)


@torch.no_grad()
def feature_activations(sae: SparseAutoencoder, acts: torch.Tensor, *, batch_size: int = 8192) -> torch.Tensor:
    """Feature activations `(n_tokens, d_sae)` of activations `(..., d_in)` (flattened)."""
    _check_sae(sae)
    x = as_token_matrix(acts)
    return torch.cat([sae.encode(x[s : s + batch_size]) for s in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def sae_metrics(sae: SparseAutoencoder, acts: torch.Tensor, *, batch_size: int = 8192) -> dict[str, float]:
    """Reconstruction and sparsity of `sae` on activations `(..., d_in)`.

    Keys: `fvu` (Σ‖x − x̂‖² / Σ‖x − x̄‖²), `mse` (mean squared error per dimension), `cosine` (mean
    cosine of x and x̂), `l0` (mean active features per token), `dead_fraction` / `n_dead`
    (features that never fire here), `d_sae`, `n_tokens`.
    """
    _check_sae(sae)
    x = as_token_matrix(acts)
    if x.shape[1] != sae.d_in:
        raise ValueError(f"activations have d_in={x.shape[1]} but the SAE expects d_in={sae.d_in}")
    mean = x.double().mean(0)
    sq, var, cos, l0 = 0.0, 0.0, 0.0, 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    for s in range(0, x.shape[0], batch_size):
        xb = x[s : s + batch_size]
        z = sae.encode(xb)
        rec = sae.decode(z)
        sq += float((rec.double() - xb.double()).pow(2).sum())
        var += float((xb.double() - mean).pow(2).sum())
        cos += float(torch.nn.functional.cosine_similarity(rec, xb, dim=1).sum())
        l0 += float((z > 0).sum())
        fired |= (z > 0).any(0)
    n = x.shape[0]
    return {
        "fvu": sq / var if var > 0 else float("nan"), "mse": sq / (n * sae.d_in), "cosine": cos / n, "l0": l0 / n,
        "dead_fraction": float((~fired).float().mean()), "n_dead": int((~fired).sum()), "d_sae": sae.d_sae, "n_tokens": n,
    }


def spliced_predictions(
    model: Any,
    sae: SparseAutoencoder,
    hook: str,
    prompts: TaskBatch,
    *,
    positions: PositionSpec = "all",
) -> torch.Tensor:
    """Predictions `(batch, n_points)` of `model` on `prompts` with activation `hook` replaced by
    the SAE's reconstruction at token `positions` (default every token): an `"sae"`
    `Intervention` at `Site(hook, positions)`."""
    require_model(model, "spliced_predictions")
    _check_sae(sae)
    _check_site(model, hook)
    return intervened_predictions(model, as_batch(prompts), Intervention(Site(hook, positions), "sae", sae=sae))


def _sq(preds: torch.Tensor, ys: torch.Tensor) -> np.ndarray:
    e = (preds.detach().double().cpu() - ys.double().cpu()) ** 2
    return e.reshape(*e.shape[:2], -1).sum(-1).numpy()


def splice_effect(
    model: Any,
    sae: SparseAutoencoder,
    hook: str,
    prompts: TaskBatch,
    *,
    baseline: Any = "least_squares",
    positions: PositionSpec = "all",
    ci: float = 0.95,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """What the model loses when `hook` is replaced by the SAE reconstruction (scalar targets).

    Three versions of the model run on the same prompts:
    `clean`, `spliced` (hook -> SAE reconstruction at `positions`), `ablated` (hook -> its mean
    over the prompts at each token position). Returns `(summary, curves)`:
    summary `{"score": {"clean"|"spliced"|"ablated": {value, ci_low, ci_high, ...}}, "delta_score"
    (spliced − clean), "score_recovered" ((S_spliced − S_ablated) / (S_clean − S_ablated)),
    "error": {name: mean normalised error over positions}, "fvu" (of the SAE on these prompts'
    activations at `positions`), "baseline", "n_prompts"}`; curves: tidy normalised error per
    position (`predictor` in clean, spliced, ablated, baseline, zero; `k`, `mean`, `ci_low`,
    `ci_high`), normalised by the mean y² of the prompts. ICL scores are against `baseline` (a
    name for `hookedicl.baselines.get` or a predictor), same-prompts mode with bootstrap CIs.
    """
    from ..evaluation import error_curve, icl_regression_score

    require_model(model, "splice_effect")
    _check_sae(sae)
    _check_site(model, hook)
    prompts = as_batch(prompts)
    xs, ys = prompts.xs, prompts.ys
    model.check_inputs(xs, ys)
    if ys.ndim != 2:
        raise ValueError(f"splice_effect needs scalar targets ys (batch, n_points), got shape {tuple(ys.shape)}")
    if xs.shape[0] < 2:
        raise ValueError(f"splice_effect needs at least 2 prompts, got {xs.shape[0]}")
    site = Site(hook, positions)
    act = collect_activations(model, prompts, hook)[hook]
    if act.reshape(*act.shape[:2], -1).shape[-1] != sae.d_in:
        raise ValueError(f"{hook} has {act.reshape(*act.shape[:2], -1).shape[-1]} features per token but the SAE expects d_in={sae.d_in}")
    dev, dt = model_device(model)
    sae = sae.to(dev)
    with hook_guard(model), torch.no_grad():
        model.eval()
        clean = model(xs.to(dev, dt), ys.to(dev, dt))
    spliced = intervened_predictions(model, prompts, Intervention(site, "sae", sae=sae))
    ablated = intervened_predictions(model, prompts, Intervention(site, "mean"))  # mean over these prompts
    if isinstance(baseline, str):
        from ..baselines import get

        base_name, base = baseline, get(baseline)
    else:
        base_name, base = type(baseline).__name__, baseline
    base_preds = as_predictor(base, "baseline")(xs, ys)
    err = {"clean": _sq(clean, ys), "spliced": _sq(spliced, ys), "ablated": _sq(ablated, ys), "baseline": _sq(base_preds, ys)}
    err["zero"] = _sq(torch.zeros_like(ys), ys)
    scores = {
        name: icl_regression_score(err[name], err["baseline"], err["zero"], ci=ci, n_bootstrap=n_bootstrap, seed=seed, mode="same_prompts").to_dict()
        for name in ("clean", "spliced", "ablated")
    }
    s_c, s_s, s_a = (scores[n]["value"] for n in ("clean", "spliced", "ablated"))
    m2 = float(err["zero"].mean())
    curves = error_curve({n: e / m2 for n, e in err.items()}, ci=0.90, n_bootstrap=n_bootstrap, seed=seed)
    summary = {
        "hook": hook,
        "score": scores,
        "delta_score": s_s - s_c,
        "score_recovered": (s_s - s_a) / (s_c - s_a) if s_c != s_a else float("nan"),
        "error": {n: float(e.mean() / m2) for n, e in err.items()},
        "fvu": sae_metrics(sae.cpu(), _tokens(act, positions))["fvu"],
        "baseline": base_name,
        "n_prompts": int(xs.shape[0]),
    }
    return summary, curves
