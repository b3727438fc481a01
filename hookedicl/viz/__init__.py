"""Figures for reports and notebooks (matplotlib/seaborn; Agg backend when none is chosen)."""

from .error_curves import plot_error_curves
from .matching import plot_matching
from .save import save_figure
from .training import plot_training_loss

__all__ = ["plot_error_curves", "plot_matching", "plot_training_loss", "save_figure"]
