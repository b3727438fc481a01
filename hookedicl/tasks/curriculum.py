"""Garg-style curriculum: the number of active input dimensions and of points grow in steps.

At training step ``s`` (0-based) a schedule ``(start, end, inc, interval)`` has the value
``min(start + inc * (s // interval), end)``: the value used for step ``s`` after ``s`` calls of
Garg et al.'s ``Curriculum.update()``. Garg's linear-regression schedule therefore gives
(5, 11) at step 0, (6, 13) at step 2000 and (20, 41) from step 30000 on.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, StrictInt, model_validator

from ._checks import check_int


class CurriculumSchedule(BaseModel):
    """One curriculum variable: ``start``, raised by ``inc`` every ``interval`` steps, capped at
    ``end``. Requires start >= 1, end >= start, inc >= 0 (inc > 0 when end > start), interval >= 1."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    start: StrictInt
    end: StrictInt
    inc: StrictInt
    interval: StrictInt

    @model_validator(mode="after")
    def _check(self) -> CurriculumSchedule:
        if self.start < 1:
            raise ValueError(f"start must be >= 1, got {self.start}")
        if self.end < self.start:
            raise ValueError(f"end must be >= start ({self.start}), got {self.end}")
        if self.inc < 0:
            raise ValueError(f"inc must be >= 0, got {self.inc}")
        if self.inc == 0 and self.end != self.start:
            raise ValueError(f"inc is 0 but end ({self.end}) != start ({self.start}): end is never reached")
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1, got {self.interval}")
        return self

    def at(self, step: int) -> int:
        return min(self.start + self.inc * (_check_step(step) // self.interval), self.end)

    def steps_to_end(self) -> int:
        """First step at which the value equals ``end``."""
        if self.end == self.start:
            return 0
        increments = -(-(self.end - self.start) // self.inc)  # ceil division
        return increments * self.interval

    @classmethod
    def constant(cls, value: int) -> CurriculumSchedule:
        return cls(start=value, end=value, inc=0, interval=1)


def _check_step(step: int) -> int:
    return check_int("step", step, minimum=0)


class Curriculum(BaseModel):
    """Schedules for the active input dimensions (``dims``) and the prompt length (``points``).

    ``Curriculum.at(step) -> (n_dims_active, n_points)``. As plain config::

        curriculum:
          dims:   {start: 5, end: 20, inc: 1, interval: 2000}
          points: {start: 11, end: 41, inc: 2, interval: 2000}
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    dims: CurriculumSchedule
    points: CurriculumSchedule

    def at(self, step: int) -> tuple[int, int]:
        """``(n_dims_active, n_points)`` for training step ``step`` (0-based)."""
        return self.dims.at(step), self.points.at(step)

    @property
    def final(self) -> tuple[int, int]:
        """``(n_dims_active, n_points)`` once both schedules have reached their end."""
        return self.dims.end, self.points.end

    def check_fits(self, n_dims: int) -> None:
        """Raise ``ValueError`` if the dims schedule ends above a task's ``n_dims``."""
        n_dims = check_int("n_dims", n_dims, minimum=1)
        if self.dims.end > n_dims:
            raise ValueError(f"curriculum dims.end={self.dims.end} exceeds the task's n_dims={n_dims}")

    def changes(self, steps: int) -> list[tuple[int, int, int]]:
        """``(step, n_dims_active, n_points)`` at every step in ``1 .. steps - 1`` where :meth:`at`
        differs from the step before (the curriculum's jumps within a run of ``steps`` steps)."""
        steps = check_int("steps", steps, minimum=0)
        candidates = {
            i * s.interval
            for s in (self.dims, self.points)
            for i in range(1, min(steps - 1, s.steps_to_end()) // s.interval + 1)
        }
        return [(c, *self.at(c)) for c in sorted(candidates) if 0 < c < steps and self.at(c) != self.at(c - 1)]

    def steps_to_final(self) -> int:
        """First step from which :meth:`at` returns :attr:`final`."""
        return max(self.dims.steps_to_end(), self.points.steps_to_end())

    @classmethod
    def constant(cls, n_dims: int, n_points: int) -> Curriculum:
        """No curriculum: always ``(n_dims, n_points)``."""
        return cls(dims=CurriculumSchedule.constant(n_dims), points=CurriculumSchedule.constant(n_points))

    @classmethod
    def garg_linear(cls) -> Curriculum:
        """Garg et al.'s schedule for (sparse) linear regression, d = 20: dims 5→20 (+1 every
        2000 steps), points 11→41 (+2 every 2000 steps)."""
        return cls(
            dims=CurriculumSchedule(start=5, end=20, inc=1, interval=2000),
            points=CurriculumSchedule(start=11, end=41, inc=2, interval=2000),
        )

    @classmethod
    def garg_mlp_tree(cls) -> Curriculum:
        """Garg et al.'s schedule for 2-layer ReLU networks and decision trees, d = 20: dims
        5→20 (+1 every 2000 steps), points 26→101 (+5 every 2000 steps)."""
        return cls(
            dims=CurriculumSchedule(start=5, end=20, inc=1, interval=2000),
            points=CurriculumSchedule(start=26, end=101, inc=5, interval=2000),
        )
