"""Feature tracking across models (Horn & Elliott 2024): match SAE features of a base model, its
fine-tunes and their merge by the cosine similarity of decoder directions, count which features
persist, emerge or vanish, trace where a merged model's features come from, and relate features
to task quantities.

Directions are unit decoder rows `(n_features, d_in)` (`SparseAutoencoder.directions`); cosine
similarity is signed (SAE features fire only positively, so u and −u are different features).

Matching (`match_features`):
  * ``"best"``: every feature of A is paired with its most similar feature of B (B may repeat);
  * ``"assignment"``: one-to-one, maximising the total cosine (Hungarian algorithm); with
    n_A ≠ n_B only min(n_A, n_B) pairs are formed.

Flow counts at a threshold τ (`flow_counts`), reference R against model M:
  * best-match: persisting = R features whose best match in M has cos ≥ τ; vanishing = the other
    R features; emerging = M features whose best match in R has cos < τ;
  * assignment: persisting = one-to-one pairs with cos ≥ τ; vanishing = n_R − persisting;
    emerging = n_M − persisting.
`alive` masks restrict both sides to features that fire (dead features have arbitrary
directions and would otherwise count as vanishing/emerging).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = [
    "MATCH_METHODS", "cosine_matrix", "feature_flow", "flow_counts", "match_features", "merge_origins",
    "plot_feature_flow", "plot_merge_origins", "strong_correlations", "task_correlations",
]

MATCH_METHODS: tuple[str, ...] = ("assignment", "best")


def _dirs(d: Any, what: str) -> np.ndarray:
    a = d.detach().cpu().double().numpy() if isinstance(d, torch.Tensor) else np.asarray(d, dtype=float)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{what} must be a (n_features, d_in) matrix of directions, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or inf")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if (norms < 1e-12).any():
        raise ValueError(f"{what} has zero-norm direction(s) at rows {np.nonzero(norms[:, 0] < 1e-12)[0].tolist()}")
    return a / norms


def _mask(mask: Any, n: int, what: str) -> np.ndarray:
    if mask is None:
        return np.ones(n, dtype=bool)
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.dtype != bool or m.shape != (n,):
        raise ValueError(f"{what} must be a boolean mask of shape ({n},), got dtype {m.dtype} shape {m.shape}")
    if not m.any():
        raise ValueError(f"{what} marks no feature alive")
    return m


def cosine_matrix(dirs_a: Any, dirs_b: Any) -> np.ndarray:
    """Cosine similarities `(n_a, n_b)` between the rows of `dirs_a (n_a, d)` and `dirs_b (n_b, d)`."""
    a, b = _dirs(dirs_a, "dirs_a"), _dirs(dirs_b, "dirs_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"dirs_a and dirs_b live in different spaces: d_in {a.shape[1]} vs {b.shape[1]}")
    return a @ b.T


def match_features(dirs_a: Any, dirs_b: Any, *, method: str = "assignment", alive_a: Any = None, alive_b: Any = None) -> pd.DataFrame:
    """Pairs of features `feature_a, feature_b, cosine` (original indices), best first.

    `method`: ``"assignment"`` (one-to-one) or ``"best"`` (best match in B of every A feature);
    `alive_a` / `alive_b`: optional boolean masks of the features to consider.
    """
    if method not in MATCH_METHODS:
        raise ValueError(f"unknown match method {method!r}; valid: {', '.join(MATCH_METHODS)}")
    cos = cosine_matrix(dirs_a, dirs_b)
    ia = np.nonzero(_mask(alive_a, cos.shape[0], "alive_a"))[0]
    ib = np.nonzero(_mask(alive_b, cos.shape[1], "alive_b"))[0]
    sub = cos[np.ix_(ia, ib)]
    if method == "best":
        ra, rb = np.arange(len(ia)), sub.argmax(1)
    else:
        from scipy.optimize import linear_sum_assignment

        ra, rb = linear_sum_assignment(sub, maximize=True)
    df = pd.DataFrame({"feature_a": ia[ra], "feature_b": ib[rb], "cosine": sub[ra, rb]})
    return df.sort_values("cosine", ascending=False, ignore_index=True)


def _check_thresholds(thresholds: Sequence[float]) -> list[float]:
    ts = [float(t) for t in thresholds]
    if not ts or any(not -1.0 <= t <= 1.0 for t in ts):
        raise ValueError(f"thresholds must be a non-empty list of cosines in [-1, 1], got {list(thresholds)}")
    return ts


def flow_counts(
    dirs_ref: Any, dirs_other: Any, thresholds: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9), *,
    method: str = "assignment", alive_ref: Any = None, alive_other: Any = None,
) -> pd.DataFrame:
    """Persisting / vanishing / emerging feature counts of `dirs_other` relative to `dirs_ref` at
    each cosine threshold (see the module docstring). Columns: threshold, method, n_ref, n_other,
    persisting, vanishing, emerging."""
    ts = _check_thresholds(thresholds)
    if method not in MATCH_METHODS:
        raise ValueError(f"unknown match method {method!r}; valid: {', '.join(MATCH_METHODS)}")
    cos = cosine_matrix(dirs_ref, dirs_other)
    mr, mo = _mask(alive_ref, cos.shape[0], "alive_ref"), _mask(alive_other, cos.shape[1], "alive_other")
    sub = cos[np.ix_(mr, mo)]
    n_ref, n_other = sub.shape
    if method == "assignment":
        pairs = match_features(dirs_ref, dirs_other, method="assignment", alive_a=mr, alive_b=mo)["cosine"].to_numpy()
    best_ref, best_other = sub.max(1), sub.max(0)
    rows = []
    for t in ts:
        if method == "assignment":
            persisting = int((pairs >= t).sum())
            vanishing, emerging = n_ref - persisting, n_other - persisting
        else:
            persisting = int((best_ref >= t).sum())
            vanishing, emerging = n_ref - persisting, int((best_other < t).sum())
        rows.append({
            "threshold": t, "method": method, "n_ref": n_ref, "n_other": n_other,
            "persisting": persisting, "vanishing": vanishing, "emerging": emerging,
        })
    return pd.DataFrame(rows)


def feature_flow(
    directions: Mapping[str, Any], reference: str, thresholds: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9), *,
    methods: Sequence[str] = MATCH_METHODS, alive: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """`flow_counts` of every model in `directions` (name -> `(n_features, d_in)`) against
    `reference`, for every method: a tidy table with a leading `model` column."""
    if reference not in directions:
        raise ValueError(f"reference {reference!r} is not among the models {list(directions)}")
    alive = alive or {}
    unknown = sorted(set(alive) - set(directions))
    if unknown:
        raise ValueError(f"alive names unknown model(s) {unknown}; models: {list(directions)}")
    frames = []
    for name, dirs in directions.items():
        if name == reference:
            continue
        for m in methods:
            df = flow_counts(directions[reference], dirs, thresholds, method=m, alive_ref=alive.get(reference), alive_other=alive.get(name))
            frames.append(df.assign(model=name, reference=reference))
    if not frames:
        raise ValueError("directions must hold at least one model besides the reference")
    out = pd.concat(frames, ignore_index=True)
    return out[["model", "reference", *[c for c in out.columns if c not in ("model", "reference")]]]


def merge_origins(
    merged: Any, parents: Mapping[str, Any], threshold: float = 0.7, *,
    alive_merged: Any = None, alive: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Where each (alive) feature of a merged model comes from: one row per feature with its best
    cosine to every parent (`cos_<parent>`) and `origin`, the parents whose best match reaches
    `threshold` joined by "+" (e.g. ``"base+sparse"``), or ``"new"`` when none does."""
    _check_thresholds([threshold])
    if not parents:
        raise ValueError("parents is empty")
    alive = alive or {}
    dm = _dirs(merged, "merged")
    keep = np.nonzero(_mask(alive_merged, dm.shape[0], "alive_merged"))[0]
    out = pd.DataFrame({"feature": keep})
    hits = []
    for name, dirs in parents.items():
        cos = cosine_matrix(dm[keep], dirs)
        cos = cos[:, _mask(alive.get(name), cos.shape[1], f"alive[{name!r}]")]
        out[f"cos_{name}"] = cos.max(1)
        hits.append((name, cos.max(1) >= threshold))
    out["origin"] = ["+".join(n for n, h in hits if h[i]) or "new" for i in range(len(keep))]
    out["threshold"] = float(threshold)
    return out


# --------------------------------------------------------------------- task quantities
def _quantities(xs: torch.Tensor, ys: torch.Tensor, params: Mapping[str, Any], preds: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Per-token quantities `(batch, 2 * n_points)`: token i ∈ {2p, 2p+1} belongs to point p."""
    b, n = ys.shape
    rep = lambda t: t.double().repeat_interleave(2, dim=1)  # noqa: E731  (b, n) -> (b, 2n)
    q = {
        "is_y_token": torch.tensor([0.0, 1.0], dtype=torch.float64).repeat(n).expand(b, -1),
        "k": rep(torch.arange(n).expand(b, -1)),
        "y": rep(ys),
    }
    if preds is not None:
        q["residual"] = rep(ys - preds.to(ys.dtype))
    w = params.get("w") if params else None
    if w is not None:
        if not isinstance(w, torch.Tensor) or w.ndim != 2 or w.shape[0] != b:
            raise ValueError(f"params['w'] must be (batch={b}, n_dims), got {tuple(getattr(w, 'shape', ()))}")
        for j in range(w.shape[1]):
            q[f"w_{j}"] = w[:, j : j + 1].double().expand(b, 2 * n)
    return q


def task_correlations(
    features: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, *,
    params: Mapping[str, Any] | None = None, preds: torch.Tensor | None = None,
) -> pd.DataFrame:
    """Pearson correlation of every feature with task quantities, per token type.

    `features`: `(batch, 2 * n_points, d_sae)` feature activations at every token of prompts
    `xs (batch, n_points, n_dims)`, `ys (batch, n_points)`. Quantities: `is_y_token` (position
    parity), `k` (point index), `y`, `residual` = y − ŷ (when `preds (batch, n_points)` is
    given) and `w_j` (when `params["w"] (batch, n_dims)` is given); at both tokens of point p the
    value is that of point p (so y and the residual are only visible to the model at y tokens).
    Each is correlated over `tokens` = all, x or y tokens. Columns: feature, quantity, tokens,
    corr (NaN where a feature or quantity is constant), n.
    """
    if not isinstance(features, torch.Tensor) or features.ndim != 3:
        raise ValueError(f"features must be (batch, n_tokens, d_sae), got {tuple(getattr(features, 'shape', ()))}")
    if ys.ndim != 2 or xs.ndim != 3 or xs.shape[:2] != ys.shape:
        raise ValueError(f"xs (batch, n_points, n_dims) and ys (batch, n_points) do not fit: {tuple(xs.shape)}, {tuple(ys.shape)}")
    b, n = ys.shape
    if features.shape[:2] != (b, 2 * n):
        raise ValueError(f"features must be (batch={b}, n_tokens={2 * n}, d_sae), got {tuple(features.shape)}")
    if preds is not None and tuple(preds.shape) != (b, n):
        raise ValueError(f"preds must be (batch={b}, n_points={n}), got {tuple(preds.shape)}")
    q = _quantities(xs, ys, params or {}, preds)
    names = list(q)
    Q = torch.stack([q[k] for k in names], dim=-1)  # (b, 2n, n_q)
    Z = features.detach().double().cpu()
    frames = []
    for tokens, sl in (("all", slice(None)), ("x", slice(0, None, 2)), ("y", slice(1, None, 2))):
        z = Z[:, sl].reshape(-1, Z.shape[-1])
        v = Q[:, sl].reshape(-1, Q.shape[-1])
        zc, vc = z - z.mean(0), v - v.mean(0)
        cov = zc.T @ vc / z.shape[0]
        sz, sv = zc.pow(2).mean(0).sqrt(), vc.pow(2).mean(0).sqrt()
        denom = sz[:, None] * sv[None, :]
        corr = torch.where(denom > 1e-12, cov / denom.clamp_min(1e-300), torch.full_like(cov, float("nan")))
        f_idx, q_idx = np.meshgrid(np.arange(Z.shape[-1]), np.arange(len(names)), indexing="ij")
        frames.append(pd.DataFrame({
            "feature": f_idx.ravel(), "quantity": np.asarray(names)[q_idx.ravel()], "tokens": tokens,
            "corr": corr.numpy().ravel(), "n": z.shape[0],
        }))
    return pd.concat(frames, ignore_index=True)


def strong_correlations(corr: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Per quantity and token type: how many features have |corr| ≥ `threshold`, and the feature
    with the largest |corr| (`top_feature`, `top_corr`)."""
    need = {"feature", "quantity", "tokens", "corr"}
    if not need <= set(corr.columns):
        raise ValueError(f"corr must have columns {sorted(need)}, got {list(corr.columns)}")
    rows = []
    for (qname, tokens), g in corr.dropna(subset=["corr"]).groupby(["quantity", "tokens"], sort=False):
        top = g.loc[g["corr"].abs().idxmax()]
        rows.append({
            "quantity": qname, "tokens": tokens, "n_strong": int((g["corr"].abs() >= threshold).sum()),
            "top_feature": int(top["feature"]), "top_corr": float(top["corr"]),
        })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- figures
def plot_feature_flow(flow: pd.DataFrame, method: str = "assignment", ncols: int = 5) -> Any:
    """One panel per (reference, model) pair of a `feature_flow` / `flow_counts` table (with
    `model` and `reference` columns), `ncols` panels per row: persisting / emerging / vanishing
    counts against the cosine threshold."""
    from ..viz._backend import pyplot

    need = {"model", "reference", "method", "threshold", "persisting", "emerging", "vanishing"}
    if not need <= set(flow.columns):
        raise ValueError(f"flow must have columns {sorted(need)}, got {list(flow.columns)}")
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    df = flow[flow["method"] == method]
    if df.empty:
        raise ValueError(f"nothing to plot: no rows with method={method!r}")
    pairs = list(dict.fromkeys(zip(df["reference"], df["model"])))
    cols = min(ncols, len(pairs))
    rows = -(-len(pairs) // cols)
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.0 * rows), sharey=True, squeeze=False, layout="constrained")
    flat = axes.ravel()
    for ax, (ref, name) in zip(flat, pairs):
        g = df[(df["model"] == name) & (df["reference"] == ref)].sort_values("threshold")
        for col, style in (("persisting", "-o"), ("emerging", "--s"), ("vanishing", ":^")):
            ax.plot(g["threshold"], g[col], style, label=col, markersize=4)
        ax.set_title(f"{ref} → {name}", fontsize=10)
        ax.set_xlabel("cosine threshold")
        ax.grid(True, alpha=0.3)
    for ax in flat[len(pairs):]:
        ax.set_visible(False)
    for r in range(rows):
        axes[r][0].set_ylabel(f"features ({method} matching)")
    flat[0].legend(frameon=False)
    return fig


def plot_merge_origins(origins: Mapping[str, pd.DataFrame]) -> Any:
    """Stacked bars: for each (label ->) `merge_origins` table, the number of features by origin."""
    from ..viz._backend import pyplot

    if not origins:
        raise ValueError("nothing to plot: origins is empty")
    counts = pd.DataFrame({k: v["origin"].value_counts() for k, v in origins.items()}).fillna(0).astype(int)
    order = sorted(counts.index, key=lambda o: (o == "new", -o.count("+"), o))
    counts = counts.loc[order]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 * len(origins) + 3.0, 3.6), layout="constrained")
    bottom = np.zeros(counts.shape[1])
    for origin, row in counts.iterrows():
        ax.bar(list(counts.columns), row.to_numpy(), bottom=bottom, label=origin)
        bottom += row.to_numpy()
    ax.set_ylabel("features")
    ax.tick_params(axis="x", labelsize=8)
    thr = next(iter(origins.values()))["threshold"].iloc[0]
    ax.set_title(f"origin of the features: parents with a match of cos ≥ {thr:g}")
    ax.legend(frameon=False, bbox_to_anchor=(1.0, 1.0), loc="upper left", fontsize=8)
    return fig
