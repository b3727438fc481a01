"""Figures and tables written by analysis notebooks: PNG + SVG, CSV + Markdown."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..io import atomic_write_text


def markdown_table(df: Any, floatfmt: str = ".4g") -> str:
    """A DataFrame as a GitHub-flavoured Markdown table (floats formatted with ``floatfmt``,
    NaN as an empty cell, ``|`` in cells escaped)."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"markdown_table needs a pandas DataFrame, got {type(df).__name__}")

    def cell(v: Any) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            s = ""
        elif isinstance(v, float):
            s = format(v, floatfmt)
        else:
            s = str(v)
        return s.replace("|", "\\|").replace("\n", " ")

    cols = [cell(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or name != Path(name).name or name.startswith("."):
        raise ValueError(f"name must be a plain file name without folders, got {name!r}")
    return name


def _display(obj: Any = None, *, png: bytes | None = None, alt: str = "") -> None:
    """Show ``obj`` (or the image ``png``) when running under IPython (a notebook); a no-op in a
    plain script."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return
    if get_ipython() is not None:
        display(Image(data=png, format="png", alt=alt) if png is not None else obj)


def publish_figure(fig: Any, out_dir: str | os.PathLike[str], name: str, *, dpi: int = 150, show: bool = True) -> list[Path]:
    """Save ``fig`` as ``out_dir/name.png`` and ``.svg`` (atomically, via
    :func:`hookedicl.viz.save_figure`), show the saved PNG in the notebook, and close ``fig``.

    Showing the saved PNG (rather than relying on the kernel's matplotlib backend) makes every
    published figure an image output of the executed notebook, whatever backend is active.
    Returns the written paths (PNG, SVG).
    """
    from ..viz import save_figure
    from ..viz._backend import pyplot

    paths = save_figure(fig, Path(out_dir) / _check_name(name), ("png", "svg"), dpi=dpi)
    pyplot().close(fig)
    if show:
        _display(png=paths[0].read_bytes(), alt=f"figure {paths[0].stem}")
    return paths


def publish_table(df: Any, out_dir: str | os.PathLike[str], name: str, *, floatfmt: str = ".4g", show: bool = True) -> list[Path]:
    """Write ``df`` as ``out_dir/name.csv`` (full precision) and ``out_dir/name.md`` (a Markdown
    table, floats as ``floatfmt``), atomically, and show it in the notebook.

    Returns the written paths (CSV, Markdown)."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"publish_table needs a pandas DataFrame, got {type(df).__name__}")
    base = Path(out_dir) / _check_name(name)
    csv, md = base.with_name(base.name + ".csv"), base.with_name(base.name + ".md")
    atomic_write_text(csv, df.to_csv(index=False))
    atomic_write_text(md, markdown_table(df, floatfmt))
    if show:
        _display(df)
    return [csv, md]
