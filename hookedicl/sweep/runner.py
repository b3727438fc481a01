"""`run_sweep`: expand a sweep, skip finished points, run the rest, record, aggregate.

    OUT/                   (default runs/sweeps/<name>)
      sweep.yaml           the sweep spec with its base config inlined
      runs/<point>/        one ordinary run directory per point (config.yaml, checkpoints/, ...)
      status/<point>.json  the last attempt's record: status, error + traceback, wall time (summed
                           over attempts), host
      results.csv, results.md, figures/   (see aggregate.py)

A point is finished when its training reached `steps` and its evaluation is current (see
`worker.point_state`); re-running a sweep skips finished points, resumes unfinished runs from
their newest good checkpoint, evaluates trained-but-unevaluated ones and retries failed ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import atomic_write_json, atomic_write_text
from ..layout import SWEEP_SPEC, read_status, status_path, sweep_run_dir
from ..progress import progress_bar
from ..training.run import run_lock
from .executors import Executor, LocalExecutor
from .spec import SweepPoint, SweepSpec
from .worker import PointJob, PointState, point_state


@dataclass
class SweepResult:
    """What one `run_sweep` call did. `records`: point -> record of the attempts made now."""

    out: Path
    points: list[SweepPoint]
    states: dict[str, PointState]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    table: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return (
            f"SweepResult({str(self.out)!r}: {len(self.points)} points, {len(self.records)} run now, "
            f"{len(self.skipped)} already done, {len(self.failed)} failed)"
        )

    @property
    def failed(self) -> list[str]:
        return [p for p, r in self.records.items() if r["status"] == "failed"]

    @property
    def skipped(self) -> list[str]:
        return [p for p, s in self.states.items() if s == "done"]


def default_out(spec: SweepSpec) -> Path:
    return Path("runs") / "sweeps" / spec.name


def run_dir(out: Path, point: SweepPoint) -> Path:
    return sweep_run_dir(out, point.id)


def plan(spec: SweepSpec, out: str | Path | None = None) -> list[tuple[SweepPoint, PointState]]:
    """Every point with its current state (nothing is written)."""
    o = Path(out) if out is not None else default_out(spec)
    return [(p, point_state(run_dir(o, p), p.config, spec.evaluate)) for p in spec.expand()]


def _load(spec: SweepSpec | str | Path) -> SweepSpec:
    return spec if isinstance(spec, SweepSpec) else SweepSpec.load(spec)


def run_sweep(
    spec: SweepSpec | str | Path,
    out: str | Path | None = None,
    *,
    executor: Executor | None = None,
    aggregate: bool = True,
    echo: Callable[[str], None] | None = None,
    progress: bool | None = None,
) -> SweepResult:
    """Run every unfinished point of `spec` (a `SweepSpec` or a sweep YAML path) into `out`.

    `executor` defaults to `LocalExecutor()` (sequential, in this process). The spec is expanded
    and validated first (ValueError, nothing written); a failing point is recorded in
    `status/<point>.json` and the results, and the other points go on. A lock on `out` keeps two
    sweeps from running into the same directory at once (`RunLockedError`). `echo` receives one
    line per finished point; `progress` shows a bar over the points (`None`: when stderr is a
    terminal).
    """
    spec = _load(spec)
    points = spec.expand()
    o = Path(out) if out is not None else default_out(spec)
    bar: Any = None  # the bar over the points, once they are known

    def say(msg: str) -> None:
        if echo is None:
            return
        if bar is None or bar.disable:
            echo(msg)
        else:
            with bar.external_write_mode():  # the line goes above the bar, not through it
                echo(msg)

    o.mkdir(parents=True, exist_ok=True)
    with run_lock(o):
        atomic_write_text(o / SWEEP_SPEC, spec.resolved().to_yaml())
        states = {p.id: point_state(run_dir(o, p), p.config, spec.evaluate) for p in points}
        result = SweepResult(o, points, states)
        todo = [p for p in points if states[p.id] != "done"]
        say(f"sweep {spec.name}: {len(points)} points, {len(points) - len(todo)} finished, {len(todo)} to run -> {o}")
        jobs = [
            PointJob(p.id, str(run_dir(o, p).resolve()), p.config.model_dump(mode="json"), spec.evaluate, p.num_cpus, p.num_gpus)
            for p in todo
        ]
        t0 = time.perf_counter()

        def record(rec: dict[str, Any]) -> None:
            prev = read_status(o, rec["point"]) or {}
            rec = {
                **rec, "attempt_wall_s": rec["wall_s"], "wall_s": prev.get("wall_s", 0.0) + rec["wall_s"],
                "attempts": prev.get("attempts", 0) + 1, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            atomic_write_json(status_path(o, rec["point"]), rec)
            result.records[rec["point"]] = rec
            n = len(result.records)
            msg = f"[{n}/{len(jobs)}] {rec['point']}: {rec['status']} ({rec['attempt_wall_s']:.1f} s)"
            say(msg if rec["status"] == "done" else f"{msg}: {rec['error']}")
            bar.update(1)

        with progress_bar(total=len(jobs), desc=f"sweep {spec.name}", unit="point", enabled=progress) as bar:
            (executor or LocalExecutor()).run(jobs, record)
        say(f"sweep {spec.name}: ran {len(jobs)} points in {time.perf_counter() - t0:.1f} s, {len(result.failed)} failed")
        if aggregate:
            from .aggregate import write_results

            result.table = write_results(spec, o, points)
    return result
