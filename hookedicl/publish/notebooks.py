"""Executing parameterised notebooks, papermill-style.

:func:`execute_notebook` writes the given ``parameters`` into a new cell (tagged
``injected-parameters``) right after the cell tagged ``parameters``, executes every cell on a
``python3`` kernel started from the *current* interpreter and writes the executed notebook to
``output``. A cell that raises becomes a :class:`NotebookExecutionError` naming the cell.
:func:`count_image_outputs` counts the figures an executed notebook holds.

Needs ``nbformat``, ``nbclient`` and ``ipykernel``, imported lazily so that ``import hookedicl``
does not depend on them.
"""

from __future__ import annotations

import ast
import copy
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import atomic_write_text
from ..progress import ENV as PROGRESS_ENV

if TYPE_CHECKING:
    from nbformat import NotebookNode

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
        env: extra environment variables for the kernel (on top of this process's environment;
            progress bars are off, ``HOOKEDICL_PROGRESS=0``, unless ``env`` sets it).

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
    kernel_env[PROGRESS_ENV] = "0"  # no progress bars in an executed notebook's outputs
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
