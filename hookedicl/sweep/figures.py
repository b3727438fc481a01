"""Sweep figures: ICL score by group (e.g. architecture x task) and training-loss curves."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..viz._backend import pyplot

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _label(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    if not cols:
        return pd.Series(["all"] * len(df), index=df.index)
    return df[cols].astype(str).agg(" / ".join, axis=1)


def plot_scores(df: pd.DataFrame, rows: list[str], columns: list[str], *, score_label: str = "ICL score") -> Figure:
    """One marker per run (its ICL score with the bootstrap CI as an error bar), grouped by the
    `rows` axes along x and coloured by the `columns` axes; a short bar marks each group's mean.

    `df` needs `icl_score`, `icl_score_ci_low`, `icl_score_ci_high` and the named axis columns.
    """
    need = ["icl_score", "icl_score_ci_low", "icl_score_ci_high", *rows, *columns]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"df is missing column(s) {missing}")
    d = df.dropna(subset=["icl_score"]).copy()
    if d.empty:
        raise ValueError("no run has an ICL score yet")
    d["_x"], d["_hue"] = _label(d, rows), _label(d, columns)
    xs = list(dict.fromkeys(d["_x"]))
    hues = list(dict.fromkeys(d["_hue"]))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(xs) * max(1, len(hues)) ** 0.5 + 2), 4.2), layout="constrained")
    width = 0.8 / len(hues)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for h, hue in enumerate(hues):
        sub = d[d["_hue"] == hue]
        color = colors[h % len(colors)]
        legend: str | None = hue
        for x, label in enumerate(xs):
            g = sub[sub["_x"] == label]
            if g.empty:
                continue
            centre = x - 0.4 + width * (h + 0.5)
            offsets = np.linspace(-0.25, 0.25, len(g)) * width if len(g) > 1 else np.zeros(1)
            yerr = np.vstack([g["icl_score"] - g["icl_score_ci_low"], g["icl_score_ci_high"] - g["icl_score"]])
            ax.errorbar(centre + offsets, g["icl_score"], yerr=np.clip(yerr, 0, None), fmt="o", ms=4, color=color,
                        capsize=2, label=legend)
            legend = None
            ax.hlines(g["icl_score"].mean(), centre - 0.4 * width, centre + 0.4 * width, color=color, lw=2)
    ax.axhline(1.0, color="0.4", lw=0.8, ls="--")
    ax.axhline(0.0, color="0.7", lw=0.8, ls=":")
    ax.set_xticks(range(len(xs)), xs, rotation=45 if len(xs) > 3 else 0, ha="right" if len(xs) > 3 else "center")
    ax.set_ylabel(score_label)
    ax.set_xlabel(" / ".join(rows))
    if columns or len(hues) > 1:
        ax.legend(title=" / ".join(columns) or None, fontsize="small")
    return fig


def plot_training_curves(curves: dict[str, pd.DataFrame], panel: dict[str, str], colour: dict[str, str]) -> Figure:
    """Training loss vs step, one panel per `panel[point]` value, one line per point coloured by
    `colour[point]` (runs sharing a colour, e.g. seeds, share a legend entry).

    `curves`: point -> metrics DataFrame with columns `step`, `loss` (metrics.jsonl).
    """
    if not curves:
        raise ValueError("curves is empty: no run has logged metrics yet")
    for name, m in curves.items():
        missing = [c for c in ("step", "loss") if c not in m.columns]
        if missing:
            raise ValueError(f"curves[{name!r}] is missing column(s) {missing}")
    panels = list(dict.fromkeys(panel[p] for p in curves))
    colours = list(dict.fromkeys(colour[p] for p in curves))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.8), layout="constrained", squeeze=False,
                             sharey=False)
    cmap = plt.get_cmap("tab20" if len(colours) > 10 else "tab10")
    for j, pv in enumerate(panels):
        ax = axes[0, j]
        shown: set[str] = set()
        for point, m in curves.items():
            if panel[point] != pv:
                continue
            c = colour[point]
            ax.plot(m["step"], m["loss"], lw=1, color=cmap(colours.index(c) % cmap.N), label=None if c in shown else c)
            shown.add(c)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (MSE)")
        if len(panels) > 1 or pv != "all":
            ax.set_title(pv)
    axes[0, -1].legend(fontsize="x-small", ncol=1 + len(colours) // 12, loc="upper right")
    return fig
