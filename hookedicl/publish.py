"""Executing parameterised notebooks and publishing analyses.

Two layers:

* :func:`execute_notebook` runs a notebook papermill-style: the given ``parameters`` are written
  into a new cell (tagged ``injected-parameters``) right after the cell tagged ``parameters``,
  every cell is executed on a ``python3`` kernel started from the *current* interpreter, and the
  executed notebook is written to ``output``.  A cell that raises becomes a
  :class:`NotebookExecutionError` naming the cell.  :func:`count_image_outputs` counts the figures
  an executed notebook holds.
* :func:`publish` executes one analysis of ``analyses/`` (see ``analyses/README.md``) on a run
  directory or a sweep and writes the executed notebook, a standalone HTML rendering and the
  figures/tables the notebook saves into an output folder, atomically.

Notebook execution needs ``nbformat``, ``nbclient``, ``ipykernel`` and (for HTML) ``nbconvert``;
they are imported lazily so that ``import hookedicl`` does not depend on them.
"""

from __future__ import annotations

import ast
import copy
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .io import atomic_write_text

if TYPE_CHECKING:
    from nbformat import NotebookNode

__all__ = [
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

KERNEL_NAME = "python3"
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
IMAGE_MIMETYPES = ("image/png", "image/svg+xml")
# The kernel draws figures with the inline backend (what Jupyter does), even when the calling
# process chose another one (e.g. MPLBACKEND=Agg), so that figures become image outputs.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


class NotebookExecutionError(RuntimeError):
    """A cell of an executed notebook raised (or timed out, or killed the kernel).

    Attributes:
        notebook: the notebook that was executed.
        cell_index: index of the failing cell in ``notebook`` as stored on disk (0-based, counting
            markdown cells), or ``None`` when the injected parameters cell itself failed (or the
            kernel died before any cell ran).
        executed_index: index of the failing cell in the executed notebook (which holds the
            injected parameters cell too); -1 when no cell had started.
        ename, evalue: the exception's class name and message.
        traceback: the kernel's traceback, as text (ANSI colour codes stripped).
    """

    def __init__(
        self,
        notebook: Path,
        cell_index: int | None,
        executed_index: int,
        ename: str,
        evalue: str,
        traceback: str = "",
        source: str = "",
    ) -> None:
        self.notebook = notebook
        self.cell_index = cell_index
        self.executed_index = executed_index
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback
        self.source = source
        if executed_index < 0:
            where = "the kernel, before any cell ran,"
        elif cell_index is None:
            where = "the injected parameters cell"
        else:
            where = f"cell {cell_index}"
        first_line = next((ln for ln in source.splitlines() if ln.strip()), "")
        snippet = f" (`{first_line.strip()[:80]}`)" if first_line else ""
        super().__init__(f"{notebook}: {where}{snippet} raised {ename}: {evalue}")


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - the test extras install them
        raise ImportError(
            f"executing notebooks needs {module!r}; install the notebook extras: "
            "pip install -e '.[notebooks]' (or '.[test]')"
        ) from e


# ---------------------------------------------------------------------------------------------
# parameters


def _literal(value: Any, field: str) -> str:
    """Python source for ``value``; only plain data is accepted (nothing silently converted)."""
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('inf')" if value > 0 else "float('-inf')"
        return repr(value)
    if isinstance(value, os.PathLike):
        return repr(os.fspath(value))
    if isinstance(value, (list, tuple)):
        items = [_literal(v, f"{field}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(items) + "]"
    if isinstance(value, Mapping):
        parts = []
        for k, v in value.items():
            if not isinstance(k, (str, int, bool)) and k is not None:
                raise ValueError(f"parameter {field!r}: dict keys must be str/int, got {type(k).__name__}")
            parts.append(f"{_literal(k, field)}: {_literal(v, f'{field}[{k!r}]')}")
        return "{" + ", ".join(parts) + "}"
    raise ValueError(
        f"parameter {field!r}: unsupported type {type(value).__name__}; use None, bool, int, float, "
        "str, a path, or lists/tuples/dicts of those"
    )


def _cell_tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _parameters_cell_index(nb: NotebookNode) -> int | None:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and PARAMETERS_TAG in _cell_tags(cell):
            return i
    return None


def notebook_parameters(nb: NotebookNode | str | os.PathLike[str]) -> list[str]:
    """Names assigned in the notebook's ``parameters``-tagged cell, in order of first assignment.

    ``nb`` is a notebook or a path to one.  Raises ``ValueError`` when there is no such cell or
    it is not valid Python.
    """
    if not hasattr(nb, "cells"):
        nb = _read_notebook(Path(nb))  # type: ignore[arg-type]
    index = _parameters_cell_index(nb)  # type: ignore[arg-type]
    if index is None:
        raise ValueError("notebook has no code cell tagged 'parameters'")
    source = nb.cells[index].source  # type: ignore[union-attr]
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ValueError(f"the 'parameters' cell (cell {index}) is not valid Python: {e}") from e
    names: list[str] = []
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Name) and n.id not in names:
                    names.append(n.id)
    return names


def inject_parameters(nb: NotebookNode, parameters: Mapping[str, Any]) -> NotebookNode:
    """A copy of ``nb`` with ``parameters`` assigned in a cell tagged ``injected-parameters``
    right after the ``parameters``-tagged cell (replacing an earlier injected cell).

    Raises ``ValueError`` for a parameter the ``parameters`` cell does not define (a typo would
    otherwise be ignored silently), for a value that is not plain data, or when the notebook has
    no ``parameters`` cell and ``parameters`` is not empty.
    """
    nbformat = _require("nbformat")
    if not isinstance(parameters, Mapping):
        raise ValueError(f"parameters must be a mapping of name -> value, got {type(parameters).__name__}")
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in _cell_tags(c)]
    if not parameters:
        return nb
    index = _parameters_cell_index(nb)
    if index is None:
        raise ValueError(
            f"parameters {sorted(parameters)} given but the notebook has no code cell tagged 'parameters'"
        )
    known = notebook_parameters(nb)
    unknown = [k for k in parameters if k not in known]
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; the notebook's parameters are {known}")
    lines = ["# Parameters"]
    for name, value in parameters.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"parameter name {name!r} is not a Python identifier")
        lines.append(f"{name} = {_literal(value, name)}")
    cell = nbformat.v4.new_code_cell(source="\n".join(lines) + "\n")
    cell.metadata["tags"] = [INJECTED_TAG]
    if nb.get("nbformat_minor", 0) < 5:  # cell ids exist from nbformat 4.5 on
        cell.pop("id", None)
    nb.cells.insert(index + 1, cell)
    nb.metadata.setdefault("hookedicl", {})["parameters"] = {k: _literal(v, k) for k, v in parameters.items()}
    return nb


# ---------------------------------------------------------------------------------------------
# execution


def _read_notebook(path: Path) -> NotebookNode:
    nbformat = _require("nbformat")
    if not path.is_file():
        raise ValueError(f"notebook {str(path)!r} does not exist")
    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as e:  # nbformat raises several unrelated types for a bad file
        raise ValueError(f"notebook {str(path)!r} is not a readable .ipynb file: {e}") from e


def _kernel_manager_class() -> type:
    """An async kernel manager whose ``python3`` kernel is ipykernel on ``sys.executable``, so a
    notebook runs in this interpreter's environment whatever kernelspecs are installed."""
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class _CurrentInterpreterSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            if kernel_name != KERNEL_NAME:
                raise NoSuchKernel(kernel_name)
            return KernelSpec(resource_dir=RESOURCES, **get_kernel_dict())

    class _CurrentInterpreterKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _default_spec_manager(self) -> KernelSpecManager:
            return _CurrentInterpreterSpecs(data_dir=self.data_dir)

    return _CurrentInterpreterKernelManager


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _write_notebook(nb: NotebookNode, output: Path) -> None:
    nbformat = _require("nbformat")
    atomic_write_text(output, nbformat.writes(nb))


def execute_notebook(
    notebook: Path,
    parameters: dict[str, Any],
    output: Path,
    *,
    timeout: int = 600,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> NotebookNode:
    """Execute ``notebook`` with ``parameters`` and write the executed copy to ``output``.

    The parameters are assigned in a new cell (tagged ``injected-parameters``) inserted after the
    cell tagged ``parameters`` (see :func:`inject_parameters`; unknown names raise ``ValueError``).
    Every cell then runs, in order, on a ``python3`` kernel started from ``sys.executable`` with
    matplotlib's inline backend, so figures become ``image/png`` outputs.

    Args:
        notebook: the ``.ipynb`` file (it is not modified).
        parameters: name -> value, plain data only (None, bool, int, float, str, paths, and
            lists/tuples/dicts of those); may be empty.
        output: where the executed notebook is written (atomically; parents are created).  It is
            written also when a cell fails, holding the outputs up to and including the error.
        timeout: seconds allowed per cell.
        cwd: the kernel's working directory; default the notebook's own folder (as in Jupyter).
        env: extra environment variables for the kernel (on top of this process's environment).

    Returns:
        The executed notebook.

    Raises:
        ValueError: missing/unreadable notebook, bad parameters, ``timeout`` not positive,
            ``cwd`` not a directory.
        NotebookExecutionError: a cell raised, timed out or killed the kernel; names the cell.
    """
    nbclient = _require("nbclient")
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    notebook, output = Path(notebook), Path(output)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise ValueError(f"timeout must be a positive int (seconds per cell), got {timeout!r}")
    kernel_cwd = Path(cwd) if cwd is not None else notebook.resolve().parent
    if not kernel_cwd.is_dir():
        raise ValueError(f"cwd {str(kernel_cwd)!r} is not a directory")
    if output.resolve() == notebook.resolve():
        raise ValueError(f"output {str(output)!r} would overwrite the input notebook")
    source_nb = _read_notebook(notebook)
    nb = inject_parameters(source_nb, parameters)
    injected = [i for i, c in enumerate(nb.cells) if INJECTED_TAG in _cell_tags(c)]
    # executed cells that are not the injected one are, in order, these cells of the input
    kept = [i for i, c in enumerate(source_nb.cells) if INJECTED_TAG not in _cell_tags(c)]
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python 3 (ipykernel)", "language": "python"}

    kernel_env = dict(os.environ)
    kernel_env["MPLBACKEND"] = INLINE_BACKEND
    kernel_env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    if env is not None:
        kernel_env.update({str(k): str(v) for k, v in env.items()})

    class _Client(nbclient.NotebookClient):  # records which cell runs, to name it on failure
        current_index: int = -1

        async def async_execute_cell(self, cell: Any, cell_index: int, *args: Any, **kwargs: Any) -> Any:
            self.current_index = cell_index
            return await super().async_execute_cell(cell, cell_index, *args, **kwargs)

    client = _Client(
        nb,
        timeout=timeout,
        kernel_name=KERNEL_NAME,
        kernel_manager_class=_kernel_manager_class(),
        resources={"metadata": {"path": str(kernel_cwd.resolve())}},
        allow_errors=False,
        record_timing=True,
        # the kernel's own log (e.g. its note on unencrypted local transport) is not notebook output
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
    )
    try:
        client.execute(env=kernel_env)
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
        idx = client.current_index
        _write_notebook(nb, output)
        if isinstance(e, CellExecutionError):
            ename, evalue, tb = e.ename, e.evalue, _strip_ansi(e.traceback)
        else:
            ename, evalue, tb = type(e).__name__, str(e).strip().splitlines()[0] if str(e).strip() else "", ""
        # index in the notebook as stored on disk: cells after the injected one shift by one
        src_idx = None if idx in injected or idx < 0 else kept[idx - sum(1 for j in injected if j < idx)]
        source = nb.cells[idx].source if 0 <= idx < len(nb.cells) else ""
        raise NotebookExecutionError(notebook, src_idx, idx, ename, evalue, tb, source) from None
    _write_notebook(nb, output)
    return nb


def count_image_outputs(nb: NotebookNode) -> int:
    """Number of image outputs (``image/png`` or ``image/svg+xml``) in the code cells of ``nb``.

    An output carrying both a PNG and an SVG rendering of one figure counts once.
    """
    n = 0
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {}) if out.get("output_type") in ("display_data", "execute_result") else {}
            if any(m in data for m in IMAGE_MIMETYPES):
                n += 1
    return n


# ---------------------------------------------------------------------------------------------
# figures and tables written by analyses


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
    from .viz import save_figure
    from .viz._backend import pyplot

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


# ---------------------------------------------------------------------------------------------
# analyses and publishing

ANALYSES_ENV = "HOOKEDICL_ANALYSES"
MANIFEST = "publish.json"
INPUT_PARAMETER = {"run": "run_dir", "sweep": "sweep_dir"}  # what an analysis reads -> its parameter
OUT_PARAMETER = "out_dir"


def analyses_dir() -> Path:
    """The folder holding the analysis notebooks.

    ``$HOOKEDICL_ANALYSES`` when set; otherwise ``analyses/`` of the checkout this package was
    imported from (the repository root is the parent of the ``hookedicl`` package, as in an
    editable install or a source checkout); otherwise ``./analyses``.  Raises ``ValueError`` when
    none exists (e.g. a wheel install: point ``$HOOKEDICL_ANALYSES`` at a checkout's ``analyses``).
    """
    env = os.environ.get(ANALYSES_ENV)
    if env:
        p = Path(env)
        if not p.is_dir():
            raise ValueError(f"${ANALYSES_ENV}={env!r} is not a directory")
        return p
    candidates = [Path(__file__).resolve().parent.parent / "analyses", Path.cwd() / "analyses"]
    for p in candidates:
        if p.is_dir() and any(p.glob("*.ipynb")):
            return p
    raise ValueError(
        "no analyses folder found (looked in " + ", ".join(str(c) for c in candidates)
        + f"); set ${ANALYSES_ENV} to the repository's analyses/ folder"
    )


def list_analyses() -> list[str]:
    """Names of the analyses in :func:`analyses_dir` (``<name>.ipynb``), sorted."""
    return sorted(p.stem for p in analyses_dir().glob("*.ipynb") if not p.name.startswith("."))


def resolve_analysis(analysis: str | os.PathLike[str]) -> Path:
    """The notebook of ``analysis``: a path to an ``.ipynb`` file, or a name from
    :func:`list_analyses` (``run_summary`` -> ``analyses/run_summary.ipynb``)."""
    if isinstance(analysis, os.PathLike) or (isinstance(analysis, str) and (analysis.endswith(".ipynb") or os.sep in analysis)):
        p = Path(analysis)
        if p.suffix != ".ipynb":
            raise ValueError(f"analysis path {str(p)!r} is not a .ipynb notebook")
        if not p.is_file():
            raise ValueError(f"analysis notebook {str(p)!r} does not exist")
        return p
    if not isinstance(analysis, str) or not analysis:
        raise ValueError(f"analysis must be a name or a path to a notebook, got {analysis!r}")
    names = list_analyses()
    if analysis not in names:
        raise ValueError(f"unknown analysis {analysis!r}; available: {', '.join(names) or '(none)'}")
    return analyses_dir() / f"{analysis}.ipynb"


def analysis_input(nb: NotebookNode) -> str:
    """What an analysis reads: ``"run"`` (a run directory, parameter ``run_dir``) or ``"sweep"``
    (a sweep directory or its ``results.csv``, parameter ``sweep_dir``), from the notebook's
    metadata ``hookedicl.input`` (default ``"run"``)."""
    kind = nb.metadata.get("hookedicl", {}).get("input", "run")
    if kind not in INPUT_PARAMETER:
        raise ValueError(f"notebook metadata hookedicl.input must be one of {sorted(INPUT_PARAMETER)}, got {kind!r}")
    return kind



def _check_input(kind: str, path: Path) -> Path:
    if not path.exists():
        raise ValueError(f"{kind} {str(path)!r} does not exist")
    if kind == "run":
        from .training import Run

        return Run(path).path.resolve()  # ValueError unless it holds config.yaml
    if path.is_file():
        if path.suffix != ".csv":
            raise ValueError(f"sweep {str(path)!r} is neither a sweep directory nor a .csv file")
    elif not (path / "results.csv").is_file():
        raise ValueError(f"sweep {str(path)!r} has no results.csv (run the sweep first, or pass the CSV itself)")
    return path.resolve()


def _check_replaceable(out: Path, protected: list[Path]) -> None:
    """OUT may be replaced only when it does not exist, is empty, or is an earlier publish output."""
    r = out.resolve()
    for p in protected:
        if r == p or r in p.parents:
            raise ValueError(f"out {str(out)!r} would replace {str(p)!r}; choose another output folder")
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"out {str(out)!r} exists and is not a directory")
    if any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ValueError(
            f"out {str(out)!r} exists, is not empty and is not an earlier publish output (no {MANIFEST}); "
            "choose another output folder"
        )


def _site_dirs() -> set[Path]:
    import site

    dirs = list(getattr(site, "getsitepackages", lambda: [])()) + [getattr(site, "getusersitepackages", lambda: "")()]
    return {Path(d).resolve() for d in dirs if d}


def _kernel_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    """The package's checkout on the kernel's PYTHONPATH (unless it is a site-packages install),
    so the kernel imports the same hookedicl as this process."""
    root = Path(__file__).resolve().parent.parent
    env: dict[str, str] = {}
    if root not in _site_dirs():
        env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH", "")])])
    env.update(extra or {})
    return env


def render_html(nb: NotebookNode, title: str) -> str:
    """A standalone HTML page of an executed notebook: images and styles inline (data URIs), so
    the file opens in a browser on its own."""
    _require("nbconvert")
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        embed_images=True,
        extra_loaders=[DictLoader({_HTML_TEMPLATE_NAME: _HTML_TEMPLATE})],
        template_file=_HTML_TEMPLATE_NAME,
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


# JupyterLab's page without the scripts it loads from a CDN (require.js, MathJax, Mermaid): the
# analyses use none of them, and without them the page makes no network request at all.
_HTML_TEMPLATE_NAME = "hookedicl_standalone.html.j2"
_HTML_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js_requirejs %}{% endblock html_head_js_requirejs %}
{% block html_head_js_mathjax %}{% endblock html_head_js_mathjax %}
{% block html_head_js_mermaidjs %}{% endblock html_head_js_mermaidjs %}
"""


def _mkdtemp_beside(out: Path, tag: str) -> Path:
    import tempfile

    p = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=f".{tag}", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(p, 0o777 & ~umask)
    return p


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    import shutil

    if not out.exists():
        os.rename(tmp, out)
        return
    old = _mkdtemp_beside(out, "old")
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _relocate(nb: NotebookNode, old: str, new: str) -> None:
    """Replace the path ``old`` by ``new`` in cell sources and text outputs (not in images)."""
    for cell in nb.cells:
        cell.source = cell.source.replace(old, new)
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = output["text"].replace(old, new)
            for mime, value in output.get("data", {}).items():
                if (mime.startswith("text/") or mime == "application/json") and isinstance(value, str):
                    output["data"][mime] = value.replace(old, new)
    params = nb.metadata.get("hookedicl", {}).get("parameters", {})
    for key, value in params.items():
        params[key] = value.replace(old, new)


def publish(
    analysis: str | os.PathLike[str],
    run: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    *,
    timeout: int = 600,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Execute an analysis notebook on a run (or sweep) and publish its outputs into ``out``.

    Args:
        analysis: a name from :func:`list_analyses` (``analyses/<name>.ipynb``) or a notebook path.
        run: the run directory (``run_dir`` parameter) or, for a sweep analysis (notebook
            metadata ``hookedicl.input: sweep``), the sweep directory or its ``results.csv``
            (``sweep_dir`` parameter).
        out: output folder; default ``<run>/publish/<analysis name>``.  An existing ``out`` is
            replaced only when it is empty or an earlier publish output (holds ``publish.json``).
        parameters: further notebook parameters (see ``analyses/README.md``); ``run_dir``,
            ``sweep_dir`` and ``out_dir`` are set by this function and may not be given.
        timeout: seconds allowed per cell.
        env: extra environment variables for the kernel.

    Writes into ``out``: ``<name>.ipynb`` (the executed notebook), ``<name>.html`` (standalone
    rendering), every figure (PNG + SVG) and table (CSV + Markdown) the notebook saves, and
    ``publish.json`` (analysis, input, parameters, files).  Everything is first written to a
    temporary sibling folder that is renamed to ``out`` only when all of it succeeded, so a
    failed publish leaves ``out`` as it was.

    Returns:
        ``out``.

    Raises:
        ValueError: unknown analysis, missing/invalid run or sweep, bad parameters, an ``out``
            that is not replaceable.
        NotebookExecutionError: a cell failed (names the cell and the exception).
    """
    import json
    import shutil

    notebook = resolve_analysis(analysis)
    name = notebook.stem
    nb = _read_notebook(notebook)
    kind = analysis_input(nb)
    source = _check_input(kind, Path(run))
    params = dict(parameters or {})
    reserved = [k for k in params if k in (*INPUT_PARAMETER.values(), OUT_PARAMETER)]
    if reserved:
        raise ValueError(f"parameter(s) {reserved} are set by publish (from run and out); do not pass them")
    declared = notebook_parameters(nb)
    for needed in (INPUT_PARAMETER[kind], OUT_PARAMETER):
        if needed not in declared:
            raise ValueError(f"analysis notebook {str(notebook)!r} does not declare the parameter {needed!r}")
    if out is None:
        base = source if source.is_dir() else source.parent
        out_path = base / "publish" / name
    else:
        out_path = Path(out)
    out_path = out_path.absolute()
    _check_replaceable(out_path, [source if source.is_dir() else source.parent, notebook.resolve().parent])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _mkdtemp_beside(out_path, "publishing")
    try:
        all_params = {INPUT_PARAMETER[kind]: str(source), OUT_PARAMETER: str(tmp), **params}
        executed = execute_notebook(
            notebook, all_params, tmp / f"{name}.ipynb", timeout=timeout, env=_kernel_env(env),
        )
        # the notebook wrote into `tmp`; its record names the folder the files end up in
        _relocate(executed, str(tmp), str(out_path))
        _write_notebook(executed, tmp / f"{name}.ipynb")
        atomic_write_text(tmp / f"{name}.html", render_html(executed, title=f"{name}: {source.name}"))
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "analysis": name,
            "notebook": str(notebook.resolve()),
            "input": {"kind": kind, "path": str(source)},
            "parameters": {k: _literal(v, k) for k, v in params.items()},
            "image_outputs": count_image_outputs(executed),
            "files": files,
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        _swap_in(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_path
