"""Training-loss figure: the model's loss and the logged baselines' loss on the same batches,
with the curriculum's jumps marked (they cause the loss spikes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from ._backend import pyplot

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_training_loss(
    metrics: pd.DataFrame,
    curriculum_changes: Sequence[tuple[int, int, int]] = (),
    *,
    title: str | None = None,
) -> Figure:
    """Loss vs training step.

    Args:
        metrics: the run's ``metrics.jsonl`` as a DataFrame (``Run.metrics()``): ``step``, ``loss``
            and ``baseline/<name>`` columns.
        curriculum_changes: ``(step, n_dims_active, n_points)`` of each curriculum jump
            (``Curriculum.changes(steps)``); each becomes a dotted vertical line labelled with the
            new ``d`` and ``n``.
        title: axes title.

    Returns:
        The figure: one line per series (``model`` first), one vertical line per jump.
    """
    if "step" not in metrics.columns or "loss" not in metrics.columns:
        raise ValueError(f"metrics need the columns 'step' and 'loss'; have {list(metrics.columns)}")
    series = ["loss"] + [c for c in metrics.columns if c.startswith("baseline/")]
    fig, ax = pyplot().subplots(figsize=(8.0, 3.8), layout="constrained")
    for col in series:
        label = "model" if col == "loss" else col.split("/", 1)[1].replace("_", " ")
        ax.plot(metrics["step"], metrics[col], label=label, linewidth=1.3)
    if (metrics[series].dropna() > 0).all().all():
        ax.set_yscale("log")
    for i, (step, d, n) in enumerate(curriculum_changes):
        ax.axvline(step, color="grey", linestyle=":", linewidth=1.0, label="curriculum step" if i == 0 else None)
        ax.annotate(f"d={d}, n={n}", (step, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                    textcoords="offset points", rotation=90, va="top", ha="left", fontsize=8, color="dimgrey")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean squared error on the training batch")
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes, off the curves
    if title is not None:
        ax.set_title(title)
    return fig
