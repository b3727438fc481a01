"""A run directory and the `Run` object that reads it.

    runs/<name>/
      config.yaml       resolved, validated config
      checkpoints/      step_0000500.safetensors + .state.pt, index.json (sha256)
      activations/      step_0000000.safetensors ..., index.json
      metrics.jsonl     one JSON object per log step
      eval/             summary.json, curves.csv
      analysis/         analysis tables and figures
      report/           index.html + figures
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_text, read_json_file
from ..layout import CHECKPOINTS, CONFIG, EVAL, INDEX, LOCK, METRICS, SUMMARY, UnsafePathError, check_run_layout, resolve_inside
from .checkpoints import latest_good, list_checkpoints, load_weights
from .checkpoints import read_index as read_checkpoint_index
from .config import TrainConfig
from .recorder import ActivationStore


class RunLockedError(RuntimeError):
    pass


class SpecMismatchError(ValueError):
    """A checkpoint's own ModelSpec differs from the model its run's config.yaml describes."""


class Run:
    """Read access to a run directory (config, checkpoints, metrics, activations, eval).

    The directory is untrusted input (see hookedicl.layout): its own entries must not be
    symlinks, and every file an index names must lie inside it."""

    def __init__(self, path: "str | Path | Run") -> None:
        self.path = Path(path.path if isinstance(path, Run) else path)
        if not self.path.is_dir() or not resolve_inside(self.path, CONFIG, f"run {self.path}").is_file():
            raise ValueError(f"{self.path} is not a run directory (no config.yaml)")
        check_run_layout(self.path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # ------------------------------------------------------------ contents
    @property
    def config(self) -> TrainConfig:
        return TrainConfig.load(resolve_inside(self.path, CONFIG, f"run {self.path}"), stored=True)

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def checkpoints(self) -> list[int]:
        return list_checkpoints(self.checkpoint_dir)

    @property
    def activations(self) -> ActivationStore:
        return ActivationStore(self.path / "activations")

    def load_model(self, step: int | None = None, device: str | torch.device = "cpu"):
        """The model at checkpoint `step` (default: newest good checkpoint), in eval mode.

        Raises `SpecMismatchError` when the checkpoint's own ModelSpec (in its safetensors
        metadata) differs from the model config.yaml describes: the config would be mislabelled."""
        from ..models import HookedICLModel, ModelSpec

        state, spec, got = load_weights(self.checkpoint_dir, step)
        check_spec(spec, self.config, f"{self.path}: checkpoint at step {got}")
        model = HookedICLModel(ModelSpec.from_dict(spec))
        model.load_state_dict(state)
        return model.to(device).eval()

    def task(self):
        return self.config.build_task()

    def metrics(self, *, repair: bool = False):
        """metrics.jsonl as a pandas DataFrame (see `read_metrics`: a malformed line is an error
        naming the file and line unless `repair`, which skips it with a warning)."""
        import pandas as pd

        return pd.DataFrame(read_metrics(self.path / METRICS, repair=repair))

    @property
    def lineage(self) -> dict[str, Any] | None:
        """RUN/lineage.json (fine-tunes and merges), None for a run trained from scratch."""
        from .lineage import read_lineage

        return read_lineage(self.path)

    def eval_summary(self) -> dict[str, Any]:
        p = resolve_inside(self.path, f"{EVAL}/{SUMMARY}", f"run {self.path}")
        if not p.exists():
            raise ValueError(f"{self.path} has not been evaluated yet (run `hookedicl eval {self.path}`)")
        summary = read_json_file(p)
        if not isinstance(summary, dict):
            raise ValueError(f"{p} must hold a JSON object, got {type(summary).__name__}")
        return summary

    # ---------------------------------------------------------- glue the analyses share
    @classmethod
    def of(cls, run: "Run | str | Path") -> "Run":
        """`run` itself if it is a `Run`, else `Run(run)` (a run directory's path)."""
        return run if isinstance(run, cls) else cls(run)

    def prompts(self, n_prompts: int, seed: int = 0) -> Any:
        """`n_prompts` prompts (a `TaskBatch`) from the run's task at its final prompt length and
        active dimension (the curriculum's end point), seeded."""
        if not isinstance(n_prompts, int) or isinstance(n_prompts, bool) or n_prompts < 2:
            raise ValueError(f"n_prompts must be an int >= 2, got {n_prompts!r}")
        cfg = self.config
        active = cfg.curriculum.final[0] if cfg.curriculum is not None else None
        g = torch.Generator().manual_seed(int(seed))
        return self.task().sample(batch_size=n_prompts, n_points=cfg.task.n_points, generator=g, n_dims_active=active)

    def score_baseline(self) -> Any:
        """The predictor the run's ICL score is measured against (`eval.score_baseline`, with its
        `eval.baseline_kwargs`)."""
        from ..baselines import get

        name = self.config.eval.score_baseline
        return get(name, **self.config.eval.baseline_kwargs.get(name, {}))


def check_spec(spec: dict[str, Any], cfg: TrainConfig, what: str) -> None:
    """Raise `SpecMismatchError` naming the differing fields when checkpoint spec dict `spec`
    is not the model `cfg` builds (or carries no spec at all)."""
    if not spec:
        raise SpecMismatchError(f"{what} carries no model spec in its safetensors metadata; cannot check it against config.yaml")
    ours = json.loads(json.dumps(cfg.build_spec().to_dict()))
    if spec != ours:
        diff = sorted(k for k in set(ours) | set(spec) if ours.get(k) != spec.get(k))
        raise SpecMismatchError(
            f"{what} holds a {spec.get('name', '?')} model, but config.yaml describes {ours.get('name', '?')} "
            f"(they differ in {diff}); the config was edited or the weights belong to another run"
        )


def read_metrics(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl, in file order.

    A line that is not a JSON object with an integer `step` is a ValueError naming the file and
    line number; `repair=True` skips such lines with a warning instead. The one exception is a
    last line without its newline (a write torn by a crash), which is dropped silently."""
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"{path} is a symlink; a run directory is read only without symlinks")
    if not path.exists():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline
    rows = []
    for i, line in enumerate(lines, start=1):
        problem = _metrics_problem(line)
        if problem is None:
            rows.append(json.loads(line))
            continue
        msg = f"{path} line {i}: {problem}"
        if not repair:
            raise ValueError(f"{msg}; fix or delete the line, or repair explicitly (--repair-metrics) to skip it")
        warnings.warn(f"{msg}; skipped (repair)", stacklevel=2)
    if torn.strip() and _metrics_problem(torn) is None:
        rows.append(json.loads(torn))
    return rows


def _metrics_problem(line: str) -> str | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        return f"not valid JSON ({e.msg})"
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    step = row.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"'step' must be a non-negative integer, got {step!r}"
    return None


class MetricsLog:
    """Append-only metrics.jsonl; each line is flushed and fsynced."""

    def __init__(self, path: Path, *, repair: bool = False) -> None:
        self.path = path
        self.repair = repair

    def truncate_after(self, step: int) -> None:
        """Keep the rows logged at steps <= `step` (by step number, in file order)."""
        rows = [r for r in read_metrics(self.path, repair=self.repair) if r["step"] <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def run_lock(path: Path):
    """Exclusive lock on a run directory (`.lock` holding the pid); a stale lock is taken over."""
    lock = path / LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise RunLockedError(f"{path} is being written by process {pid} (lock file {lock})") from None
            lock.unlink(missing_ok=True)
    else:  # pragma: no cover
        raise RunLockedError(f"could not lock {path}")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


RESUME_MAY_CHANGE = frozenset({"steps", "compile", "name"})
"""Config fields a resumed run may change: how far to train, whether to compile, and the name
(a label: the directory is what identifies the run)."""


def prepare_run_dir(path: Path, cfg: TrainConfig, resume: bool, *, restart: bool = False) -> dict[str, Any] | None:
    """Check the output location before training; returns the checkpoint entry to resume from.

    Call it holding `run_lock(path)`: the checks and the writes that follow must not interleave
    with another writer's. Raises ValueError when the directory holds another run (without
    `resume`), when a resumed config differs from the stored one (other than
    `RESUME_MAY_CHANGE`), when the run's entries are symlinks, when a run that has trained
    (metrics or checkpoints) has no usable checkpoint left and `restart` is not set, or when
    the location is unwritable or too small. Writes nothing.
    """
    check_run_layout(path)
    stored = resolve_inside(path, CONFIG, f"run {path}")
    entry = None
    if stored.exists():
        if not resume:
            raise ValueError(f"{path} already holds a run; pass resume=True (--resume) or choose another output")
        old = TrainConfig.load(stored, stored=True).model_dump(exclude=RESUME_MAY_CHANGE)
        new = cfg.model_dump(exclude=RESUME_MAY_CHANGE)
        if old != new:
            diff = sorted(k for k in new if old.get(k) != new.get(k))
            raise ValueError(f"cannot resume {path}: config differs from the stored one in {diff}")
        entry = _resume_entry(path, restart)
    elif path.exists() and any(p.name != LOCK for p in path.iterdir()):
        raise ValueError(f"{path} exists, is not empty and holds no run; choose another output")
    parent = path if path.exists() else next(p for p in path.parents if p.exists())
    _check_writable(parent)
    need = estimate_run_bytes(cfg, start=entry["step"] if entry else 0)
    free = shutil.disk_usage(parent).free
    if need > free:
        raise ValueError(
            f"not enough free space at {parent}: the run needs about {need / 2**20:.1f} MiB "
            f"(checkpoints, activations, metrics), {free / 2**20:.1f} MiB are free"
        )
    return entry


def _resume_entry(path: Path, restart: bool) -> dict[str, Any] | None:
    """The checkpoint a resume continues from; None (start at step 0) only when the run never
    trained (no metrics, no checkpoints) or `restart` says so."""
    ckpts = path / CHECKPOINTS
    index = ckpts / INDEX
    try:
        entries = read_checkpoint_index(ckpts)
    except UnsafePathError:
        raise  # a crafted index is never "repaired" by a restart: someone must look at it
    except ValueError as e:
        entries, problem = [], str(e)
    else:
        problem = None
    if entries:
        entry = latest_good(ckpts)
        if entry is not None:
            return entry
        problem = f"every checkpoint listed in {index} is missing or corrupted"
    elif problem is None:
        has_metrics = bool(read_metrics(path / METRICS, repair=True))
        if index.exists():
            problem = f"{index} lists no checkpoint"
        elif ckpts.is_dir() and any(ckpts.iterdir()):
            problem = f"{index} is missing"
        elif has_metrics:
            problem = f"{path / METRICS} holds logged steps but there is no checkpoint"
        else:
            return None  # stopped before its first log line: nothing to lose
    if restart:
        warnings.warn(f"restarting {path} from step 0 as asked: {problem}", stacklevel=3)
        return None
    raise ValueError(
        f"cannot resume {path}: {problem}; it will not start over on its own: pass restart=True (--restart) "
        f"to train it again from step 0, discarding its metrics, checkpoints and activations"
    )


def _check_writable(directory: Path) -> None:
    """Create and delete a probe file (os.access is not enough: root passes it everywhere)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".hookedicl-probe-", suffix=".tmp", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"output location {directory} is not writable ({e.strerror})") from None


def estimate_run_bytes(cfg: TrainConfig, start: int = 0) -> int:
    """Upper estimate of the bytes a run writes from step `start` on: the checkpoints kept at
    once (fp32 weights + Adam moments) plus every activation shard plus metrics lines."""
    spec = cfg.build_spec()
    n_params = spec.n_params
    remaining = max(cfg.steps - start, 0)
    n_ckpt = remaining // cfg.checkpoint.every + 1
    if cfg.checkpoint.keep is not None:
        n_ckpt = min(n_ckpt, cfg.checkpoint.keep + 1)
    total = n_ckpt * (12 * n_params + 2**16) + (remaining // cfg.log.every + 1) * 512
    if cfg.capture.hooks:
        from ..models.hooks import hook_catalogue
        from .recorder import resolve_hooks

        shapes = {name: shape[1:] for name, shape in hook_catalogue(spec, batch=1, n_points=cfg.task.n_points).items()}
        names = set(resolve_hooks(shapes, cfg.capture.hooks))
        n = cfg.capture.n_prompts or cfg.batch_size
        per_prompt = sum(math.prod(shape) for name, shape in shapes.items() if name in names)
        itemsize = torch.empty((), dtype=getattr(torch, cfg.capture.dtype)).element_size()
        n_shards = remaining // cfg.capture.every + 2
        total += n_shards * n * (per_prompt * itemsize + 4 * cfg.task.n_points * (cfg.task.n_dims + 2) + 4096)
    return int(total)


def estimate_memory_bytes(cfg: TrainConfig) -> dict[str, int]:
    """Estimated peak memory of training `cfg` (bytes), from the config alone.

    `state`: fp32 weights, gradients and both Adam moments (16 bytes per parameter);
    `activations`: what one training step keeps for the backward pass (per token and layer:
    residual stream and norms, q/k/v and head outputs, attention scores and pattern, MLP
    hidden units, Mamba projections and scan states), plus the batch and the logged baselines'
    per-prompt least-squares systems; `eval`: one evaluation batch without gradients. `total`
    is state + the larger of activations and eval.
    """
    from ..models.spec import AttentionSpec, MambaSpec, MLPSpec, SwiGLUSpec

    spec = cfg.build_spec()
    d, T = spec.d_model, 2 * cfg.task.n_points

    def per_token(slot: Any) -> int:
        if isinstance(slot, AttentionSpec):
            return 6 * d + 2 * slot.n_heads * T
        if isinstance(slot, (MLPSpec, SwiGLUSpec)):
            return 4 * (slot.d_mlp or 4 * d)
        if isinstance(slot, MambaSpec):
            di = slot.expand * d
            return 10 * di + 2 * slot.d_state + di * slot.d_state
        return 0

    layers = [4 * d + per_token(b.mixer) + per_token(b.ffn) for b in spec.blocks]
    baselines = 4 * cfg.task.n_points * (cfg.task.n_dims + 2) ** 2  # per prompt
    state = 16 * spec.n_params
    acts = 4 * cfg.batch_size * (T * (spec.d_in + 4 * d + sum(layers)) + baselines)
    ev = 4 * spec.n_params + 4 * cfg.eval.batch_size * (T * (spec.d_in + 4 * d + max(layers)) + baselines)
    return {"state": state, "activations": acts, "eval": ev, "total": state + max(acts, ev)}


def device_memory_bytes(device: str) -> int:
    """Memory available to `device`: the GPU's total memory for CUDA, else the host's available
    memory (MemAvailable, or physical memory where /proc/meminfo is missing)."""
    if device.startswith("cuda"):
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_device(device: str) -> None:
    """ValueError naming `device` unless it exists on this machine."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} is not available here (torch sees no CUDA device); use device: cpu")
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device: 'mps' is not available here; use device: cpu")


def preflight(cfg: TrainConfig) -> dict[str, int]:
    """The checks of `cfg` against this machine that need no output directory: the device
    exists, and the estimated training memory (`estimate_memory_bytes`) fits in it. Returns the
    estimate; raises ValueError with the estimate and the limit. Allocates and writes nothing."""
    check_device(cfg.device)
    est = estimate_memory_bytes(cfg)
    limit = device_memory_bytes(cfg.device)
    if est["total"] > limit:
        gib = 2**30
        raise ValueError(
            f"the config cannot fit in memory: training needs about {est['total'] / gib:.2f} GiB "
            f"(parameters and Adam state {est['state'] / gib:.2f} GiB, activations of one batch "
            f"{est['activations'] / gib:.2f} GiB) but {cfg.device} has {limit / gib:.2f} GiB available; "
            f"lower batch_size, task.n_points, model.d_model or model.n_layers"
        )
    return est
