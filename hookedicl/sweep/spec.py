"""The sweep file: a typed spec and its expansion into points (one training config each).

A sweep YAML names a base training config and the fields that vary, by dotted path into the
training config (`model.arch`, `task.name`, `seed`, `optim.lr`, `task.kwargs.k`, ...)::

    name: zoo_cpu
    base: ../demo.yaml            # a training-config file (relative to this file) or a mapping
    set: {threads: 1}             # dotted overrides applied to every point
    grid:                         # Cartesian product
      model.arch: [gpt2, llama, mamba]
      seed: [0, 1]
    variants:                     # named bundles of overrides, crossed with the grid
      linear: {task.name: linear_regression, eval.score_baseline: least_squares}
      sparse: {task.name: sparse_linear_regression, eval.score_baseline: lasso}
    points:                       # an explicit list of override mappings, crossed with the rest
      - {optim.lr: 0.0005}
    results: {error_at_k: [5, 10]}

`SweepSpec.expand()` validates every point's full config (and samples its task once at the
start and end of its curriculum) before anything runs or is written; errors name the sweep field
and the point.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, ValidationError, field_validator

from ..training import TrainConfig

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAX_ID = 120
VARIANT = "variant"
"""Results column (and point-id key) holding the variant name."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResultsSpec(_Strict):
    """What the aggregated results report.

    `error_at_k`: context lengths k at which the normalised error (with its CI) is reported
    (default: k = n_dims and 2 * n_dims where they fit in the prompt). `rows` / `columns`: the
    sweep axes (dotted paths, or `variant`) of the summary table in results.md; defaults: the
    columns are the variants (or `task.name` when it is a grid axis), the rows every other varied
    field except `seed`; the summary averages over whatever is left (the seeds).
    """

    error_at_k: list[NonNegativeInt] | None = None
    rows: list[str] | None = None
    columns: list[str] | None = None


class ResourcesSpec(_Strict):
    """Resources declared per point (used by the Ray executor and to size the local pool).

    Defaults: `num_cpus` = the config's `threads` (1 when unset), `num_gpus` = 1 when the config's
    `device` is CUDA, else 0.
    """

    num_cpus: PositiveFloat | None = None
    num_gpus: NonNegativeFloat | None = None


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: its directory name, the overrides that define it, its config.

    `labels` maps each sweep axis (dotted path, or `variant`) to this point's value on it;
    `overrides` maps every dotted path set for this point (variant bundles expanded) to its value.
    """

    id: str
    index: int
    labels: dict[str, Any]
    overrides: dict[str, Any]
    config: TrainConfig = field(repr=False)
    num_cpus: float = 1.0
    num_gpus: float = 0.0


class SweepSpec(_Strict):
    """A sweep: base training config + the fields that vary (see the module docstring)."""

    name: str
    base: str | dict[str, Any] = Field(default_factory=dict)
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    points: list[dict[str, Any]] = Field(default_factory=list)
    evaluate: bool = True
    results: ResultsSpec = Field(default_factory=ResultsSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    base_dir: str | None = Field(default=None, exclude=True)  # where a relative `base` path is resolved

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"name must match {_NAME.pattern} (it names the output directory), got {v!r}")
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            check_path(key, f"grid[{key!r}]")
            if not values:
                raise ValueError(f"grid[{key!r}] is an empty list; give at least one value")
            dupes = [x for i, x in enumerate(values) if x in values[:i]]
            if dupes:
                raise ValueError(f"grid[{key!r}] repeats value(s) {dupes}")
        return v

    @field_validator("set")
    @classmethod
    def _set(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            check_path(key, f"set[{key!r}]")
        return v

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, bundle in v.items():
            if not _NAME.match(name):
                raise ValueError(f"variants: name {name!r} must match {_NAME.pattern}")
            for key in bundle:
                check_path(key, f"variants[{name!r}][{key!r}]")
        return v

    @field_validator("points")
    @classmethod
    def _points(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, bundle in enumerate(v):
            for key in bundle:
                check_path(key, f"points[{i}][{key!r}]")
        return v

    # --------------------------------------------------------------- io
    @classmethod
    def load(cls, path: str | Path) -> "SweepSpec":
        """Read and validate a sweep YAML file (a relative `base` path is resolved next to it)."""
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"sweep file not found: {p}")
        return cls.from_yaml(p.read_text(), base_dir=p.resolve().parent)

    @classmethod
    def from_yaml(cls, text: str, base_dir: str | Path | None = None) -> "SweepSpec":
        from ..io import load_yaml

        data = load_yaml(text, "sweep")
        if not isinstance(data, dict):
            raise ValueError(f"a sweep file must be a YAML mapping, got {type(data).__name__}")
        if "base_dir" in data:
            raise ValueError("base_dir is not a sweep-file field (a relative `base` is resolved next to the file)")
        try:
            return cls.model_validate({**data, "base_dir": str(base_dir) if base_dir is not None else None})
        except ValidationError as e:
            raise ValueError(f"invalid sweep: {_errors(e)}") from None

    def base_config(self) -> dict[str, Any]:
        """The base training config as a plain mapping (read from `base` when it is a path)."""
        if isinstance(self.base, dict):
            return copy.deepcopy(self.base)
        p = Path(self.base)
        if not p.is_absolute() and self.base_dir is not None:
            p = Path(self.base_dir) / p
        if not p.is_file():
            raise ValueError(f"base: training config file not found: {p}")
        from ..io import read_yaml_file

        data = read_yaml_file(p)
        if not isinstance(data, dict):
            raise ValueError(f"base: {p} must hold a YAML mapping, got {type(data).__name__}")
        return data

    def resolved(self) -> "SweepSpec":
        """This spec with `base` inlined (what a sweep directory stores as sweep.yaml)."""
        return self.model_copy(update={"base": self.base_config()})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    # --------------------------------------------------------------- expansion
    def axes(self) -> list[str]:
        """The sweep axes in point-id order: point keys, `variant`, grid keys."""
        keys: list[str] = []
        for bundle in self.points:
            keys += [k for k in bundle if k not in keys]
        if self.variants:
            keys.append(VARIANT)
        return keys + [k for k in self.grid if k not in keys]

    def table_axes(self) -> tuple[list[str], list[str]]:
        """(rows, columns) of the summary table in results.md (see `ResultsSpec`)."""
        axes = self.axes()
        cols = self.results.columns
        if cols is None:
            cols = [VARIANT] if self.variants else (["task.name"] if "task.name" in axes else [])
        rows = self.results.rows
        if rows is None:
            rows = [a for a in axes if a not in cols and a != "seed"]
        for what, names in (("rows", rows), ("columns", cols)):
            bad = [n for n in names if n not in axes]
            if bad:
                raise ValueError(f"results.{what}: {bad} are not sweep axes {axes}")
        return rows, cols

    def expand(self) -> list[SweepPoint]:
        """Every point of the sweep, each with a validated `TrainConfig`.

        Raises ValueError naming the sweep field (and point) for an unknown or conflicting field,
        an invalid value (including a task that cannot be sampled under the point's curriculum,
        which TrainConfig checks), an `error_at_k` outside a point's prompt, or two points that
        would share a directory.
        """
        if not (self.grid or self.variants or self.points):
            raise ValueError("a sweep needs at least one of grid, variants or points")
        self.table_axes()
        varied = {k for b in [self.grid, *self.variants.values(), *self.points] for k in b}
        dead = sorted(k for k in self.set if k in varied)
        if dead:
            raise ValueError(f"set{dead} are also varied by grid, variants or points; remove them from set")
        base = self.base_config()
        base.pop("name", None)
        factors: list[list[tuple[str, dict[str, Any], dict[str, Any]]]] = []  # (where, labels, overrides)
        if self.points:
            factors.append([(f"points[{i}]", dict(b), dict(b)) for i, b in enumerate(self.points)])
        if self.variants:
            factors.append([(f"variants[{n!r}]", {VARIANT: n}, dict(b)) for n, b in self.variants.items()])
        if self.grid:
            keys = list(self.grid)
            factors.append([
                (", ".join(f"grid[{k!r}]={v!r}" for k, v in zip(keys, combo)), dict(zip(keys, combo)), dict(zip(keys, combo)))
                for combo in itertools.product(*(self.grid[k] for k in keys))
            ])
        short = _short_names(self.axes())
        points: list[SweepPoint] = []
        seen: dict[str, str] = {}
        for index, combo in enumerate(itertools.product(*factors)):
            labels: dict[str, Any] = {}
            overrides: dict[str, Any] = {}
            owner: dict[str, str] = {}
            for where, lab, over in combo:
                labels.update(lab)
                for key, value in over.items():
                    clash = next((k for k in owner if _overlaps(k, key)), None)
                    if clash is not None:
                        raise ValueError(f"{where} sets {key!r}, which overlaps {clash!r} set by {owner[clash]}")
                    owner[key] = where
                    overrides[key] = value
            where = "; ".join(w for w, _, _ in combo)
            pid = point_id(labels, short)
            if pid in seen:
                raise ValueError(f"two points get the directory name {pid!r}: {seen[pid]} and {where}")
            seen[pid] = where
            config = self._point_config(base, overrides, pid, where)
            points.append(SweepPoint(pid, index, labels, overrides, config, *self._resources(config)))
        return points

    def _point_config(self, base: dict[str, Any], overrides: dict[str, Any], pid: str, where: str) -> TrainConfig:
        data = copy.deepcopy(base)
        for key, value in self.set.items():
            set_path(data, key, value, f"set[{key!r}]")
        for key, value in overrides.items():
            set_path(data, key, value, f"point {pid!r} ({where})")
        data["name"] = f"{self.name}.{pid}"[:200]  # one path component (hookedicl.layout.check_name)
        try:
            cfg = TrainConfig.model_validate(data)
        except ValidationError as e:
            raise ValueError(f"point {pid!r} ({where}): invalid training config: {_errors(e)}") from None
        ks = self.results.error_at_k or []
        bad = [k for k in ks if k >= cfg.task.n_points]
        if bad:
            raise ValueError(
                f"results.error_at_k: k={bad} outside the prompt of point {pid!r} (task.n_points={cfg.task.n_points}: k < n_points)"
            )
        return cfg

    def _resources(self, cfg: TrainConfig) -> tuple[float, float]:
        cpus = self.resources.num_cpus if self.resources.num_cpus is not None else float(cfg.threads or 1)
        gpus = self.resources.num_gpus
        if gpus is None:
            gpus = 1.0 if cfg.device.startswith("cuda") else 0.0
        return float(cpus), float(gpus)


# ------------------------------------------------------------------- dotted paths
def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model class inside `annotation` (e.g. `Curriculum | None`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _free_form(annotation: Any) -> bool:
    """True for a field holding arbitrary mappings (`dict[...]`, `Any`): sub-keys are not checked."""
    if annotation is Any or annotation is dict or typing.get_origin(annotation) is dict:
        return True
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and any(
        _free_form(a) for a in typing.get_args(annotation)
    )


def check_path(path: str, where: str) -> None:
    """Raise ValueError (naming `where`) unless `path` is a dotted path into `TrainConfig`."""
    if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
        raise ValueError(f"{where}: {path!r} is not a dotted config path such as 'model.arch'")
    parts = path.split(".")
    if parts[0] == "name":
        raise ValueError(f"{where}: 'name' is set by the sweep (<sweep name>/<point id>) and cannot be varied")
    model: type[BaseModel] | None = TrainConfig
    for i, part in enumerate(parts):
        if model is None:  # below a free-form mapping
            return
        fields = model.model_fields
        prefix = ".".join(parts[:i]) or "the training config"
        if part not in fields:
            raise ValueError(f"{where}: {prefix} has no field {part!r} (fields: {', '.join(fields)})")
        annotation = fields[part].annotation
        model = _model_in(annotation)
        if model is None and not _free_form(annotation) and i < len(parts) - 1:
            raise ValueError(f"{where}: {'.'.join(parts[: i + 1])} is a value, not a mapping; cannot set {path!r}")


def set_path(data: dict[str, Any], path: str, value: Any, where: str) -> None:
    """Set `data[a][b][c] = value` for path 'a.b.c', creating missing (or null) mappings."""
    parts = path.split(".")
    cur = data
    for i, part in enumerate(parts[:-1]):
        nxt = cur.get(part)
        if nxt is None:
            nxt = cur[part] = {}
        elif not isinstance(nxt, dict):
            raise ValueError(f"{where}: cannot set {path!r}: {'.'.join(parts[: i + 1])} is {nxt!r}, not a mapping")
        cur = nxt
    cur[parts[-1]] = copy.deepcopy(value)


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _errors(e: ValidationError) -> str:
    """A pydantic error as 'field: message; ...' (without pydantic's 'Value error, ' prefixes)."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(msg if not loc or msg.startswith(f"{loc}[") else f"{loc}: {msg}")
    return "; ".join(parts)


# ------------------------------------------------------------------- point ids
def _short_names(axes: list[str]) -> dict[str, str]:
    """Axis -> name used in point ids: the last path component, unless two axes share it."""
    last = [a.rsplit(".", 1)[-1] for a in axes]
    return {a: (s if last.count(s) == 1 else a) for a, s in zip(axes, last)}


def format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)) or value is None:
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def point_id(labels: dict[str, Any], short: dict[str, str]) -> str:
    """Directory name of a point, e.g. `variant=linear__arch=gpt2__seed=0` (safe characters only)."""
    if not labels:
        return "base"
    raw = "__".join(f"{short.get(k, k)}={format_value(v)}" for k, v in labels.items())
    safe = re.sub(r"[^A-Za-z0-9._=+-]+", "-", raw)
    if len(safe) > _MAX_ID or safe != raw:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        safe = f"{safe[: _MAX_ID - 9]}-{digest}"
    return safe
