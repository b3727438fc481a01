"""Error-curve figure: normalised squared error vs number of in-context examples."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from ._backend import pyplot

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_REQUIRED = ("k", "mean", "ci_low", "ci_high")


def _as_frame(data: Any) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        df = data
    elif callable(getattr(data, "curves", None)):
        df = data.curves()
    else:
        raise ValueError(
            f"data must be a tidy error-curve DataFrame or an EvalResult; got {type(data).__name__}"
        )
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"data is missing column(s) {missing}; has {list(df.columns)}")
    if df.empty:
        raise ValueError("data has no rows")
    return df


def _colors(palette: str | list | None, n: int) -> list:
    """``n`` colours: the active colour cycle (what seaborn's default palette also returns, and
    what ``seaborn.set_theme`` configures), or the named/listed seaborn ``palette``."""
    if palette is None:
        import matplotlib

        cycle = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color") or ["C0"]
        return [cycle[i % len(cycle)] for i in range(n)]
    import seaborn as sns

    return list(sns.color_palette(palette, n_colors=n))


def plot_error_curves(
    data: pd.DataFrame | Any,
    ax: Axes | None = None,
    title: str | None = None,
    *,
    ylabel: str = "normalized squared error",
    palette: str | list | None = None,
    focus: str | None = None,
    headroom: float = 1.3,
) -> Figure:
    """Line plot of error vs number of in-context examples, one line and CI band per predictor.

    Args:
        data: tidy DataFrame from :func:`hookedicl.evaluation.error_curve` /
            :meth:`EvalResult.curves` (columns ``k, mean, ci_low, ci_high`` and optionally
            ``predictor``), or an object with ``.curves()`` such as an ``EvalResult`` (normalised).
        ax: axes to draw on; a new figure is created when ``None``.
        title: axes title.
        ylabel: y-axis label (the default assumes normalised errors).
        palette: seaborn palette name or list of colours.
        focus: a predictor (e.g. ``"model"``) the y axis is fitted to: the top is ``headroom`` times
            the highest upper CI of ``focus`` (at least 1.1, the zero predictor's level).
            Predictors whose curve goes above it are clipped: their legend label ends in
            "(clipped)" and a triangle on the top edge marks each clipped point. ``None``: the
            axis shows every curve whole.
        headroom: see ``focus``.

    Returns:
        The matplotlib ``Figure`` holding the axes (one ``Line2D`` per predictor, in order of
        first appearance, and one shaded CI band each).
    """
    df = _as_frame(data)
    if "predictor" in df.columns:
        groups = [(str(name), g) for name, g in df.groupby("predictor", sort=False)]
    else:
        groups = [(None, df)]
    if ax is None:
        fig, ax = pyplot().subplots(figsize=(7.0, 4.0), layout="constrained")
    else:
        fig = ax.get_figure()
    colors = _colors(palette, len(groups))
    top = None
    if focus is not None:
        shown = dict(groups)
        if focus not in shown:
            raise ValueError(f"focus {focus!r} is not among the predictors {list(shown)}")
        top = max(1.1, headroom * float(shown[focus]["ci_high"].max()))
    for (name, g), color in zip(groups, colors):
        g = g.sort_values("k")
        above = g[g["mean"] > top] if top is not None else g.iloc[:0]
        label = name if above.empty or name is None else f"{name} (clipped)"
        ax.plot(g["k"], g["mean"], color=color, label=label, marker="o", markersize=2.5, linewidth=1.5)
        ax.fill_between(g["k"], g["ci_low"], g["ci_high"], color=color, alpha=0.2, linewidth=0)
        if not above.empty:  # where the curve leaves the axes
            ax.plot(above["k"], [top] * len(above), linestyle="none", marker="^", markersize=7, color=color,
                    clip_on=False, zorder=5)
    ax.set_xlabel("number of in-context examples (k)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0, top=top)
    ax.grid(True, alpha=0.3)
    if title is not None:
        ax.set_title(title)
    if groups[0][0] is not None:
        ax.legend(title="predictor", frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes
    return fig
