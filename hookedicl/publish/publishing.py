"""Publishing analyses: find an analysis notebook, execute it on a run or a sweep, and write
the executed notebook, a standalone HTML page and the files it saves into a folder, atomically.

The analysis notebooks ship with the package (``hookedicl/publish/analyses/*.ipynb``, package
data), so publishing works from an installed wheel as well as from a checkout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import atomic_write_text
from ..progress import ENV as PROGRESS_ENV

if TYPE_CHECKING:
    from nbformat import NotebookNode

from .html import render_html
from .notebooks import _literal, _read_notebook, _write_notebook, count_image_outputs, execute_notebook, notebook_parameters

# ---------------------------------------------------------------------------------------------
# analyses and publishing

ANALYSES_ENV = "HOOKEDICL_ANALYSES"
MANIFEST = "publish.json"
INPUT_PARAMETER = {"run": "run_dir", "sweep": "sweep_dir"}  # what an analysis reads -> its parameter
OUT_PARAMETER = "out_dir"
SHIPPED_ANALYSES = Path(__file__).resolve().parent / "analyses"


def analyses_dir() -> Path:
    """The folder holding the analysis notebooks: ``$HOOKEDICL_ANALYSES`` when set, otherwise
    the notebooks shipped with the package (``hookedicl/publish/analyses``)."""
    env = os.environ.get(ANALYSES_ENV)
    if env:
        p = Path(env)
        if not p.is_dir():
            raise ValueError(f"${ANALYSES_ENV}={env!r} is not a directory")
        return p
    if not SHIPPED_ANALYSES.is_dir():  # a broken install
        raise ValueError(f"the package's analyses folder {str(SHIPPED_ANALYSES)!r} is missing; reinstall hookedicl")
    return SHIPPED_ANALYSES


def list_analyses() -> list[str]:
    """Names of the analyses in :func:`analyses_dir` (``<name>.ipynb``), sorted."""
    return sorted(p.stem for p in analyses_dir().glob("*.ipynb") if not p.name.startswith("."))


def resolve_analysis(analysis: str | os.PathLike[str]) -> Path:
    """The notebook of ``analysis``: a path to an ``.ipynb`` file, or a name from
    :func:`list_analyses` (``run_summary`` -> ``<analyses_dir()>/run_summary.ipynb``)."""
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
        from ..training import Run

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
    root = Path(__file__).resolve().parents[2]  # the checkout holding hookedicl/
    env: dict[str, str] = {}
    if root not in _site_dirs():
        env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH", "")])])
    env.update(extra or {})
    env[PROGRESS_ENV] = "0"  # never a progress bar in a published page
    return env


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
    no_input: bool = False,
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
        no_input: hide the code cells in the HTML page (markdown and outputs only); the executed
            notebook keeps them.

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
        atomic_write_text(tmp / f"{name}.html", render_html(executed, title=f"{name}: {source.name}", no_input=no_input))
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "analysis": name,
            "notebook": str(notebook.resolve()),
            "input": {"kind": kind, "path": str(source)},
            "parameters": {k: _literal(v, k) for k, v in params.items()},
            "no_input": bool(no_input),
            "image_outputs": count_image_outputs(executed),
            "files": files,
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        _swap_in(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_path
