"""Lazy, notebook-friendly access to ``matplotlib.pyplot``."""

from __future__ import annotations

import sys
from types import ModuleType


def pyplot() -> ModuleType:
    """Import and return ``matplotlib.pyplot``, selecting the non-interactive Agg backend first
    when no backend has been chosen yet (no ``MPLBACKEND``, no ``matplotlib.use``, no rc setting).

    Nothing is changed when pyplot is already imported or a backend was chosen (e.g. by Jupyter's
    inline backend), so notebooks keep their own backend.
    """
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        try:
            chosen = matplotlib.get_backend(auto_select=False)
        except TypeError:  # matplotlib < 3.10
            chosen = matplotlib.rcParams._get_backend_or_none()
        if chosen is None:
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
