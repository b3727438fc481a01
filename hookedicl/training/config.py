"""Typed training configuration (pydantic; YAML through `yaml.safe_load`).

Everything a run needs is here: model, task, curriculum, optimiser, steps, seeds, logging,
checkpoints, activation capture and evaluation. `TrainConfig.load(path)` validates the whole
config, including that the task and the model can be built and that every capture pattern names a
hook of the model, before any file is written.
"""

from __future__ import annotations

import math
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, StrictBool, field_validator, model_validator

from ..layout import NAME, check_name
from ..tasks import Curriculum

MAX_SEED = 2**63 - 2
"""Largest seed (the prompt generator is seeded with seed + 1, which must fit torch's int64)."""
MAX_PROMPT_NUMBERS = 2**24
"""Most numbers one prompt may hold (task.n_points * task.n_dims): validation samples one."""
DEVICE = re.compile(r"^(?:cpu|mps|cuda(?::[0-9]{1,3})?)$")


def _size(limit: int) -> Any:
    """A positive integer at most `limit` (a sanity bound; memory is checked by `preflight`)."""
    return Annotated[int, Field(gt=0, le=limit)]


def _takes_bool(tp: Any) -> bool:
    """Whether a field annotated `tp` accepts a boolean (bool, StrictBool, Any, or a union with one)."""
    if tp is bool or tp is Any:
        return True
    return any(_takes_bool(a) for a in typing.get_args(tp) if isinstance(a, type) or typing.get_origin(a) or a is Any)


def _nonfinite_path(value: Any, path: str) -> str | None:
    """Dotted path of the first NaN or infinite float inside `value`, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return None
    for k, v in items:
        found = _nonfinite_path(v, f"{path}.{k}" if path else str(k))
        if found:
            return found
    return None


def parse_init_from(value: str) -> tuple[Path, int | None]:
    """`"RUN_DIR"` -> (RUN_DIR, None); `"RUN_DIR:STEP"` -> (RUN_DIR, STEP)."""
    head, sep, tail = value.rpartition(":")
    if not (sep and head and tail) or "/" in tail:  # no ':STEP' suffix
        return Path(value), None
    if not tail.strip().isdigit():
        raise ValueError(f"init_from: the part after ':' must be a checkpoint step, got {tail!r} in {value!r}")
    return Path(head), int(tail)


class _Config(BaseModel):
    """Strict where YAML and pydantic would coerce: a boolean is never a number (`steps: true`),
    and no float may be NaN or infinite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, f in cls.model_fields.items():
                v = data.get(name)
                flags = v if isinstance(v, (list, tuple)) else [v]
                if any(isinstance(x, bool) for x in flags) and not _takes_bool(f.annotation):
                    raise ValueError(f"{name}: a boolean ({v!r}) is not a number; write the value itself")
        return data


class ModelConfig(_Config):
    """A preset plus size overrides. `n_dims` and `y_dim` come from the task."""

    arch: str = "gpt2"
    d_model: _size(2**16) = 256  # type: ignore[valid-type]
    n_layers: _size(1024) = 12  # type: ignore[valid-type]
    n_heads: _size(2**12) = 8  # type: ignore[valid-type]
    d_mlp: _size(2**20) | None = None  # type: ignore[valid-type]
    d_state: _size(2**12) = 16  # type: ignore[valid-type]
    expand: _size(64) = 4  # type: ignore[valid-type]
    d_conv: _size(2**10) = 4  # type: ignore[valid-type]
    n_ctx: _size(2**20) | None = None  # type: ignore[valid-type]  # default: 2 * n_points (enough for the final curriculum length)
    layout: Literal["garg", "akyurek", "paired"] | None = None  # None: the preset's layout
    init_std: PositiveFloat = 0.02

    def spec(self, n_dims: int, y_dim: int, n_points: int):
        from ..models import preset

        extra = {"layout": self.layout} if self.layout is not None else {}
        return preset(
            self.arch, n_dims=n_dims, y_dim=y_dim, d_model=self.d_model, n_layers=self.n_layers,
            n_heads=self.n_heads, d_mlp=self.d_mlp, d_state=self.d_state, expand=self.expand,
            d_conv=self.d_conv, n_ctx=self.n_ctx or 2 * n_points, init_std=self.init_std, **extra,
        )


class TaskConfig(_Config):
    name: str = "linear_regression"
    n_dims: _size(2**16) = 20  # type: ignore[valid-type]
    n_points: _size(2**19) = 41  # type: ignore[valid-type]  # prompt length once the curriculum is done (or throughout without one)
    kwargs: dict[str, Any] = Field(default_factory=dict)  # task-specific, e.g. {"noise_std": 0.5}
    ood: Any = None

    def build(self):
        from ..tasks import make_task

        return make_task(self.name, self.n_dims, **({"ood": self.ood} if self.ood is not None else {}), **self.kwargs)


class OptimConfig(_Config):
    name: Literal["adam", "adamw"] = "adam"
    lr: PositiveFloat = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: NonNegativeFloat = 0.0
    warmup_steps: NonNegativeInt = 0
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    grad_clip: PositiveFloat | None = None
    # a NaN/inf loss or gradient: "stop" raises TrainingDiverged (the last good checkpoint stays and
    # the run is resumable); "skip" drops that batch (no optimiser step) and stops only after
    # `max_skipped` skipped batches in total
    on_nonfinite: Literal["stop", "skip"] = "stop"
    max_skipped: PositiveInt = 10

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must lie in [0, 1), got {list(v)}")
        return v

    def lr_factor(self, step: int, total: int) -> float:
        """Multiplier of `lr` at `step` (0-based): linear warmup, then the schedule."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        frac = (step - self.warmup_steps) / max(1, total - self.warmup_steps)
        shape = 0.5 * (1 + math.cos(math.pi * frac)) if self.schedule == "cosine" else 1 - frac
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * shape


def _known_baselines(names: list[str]) -> list[str]:
    from ..baselines import registry

    unknown = [n for n in names if n not in registry.REGISTRY]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; valid names: {', '.join(registry.REGISTRY)}")
    return names


class LogConfig(_Config):
    every: PositiveInt = 100
    baselines: list[str] = Field(default_factory=lambda: ["least_squares"])  # losses on the training batch
    progress: bool = True

    _check_baselines = field_validator("baselines")(_known_baselines)


class CheckpointConfig(_Config):
    every: PositiveInt = 1000
    keep: PositiveInt | None = None  # keep the newest N (None: all)


class CaptureConfig(_Config):
    """Activations recorded during training (from the training forward itself)."""

    hooks: list[str] = Field(default_factory=list)  # hook names or fnmatch patterns, e.g. "blocks.*.hook_resid_post"
    every: PositiveInt = 500
    n_prompts: PositiveInt | None = None  # first N prompts of the batch (None: all of it)
    positions: Literal["all", "x", "y"] | list[NonNegativeInt] = "all"  # token positions kept
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"


class EvalConfig(_Config):
    n_prompts: _size(2**30) = 1280  # type: ignore[valid-type]
    batch_size: _size(2**24) = 256  # type: ignore[valid-type]
    baselines: list[str] = Field(default_factory=lambda: ["least_squares", "ridge", "gd", "averaging"])
    baseline_kwargs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    score_baseline: str = "least_squares"
    seed: int = Field(1234, ge=0, le=MAX_SEED)

    _check_baselines = field_validator("baselines")(_known_baselines)

    @field_validator("score_baseline")
    @classmethod
    def _known_score_baseline(cls, v: str) -> str:
        _known_baselines([v])
        return v

    @model_validator(mode="after")
    def _baseline_settings(self) -> "EvalConfig":
        from ..baselines import get

        for name, kwargs in self.baseline_kwargs.items():
            try:
                get(name, **kwargs)
            except (ValueError, TypeError) as e:
                raise ValueError(f"baseline_kwargs.{name}: {e}") from None
        return self


class TrainConfig(_Config):
    name: str = "run"  # one path component: the default output is runs/<name>
    seed: int = Field(0, ge=0, le=MAX_SEED)
    steps: _size(2**40) = 1000  # type: ignore[valid-type]
    batch_size: _size(2**24) = 64  # type: ignore[valid-type]
    threads: _size(1024) | None = None  # type: ignore[valid-type]  # torch intra-op threads; None: every core (hookedicl.training.threads)
    device: str = "cpu"  # cpu, cuda, cuda:N or mps; must exist on the machine that trains (`preflight`)
    # torch.compile the model for the steps that capture nothing (capture steps run it eagerly, so
    # their hooks fire); one compilation per prompt length of the curriculum. docs/training.md
    # has what it cost and gained here.
    compile: StrictBool = False
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    curriculum: Curriculum | None = None
    optim: OptimConfig = Field(default_factory=OptimConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    # fine-tuning: start from another run's weights, "RUN_DIR" (its newest good checkpoint) or
    # "RUN_DIR:STEP"; the architecture must match; the lineage goes to RUN/lineage.json
    init_from: str | None = None

    @field_validator("name")
    @classmethod
    def _name_is_one_component(cls, v: str) -> str:
        return check_name(v, "name")

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, v: str) -> str:
        if not DEVICE.match(v):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {v!r}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _finite(cls, data: Any) -> Any:
        where = _nonfinite_path(data, "") if isinstance(data, dict) else None
        if where:
            raise ValueError(f"{where}: NaN and infinite values are not allowed")
        return data

    @field_validator("init_from")
    @classmethod
    def _init_from_syntax(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("init_from must be 'RUN_DIR' or 'RUN_DIR:STEP', got an empty string")
        if v is not None:
            parse_init_from(v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.curriculum is not None:
            dims, points = self.curriculum.final
            if dims > self.task.n_dims:
                raise ValueError(f"curriculum.dims.end={dims} exceeds task.n_dims={self.task.n_dims}")
            if points != self.task.n_points:
                raise ValueError(
                    f"curriculum.points.end={points} must equal task.n_points={self.task.n_points}"
                )
        if self.capture.hooks and self.capture.n_prompts and self.capture.n_prompts > self.batch_size:
            raise ValueError(f"capture.n_prompts={self.capture.n_prompts} exceeds batch_size={self.batch_size}")
        if isinstance(self.capture.positions, list):
            # captures happen at every curriculum stage: the positions must exist in the shortest prompt
            first = self.curriculum.points.start if self.curriculum is not None else self.task.n_points
            n_tokens = 2 * first
            bad = [p for p in self.capture.positions if p >= n_tokens]
            if bad:
                stage = f"the curriculum's first stage ({first} points)" if self.curriculum is not None else f"{first} points"
                raise ValueError(
                    f"capture.positions {bad} lie beyond the prompt: {stage} are {n_tokens} tokens (0..{n_tokens - 1}); "
                    "use 'x', 'y' or 'all' to capture every token of each stage"
                )
        if self.task.n_points * self.task.n_dims > MAX_PROMPT_NUMBERS:
            raise ValueError(
                f"task: one prompt of n_points={self.task.n_points} x n_dims={self.task.n_dims} holds more than "
                f"{MAX_PROMPT_NUMBERS} numbers"
            )
        try:
            task = self.task.build()
        except (ValueError, TypeError) as e:
            raise ValueError(f"task: {e}") from e
        # one tiny prompt at the curriculum's first and last stage (catches e.g. sparse k > dims.start)
        import torch

        c = self.curriculum
        stages = {"at step 0": c.at(0), "at its end": c.final} if c else {"": (task.n_dims, self.task.n_points)}
        for when, (dims, points) in stages.items():
            try:
                with torch.random.fork_rng(devices=[]):
                    task.sample(1, points, generator=torch.Generator().manual_seed(0), n_dims_active=dims)
            except (ValueError, TypeError) as e:
                where = f"curriculum: {when} (dims={dims}, points={points})" if c else f"task (n_points={points})"
                raise ValueError(f"{where} the task cannot be sampled: {e}") from e
        try:
            spec = self.model.spec(task.n_dims, task.y_dim, self.task.n_points)
        except (ValueError, TypeError) as e:
            raise ValueError(f"model: {e}") from e
        if self.capture.hooks:
            from ..models.hooks import hook_catalogue
            from .recorder import resolve_hooks

            # hook names only: the analytic catalogue builds no model and touches no RNG
            resolve_hooks(hook_catalogue(spec), self.capture.hooks)
        return self

    # --------------------------------------------------------------- io
    @classmethod
    def load(cls, path: str | Path, *, stored: bool = False) -> "TrainConfig":
        """Read and validate a YAML config (strict, bounded YAML: `hookedicl.io.load_yaml`);
        every error is a ValueError naming the file and the field.

        `stored=True` reads a run directory's own config.yaml: a sweep point's name written by
        earlier versions as `SWEEP/POINT` (two safe components) is read as `SWEEP.POINT`."""
        from ..io import read_yaml_file

        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file not found: {p}")
        data = read_yaml_file(p)
        if stored and isinstance(data, dict) and isinstance(data.get("name"), str):
            head, sep, tail = data["name"].partition("/")
            if sep and NAME.match(head) and NAME.match(tail):
                data["name"] = f"{head}.{tail}"
        return cls._from_data(data, str(p))

    @classmethod
    def from_yaml(cls, text: str, source: str = "config") -> "TrainConfig":
        from ..io import load_yaml

        return cls._from_data(load_yaml(text, source), source)

    @classmethod
    def _from_data(cls, data: Any, source: str) -> "TrainConfig":
        from pydantic import ValidationError

        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a config must be a YAML mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ValueError(f"{source}: {validation_message(e)}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def build_task(self):
        return self.task.build()

    def build_spec(self):
        task = self.build_task()
        return self.model.spec(task.n_dims, task.y_dim, self.task.n_points)


def validation_message(e: Any) -> str:
    """A pydantic ValidationError on one line: `field.path: message; ...`."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = " ".join(str(err["msg"]).split()).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
