"""Typed training configuration (pydantic; YAML through `yaml.safe_load`).

Everything a run needs is here: model, task, curriculum, optimiser, steps, seeds, logging,
checkpoints, activation capture and evaluation. `TrainConfig.load(path)` validates the whole
config, including that the task and the model can be built and that every capture pattern names a
hook of the model, before any file is written.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, StrictBool, field_validator, model_validator

from ..tasks import Curriculum


def parse_init_from(value: str) -> tuple[Path, int | None]:
    """`"RUN_DIR"` -> (RUN_DIR, None); `"RUN_DIR:STEP"` -> (RUN_DIR, STEP)."""
    head, sep, tail = value.rpartition(":")
    if not (sep and head and tail) or "/" in tail:  # no ':STEP' suffix
        return Path(value), None
    if not tail.strip().isdigit():
        raise ValueError(f"init_from: the part after ':' must be a checkpoint step, got {tail!r} in {value!r}")
    return Path(head), int(tail)


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Config):
    """A preset plus size overrides. `n_dims` and `y_dim` come from the task."""

    arch: str = "gpt2"
    d_model: PositiveInt = 256
    n_layers: PositiveInt = 12
    n_heads: PositiveInt = 8
    d_mlp: PositiveInt | None = None
    d_state: PositiveInt = 16
    expand: PositiveInt = 4
    d_conv: PositiveInt = 4
    n_ctx: PositiveInt | None = None  # default: 2 * n_points (enough for the final curriculum length)
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
    n_dims: PositiveInt = 20
    n_points: PositiveInt = 41  # prompt length once the curriculum is done (or throughout without one)
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
    n_prompts: PositiveInt = 1280
    batch_size: PositiveInt = 256
    baselines: list[str] = Field(default_factory=lambda: ["least_squares", "ridge", "gd", "averaging"])
    baseline_kwargs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    score_baseline: str = "least_squares"
    seed: int = 1234

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
    name: str = "run"
    seed: int = 0
    steps: PositiveInt = 1000
    batch_size: PositiveInt = 64
    threads: PositiveInt | None = None  # torch intra-op threads; None: every core (hookedicl.training.threads)
    device: str = "cpu"
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
            import torch

            from ..models import HookedICLModel
            from .recorder import resolve_hooks

            # hook names only: build on the meta device, without touching the global RNG
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                resolve_hooks(HookedICLModel(spec).hook_dict, self.capture.hooks)
        return self

    # --------------------------------------------------------------- io
    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file not found: {p}")
        return cls.from_yaml(p.read_text())

    @classmethod
    def from_yaml(cls, text: str) -> "TrainConfig":
        data = yaml.safe_load(text)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a YAML mapping, got {type(data).__name__}")
        return cls.model_validate(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def build_task(self):
        return self.task.build()

    def build_spec(self):
        task = self.build_task()
        return self.model.spec(task.n_dims, task.y_dim, self.task.n_points)
