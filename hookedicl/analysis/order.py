"""Order sensitivity of in-context predictions (Shen et al. 2024).

An algorithm that ICL is equivalent to must share its sensitivity to the order of the
demonstrations. Least squares and full-batch GD are order-invariant, online SGD is not. For each
query position k we draw `n_orders` orderings of the first k points of every prompt (order 0 is
the original one, the others uniformly at random, independently, so for small k some may repeat;
the query x_k stays in place), evaluate every predictor on the k + 1 point
prompt and read its prediction for x_k:

* `spread`: standard deviation over orderings of the query prediction (per prompt, then mean and
  CI over prompts), for the model and every reference;
* `disagreement`: E_orders (ŷ_model(π) − ŷ_ref(π))², the model vs a reference run on the same
  ordering; the row with predictor "<name> (other order)" is the model vs itself under another
  ordering, E_i (ŷ_model(π_i) − ŷ_model(π_{i+1 mod n_orders}))², the floor a reference would
  have to reach to be as close to the model as the model is to itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from .common import check_prompts, is_model, mean_ci
from .match import _check_ks, _check_pair, palette, predictions, resolve_references

_COLUMNS = ["predictor", "family", "k", "metric", "mean", "ci_low", "ci_high"]


def permuted_prompts(
    xs: torch.Tensor, ys: torch.Tensor, k: int, n_orders: int, generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts `(batch * n_orders, k + 1, ...)`: row `i * n_orders + j` holds prompt i with its first
    k points in the j-th random order (j = 0: the original order) followed by its query x_k."""
    b, _, d = xs.shape
    perm = torch.rand(b, n_orders, k, generator=generator).argsort(-1)
    perm[:, 0] = torch.arange(k)
    ctx_x = torch.gather(xs[:, None, :k].expand(b, n_orders, k, d), 2, perm[..., None].expand(b, n_orders, k, d))
    ctx_y = torch.gather(ys[:, None, :k].expand(b, n_orders, k), 2, perm)
    px = torch.cat([ctx_x, xs[:, None, k : k + 1].expand(b, n_orders, 1, d)], 2)
    py = torch.cat([ctx_y, ys[:, None, k : k + 1].expand(b, n_orders, 1)], 2)
    return px.reshape(b * n_orders, k + 1, d), py.reshape(b * n_orders, k + 1)


def order_sensitivity(
    model: Any,
    xs: torch.Tensor,
    ys: torch.Tensor,
    references: Any = ("least_squares", "gd", "sgd"),
    *,
    n_orders: int = 16,
    ks: Sequence[int] | None = None,
    name: str = "model",
    lr_search: str | None = "task",
    ci: float = 0.95,
    seed: int = 0,
    **reference_kw: Any,
) -> pd.DataFrame:
    """Order sensitivity of a model (or any predictor) and of reference predictors.

    Args:
        model: `HookedICLModel`, baseline or callable `f(xs, ys) -> (batch, n_points)`.
        xs, ys: prompts `(batch, n_points, n_dims)`, `(batch, n_points)`.
        references: as in `match.resolve_references` (default least squares, full-batch GD with
            steps 1 and 2, online SGD; step sizes by line search on the task error).
        n_orders: orderings per prompt and k (>= 2; order 0 is the original).
        ks: query positions (default 2..n_points-1: with fewer than 2 context points there is
            only one order).

    Returns:
        tidy DataFrame `predictor, family, k, metric, mean, ci_low, ci_high` (module docstring).
    """
    _check_pair(model, xs, ys)
    if isinstance(n_orders, bool) or not isinstance(n_orders, int) or n_orders < 2:
        raise ValueError(f"n_orders must be an int >= 2, got {n_orders!r}")
    n = xs.shape[1]
    if n < 3:
        raise ValueError(f"order sensitivity needs prompts of at least 3 points, got n_points={n}")
    ks = _check_ks(list(range(2, n)) if ks is None else ks, n)
    target = predictions(model, xs, ys) if lr_search == "model" else None
    refs = resolve_references(references, xs, ys, lr_search=lr_search, target=target, **reference_kw)
    if {name, f"{name} (other order)"} & {r.label for r in refs}:
        raise ValueError(f"name={name!r} collides with a reference label; pass another name=")
    gen = torch.Generator().manual_seed(seed)
    b = xs.shape[0]
    preds: dict[str, list[torch.Tensor]] = {name: []}
    preds.update({r.label: [] for r in refs})
    for k in ks:
        px, py = permuted_prompts(xs, ys, k, n_orders, gen)
        preds[name].append(predictions(model, px, py)[:, k].reshape(b, n_orders))
        for r in refs:
            preds[r.label].append(predictions(r.predictor, px, py)[:, k].reshape(b, n_orders))
    stacked = {lab: torch.stack(v, 1) for lab, v in preds.items()}  # (b, K, n_orders)
    own = stacked[name]
    family = {r.label: r.family for r in refs}
    own_family = "model" if is_model(model) else (getattr(model, "name", "") or "custom")
    family[name] = family[f"{name} (other order)"] = own_family
    values: list[tuple[str, str, torch.Tensor]] = []
    for lab, p in stacked.items():
        values.append((lab, "spread", p.std(-1)))
    for r in refs:
        values.append((r.label, "disagreement", ((own - stacked[r.label]) ** 2).mean(-1)))
    values.append((f"{name} (other order)", "disagreement", ((own - own.roll(1, dims=-1)) ** 2).mean(-1)))
    frames = []
    for lab, metric, v in values:
        m, lo, hi = mean_ci(v, ci, seed=seed)
        frames.append(pd.DataFrame({"predictor": lab, "family": family[lab], "k": ks, "metric": metric,
                                    "mean": m, "ci_low": lo, "ci_high": hi}))
    return pd.concat(frames, ignore_index=True)[_COLUMNS]


def analyze_run(run: Any, *, n_prompts: int = 256, seed: int = 0, **kw: Any) -> tuple[pd.DataFrame, Any]:
    """Order sensitivity of a run's model on `n_prompts` fresh prompts of its task, at up to 8
    evenly spaced query positions (unless `ks` is given). Returns the table and a figure: spread
    vs k (left) and disagreement with the model vs k (right), one line per predictor."""
    from ..training.run import Run
    from ..viz._backend import pyplot

    run = Run.of(run)
    batch = run.prompts(n_prompts, seed)
    model = run.load_model()
    n = batch.xs.shape[1]
    check_prompts(batch.xs, batch.ys)
    if n >= 3:
        kw.setdefault("ks", sorted({int(round(v)) for v in np.linspace(2, n - 1, min(n - 2, 8))}))
    kw.setdefault("seed", seed)
    table = order_sensitivity(model, batch.xs, batch.ys, kw.pop("references", ("least_squares", "gd", "sgd")), **kw)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    labels = list(table["predictor"].unique())
    colors = dict(zip(labels, palette(len(labels))))
    for ax, metric in zip(axes, ("spread", "disagreement")):
        for lab, g in table[table["metric"] == metric].groupby("predictor", sort=False):
            ax.plot(g["k"], g["mean"], marker="o", ms=3, label=lab, color=colors[lab])
            ax.fill_between(g["k"], g["ci_low"], g["ci_high"], alpha=0.15, color=colors[lab])
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_xlabel("context points permuted k")
        ax.legend(fontsize="x-small")
    axes[0].set_ylabel("std of the query prediction over orders")
    axes[0].set_title("spread over demonstration orders")
    axes[1].set_ylabel("mean squared difference to the model")
    axes[1].set_title("disagreement with the model (same order)")
    fig.suptitle(f"Order sensitivity: {model.spec.name}")
    fig.tight_layout()
    return table, fig
