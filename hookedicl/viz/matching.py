"""Predictor-matching figure: how close the model is to each reference predictor vs k.

One panel per metric, two per row; one colour per reference *family* (least squares, ridge, GD,
...) and one line style per member of a family (ridge α = 0.01, 0.1, 1); the legend has a cell
of its own beside the panels, grouped by family (a family with several members gets a bold header
line), at a readable size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from ._backend import pyplot

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# metric column value -> axis label in words
METRIC_LABELS: dict[str, str] = {
    "spd/d": "squared prediction difference / d\n(SPD / d; lower: closer)",
    "spd": "squared prediction difference (SPD)",
    "pred_diff": "prediction difference",
    "ilwd/d": "implicit linear weight difference / d\n(ILWD / d; lower: closer)",
    "ilwd": "implicit linear weight difference (ILWD)",
    "sensitivity_cos": "cosine of the query sensitivities\n(higher: closer)",
    "r2": "R² of the model's implicit linear fit",
}
PANEL_TITLES: dict[str, str] = {
    "spd/d": "Prediction difference", "ilwd/d": "Implicit weight difference", "sensitivity_cos": "Sensitivity",
    "spd": "Prediction difference", "ilwd": "Implicit weight difference", "pred_diff": "Prediction difference",
}
_STYLES = ["-", "--", ":", "-."]


def member_label(reference: str, family: str) -> str:
    """A reference's label inside its family's legend group: ``ridge(alpha=0.1)`` -> ``alpha=0.1``."""
    if reference.startswith(family + "(") and reference.endswith(")"):
        return reference[len(family) + 1 : -1]
    return reference


def plot_matching(
    table: pd.DataFrame,
    metrics: tuple[str, ...] = ("spd/d", "ilwd/d", "sensitivity_cos"),
    *,
    model: str = "model",
    title: str | None = None,
) -> Figure:
    """Matching metrics vs k, one panel per metric present in ``table``.

    Args:
        table: the match table (``hookedicl.analysis.match.match``; ``RUN/analysis/match.csv``):
            columns ``predictor, family, k, metric, mean, ci_low, ci_high``.
        metrics: the metrics to draw, in panel order (those absent from ``table`` are skipped).
        model: the reference label of the model itself (its rows, e.g. ``r2``, are not drawn).
        title: figure title.

    Returns:
        The figure: the metric panels, then an axes (axis off) holding the legend, which lists
        every reference grouped by family.
    """
    missing = [c for c in ("predictor", "family", "k", "metric", "mean", "ci_low", "ci_high") if c not in table.columns]
    if missing:
        raise ValueError(f"match table is missing column(s) {missing}; has {list(table.columns)}")
    panels = [m for m in metrics if m in set(table["metric"])]
    if not panels:
        raise ValueError(f"match table holds none of the metrics {list(metrics)}; has {sorted(set(table['metric']))}")
    import matplotlib
    from matplotlib.lines import Line2D

    t = table[table["predictor"] != model]
    families = list(dict.fromkeys(t["family"]))
    members = {f: list(dict.fromkeys(t.loc[t["family"] == f, "predictor"])) for f in families}
    cmap = matplotlib.colormaps["tab10"]
    style: dict[str, tuple[Any, str]] = {}
    for i, f in enumerate(families):
        for j, ref in enumerate(members[f]):
            style[ref] = (cmap(i % 10), _STYLES[j % len(_STYLES)])

    # two panels per row and the legend in a cell of its own, so that the figure stays about 9 in
    # wide and its text readable when a page scales it to its width
    plt = pyplot()
    nrows = (len(panels) + 2) // 2
    fig, axes = plt.subplots(nrows, 2, figsize=(9.0, 3.4 * nrows), squeeze=False, layout="constrained")
    cells = list(axes.flat)
    legend_ax = cells[len(panels)]
    for ax in cells[len(panels) + 1 :]:
        ax.remove()
    legend_ax.axis("off")
    for ax, metric in zip(cells, panels):
        d = t[t["metric"] == metric]
        for ref, g in d.groupby("predictor", sort=False):
            color, ls = style[ref]
            g = g.sort_values("k")
            ax.plot(g["k"], g["mean"], ls, marker="o", ms=3, color=color, linewidth=1.6)
            ax.fill_between(g["k"], g["ci_low"], g["ci_high"], alpha=0.12, color=color, linewidth=0)
        if metric != "sensitivity_cos" and (d["mean"] > 0).all() and not d.empty:
            ax.set_yscale("log")
        ax.set_xlabel("in-context examples (k)")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_title(PANEL_TITLES.get(metric, metric))
        ax.grid(True, alpha=0.3)
    handles: list[Any] = []
    labels: list[str] = []
    headers: list[int] = []
    for f in families:
        refs = members[f]
        if len(refs) > 1:  # a header line for the family, its members indented below
            headers.append(len(labels))
            handles.append(Line2D([], [], linestyle="none"))
            labels.append(f)
            for ref in refs:
                color, ls = style[ref]
                handles.append(Line2D([], [], color=color, linestyle=ls, marker="o", ms=3))
                labels.append("  " + member_label(ref, f))
        else:
            color, ls = style[refs[0]]
            handles.append(Line2D([], [], color=color, linestyle=ls, marker="o", ms=3))
            labels.append(refs[0])
    legend = legend_ax.legend(handles, labels, loc="upper left", title="reference (colour: family)", fontsize=9,
                              title_fontsize=10, frameon=False, handlelength=2.6,
                              ncol=1 if len(labels) <= 14 else 2)
    for i in headers:
        legend.get_texts()[i].set_fontweight("bold")
    if title is not None:
        fig.suptitle(title)
    return fig
