"""Sweeps: a grid (or list) of training configs, run point by point into ordinary run directories.

    from hookedicl.sweep import SweepSpec, run_sweep, LocalExecutor, RayExecutor
    result = run_sweep("hookedicl/configs/sweeps/example.yaml", "runs/sweeps/example",
                       executor=LocalExecutor(workers=2))
    result.table            # results.csv as a DataFrame

- :mod:`.spec` — `SweepSpec` (the YAML file), expansion into `SweepPoint`s, dotted config paths.
- :mod:`.worker` — `execute_point` (train / resume, evaluate; failures become records), `point_state`.
- :mod:`.executors` — `LocalExecutor` (sequential or a process pool), `RayExecutor`.
- :mod:`.runner` — `run_sweep`, `plan`: skip finished points, record every attempt.
- :mod:`.aggregate` — results.csv, results.md, figures/.
"""

from .aggregate import collect, write_results
from .executors import Executor, LocalExecutor, RayExecutor, auto_workers, make_executor
from .runner import SweepResult, plan, run_sweep
from .spec import ResourcesSpec, ResultsSpec, SweepPoint, SweepSpec
from .worker import PointJob, execute_point, point_state

__all__ = [
    "Executor", "LocalExecutor", "PointJob", "RayExecutor", "ResourcesSpec", "ResultsSpec", "SweepPoint", "SweepResult",
    "SweepSpec", "auto_workers", "collect", "execute_point", "make_executor", "plan", "point_state", "run_sweep",
    "write_results",
]
