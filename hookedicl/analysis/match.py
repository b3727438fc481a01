"""Predictor matching: which learning algorithm does a model implement in context?

For a model (or any predictor) A1 and reference predictors A2 (least squares, ridge over a λ grid,
k-step GD, online SGD, GD++, iterative Newton, averaging, k-NN), per context length k:

* SPD (Akyürek et al. 2023): E_D (A1(D)(x_k) − A2(D)(x_k))², D = the first k points of a prompt
  and x_k its query; metric `spd` and `spd/d` (divided by n_dims, as in their plots).
* prediction difference (von Oswald et al. 2023): E |A1(D)(x_k) − A2(D)(x_k)|, metric `pred_diff`.
* ILWD (Akyürek et al. 2023): query A on `n_queries` fresh x' with the same context D (prompts
  that share the first k points and differ in the query point x_k: the prediction at position k
  depends only on the points < k and on x_k), fit ŵ_A, b_A by least squares to
  `A(D)(x') ≈ ŵ_A·x' + b_A`, and report E‖ŵ_A1 − ŵ_A2‖² (`ilwd`, `ilwd/d`) and the R² of A1's
  fit (`r2`, a linearity check; predictor = A1's name). Predictors with an implicit weight
  (`LinearPredictor.weights`) use it directly unless `analytic=False`.
* sensitivity cosine (von Oswald et al. 2023): cos(∂A1(D)(x_k)/∂x_k, ∂A2(D)(x_k)/∂x_k), by
  autograd for models and non-linear predictors, analytic (= ŵ) for linear ones;
  metric `sensitivity_cos`. Undefined cosines (a zero gradient, e.g. ŵ = 0 at k = 0, or a
  predictor without gradients such as k-NN) are left out of the mean; a (predictor, k) with no
  defined value gets no row.

Every mean comes with a bootstrap CI over prompts. `best_match` picks, per k (and layer), the
reference with the smallest distance (largest cosine).

GD / SGD step sizes (`lr_search`): "task" chooses η minimising the predictor's own mean squared
error vs ys (positions 1..n-1) on the prompts given — the best-tuned algorithm of its family, as
the papers do; "model" chooses η minimising the mean squared distance to the model's predictions
— the family member closest to the model (this favours the family, so report it as such); None
keeps the baselines' default step sizes. `gd_lrs` adds fixed step sizes (a grid) next to the
searched one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import baselines as B
from ..progress import progress_bar
from .common import as_predictor, check_prompts, is_model, nan_mean_ci

FAMILIES: tuple[str, ...] = ("least_squares", "ridge", "gd", "sgd", "gd_plus_plus", "newton", "averaging", "knn")
METRICS: tuple[str, ...] = ("spd", "pred_diff", "ilwd", "sensitivity")
_COLUMNS = ["predictor", "family", "k", "metric", "mean", "ci_low", "ci_high"]


@dataclass(frozen=True)
class Reference:
    """A labelled reference predictor; `family` is its baseline name (or "custom")."""

    label: str
    family: str
    predictor: Any


# ----------------------------------------------------------------------------- predictions
def _check_pair(obj: Any, xs: torch.Tensor, ys: torch.Tensor) -> None:
    check_prompts(xs, ys, obj.spec.n_dims if is_model(obj) else None)
    if is_model(obj) and obj.spec.y_dim != 1:
        raise ValueError(f"matching needs scalar targets (y_dim=1); the model has y_dim={obj.spec.y_dim}")


def predictions(obj: Any, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Predictions `(batch, n_points)` float64 of a model / predictor / callable, or `obj` itself
    when it is already a `(batch, n_points)` tensor of predictions. Attaches no hooks, so it
    runs under whatever hooks the caller has put on a model (e.g. an ablation)."""
    if isinstance(obj, torch.Tensor):
        if tuple(obj.shape) != tuple(ys.shape):
            raise ValueError(f"predictions must have shape {tuple(ys.shape)} (= ys), got {tuple(obj.shape)}")
        return obj.detach().double()
    _check_pair(obj, xs, ys)
    f = as_predictor(obj)
    with torch.no_grad():
        p = f(xs, ys)
    if not isinstance(p, torch.Tensor) or tuple(p.shape) != tuple(ys.shape):
        shape = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
        raise ValueError(f"predictor returned {shape}, expected (batch, n_points) = {tuple(ys.shape)}")
    return p.detach().double()


def _check_ks(ks: Sequence[int] | None, n: int) -> list[int]:
    if ks is None:
        return list(range(n))
    ks = list(ks)
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < n]
    if bad or not ks:
        raise ValueError(f"ks {bad or ks} out of range: context lengths are 0..{n - 1}")
    return [int(k) for k in ks]


def _rows(values: torch.Tensor | np.ndarray, ks: list[int], metric: str, ci: float, seed: int) -> pd.DataFrame:
    """Tidy rows (k, metric, mean, ci_low, ci_high) from per-prompt values `(batch, len(ks))`."""
    m, lo, hi = nan_mean_ci(values, ci, seed=seed)
    df = pd.DataFrame({"k": ks, "metric": metric, "mean": m, "ci_low": lo, "ci_high": hi})
    return df[df["mean"].notna()].reset_index(drop=True)


# ----------------------------------------------------------------------------- line search
def _objective(
    make: Callable[[float], Any], xs: torch.Tensor, ys: torch.Tensor, goal: torch.Tensor,
) -> Callable[[float], float]:
    def f(log_lr: float) -> float:
        p = predictions(make(math.exp(log_lr)), xs, ys)[:, 1:]
        e = ((p - goal[:, 1:]) ** 2).mean()
        return float(e) if torch.isfinite(e) else math.inf

    return f


def line_search_lr(
    predictor: Any,
    xs: torch.Tensor,
    ys: torch.Tensor,
    *,
    param: str = "lr",
    target: torch.Tensor | None = None,
    bounds: tuple[float, float] = (1e-4, 10.0),
    n_grid: int = 29,
    n_refine: int = 20,
) -> float:
    """Step size η for `predictor` (a baseline such as `gd` or `sgd`, or any object with
    scikit-learn's `get_params` / `set_params`) minimising the mean squared difference of its
    predictions (positions 1..n-1; position 0 is always 0) to `target` `(batch, n_points)` — ys
    when None (the task error). The hyperparameter `param` is varied on clones
    (`sklearn.base.clone(predictor).set_params(param=η)`); every other hyperparameter is kept
    and `predictor` itself is not changed. A log-spaced grid over `bounds`, then golden-section
    search in log η between the best grid point's neighbours. Diverging step sizes score +inf."""
    from sklearn.base import clone

    if not (hasattr(predictor, "get_params") and hasattr(predictor, "set_params")):
        raise TypeError(
            "line_search_lr needs a predictor with get_params / set_params (e.g. "
            f"hookedicl.baselines.get('gd')), got {type(predictor).__name__}"
        )
    if param not in predictor.get_params():
        raise ValueError(f"line_search_lr: {predictor!r} has no hyperparameter {param!r}; "
                         f"it has {sorted(predictor.get_params())}")
    return _search(lambda v: clone(predictor).set_params(**{param: v}), xs, ys, target, bounds, n_grid, n_refine)


def _search(
    make: Callable[[float], Any], xs: torch.Tensor, ys: torch.Tensor, target: torch.Tensor | None,
    bounds: tuple[float, float], n_grid: int, n_refine: int,
) -> float:
    """The search behind `line_search_lr` over the family `make(η)`."""
    check_prompts(xs, ys)
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds!r}")
    if xs.shape[1] < 2:
        raise ValueError("a step-size line search needs prompts of at least 2 points")
    goal = ys.double() if target is None else predictions(target, xs, ys)
    f = _objective(make, xs, ys, goal)
    grid = np.linspace(math.log(lo), math.log(hi), n_grid)
    vals = [f(g) for g in grid]
    i = int(np.argmin(vals))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, n_grid - 1)]
    best_x, best_v = grid[i], vals[i]
    r = (math.sqrt(5) - 1) / 2
    c, d = b - r * (b - a), a + r * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(n_refine):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - r * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + r * (b - a)
            fd = f(d)
    for x, v in ((c, fc), (d, fd)):
        if v < best_v:
            best_x, best_v = x, v
    return float(math.exp(best_x))


# ----------------------------------------------------------------------------- references
def resolve_references(
    references: Any = None,
    xs: torch.Tensor | None = None,
    ys: torch.Tensor | None = None,
    *,
    lr_search: str | None = "task",
    target: torch.Tensor | None = None,
    ridge_alphas: Sequence[float] = (0.01, 0.1, 1.0),
    gd_steps: Sequence[int] = (1, 2),
    gd_lrs: Sequence[float] = (),
    knn_k: int = 3,
) -> list[Reference]:
    """Expand reference specifications into labelled predictors.

    `references`: None (every family in `FAMILIES`), a family name, a list of family names /
    predictors / `Reference`s, or a dict `{label: predictor or callable}`. A family expands to:
    least_squares; ridge(alpha) for each of `ridge_alphas`; gd(steps, lr) for each of `gd_steps`
    with lr by line search (see `lr_search`, module docstring) plus each fixed lr in `gd_lrs`;
    sgd(lr) with lr by line search; gd_plus_plus, newton, averaging with their defaults; knn(k).
    Line searches need the prompts `xs, ys` (and `target` predictions for lr_search="model").
    """
    if lr_search not in ("task", "model", None):
        raise ValueError(f"lr_search must be 'task', 'model' or None, got {lr_search!r}")
    if references is None:
        references = list(FAMILIES)
    if isinstance(references, (str, Reference)) or (not isinstance(references, (list, tuple, dict))):
        references = [references]
    if isinstance(references, dict):
        out = []
        for label, p in references.items():
            as_predictor(p, f"reference {label!r}")
            out.append(Reference(str(label), getattr(p, "name", "") or "custom", p))
        return out
    searched = any(r in ("gd", "sgd") for r in references if isinstance(r, str))
    if searched and lr_search is not None:
        if xs is None or ys is None:
            raise ValueError("references 'gd'/'sgd' with lr_search need the prompts xs, ys")
        if lr_search == "model" and target is None:
            raise ValueError("lr_search='model' needs target= (the model's predictions)")
    goal = target if lr_search == "model" else None
    out: list[Reference] = []
    for r in references:
        if isinstance(r, Reference):
            out.append(r)
        elif isinstance(r, str):
            if r not in FAMILIES:
                raise ValueError(f"unknown reference {r!r}; valid: {', '.join(FAMILIES)} (or pass a predictor)")
            out.extend(_family(r, xs, ys, lr_search, goal, ridge_alphas, gd_steps, gd_lrs, knn_k))
        else:
            as_predictor(r, "predictor")
            out.append(Reference(repr(r), getattr(r, "name", "") or "custom", r))
    labels = [r.label for r in out]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise ValueError(f"duplicate reference label(s) {dup}")
    return out


def _family(name: str, xs: Any, ys: Any, lr_search: str | None, goal: Any, ridge_alphas: Sequence[float],
            gd_steps: Sequence[int], gd_lrs: Sequence[float], knn_k: int) -> list[Reference]:
    def ref(label: str, p: Any) -> Reference:
        return Reference(label, name, p)

    if name == "ridge":
        return [ref(f"ridge(alpha={a:g})", B.get("ridge", alpha=a)) for a in ridge_alphas]
    if name == "knn":
        return [ref(f"knn(k={knn_k})", B.get("knn", k=knn_k))]
    if name in ("gd", "sgd"):
        out = []
        for steps in (gd_steps if name == "gd" else [None]):
            kw = {} if steps is None else {"steps": steps}
            if lr_search is None:
                lr = B.get(name, **kw).lr
            else:
                lr = line_search_lr(B.get(name, **kw), xs, ys, target=goal)
            lrs = [(lr, lr_search)] + ([(g, None) for g in gd_lrs] if name == "gd" else [])
            for value, how in lrs:
                s = "" if steps is None else f"steps={steps}, "
                tag = f", {how} line search" if how else ""
                out.append(ref(f"{name}({s}lr={value:.3g}{tag})", B.get(name, lr=value, **kw)))
        return out
    return [ref(name, B.get(name))]


# ----------------------------------------------------------------------------- weights, gradients
def _queries(
    xs: torch.Tensor, n_queries: int | None, queries: torch.Tensor | None, generator: torch.Generator | None,
) -> torch.Tensor:
    """Fresh queries `(batch, m, n_dims)`: given, or N(0, I). Generated queries are zeroed in the
    coordinates that are 0 in every prompt (curriculum padding: the model never saw them)."""
    b, _, d = xs.shape
    if queries is None:
        m = n_queries if n_queries is not None else 4 * d
        if not isinstance(m, int) or m < d + 2:
            raise ValueError(
                f"n_queries must be an int >= n_dims + 2 = {d + 2} (an affine fit with a residual), got {m!r}"
            )
        active = (xs != 0).flatten(0, 1).any(0).to(xs.dtype)
        return torch.randn(b, m, d, generator=generator, dtype=xs.dtype) * active
    if not isinstance(queries, torch.Tensor) or queries.ndim not in (2, 3) or queries.shape[-1] != d:
        raise ValueError(f"queries must be (n_queries, {d}) or (batch, n_queries, {d}), got "
                         f"{tuple(queries.shape) if isinstance(queries, torch.Tensor) else type(queries).__name__}")
    q = queries.expand(b, *queries.shape[-2:]) if queries.ndim == 2 else queries
    if q.shape[0] != b:
        raise ValueError(f"queries has batch {q.shape[0]}, xs has batch {b}")
    if q.shape[1] < d + 2:
        raise ValueError(f"need at least n_dims + 2 = {d + 2} queries per prompt, got {q.shape[1]}")
    return q.to(xs.dtype)


def query_outputs(
    predictor: Any, xs: torch.Tensor, ys: torch.Tensor, k: int, queries: torch.Tensor, max_rows: int = 4096,
) -> torch.Tensor:
    """`predictor(D)(x')` `(batch, n_queries)` for the context D = the first k points of each
    prompt and the queries `(batch, n_queries, n_dims)`: prompts of k + 1 points that share the
    first k points and carry x' as point k."""
    b, m, d = queries.shape
    ctx = xs[:, : k + 1].unsqueeze(1).expand(b, m, k + 1, d).clone()
    ctx[:, :, k] = queries
    ctx = ctx.reshape(b * m, k + 1, d)
    cys = ys[:, : k + 1].unsqueeze(1).expand(b, m, k + 1).reshape(b * m, k + 1)
    out = [
        predictions(predictor, ctx[i : i + max_rows], cys[i : i + max_rows])[:, k] for i in range(0, b * m, max_rows)
    ]
    return torch.cat(out).reshape(b, m)


def implicit_weights(
    predictor: Any,
    xs: torch.Tensor,
    ys: torch.Tensor,
    ks: Sequence[int] | None = None,
    *,
    n_queries: int | None = None,
    queries: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fitted implicit weights: for every prompt and context length k, least squares of the
    predictor's outputs on fresh queries, `A(D_k)(x') ≈ ŵ·x' + b`.

    Returns ŵ `(batch, len(ks), n_dims)` and the fit's R² `(batch, len(ks))` (float64; R² = 1
    when the outputs do not vary, since the affine fit is then exact). Queries default to
    `4 * n_dims` draws of N(0, I) per prompt (from `generator`).
    """
    _check_pair(predictor, xs, ys)
    ks = _check_ks(ks, xs.shape[1])
    q = _queries(xs, n_queries, queries, generator)
    design = torch.cat([q.double(), torch.ones(*q.shape[:2], 1, dtype=torch.float64)], dim=-1)
    ws, r2s = [], []
    for k in ks:
        p = query_outputs(predictor, xs, ys, k, q)  # (b, m)
        coef = torch.linalg.lstsq(design, p[..., None], driver="gelsd").solution[..., 0]
        res = ((p - (design @ coef[..., None])[..., 0]) ** 2).sum(-1)
        tot = ((p - p.mean(-1, keepdim=True)) ** 2).sum(-1)
        flat = tot <= 1e-24 * q.shape[1]
        r2s.append(torch.where(flat, torch.ones_like(tot), 1 - res / torch.where(flat, 1.0, tot)))
        ws.append(coef[:, :-1])
    return torch.stack(ws, 1), torch.stack(r2s, 1)


def _weights(
    predictor: Any, xs: torch.Tensor, ys: torch.Tensor, ks: list[int], q: torch.Tensor, analytic: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    if analytic and isinstance(predictor, B.LinearPredictor):
        w = predictor.weights(xs, ys)[:, ks].double()
        return w, torch.ones(w.shape[:2], dtype=torch.float64)
    return implicit_weights(predictor, xs, ys, ks, queries=q)


def query_gradients(
    predictor: Any, xs: torch.Tensor, ys: torch.Tensor, ks: Sequence[int] | None = None,
) -> torch.Tensor:
    """∂ŷ_k/∂x_k `(batch, len(ks), n_dims)` float64: ŵ_k for a `LinearPredictor` (exact: ŵ_k
    depends on the points < k only), autograd otherwise (one backward pass per k). NaN where
    the predictor gives no gradient (e.g. k-NN, scikit-learn models)."""
    _check_pair(predictor, xs, ys)
    ks = _check_ks(ks, xs.shape[1])
    if isinstance(predictor, torch.Tensor):
        raise ValueError("query_gradients needs a predictor, not a tensor of predictions")
    if isinstance(predictor, B.LinearPredictor):
        return predictor.weights(xs, ys)[:, ks].double()
    f = as_predictor(predictor)
    x = xs.detach().clone().requires_grad_(True)
    nan = torch.full((xs.shape[0], len(ks), xs.shape[2]), math.nan, dtype=torch.float64)
    with torch.enable_grad():
        p = f(x, ys)
        if not p.requires_grad:
            return nan
        grads = []
        for k in ks:
            (g,) = torch.autograd.grad(p[:, k].sum(), x, retain_graph=True, allow_unused=True)
            grads.append(nan[:, 0] if g is None else g[:, k].double())
    return torch.stack(grads, 1)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    ok = (na > 1e-12) & (nb > 1e-12)
    return torch.where(ok, (a * b).sum(-1) / (na * nb).clamp(min=1e-300), torch.full_like(na, math.nan))


# ----------------------------------------------------------------------------- metrics
def spd(
    a1: Any, a2: Any, xs: torch.Tensor, ys: torch.Tensor, *, ks: Sequence[int] | None = None, ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """SPD per context length: rows (k, metric ∈ {spd, spd/d, pred_diff}, mean, ci_low, ci_high).
    `a1`, `a2`: models, predictors, callables or `(batch, n_points)` prediction tensors."""
    check_prompts(xs, ys)
    ks = _check_ks(ks, xs.shape[1])
    diff = (predictions(a1, xs, ys) - predictions(a2, xs, ys))[:, ks]
    d = xs.shape[-1]
    return pd.concat([_rows(diff**2, ks, "spd", ci, seed), _rows(diff**2 / d, ks, "spd/d", ci, seed),
                      _rows(diff.abs(), ks, "pred_diff", ci, seed)], ignore_index=True)


def ilwd(
    a1: Any, a2: Any, xs: torch.Tensor, ys: torch.Tensor, *, ks: Sequence[int] | None = None,
    n_queries: int | None = None, queries: torch.Tensor | None = None, analytic: bool = True, ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """ILWD per context length: rows (k, metric ∈ {ilwd, ilwd/d, r2}, ...); `r2` is the R² of
    a1's affine fit (1 for an analytic `LinearPredictor`). Both use the same queries
    (N(0, I) from `seed` unless given)."""
    check_prompts(xs, ys)
    ks = _check_ks(ks, xs.shape[1])
    q = _queries(xs, n_queries, queries, torch.Generator().manual_seed(seed))
    w1, r2 = _weights(a1, xs, ys, ks, q, analytic)
    w2, _ = _weights(a2, xs, ys, ks, q, analytic)
    dist = ((w1 - w2) ** 2).sum(-1)
    d = xs.shape[-1]
    return pd.concat([_rows(dist, ks, "ilwd", ci, seed), _rows(dist / d, ks, "ilwd/d", ci, seed),
                      _rows(r2, ks, "r2", ci, seed)], ignore_index=True)


def sensitivity(
    a1: Any, a2: Any, xs: torch.Tensor, ys: torch.Tensor, *, ks: Sequence[int] | None = None, ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Sensitivity cosine per context length: rows (k, metric = sensitivity_cos, ...)."""
    check_prompts(xs, ys)
    ks = _check_ks(ks, xs.shape[1])
    cos = _cosine(query_gradients(a1, xs, ys, ks), query_gradients(a2, xs, ys, ks))
    return _rows(cos, ks, "sensitivity_cos", ci, seed)


def match(
    model: Any,
    xs: torch.Tensor,
    ys: torch.Tensor,
    references: Any = None,
    task: Any = None,
    *,
    metrics: Sequence[str] = METRICS,
    ks: Sequence[int] | None = None,
    n_queries: int | None = None,
    ilwd_prompts: int | None = None,
    lr_search: str | None = "task",
    analytic: bool = True,
    name: str = "model",
    ci: float = 0.95,
    seed: int = 0,
    **reference_kw: Any,
) -> pd.DataFrame:
    """Match a model (or any predictor) against reference predictors.

    Args:
        model: `HookedICLModel`, baseline predictor or callable `f(xs, ys) -> (batch, n_points)`.
        xs, ys: prompts `(batch, n_points, n_dims)`, `(batch, n_points)`.
        references: see `resolve_references` (default: every family); `reference_kw`
            (ridge_alphas, gd_steps, gd_lrs, knn_k) go there too.
        task: optional task; when given, ILWD's fresh queries come from its x distribution
            (`task.sample(...).xs`), else from N(0, I).
        metrics: subset of ("spd", "pred_diff", "ilwd", "sensitivity"); spd gives spd and spd/d.
        ks: context lengths to report (default all 0..n_points-1).
        n_queries: fresh queries per prompt and k for ILWD (default 4 * n_dims).
        ilwd_prompts: compute ILWD (the costly metric: n_queries forward passes per prompt and
            k) on the first `ilwd_prompts` prompts only (default: all).
        lr_search: "task", "model" or None (module docstring).

    Returns:
        tidy DataFrame `reference, family, k, metric, mean, ci_low, ci_high`.
    """
    _check_pair(model, xs, ys)
    as_predictor(model, "model")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown metric(s) {unknown or list(metrics)}; valid: {', '.join(METRICS)}")
    ks = _check_ks(ks, xs.shape[1])
    p1 = predictions(model, xs, ys)
    resolved = isinstance(references, list) and references and all(isinstance(r, Reference) for r in references)
    refs = references if resolved else resolve_references(
        references, xs, ys, lr_search=lr_search, target=p1, **reference_kw
    )
    gen = torch.Generator().manual_seed(seed)
    frames = []
    if "ilwd" in metrics:
        n_il = xs.shape[0] if ilwd_prompts is None else ilwd_prompts
        if isinstance(n_il, bool) or not isinstance(n_il, int) or not 1 <= n_il <= xs.shape[0]:
            raise ValueError(f"ilwd_prompts must be an int in 1..{xs.shape[0]} (the batch), got {ilwd_prompts!r}")
        xi, yi = xs[:n_il], ys[:n_il]
        if task is not None:
            if getattr(task, "n_dims", None) != xs.shape[-1]:
                raise ValueError(f"task has n_dims={getattr(task, 'n_dims', None)}, prompts have {xs.shape[-1]}")
            m = n_queries if n_queries is not None else 4 * xs.shape[-1]
            active = (xs != 0).flatten(0, 1).any(0).to(xs.dtype)  # curriculum padding stays 0
            q = _queries(xi, None, task.sample(batch_size=n_il, n_points=m, generator=gen).xs * active, None)
        else:
            q = _queries(xi, n_queries, None, gen)
        w1, r2 = _weights(model, xi, yi, ks, q, analytic)
        frames.append(_rows(r2, ks, "r2", ci, seed).assign(predictor=name, family=name))
    if "sensitivity" in metrics:
        g1 = query_gradients(model, xs, ys, ks)
    d = xs.shape[-1]
    for ref in progress_bar(refs, desc="match", unit="predictor"):
        parts = []
        if "spd" in metrics or "pred_diff" in metrics:
            t = spd(p1, predictions(ref.predictor, xs, ys), xs, ys, ks=ks, ci=ci, seed=seed)
            keep = (["spd", "spd/d"] if "spd" in metrics else []) + (["pred_diff"] if "pred_diff" in metrics else [])
            parts.append(t[t["metric"].isin(keep)])
        if "ilwd" in metrics:
            w2, _ = _weights(ref.predictor, xi, yi, ks, q, analytic)
            dist = ((w1 - w2) ** 2).sum(-1)
            parts += [_rows(dist, ks, "ilwd", ci, seed), _rows(dist / d, ks, "ilwd/d", ci, seed)]
        if "sensitivity" in metrics:
            cos = _cosine(g1, query_gradients(ref.predictor, xs, ys, ks))
            parts.append(_rows(cos, ks, "sensitivity_cos", ci, seed))
        frames += [p.assign(predictor=ref.label, family=ref.family) for p in parts]
    return pd.concat(frames, ignore_index=True)[_COLUMNS]


def best_match(table: pd.DataFrame, metric: str = "spd") -> pd.DataFrame:
    """Best reference per k (and per layer when the table has a `layer` column): the smallest
    mean distance, or the largest mean for `sensitivity_cos`. Columns: [layer,] k, metric,
    predictor, mean, ci_low, ci_high, runner_up, margin (|best − runner-up|, NaN if alone)."""
    need = {"predictor", "k", "metric", "mean", "ci_low", "ci_high"}
    if not isinstance(table, pd.DataFrame) or not need <= set(table.columns):
        raise ValueError(f"table must be a match DataFrame with columns {sorted(need)}")
    t = table[table["metric"] == metric]
    if metric == "r2" or t.empty:
        raise ValueError(
            f"metric {metric!r} not in the table (has {sorted(table['metric'].unique())}); r2 is not a match metric"
        )
    by = [c for c in ("layer", "k") if c in t.columns]
    higher = metric == "sensitivity_cos"
    rows = []
    for key, g in t.groupby(by, sort=True):
        g = g.sort_values("mean", ascending=not higher)
        best = g.iloc[0]
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row.update(metric=metric, predictor=best["predictor"], mean=best["mean"], ci_low=best["ci_low"],
                   ci_high=best["ci_high"], runner_up=g.iloc[1]["predictor"] if len(g) > 1 else None,
                   margin=abs(g.iloc[1]["mean"] - best["mean"]) if len(g) > 1 else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def analyze_run(run: Any, *, n_prompts: int = 256, seed: int = 0, **kw: Any) -> tuple[pd.DataFrame, Any]:
    """Match a run's model against every reference family on `n_prompts` fresh prompts of its
    task, at 8 evenly spaced k, with ILWD on the first 32 prompts and 2 * n_dims + 4 queries per
    prompt and k (each overridable through `kw`; step sizes by line search on the task error).
    Returns the match table and its figure (`viz.plot_matching`: SPD/d, ILWD/d and the
    sensitivity cosine vs k, one colour per reference family, the legend grouped by family)."""
    from ..training.run import Run
    from ..viz import plot_matching

    run = Run.of(run)
    batch = run.prompts(n_prompts, seed)
    model, task = run.load_model(), run.task()
    n = batch.xs.shape[1]
    kw.setdefault("ks", sorted({int(round(v)) for v in np.linspace(0, n - 1, min(n, 8))}))
    kw.setdefault("seed", seed)
    kw.setdefault("ilwd_prompts", min(32, batch.xs.shape[0]))
    kw.setdefault("n_queries", 2 * batch.xs.shape[-1] + 4)
    table = match(model, batch.xs, batch.ys, kw.pop("references", None), task, **kw)
    fig = plot_matching(table, model=kw.get("name", "model"), title=f"Predictor matching: {model.spec.name}")
    return table, fig


def palette(n: int) -> list[Any]:
    """`n` distinguishable colours: matplotlib's tab10, tab20 beyond 10, a turbo ramp beyond 20
    (matplotlib only: importing seaborn costs seconds)."""
    import matplotlib

    if n <= 20:
        cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
        return [cmap(i) for i in range(n)]
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(i / (n - 1)) for i in range(n)]
