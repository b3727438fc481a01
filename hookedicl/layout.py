"""What a run directory and a sweep directory hold, by name, and how to touch them safely.

    RUN/                      SWEEP/
      config.yaml               sweep.yaml
      metrics.jsonl             runs/<point>/          one run directory per point
      lineage.json              status/<point>.json
      checkpoints/index.json    results.csv, results.md
      activations/index.json    figures/
      eval/ analysis/ report/
      .lock

A run directory is a trust boundary: it may have been copied from a colleague or downloaded
with a paper, so its contents are untrusted input. Every file it names (an index entry, a
figure to copy) is opened through `resolve_inside`, which refuses a name that is absolute,
holds `..`, or passes through a symlink; `check_run_layout` refuses a run whose own entries
(`eval/`, `metrics.jsonl`, ...) are symlinks, so no write follows one out of the run; and
`output_set` writes a command's outputs as a set (all of them, or none on an error).
Everything refused is an `UnsafePathError` (a ValueError) naming the file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .io import _fsync_dir, read_json_file

# ------------------------------------------------------------------ a run directory
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
LINEAGE = "lineage.json"
LOCK = ".lock"
CHECKPOINTS = "checkpoints"
ACTIVATIONS = "activations"
EVAL = "eval"
ANALYSIS = "analysis"
REPORT = "report"
INDEX = "index.json"  # in checkpoints/ and activations/
SUMMARY = "summary.json"  # in eval/
CURVES = "curves.csv"  # in eval/
RUN_FILES = (CONFIG, METRICS, LINEAGE)
RUN_DIRS = (CHECKPOINTS, ACTIVATIONS, EVAL, ANALYSIS, REPORT)

# ---------------------------------------------------------------- a sweep directory
SWEEP_SPEC = "sweep.yaml"
SWEEP_RUNS = "runs"
STATUS = "status"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
FIGURES = "figures"

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")
"""A run, sweep, point or variant name: one path component (no separator, no leading dot)."""


class UnsafePathError(ValueError):
    """A path taken from a run directory leads outside it or through a symlink."""


def check_name(value: Any, field: str) -> str:
    """`value` if it is a single path component matching `NAME`, else ValueError naming `field`."""
    if not isinstance(value, str) or not NAME.match(value) or len(value) > 200:
        raise ValueError(f"{field} must match {NAME.pattern} (one path component, at most 200 characters), got {value!r}")
    return value


def resolve_inside(root: str | os.PathLike[str], relative: Any, what: str) -> Path:
    """`root / relative` when it stays inside `root` without passing through a symlink.

    `relative` comes from untrusted data (an index entry, a directory listing): it must be a
    non-empty relative path of plain components (no `..`, no `.`, no NUL), and neither it nor any
    directory between `root` and it may be a symlink (it need not exist). Returns the lexical
    path (safe to read, write or unlink); raises `UnsafePathError` naming `what` otherwise.
    """
    if not isinstance(relative, str) or not relative or "\x00" in relative or "\\" in relative:
        raise UnsafePathError(f"{what}: expected a relative file name, got {relative!r}")
    rel = Path(relative)
    parts = relative.split("/")
    if rel.is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise UnsafePathError(f"{what}: {relative!r} is not a plain path inside {root} (absolute, '..' or '.')")
    base = Path(root)
    path = base
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise UnsafePathError(f"{what}: {path} is a symlink; a run directory is read and written only without symlinks")
    resolved, top = path.resolve(), base.resolve()
    if resolved != top and top not in resolved.parents:  # pragma: no cover - excluded by the checks above
        raise UnsafePathError(f"{what}: {relative!r} leads outside {root} (to {resolved})")
    return path


def check_run_layout(root: str | os.PathLike[str]) -> None:
    """Refuse a run directory whose own entries are symlinks or of the wrong kind.

    `config.yaml`, `metrics.jsonl`, `lineage.json` must be plain files when present, and
    `checkpoints/`, `activations/`, `eval/`, `analysis/`, `report/` plain directories, so that
    nothing read or written through them leaves the run (`UnsafePathError` names the entry).
    """
    base = Path(root)
    for name in RUN_FILES + RUN_DIRS:
        p = resolve_inside(base, name, f"run directory {base}")
        if p.exists() and (p.is_dir() if name in RUN_FILES else not p.is_dir()):
            kind = "a file" if name in RUN_FILES else "a directory"
            raise UnsafePathError(f"run directory {base}: {name} must be {kind}")


def output_dir(root: str | os.PathLike[str], sub: str) -> Path:
    """`root/sub`, created if missing; `UnsafePathError` if it is a symlink or not a directory."""
    d = resolve_inside(root, sub, f"output directory of {root}")
    if d.exists() and not d.is_dir():
        raise UnsafePathError(f"{d} exists and is not a directory")
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def output_set(root: str | os.PathLike[str], sub: str) -> Iterator[Path]:
    """Write a set of output files for `root/sub` all together or not at all.

    Yields a fresh staging directory inside `root/sub`; write the outputs there (flat files).
    When the block ends normally each staged file replaces its namesake in `root/sub` (renames
    inside one directory: they need no space and do not follow a symlink at the destination);
    when it raises (disk full, permission, any error) nothing in `root/sub` changes.
    """
    dest = output_dir(root, sub)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest))
    try:
        yield stage
        names = sorted(os.listdir(stage))
        if any((stage / n).is_dir() for n in names):
            raise ValueError(f"output_set: staged outputs must be files, got directories in {names}")
        for name in names:
            os.replace(stage / name, dest / name)
        _fsync_dir(dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def remove_stale_temporaries(root: str | os.PathLike[str]) -> None:
    """Delete temporary files and staging directories (`.*.tmp`) a killed writer left behind.

    Walks `root` without following symlinks; call it under the run's lock."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for d in [d for d in dirnames if d.startswith(".") and d.endswith(".tmp")]:
            p = Path(dirpath) / d
            if p.is_symlink():
                p.unlink(missing_ok=True)
            else:
                shutil.rmtree(p, ignore_errors=True)
            dirnames.remove(d)
        for f in filenames:
            if f.startswith(".") and f.endswith(".tmp"):
                (Path(dirpath) / f).unlink(missing_ok=True)


# ------------------------------------------------------------------ sweep paths
def sweep_run_dir(out: str | os.PathLike[str], point_id: str) -> Path:
    """SWEEP/runs/<point>: the run directory of one point."""
    return Path(out) / SWEEP_RUNS / check_name(point_id, "point id")


def status_path(out: str | os.PathLike[str], point_id: str) -> Path:
    """SWEEP/status/<point>.json: the record of a point's last attempt."""
    return Path(out) / STATUS / f"{check_name(point_id, 'point id')}.json"


def read_status(out: str | os.PathLike[str], point_id: str) -> dict[str, Any] | None:
    """The status record of a point, or None when it has none (ValueError names a corrupted one)."""
    import json

    p = resolve_inside(out, f"{STATUS}/{check_name(point_id, 'point id')}.json", "sweep status")
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p} is not valid JSON ({e})") from None
    if not isinstance(rec, dict):
        raise ValueError(f"{p} must hold a JSON object, got {type(rec).__name__}")
    return rec


def read_step_index(directory: str | os.PathLike[str], what: str, fields: tuple[str, ...]) -> tuple[Path, list[dict[str, Any]]]:
    """`(path, entries)` of `directory/index.json` (no entries when there is none): a JSON list of
    objects, each with `fields` and a non-negative integer `step` listed once. ValueError names the
    file and the entry (`what` names the index in messages); the callers check their own fields."""
    p = resolve_inside(directory, INDEX, what)
    if not p.exists():
        return p, []
    index = read_json_file(p)
    if not isinstance(index, list):
        raise ValueError(f"{p} must hold a JSON list of {what} entries, got {type(index).__name__}")
    seen: set[int] = set()
    for i, e in enumerate(index):
        where = f"{p} entry {i}"
        if not isinstance(e, dict):
            raise ValueError(f"{where} must be a JSON object, got {type(e).__name__}")
        missing = [k for k in ("step", *fields) if k not in e]
        if missing:
            raise ValueError(f"{where} lacks {missing}")
        if not isinstance(e["step"], int) or isinstance(e["step"], bool) or e["step"] < 0:
            raise ValueError(f"{where}: step must be a non-negative integer, got {e['step']!r}")
        if e["step"] in seen:
            raise ValueError(f"{where}: step {e['step']} appears twice")
        seen.add(e["step"])
    return p, index
