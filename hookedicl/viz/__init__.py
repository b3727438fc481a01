"""Figures for reports and notebooks (matplotlib/seaborn; Agg backend when none is chosen)."""

from .error_curves import plot_error_curves
from .save import save_figure

__all__ = ["plot_error_curves", "save_figure"]
