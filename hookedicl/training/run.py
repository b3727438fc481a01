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
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_text
from .checkpoints import latest_good, list_checkpoints, load_weights
from .config import TrainConfig
from .recorder import ActivationStore


class RunLockedError(RuntimeError):
    pass


class Run:
    """Read access to a run directory (config, checkpoints, metrics, activations, eval)."""

    def __init__(self, path: "str | Path | Run") -> None:
        self.path = Path(path.path if isinstance(path, Run) else path)
        if not (self.path / "config.yaml").is_file():
            raise ValueError(f"{self.path} is not a run directory (no config.yaml)")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # ------------------------------------------------------------ contents
    @property
    def config(self) -> TrainConfig:
        return TrainConfig.load(self.path / "config.yaml")

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def checkpoints(self) -> list[int]:
        return list_checkpoints(self.checkpoint_dir)

    @property
    def activations(self) -> ActivationStore:
        return ActivationStore(self.path / "activations")

    def load_model(self, step: int | None = None, device: str | torch.device = "cpu"):
        """The model at checkpoint `step` (default: newest good checkpoint), in eval mode."""
        from ..models import HookedICLModel, ModelSpec

        state, spec, _ = load_weights(self.checkpoint_dir, step)
        model = HookedICLModel(ModelSpec.from_dict(spec))
        model.load_state_dict(state)
        return model.to(device).eval()

    def task(self):
        return self.config.build_task()

    def metrics(self):
        """metrics.jsonl as a pandas DataFrame (a torn last line from a crash is ignored)."""
        import pandas as pd

        return pd.DataFrame(read_metrics(self.path / "metrics.jsonl"))

    @property
    def lineage(self) -> dict[str, Any] | None:
        """RUN/lineage.json (fine-tunes and merges), None for a run trained from scratch."""
        from .lineage import read_lineage

        return read_lineage(self.path)

    def eval_summary(self) -> dict[str, Any]:
        p = self.path / "eval" / "summary.json"
        if not p.exists():
            raise ValueError(f"{self.path} has not been evaluated yet (run `hookedicl eval {self.path}`)")
        return json.loads(p.read_text())


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # torn final line after a crash
    return rows


class MetricsLog:
    """Append-only metrics.jsonl; each line is flushed and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        rows = [r for r in read_metrics(self.path) if r["step"] <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def run_lock(path: Path):
    """Exclusive lock on a run directory (`.lock` holding the pid); a stale lock is taken over."""
    lock = path / ".lock"
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


RESUME_MAY_CHANGE = frozenset({"steps", "compile"})
"""Config fields a resumed run may change: how far to train, and whether to compile."""


def prepare_run_dir(path: Path, cfg: TrainConfig, resume: bool) -> dict[str, Any] | None:
    """Check the output location before training; returns the checkpoint entry to resume from.

    Raises ValueError when the directory holds another run (without `resume`), when a resumed
    config differs from the stored one (other than `RESUME_MAY_CHANGE`), or when the location is unwritable.
    Writes nothing on failure.
    """
    stored = path / "config.yaml"
    entry = None
    if stored.exists():
        if not resume:
            raise ValueError(f"{path} already holds a run; pass resume=True (--resume) or choose another output")
        old = TrainConfig.load(stored).model_dump(exclude=RESUME_MAY_CHANGE)
        new = cfg.model_dump(exclude=RESUME_MAY_CHANGE)
        if old != new:
            diff = sorted(k for k in new if old.get(k) != new.get(k))
            raise ValueError(f"cannot resume {path}: config differs from the stored one in {diff}")
        entry = latest_good(path / "checkpoints")
    elif path.exists() and any(p.name != ".lock" for p in path.iterdir()):
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
    from ..models import HookedICLModel

    spec = cfg.build_spec()
    with torch.random.fork_rng(devices=[]):
        with torch.device("meta"):
            n_params = HookedICLModel(spec).n_params
        remaining = max(cfg.steps - start, 0)
        n_ckpt = remaining // cfg.checkpoint.every + 1
        if cfg.checkpoint.keep is not None:
            n_ckpt = min(n_ckpt, cfg.checkpoint.keep + 1)
        total = n_ckpt * (12 * n_params + 2**16) + (remaining // cfg.log.every + 1) * 512
        if cfg.capture.hooks:
            from .recorder import resolve_hooks

            model = HookedICLModel(spec)
            names = set(resolve_hooks(model.hook_dict, cfg.capture.hooks))
            n = cfg.capture.n_prompts or cfg.batch_size
            shapes = model.hook_shapes(n_points=cfg.task.n_points, batch_size=1)
            per_prompt = sum(math.prod(shape) for name, shape in shapes.items() if name in names)
            itemsize = torch.empty((), dtype=getattr(torch, cfg.capture.dtype)).element_size()
            n_shards = remaining // cfg.capture.every + 2
            total += n_shards * n * (per_prompt * itemsize + 4 * cfg.task.n_points * (cfg.task.n_dims + 2) + 4096)
    return int(total)


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files a killed writer left behind (see hookedicl.io); call under the lock."""
    for tmp in path.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
