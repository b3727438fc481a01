"""Executing parameterised notebooks and publishing analyses.

Two layers:

* :func:`execute_notebook` (``notebooks.py``) runs a notebook papermill-style: the given
  ``parameters`` are written into a new cell (tagged ``injected-parameters``) right after the cell
  tagged ``parameters``, every cell is executed on a ``python3`` kernel started from the *current*
  interpreter, and the executed notebook is written to ``output``.  A cell that raises becomes a
  :class:`NotebookExecutionError` naming the cell.  :func:`count_image_outputs` counts the figures
  an executed notebook holds.
* :func:`publish` (``publishing.py``) executes one analysis (the notebooks shipped in
  ``hookedicl/publish/analyses/``, see ``analyses/README.md``) on a run directory or a sweep and
  writes the executed notebook, a standalone HTML rendering (``html.py``) and the figures/tables
  the notebook saves (``outputs.py``) into an output folder, atomically.

Notebook execution needs ``nbformat``, ``nbclient``, ``ipykernel`` and (for HTML) ``nbconvert``;
they are imported lazily so that ``import hookedicl`` does not depend on them.
"""

from __future__ import annotations

from .html import render_html
from .notebooks import (
    INJECTED_TAG, KERNEL_NAME, PARAMETERS_TAG, NotebookExecutionError, count_image_outputs, execute_notebook,
    inject_parameters, notebook_parameters,
)
from .outputs import markdown_table, publish_figure, publish_table
from .publishing import (
    ANALYSES_ENV, INPUT_PARAMETER, MANIFEST, OUT_PARAMETER, SHIPPED_ANALYSES, analyses_dir, analysis_input,
    list_analyses, publish, resolve_analysis,
)

__all__ = [
    "INJECTED_TAG",
    "KERNEL_NAME",
    "PARAMETERS_TAG",
    "NotebookExecutionError",
    "analyses_dir",
    "count_image_outputs",
    "execute_notebook",
    "inject_parameters",
    "list_analyses",
    "markdown_table",
    "notebook_parameters",
    "publish",
    "publish_figure",
    "publish_table",
    "render_html",
    "resolve_analysis",
]
