"""Atomic figure saving."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..io import atomic_open

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def save_figure(
    fig: Figure,
    path_without_suffix: str | os.PathLike[str],
    formats: Sequence[str] = ("png", "svg"),
    *,
    dpi: int = 150,
) -> list[Path]:
    """Write ``fig`` once per format to ``<path_without_suffix>.<format>``, atomically.

    Each file is first written to a temporary file in the destination directory, then renamed
    over the destination, so readers never see a partial file.  Parent directories are created.

    Returns:
        The written paths, in the order of ``formats``.
    """
    if isinstance(formats, str):
        formats = (formats,)
    if not formats:
        raise ValueError("formats must name at least one file format, e.g. ('png', 'svg')")
    base = Path(path_without_suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        fmt = fmt.lstrip(".").lower()
        target = base.with_name(f"{base.name}.{fmt}")
        with atomic_open(target, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=dpi, bbox_inches="tight")
        written.append(target)
    return written
