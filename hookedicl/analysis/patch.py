"""Activation patching on (clean, corrupted) prompt pairs built from a task.

`make_pairs(task, kind=...)` builds pairs that differ in a controlled way (both runs keep the
same query x):
  * `"new_function"`: the same xs, targets from another draw of the task's function (e.g. another
    w); every y differs;
  * `"corrupt_y"`: one demonstration's y (point `index`, default the one just before the query)
    replaced by that point's y from another prompt;
  * `"permute"`: the demonstrations before the query shuffled (never the identity order).

`patch_sweep` runs the corrupted prompts, overwriting one site with its clean activation — per
hook × layer × token position (× head for hooks with a head axis, e.g. `attn.hook_z`) — and
reads the prediction at the query point (`query`, default the last point). For each example j,
with c = corrupted, a = clean, p = patched query prediction and Δ_j = a_j − c_j, the normalised
effect is e_j = (p_j − c_j) / Δ_j: 1 = the site restores the clean prediction, 0 = no effect.
For vector targets the predictions are first projected on Δ_j's direction
(e_j = ⟨p_j − c_j, Δ_j⟩ / |Δ_j|²).

Near-zero denominators (the rule): examples with |Δ_j| < `min_gap` are dropped and counted in
`n_dropped` (`n` = examples kept); by default `min_gap` = 1e-2 × the RMS of Δ over all examples,
but at least 1e-5 × the RMS of the clean and corrupted query predictions (so that gaps at the
level of float rounding, e.g. a permutation-invariant model on permuted demonstrations, are
dropped rather than divided by). The aggregate `mean` is the ratio of means Σ_j Δ_j (p_j − c_j) / Σ_j Δ_j²,
i.e. the Δ²-weighted mean of e_j, so an example with a small gap cannot dominate; `ci_low` /
`ci_high` come from a percentile bootstrap over the kept examples (numerator and denominator
resampled together). `mean_per_example` is the unweighted mean of e_j over the kept examples;
`patch_examples` returns every e_j.

What is patched is a list of `Site`s (`hookedicl.models.sites`): hook, token positions (x_i at
2i, y_i at 2i + 1) and head; each patched run is a `"patch"` `Intervention`. In the tables,
`pos = -1` marks a site patching several tokens at once and `head = -1` a whole hook. Patched
runs are batched: several sites of one hook share a forward pass over copies of the corrupted
prompts (`max_batch` prompt copies per pass).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..evaluation.bootstrap import bootstrap_means
from ..tasks import Task, TaskBatch
from ..models.sites import PositionSpec, Site, hook_head_dim, token_positions
from .common import RESID, as_batch, hook_guard, model_device, require_model, resolve_sites
from .interventions import Intervention

__all__ = [
    "SWEEP_COLUMNS", "PromptPairs", "analyze_run", "make_pairs", "patch_examples", "patch_sweep", "patched_predictions", "plot_patching",
]

KINDS = ("new_function", "corrupt_y", "permute")
ALL = -1  # in the tables: `pos` of a site patching several tokens at once, `head` of a whole hook
SITE_COLUMNS = ["site", "hook", "layer", "pos", "token", "head"]
SWEEP_COLUMNS = [*SITE_COLUMNS, "mean", "ci_low", "ci_high", "mean_per_example", "n", "n_dropped"]


# ---------------------------------------------------------------------------------- pairs
@dataclass(frozen=True)
class PromptPairs:
    """Clean and corrupted prompts of identical shape; `query` is the point read out."""

    clean: TaskBatch
    corrupted: TaskBatch
    kind: str
    query: int


def _check_query(query: int, n_points: int) -> int:
    if not isinstance(query, (int, np.integer)) or not -n_points <= query < n_points:
        raise ValueError(f"query={query!r} out of range for n_points={n_points}")
    return int(query) % n_points


def make_pairs(
    task: Task,
    kind: str = "new_function",
    *,
    n_points: int,
    n_prompts: int = 64,
    query: int = -1,
    index: int | None = None,
    seed: int = 0,
    n_dims_active: int | None = None,
) -> PromptPairs:
    """`n_prompts` (clean, corrupted) pairs of `n_points` points from `task` (see the module
    docstring for the kinds). `index`: the corrupted point for `"corrupt_y"` (default query − 1)."""
    if not isinstance(task, Task):
        raise ValueError(f"task must be a hookedicl Task, got {type(task).__name__}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {KINDS}")
    if not isinstance(n_prompts, int) or n_prompts < 2:
        raise ValueError(f"n_prompts must be an int >= 2, got {n_prompts!r}")
    g = torch.Generator().manual_seed(seed)
    clean = task.sample(batch_size=n_prompts, n_points=n_points, generator=g, n_dims_active=n_dims_active)
    q = _check_query(query, n_points)
    b = n_prompts
    if kind == "new_function":
        other = task.sample(batch_size=b, n_points=n_points, generator=g, n_dims_active=n_dims_active)
        ys = task.evaluate(clean.xs, other.params).to(clean.ys.dtype)
        if task.noise_std > 0:
            ys = ys + task.noise_std * torch.randn(ys.shape, generator=g, dtype=ys.dtype)
        corrupted = TaskBatch(clean.xs, ys, other.params)
    elif kind == "corrupt_y":
        j = q - 1 if index is None else index
        if not isinstance(j, (int, np.integer)) or not 0 <= j < q:
            raise ValueError(f"index={index!r} must be a demonstration before the query (0..{q - 1})")
        src = (torch.arange(b) + torch.randint(1, b, (b,), generator=g)) % b  # another prompt
        ys = clean.ys.clone()
        ys[:, j] = clean.ys[src, j]
        corrupted = TaskBatch(clean.xs, ys, clean.params)
    else:
        if q < 2:
            raise ValueError(f"kind='permute' needs at least 2 demonstrations before the query (query={q})")
        perm = torch.argsort(torch.rand(b, q, generator=g), dim=1)
        ident = (perm == torch.arange(q)).all(1)
        swap = torch.arange(q)
        swap[[0, 1]] = swap[[1, 0]]
        perm[ident] = swap
        xs, ys = clean.xs.clone(), clean.ys.clone()
        xs[:, :q] = torch.gather(clean.xs[:, :q], 1, perm[..., None].expand(-1, -1, xs.shape[2]))
        yperm = perm.reshape(b, q, *([1] * (ys.ndim - 2))).expand(-1, -1, *ys.shape[2:])
        ys[:, :q] = torch.gather(clean.ys[:, :q], 1, yperm)
        corrupted = TaskBatch(xs, ys, clean.params)
    return PromptPairs(clean, corrupted, kind, q)


def _as_pairs(pairs: Any, query: int | None) -> PromptPairs:
    if isinstance(pairs, PromptPairs):
        p = pairs
    elif isinstance(pairs, (tuple, list)) and len(pairs) == 2 and all(isinstance(x, TaskBatch) for x in pairs):
        p = PromptPairs(pairs[0], pairs[1], "custom", pairs[0].xs.shape[1] - 1)
    else:
        raise ValueError(f"pairs must be PromptPairs (make_pairs) or (clean, corrupted) TaskBatches, got {type(pairs).__name__}")
    c, k = p.clean, p.corrupted
    if c.xs.shape != k.xs.shape or c.ys.shape != k.ys.shape:
        raise ValueError(
            f"clean and corrupted prompts must match: xs {tuple(c.xs.shape)} vs {tuple(k.xs.shape)}, "
            f"ys {tuple(c.ys.shape)} vs {tuple(k.ys.shape)}"
        )
    q = p.query if query is None else _check_query(query, c.xs.shape[1])
    return PromptPairs(c, k, p.kind, q)


# ------------------------------------------------------------------------------ patching
def patched_predictions(
    model: Any,
    prompts: TaskBatch,
    source: Mapping[str, torch.Tensor],
    sites: Sequence[Site],
    *,
    max_batch: int = 1024,
) -> torch.Tensor:
    """Predictions `(len(sites), batch, n_points[, y_dim])`: the prompts run once per site, with
    the site's values (its positions, and head) taken from `source[site.hook]` (activations of the
    same shape, e.g. a clean `run_with_cache` cache) — a `"patch"` `Intervention` per run, batched:
    several sites of one hook share a forward pass over copies of the prompts (`max_batch` prompt
    copies per pass)."""
    require_model(model, "patching")
    prompts = as_batch(prompts)
    xs, ys = prompts.xs, prompts.ys
    model.check_inputs(xs, ys)
    b = xs.shape[0]
    if not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
    sites = [s.resolve(model) for s in sites]
    dev, dt = model_device(model)
    xs, ys = xs.to(dev, dt), ys.to(dev, dt)
    out: list[torch.Tensor | None] = [None] * len(sites)
    by_hook: dict[str, list[int]] = {}
    for i, site in enumerate(sites):
        if site.hook not in source:
            raise ValueError(f"no source activation for hook {site.hook!r}")
        by_hook.setdefault(site.hook, []).append(i)
    m = max(1, max_batch // b)
    with hook_guard(model), torch.no_grad():
        model.eval()
        for name, idxs in by_hook.items():
            src = source[name].to(dev)
            if src.shape[0] != b:
                raise ValueError(f"source[{name!r}] has batch {src.shape[0]} but the prompts have batch {b}")
            for start in range(0, len(idxs), m):
                chunk = idxs[start:start + m]
                patches = [Intervention(sites[i], "patch", source=src) for i in chunk]

                def write(act: torch.Tensor, hook: Any, patches: list = patches) -> torch.Tensor:
                    view = act.view(len(patches), b, *act.shape[1:])
                    return torch.cat([p.apply(view[j]) for j, p in enumerate(patches)])

                rep = len(chunk)
                with model.hooks(fwd_hooks=[(name, write)]):
                    preds = model(xs.repeat(rep, 1, 1), ys.repeat(rep, *([1] * (ys.ndim - 1))))
                for j, i in enumerate(chunk):
                    out[i] = preds[j * b:(j + 1) * b]
    if not sites:
        return xs.new_zeros(0, *ys.shape)
    return torch.stack(out)  # type: ignore[arg-type]


def _patch_sites(model: Any, hook_layers: list[tuple[str, int]], shapes: dict[str, tuple[int, ...]],
                 positions: PositionSpec, one_at_a_time: bool, n_points: int, query: int, per_head: bool,
                 heads: Sequence[int] | None) -> list[Site]:
    """The sites of a sweep: every hook × position (one at a time, or the selection at once) ×
    head. Named selections stop at the query's x token (later tokens cannot reach it)."""
    qtok = 2 * query
    pos = token_positions(positions, 2 * n_points)
    if isinstance(positions, str):
        pos = [t for t in pos if t <= qtok]
        if not pos:
            raise ValueError(f"positions={positions!r} selects no token up to the query's (token {qtok})")
    groups: list[PositionSpec] = [[t] for t in pos] if one_at_a_time else [pos]
    sites: list[Site] = []
    for name, _ in hook_layers:
        hd = hook_head_dim(name)
        if hd is not None and per_head:
            n_heads = shapes[name][hd]
            hs: list[int | None] = list(range(n_heads)) if heads is None else list(heads)
        else:
            if heads is not None:
                why = f"hook {name} has no head axis" if hd is None else "per_head=False patches whole hooks"
                raise ValueError(f"heads= given but {why}")
            hs = [None]
        sites += [Site(name, g, head=h) for g in groups for h in hs]
    return sites


def _metric(preds: torch.Tensor, query: int, delta_dir: torch.Tensor | None) -> np.ndarray:
    """The query prediction as one number per example (projected on Δ's direction for vectors)."""
    q = preds[..., query] if delta_dir is None else (preds[..., query, :] * delta_dir).sum(-1)
    return q.detach().double().cpu().numpy()


def _run(model: Any, pairs: PromptPairs, hooks: Any, layers: list[int] | None, positions: PositionSpec,
         one_at_a_time: bool, per_head: bool, heads: Sequence[int] | None,
         max_batch: int) -> tuple[list[Site], np.ndarray, np.ndarray, np.ndarray]:
    require_model(model, "patching")
    c, k = pairs.clean, pairs.corrupted
    model.check_inputs(c.xs, c.ys)
    model.check_inputs(k.xs, k.ys)
    sites = resolve_sites(model, hooks, layers)
    names = list(dict.fromkeys(n for n, _ in sites))
    p = next(model.parameters())
    with hook_guard(model), torch.no_grad():
        model.eval()
        clean_preds, cache = model.run_with_cache(c.xs.to(p.device, p.dtype), c.ys.to(p.device, p.dtype), names_filter=names)
        corr_preds = model(k.xs.to(p.device, p.dtype), k.ys.to(p.device, p.dtype))
    source = {n: cache[n] for n in names}
    patches = _patch_sites(model, sites, {n: tuple(v.shape) for n, v in source.items()}, positions, one_at_a_time,
                           c.xs.shape[1], pairs.query, per_head, heads)
    patched = patched_predictions(model, k, source, patches, max_batch=max_batch)
    direction = None
    if clean_preds.ndim == 3:  # vector targets: project on the unit clean − corrupted direction
        d = clean_preds[:, pairs.query] - corr_preds[:, pairs.query]
        direction = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return (patches, _metric(clean_preds, pairs.query, direction), _metric(corr_preds, pairs.query, direction),
            _metric(patched, pairs.query, direction))


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(a**2))) if a.size else 0.0


def _min_gap(clean: np.ndarray, corr: np.ndarray, min_gap: float | None) -> float:
    """The default rule: 1% of the RMS gap, but at least 1e-5 × the RMS prediction (float noise)."""
    if min_gap is None:
        return max(1e-2 * _rms(clean - corr), 1e-5 * _rms(np.concatenate([clean, corr])), 1e-12)
    if not np.isfinite(min_gap) or min_gap < 0:
        raise ValueError(f"min_gap must be a finite number >= 0, got {min_gap!r}")
    return float(min_gap)


def patch_examples(
    model: Any,
    pairs: PromptPairs | tuple,
    *,
    hooks: Any = RESID,
    layers: list[int] | None = None,
    positions: PositionSpec = "all",
    one_at_a_time: bool = True,
    per_head: bool = True,
    heads: Sequence[int] | None = None,
    query: int | None = None,
    min_gap: float | None = None,
    max_batch: int = 1024,
) -> pd.DataFrame:
    """Per-example patching results: one row per (site, example) — columns `SITE_COLUMNS`, then
    `example` and the query
    metric `clean`, `corrupted`, `patched`, `gap` = clean − corrupted, `effect` (NaN for an example
    dropped by the `min_gap` rule) and `dropped`. Arguments as in `patch_sweep`."""
    pairs = _as_pairs(pairs, query)
    patches, clean, corr, patched = _run(model, pairs, hooks, layers, positions, one_at_a_time, per_head, heads, max_batch)
    gap = clean - corr
    keep = np.abs(gap) >= _min_gap(clean, corr, min_gap)
    with np.errstate(divide="ignore", invalid="ignore"):
        effect = np.where(keep, (patched - corr) / np.where(keep, gap, 1.0), np.nan)
    P, b = patched.shape
    meta = pd.DataFrame([_site_row(p) for p in patches])
    df = meta.loc[meta.index.repeat(b)].reset_index(drop=True)
    df["example"] = np.tile(np.arange(b), P)
    df["clean"] = np.tile(clean, P)
    df["corrupted"] = np.tile(corr, P)
    df["patched"] = patched.reshape(-1)
    df["gap"] = np.tile(gap, P)
    df["effect"] = effect.reshape(-1)
    df["dropped"] = np.tile(~keep, P)
    return df


def patch_sweep(
    model: Any,
    pairs: PromptPairs | tuple,
    *,
    hooks: Any = RESID,
    layers: list[int] | None = None,
    positions: PositionSpec = "all",
    one_at_a_time: bool = True,
    per_head: bool = True,
    heads: Sequence[int] | None = None,
    query: int | None = None,
    min_gap: float | None = None,
    ci: float = 0.95,
    n_bootstrap: int = 1000,
    seed: int = 0,
    max_batch: int = 1024,
) -> pd.DataFrame:
    """Activation patching sweep: one row per (hook, layer, pos, head).

    `pairs`: `PromptPairs` (from `make_pairs`) or `(clean, corrupted)` as TaskBatches or (xs, ys).
    `hooks`: `"resid"` (residual layers `layers`), full or block-relative hook names (see
    `common.resolve_sites`), e.g. `["resid", "attn.hook_z", "hook_mlp_out"]`. `positions`:
    the tokens to patch (the one selector of `hookedicl.models.sites`: `"all"`, `"x"`, `"y"`,
    `"last"` or token indices; a named selection stops at the query's x token), each on its own
    (`one_at_a_time=True`, default) or all together (`pos` = -1 in the table). `per_head`: one row
    per head for hooks with a head axis (`heads` restricts them). `query`: point read out
    (default: `pairs.query`, the last point). Columns: `SWEEP_COLUMNS` = site, hook, layer, pos,
    token, head (-1: the whole hook), mean, ci_low, ci_high, mean_per_example, n, n_dropped (see
    the module docstring for the aggregation rule).
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    if not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive int, got {n_bootstrap!r}")
    pairs = _as_pairs(pairs, query)
    patches, clean, corr, patched = _run(model, pairs, hooks, layers, positions, one_at_a_time, per_head, heads, max_batch)
    gap = clean - corr
    keep = np.abs(gap) >= _min_gap(clean, corr, min_gap)
    n_kept = int(keep.sum())
    rows = []
    if n_kept:
        g = gap[keep]
        num = (patched[:, keep] - corr[keep]) * g                   # (P, n_kept)
        den = np.broadcast_to(g**2, num.shape)
        boot = bootstrap_means(np.stack([num.T, den.T], axis=-1), n_bootstrap, seed)  # (B, P, 2)
        ratio = boot[..., 0] / boot[..., 1]
        lo, hi = np.quantile(ratio, [(1 - ci) / 2, (1 + ci) / 2], axis=0)
        mean = num.sum(1) / den.sum(1)
        per_ex = ((patched[:, keep] - corr[keep]) / g).mean(1)
    else:
        lo = hi = mean = per_ex = np.full(len(patches), np.nan)
    for i, site in enumerate(patches):
        rows.append({
            **_site_row(site), "mean": mean[i], "ci_low": lo[i], "ci_high": hi[i], "mean_per_example": per_ex[i],
            "n": n_kept, "n_dropped": len(gap) - n_kept,
        })
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def _site_row(site: Site) -> dict[str, Any]:
    """The table columns naming a patched site (`SITE_COLUMNS`)."""
    pos = site.positions
    one = pos[0] if isinstance(pos, list) and len(pos) == 1 else ALL
    return {
        "site": site.label, "hook": site.hook, "layer": site.layer, "pos": one,
        "token": "all" if one == ALL else ("x" if one % 2 == 0 else "y"),
        "head": ALL if site.head is None else site.head,
    }


# ----------------------------------------------------------------------------- run + figure
def plot_patching(df: pd.DataFrame) -> Any:
    """Heatmap of the mean normalised effect: one panel per (hook family, head), layer × token
    (the residual hooks form one family, indexed by residual layer)."""
    from ..viz._backend import pyplot

    if df.empty:
        raise ValueError("nothing to plot: the patching table has no rows")
    plt = pyplot()
    fam = df["hook"].str.replace(r"^blocks\.\d+\.", "", regex=True)
    fam = fam.where(~fam.isin(["hook_resid_pre", "hook_resid_post"]), "residual")  # one panel per stream
    groups = list(dict.fromkeys(zip(fam, df["head"])))
    fig, axes = plt.subplots(1, len(groups), figsize=(max(4.0, 0.35 * df["pos"].nunique() + 2) * len(groups), 3.6), squeeze=False)
    for ax, (f, h) in zip(axes[0], groups):
        d = df[(fam == f) & (df["head"] == h)].pivot_table(index="layer", columns="pos", values="mean")
        im = ax.imshow(d.values, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, origin="lower")
        ax.set_yticks(range(len(d.index)))
        ax.set_yticklabels(d.index)
        ax.set_xticks(range(len(d.columns)))
        ax.set_xticklabels(["all" if p == ALL else (f"x{p // 2}" if p % 2 == 0 else f"y{p // 2}") for p in d.columns],
                           rotation=90, fontsize=7)
        ax.set_xlabel("patched token")
        ax.set_ylabel("layer")
        ax.set_title(f + ("" if h == ALL else f" head {h}"))
        fig.colorbar(im, ax=ax, label="normalised effect")
    fig.tight_layout()
    return fig


def analyze_run(run: Any, *, n_prompts: int = 256, seed: int = 0, **kw: Any) -> tuple[pd.DataFrame, Any]:
    """Patch every residual layer at every token up to the last query of the run's final model,
    on `n_prompts` pairs of kind `kind` (default `"new_function"`: same xs, another function) at
    the run's prompt length. `kw`: `kind`, `index` (for make_pairs) and `patch_sweep` arguments.
    Returns the table and a layer × token heatmap of the normalised effect."""
    from ..training.run import Run

    run = Run.of(run)
    model = run.load_model()
    cfg = run.config
    active = cfg.curriculum.final[0] if cfg.curriculum is not None else None
    kind = kw.pop("kind", "new_function")
    index = kw.pop("index", None)
    pairs = make_pairs(run.task(), kind, n_points=cfg.task.n_points, n_prompts=n_prompts, index=index, seed=seed,
                       n_dims_active=active)
    df = patch_sweep(model, pairs, seed=seed, **kw)
    return df, plot_patching(df)
