"""One point's work (train, or resume, then evaluate) and how far a point's run directory got.

`execute_point(job)` is what every executor runs, in-process, in a pool worker or as a Ray
task. It never raises for a failure of the point itself: it returns a record with
`status: "failed"`, the error and its traceback, so one bad point never stops a sweep.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..training import TrainConfig

PointState = Literal["pending", "partial", "trained", "done", "conflict"]
"""pending: no run yet; partial: training unfinished (resumes); trained: not (or not freshly)
evaluated; done: trained and evaluated; conflict: the run directory holds a different config."""


@dataclass(frozen=True)
class PointJob:
    """Everything a worker needs for one point (plain data: picklable for processes and Ray)."""

    point: str
    run_dir: str  # absolute path of the point's run directory
    config: dict[str, Any]  # TrainConfig.model_dump(mode="json")
    evaluate: bool = True
    num_cpus: float = 1.0
    num_gpus: float = 0.0


def _final_checkpoint(run_dir: Path) -> int | None:
    from ..training.checkpoints import latest_good

    entry = latest_good(run_dir / "checkpoints")
    return None if entry is None else int(entry["step"])


def config_conflict(run_dir: Path, cfg: TrainConfig) -> list[str]:
    """Top-level fields (other than those a resume may change) in which the stored config differs from `cfg`."""
    from ..training.run import RESUME_MAY_CHANGE

    old = TrainConfig.load(run_dir / "config.yaml", stored=True).model_dump(exclude=RESUME_MAY_CHANGE)
    new = cfg.model_dump(exclude=RESUME_MAY_CHANGE)
    return sorted(k for k in new if old.get(k) != new.get(k))


def point_state(run_dir: str | Path, cfg: TrainConfig, evaluate: bool = True) -> PointState:
    """How far the run at `run_dir` got towards `cfg`.

    Training is finished when the newest checkpoint whose checksums verify is at step
    `cfg.steps` or later (the trainer always checkpoints its last step). Evaluation is current
    when `eval/summary.json` was computed at that checkpoint with `cfg.eval.n_prompts` prompts.
    """
    d = Path(run_dir)
    if not (d / "config.yaml").is_file():
        return "pending"
    try:
        if config_conflict(d, cfg):
            return "conflict"
    except ValueError:  # the stored config no longer loads
        return "conflict"
    step = _final_checkpoint(d)
    if step is None or step < cfg.steps:
        return "partial"
    if not evaluate:
        return "done"
    summary = d / "eval" / "summary.json"
    if not summary.is_file():
        return "trained"
    try:
        s = json.loads(summary.read_text())
    except json.JSONDecodeError:
        return "trained"
    fresh = s.get("step") == step and s.get("n_prompts") == cfg.eval.n_prompts
    return "done" if fresh else "trained"


def failure_record(
    job: PointJob, error: str, tb: str | None = None, wall_s: float = 0.0, *, pid: int | None = None,
    host: str | None = None,
) -> dict[str, Any]:
    """The record of a point that failed; `pid` / `host` of the process that ran it (None: unknown,
    e.g. a Ray worker that died)."""
    return {
        "point": job.point, "status": "failed", "error": error, "traceback": tb, "wall_s": wall_s,
        "trained": False, "evaluated": False, "host": host, "pid": pid,
    }


def execute_point(job: PointJob) -> dict[str, Any]:
    """Train (or resume) and evaluate one point; returns its record (never raises for the point).

    Record keys: point, status ("done" or "failed"), error, traceback, wall_s (this attempt),
    trained / evaluated (whether this attempt trained / evaluated), host, pid.
    """
    t0 = time.perf_counter()
    trained = evaluated = False
    try:
        import torch

        from ..evaluation.run_eval import evaluate_run
        from ..training import train

        cfg = TrainConfig.model_validate(job.config)
        run_dir = Path(job.run_dir)
        state = point_state(run_dir, cfg, job.evaluate)
        if state == "conflict":
            raise ValueError(
                f"{run_dir} holds a run whose config differs in {config_conflict(run_dir, cfg)}; "
                "move it away or sweep into another --out"
            )
        if state in ("pending", "partial"):
            train(cfg, run_dir, resume=state == "partial")
            trained = True
            state = point_state(run_dir, cfg, job.evaluate)
        if state == "trained":
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
            evaluate_run(run_dir)
            evaluated = True
    except Exception as e:  # noqa: BLE001 - a failed point is recorded, the sweep goes on
        rec = failure_record(job, f"{type(e).__name__}: {e}", traceback.format_exc(), time.perf_counter() - t0,
                             pid=os.getpid(), host=socket.gethostname())
        return {**rec, "trained": trained, "evaluated": evaluated}
    return {
        "point": job.point, "status": "done", "error": None, "traceback": None,
        "wall_s": time.perf_counter() - t0, "trained": trained, "evaluated": evaluated,
        "host": socket.gethostname(), "pid": os.getpid(),
    }
