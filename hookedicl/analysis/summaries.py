"""Per-layer summaries of the token mixers: where do x-token queries look?

* `attention_mass`: for every attention block and head, the share of attention from the x-token
  queries (where predictions are made) to x tokens, to y tokens, and to the query itself. Shares
  are of absolute pattern weight, |p| / Σ|p|, which for softmax attention is the attention mass
  itself and for linear (un-normalised) attention the fraction of absolute weight. The first x
  token (which can only see itself) is left out.
* `dt_stats`: Mamba's step size Δ (`hook_ssm_dt`) per Mamba slot, at x and y tokens separately:
  the mean over positions and channels, and the standard deviation over positions (per channel,
  averaged over channels).
* `ssm_attention` / `ssm_effective_attention`: the hidden attention of a Mamba slot (Ali et al.
  2024, "The Hidden Attention of Mamba"). With h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t u_t) B_t and
  y_t = h_t C_t + D u_t (see `models/scan.py`), unrolling gives, for every channel c,

      y_t[c] − D[c] u_t[c] = Σ_{s ≤ t} α_c[t, s] u_s[c]
      α_c[t, s] = Σ_n C_t[n] · exp(Σ_{r=s+1..t} Δ_r[c] A[c, n]) · Δ_s[c] B_s[n]

  i.e. α = C_t · (Π_{r=s+1..t} Ā_r) B̄_s with Ā_r = exp(Δ_r A), B̄_s = Δ_s B_s, the u-weighting
  of the slot's input u = `hook_x`. One implementation computes it:
  `MambaMixer.compute_effective_attention` (TransformerLens's `SSMMixerProtocol`, so
  `ActivationCache.compute_ssm_effective_attention(layer)` works for Mamba mixers in the `mixer`
  slot), over `hookedicl.models.scan.effective_attention` (raw tensors; re-exported here).
  `ssm_effective_attention(cache, layer, slot)` gives the same contract for any slot, including
  a Mamba in the ffn slot, which TransformerLens does not look in. `ssm_attention` runs the
  forward and returns α (the `include_dt_scaling=True` form) per channel, float64;
  `reduce="mean"` averages α over the chosen channels, `reduce="abs_mean"` averages |α|.
* `ssm_attention_mass`: the x / y / self shares of the channel-averaged |α| from x-token
  queries, the SSM analogue of `attention_mass`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..models.scan import effective_attention  # noqa: F401  (re-exported: the raw-tensor form)
from .common import check_block, check_prompts, hook_guard, nan_mean_ci, require_model

_TARGETS = ("x", "y", "self")


def attention_blocks(model: Any) -> list[int]:
    """Indices of the blocks whose mixer is attention."""
    return [i for i, b in enumerate(model.blocks) if b.mixer_name == "attn"]


def mamba_slots(model: Any) -> list[tuple[int, str]]:
    """(block, slot) of every Mamba mixer; slot is "mixer" or "ffn"."""
    from ..models.mamba import MambaMixer

    return [
        (i, s) for i, b in enumerate(model.blocks) for s in ("mixer", "ffn")
        if isinstance(getattr(b, s, None), MambaMixer)
    ]


def _capture(model: Any, xs: torch.Tensor, ys: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    store: dict[str, torch.Tensor] = {}

    def keep(t: torch.Tensor, hook: Any) -> None:
        store[hook.name] = t.detach()

    with torch.no_grad(), hook_guard(model), model.hooks(fwd_hooks=[(n, keep) for n in names]):
        model(xs, ys)
    return store


def _start(model: Any, xs: torch.Tensor, ys: torch.Tensor, what: str) -> None:
    require_model(model, what)
    check_prompts(xs, ys, model.spec.n_dims)
    if xs.shape[1] < 2:
        raise ValueError(f"{what} needs prompts of at least 2 points (the first x token only sees itself)")


def _shares(a: torch.Tensor) -> dict[str, torch.Tensor]:
    """x / y / self shares of |a| `(..., T, T)` over the x-token query rows 2, 4, ...: each
    `(..., n_queries)`; NaN where a row has no weight."""
    rows = a[..., 2::2, :].abs()
    total = rows.sum(-1)
    t = torch.arange(2, a.shape[-1], 2)
    self_w = rows[..., torch.arange(len(t)), t]
    ok = total > 0
    safe = torch.where(ok, total, torch.ones_like(total))
    nan = torch.full_like(total, np.nan)
    return {
        "x": torch.where(ok, rows[..., 0::2].sum(-1) / safe, nan),
        "y": torch.where(ok, rows[..., 1::2].sum(-1) / safe, nan),
        "self": torch.where(ok, self_w / safe, nan),
    }


def _frame(values: torch.Tensor, ci: float, seed: int, **cols: Any) -> pd.DataFrame:
    m, lo, hi = nan_mean_ci(values[:, None], ci, seed=seed)
    return pd.DataFrame({**cols, "mean": m, "ci_low": lo, "ci_high": hi})


def _attention_rows(cache: dict[str, torch.Tensor], blocks: list[int], ci: float, seed: int) -> pd.DataFrame:
    frames = [pd.DataFrame(columns=["block", "hook", "head", "target", "mean", "ci_low", "ci_high"])]
    for l in blocks:
        name = f"blocks.{l}.attn.hook_pattern"
        shares = _shares(cache[name].double())  # each (b, heads, n-1)
        for target in _TARGETS:
            per_prompt = shares[target].nanmean(-1)  # (b, heads)
            for h in range(per_prompt.shape[1]):
                frames.append(_frame(per_prompt[:, h], ci, seed, block=[l], hook=name, head=h, target=target))
    return pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)


def _check_blocks(model: Any, blocks: Sequence[int] | None) -> list[int]:
    blocks = attention_blocks(model) if blocks is None else list(blocks)
    for l in blocks:
        check_block(model, l, "block")
        if model.blocks[l].mixer_name != "attn":
            raise ValueError(f"block {l} has no attention mixer; attention blocks: {attention_blocks(model)}")
    return blocks


def attention_mass(
    model: Any, xs: torch.Tensor, ys: torch.Tensor, blocks: Sequence[int] | None = None, *, ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Attention shares from x-token queries, per block x head x target ∈ {x, y, self}.

    Per prompt the share is averaged over the x-token queries 1..n_points-1; mean and CI over
    prompts. Columns: block, hook, head, target, mean, ci_low, ci_high. A model without attention
    gives an empty table with these columns.
    """
    _start(model, xs, ys, "attention_mass")
    blocks = _check_blocks(model, blocks)
    names = [f"blocks.{l}.attn.hook_pattern" for l in blocks]
    return _attention_rows(_capture(model, xs, ys, names) if names else {}, blocks, ci, seed)


def _check_slots(model: Any, slots: Sequence[tuple[int, str]] | None) -> list[tuple[int, str]]:
    valid = mamba_slots(model)
    if slots is None:
        return valid
    slots = [tuple(s) for s in slots]
    for s in slots:
        if len(s) != 2:
            raise ValueError(f"a Mamba slot is (block, 'mixer' | 'ffn'), got {s!r}")
        check_block(model, s[0], "block")
        if s not in valid:
            raise ValueError(f"{s!r} is not a Mamba slot of this model; Mamba slots: {valid}")
    return slots  # type: ignore[return-value]


def _dt_rows(cache: dict[str, torch.Tensor], slots: list[tuple[int, str]], ci: float, seed: int) -> pd.DataFrame:
    frames = [pd.DataFrame(columns=["block", "slot", "hook", "token", "stat", "mean", "ci_low", "ci_high"])]
    for l, s in slots:
        name = f"blocks.{l}.{s}.hook_ssm_dt"
        dt = cache[name].double()
        for token, sel in (("x", dt[:, 0::2]), ("y", dt[:, 1::2])):
            for stat, v in (("dt_mean", sel.mean((1, 2))), ("dt_std", sel.std(1).mean(-1))):
                frames.append(_frame(v, ci, seed, block=[l], slot=s, hook=name, token=token, stat=stat))
    return pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)


def dt_stats(
    model: Any, xs: torch.Tensor, ys: torch.Tensor, slots: Sequence[tuple[int, str]] | None = None, *,
    ci: float = 0.95, seed: int = 0,
) -> pd.DataFrame:
    """Δ statistics per Mamba slot x token type ∈ {x, y} x stat ∈ {dt_mean, dt_std} (module
    docstring). Columns: block, slot, hook, token, stat, mean, ci_low, ci_high. A model without
    Mamba gives an empty table."""
    _start(model, xs, ys, "dt_stats")
    slots = _check_slots(model, slots)
    names = [f"blocks.{l}.{s}.hook_ssm_dt" for l, s in slots]
    return _dt_rows(_capture(model, xs, ys, names) if names else {}, slots, ci, seed)


def _mamba_hooks(l: int, s: str) -> list[str]:
    return [f"blocks.{l}.{s}.{h}" for h in ("hook_ssm_dt", "hook_B", "hook_C")]


def _alpha(
    model: Any, cache: dict[str, torch.Tensor], l: int, s: str, channels: Sequence[int] | None, reduce: str | None,
) -> torch.Tensor:
    mixer = getattr(model.blocks[l], s)
    return mixer.compute_effective_attention(cache, l, include_dt_scaling=True, channels=channels, reduce=reduce)


def ssm_effective_attention(
    cache: Mapping[str, torch.Tensor] | Any, layer: int, slot: str | None = None, *, model: Any = None,
    include_dt_scaling: bool = False, per_state_coord: bool = False,
) -> torch.Tensor:
    """`cache.compute_ssm_effective_attention(layer)` for the Mamba in any slot of block `layer`.

    TransformerLens looks for an SSM only in a block's `mixer` slot; this takes the slot
    ("mixer" or "ffn"; may be omitted when the block has one Mamba slot), so it also serves a
    Mamba in the ffn slot (MambaFormer, `llama_mamba_ffn`, the standard hybrid). Same contract
    and result as `MambaMixer.compute_effective_attention`: `[batch, d_inner, query_pos,
    key_pos]` float64, or `[batch, d_inner, d_state, query_pos, key_pos]` with
    `per_state_coord=True`. `cache` is a dict (then pass `model`) or a TransformerLens
    `ActivationCache` (its `.model` is used unless `model` is given) holding the slot's
    `hook_ssm_dt`, `hook_B` and `hook_C`.
    """
    model = getattr(cache, "model", None) if model is None else model
    if model is None:
        raise ValueError("ssm_effective_attention needs model= when the cache is a plain dict")
    require_model(model, "ssm_effective_attention")
    slot = _one_slot(model, layer, slot)
    return getattr(model.blocks[layer], slot).compute_effective_attention(
        cache, layer, include_dt_scaling=include_dt_scaling, per_state_coord=per_state_coord
    )


def _one_slot(model: Any, block: int, slot: str | None) -> str:
    """The Mamba slot of `block` (checked); `slot` may be None when there is exactly one."""
    check_block(model, block, "block")
    mine = [s for (l, s) in mamba_slots(model) if l == block]
    if not mine:
        raise ValueError(f"block {block} has no Mamba slot; Mamba slots: {mamba_slots(model)}")
    if slot is None:
        if len(mine) > 1:
            raise ValueError(f"block {block} has Mamba slots {mine}; pass slot=")
        slot = mine[0]
    _check_slots(model, [(block, slot)])
    return slot


def ssm_attention(
    model: Any, xs: torch.Tensor, ys: torch.Tensor, block: int, slot: str | None = None, *,
    channels: Sequence[int] | None = None, reduce: str | None = None,
) -> torch.Tensor:
    """Hidden attention α of the Mamba `slot` of `block` on these prompts, float64: `(batch,
    n_channels, L, L)`, or `(batch, L, L)` with `reduce` (see
    `hookedicl.models.scan.effective_attention`); `slot` may be omitted when the block has one
    Mamba slot.
    `y_t − D u_t = Σ_s α[:, c, t, s] u_s[c]` with u = `blocks.{block}.{slot}.hook_x`."""
    _start(model, xs, ys, "ssm_attention")
    slot = _one_slot(model, block, slot)
    if reduce not in (None, "mean", "abs_mean"):
        raise ValueError(f"reduce must be None, 'mean' or 'abs_mean', got {reduce!r}")
    cache = _capture(model, xs, ys, _mamba_hooks(block, slot))
    return _alpha(model, cache, block, slot, channels, reduce)


def _ssm_rows(
    model: Any, cache: dict[str, torch.Tensor], slots: list[tuple[int, str]], channels: Sequence[int] | None,
    ci: float, seed: int,
) -> pd.DataFrame:
    frames = [pd.DataFrame(columns=["block", "slot", "target", "mean", "ci_low", "ci_high"])]
    for l, s in slots:
        shares = _shares(_alpha(model, cache, l, s, channels, "abs_mean"))
        for target in _TARGETS:
            frames.append(_frame(shares[target].nanmean(-1), ci, seed, block=[l], slot=s, target=target))
    return pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)


def ssm_attention_mass(
    model: Any, xs: torch.Tensor, ys: torch.Tensor, slots: Sequence[tuple[int, str]] | None = None, *,
    channels: Sequence[int] | None = None, ci: float = 0.95, seed: int = 0,
) -> pd.DataFrame:
    """x / y / self shares of the hidden attention (channel mean of |α|) from x-token queries,
    per Mamba slot. Columns: block, slot, target, mean, ci_low, ci_high."""
    _start(model, xs, ys, "ssm_attention_mass")
    slots = _check_slots(model, slots)
    names = [h for l, s in slots for h in _mamba_hooks(l, s)]
    return _ssm_rows(model, _capture(model, xs, ys, names) if names else {}, slots, channels, ci, seed)


def summarize(
    model: Any, xs: torch.Tensor, ys: torch.Tensor, *, channels: Sequence[int] | None = None, ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """All summaries from one forward pass, in one tidy table with a `kind` column ∈
    {attention_mass, ssm_attention_mass, dt}; columns a kind does not use are NaN."""
    _start(model, xs, ys, "summarize")
    blocks, slots = _check_blocks(model, None), _check_slots(model, None)
    names = [f"blocks.{l}.attn.hook_pattern" for l in blocks] + [h for l, s in slots for h in _mamba_hooks(l, s)]
    cache = _capture(model, xs, ys, names)
    parts = [
        _attention_rows(cache, blocks, ci, seed).assign(kind="attention_mass", slot="mixer"),
        _ssm_rows(model, cache, slots, channels, ci, seed).assign(kind="ssm_attention_mass"),
        _dt_rows(cache, slots, ci, seed).assign(kind="dt"),
    ]
    cols = ["kind", "block", "slot", "hook", "head", "target", "token", "stat", "mean", "ci_low", "ci_high"]
    out = pd.concat([p for p in parts if len(p)], ignore_index=True)
    return out.reindex(columns=cols)


def analyze_run(run: Any, *, n_prompts: int = 256, seed: int = 0, **kw: Any) -> tuple[pd.DataFrame, Any]:
    """`summarize` for a run's model on `n_prompts` fresh prompts of its task; the SSM hidden
    attention uses at most 32 evenly spaced channels per Mamba slot unless `channels` is given.
    Figure: share of attention on y tokens per block x head, hidden-attention shares per Mamba
    slot, and Δ at x vs y tokens (panels for what the model has)."""
    from ..training.run import Run
    from ..viz._backend import pyplot

    run = Run.of(run)
    batch = run.prompts(n_prompts, seed)
    model = run.load_model()
    slots = mamba_slots(model)
    if slots and "channels" not in kw:
        d_inner = min(getattr(model.blocks[l], s).d_inner for l, s in slots)
        kw["channels"] = sorted({int(c) for c in np.linspace(0, d_inner - 1, min(d_inner, 32)).round()})
    kw.setdefault("seed", seed)
    table = summarize(model, batch.xs, batch.ys, **kw)
    plt = pyplot()
    kinds = [k for k in ("attention_mass", "ssm_attention_mass", "dt") if (table["kind"] == k).any()]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        d = table[table["kind"] == kind]
        if kind == "attention_mass":
            y_rows = d[d["target"] == "y"].astype({"block": int, "head": int})
            grid = y_rows.pivot(index="block", columns="head", values="mean")
            im = ax.imshow(grid.to_numpy(float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_xticks(range(grid.shape[1]), [str(h) for h in grid.columns])
            ax.set_yticks(range(grid.shape[0]), [str(b) for b in grid.index])
            ax.set_xlabel("head")
            ax.set_ylabel("block")
            ax.set_title("attention share on y tokens (x-token queries)")
            fig.colorbar(im, ax=ax)
        else:
            sub = d[d["target"] == "y"] if kind == "ssm_attention_mass" else d[d["stat"] == "dt_mean"]
            groups = list(sub.groupby("token", sort=True)) if kind == "dt" else [("y", sub)]
            width = 0.8 / len(groups)
            for j, (lab, g) in enumerate(groups):
                pos = np.arange(len(g)) + j * width
                err = [(g["mean"] - g["ci_low"]).clip(lower=0), (g["ci_high"] - g["mean"]).clip(lower=0)]
                ax.bar(pos, g["mean"], width, yerr=err, label=f"{lab} tokens")
            slots_shown = sub.drop_duplicates(["block", "slot"])
            labels = [f"{b}.{s}" for b, s in zip(slots_shown["block"], slots_shown["slot"])]
            ax.set_xticks(np.arange(len(labels)) + width * (len(groups) - 1) / 2, labels)
            ax.set_xlabel("block.slot")
            if kind == "dt":
                ax.set_ylabel("mean Δ")
                ax.set_title("Mamba step size Δ at x vs y tokens")
                ax.legend()
            else:
                ax.set_ylim(0, 1)
                ax.set_ylabel("share of mean |α| on y tokens")
                ax.set_title("SSM hidden attention share on y tokens")
    fig.suptitle(f"Mixer summaries: {model.spec.name}")
    fig.tight_layout()
    return table, fig
