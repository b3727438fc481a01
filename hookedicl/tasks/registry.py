"""Task names -> classes: :func:`make_task` and :func:`list_tasks`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._checks import check_kwargs
from .base import Task
from .decision_tree import DecisionTree
from .linear import LinearRegression, NoisyLinearRegression, QuadraticRegression, SparseLinearRegression
from .mqar import VectorMQAR
from .ood import apply_ood
from .relu_net import Relu2NNRegression
from .sparse_parity import SparseParity

TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (
        LinearRegression,
        NoisyLinearRegression,
        SparseLinearRegression,
        Relu2NNRegression,
        DecisionTree,
        SparseParity,
        VectorMQAR,
        QuadraticRegression,
    )
}


def list_tasks() -> list[str]:
    """Names accepted by :func:`make_task`."""
    return sorted(TASKS)


def make_task(
    name: str,
    n_dims: int,
    *,
    ood: str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]] | None = None,
    **kwargs: Any,
) -> Task:
    """Build the task ``name`` in ``n_dims`` input dimensions.

    ``kwargs`` go to the task's constructor (e.g. ``k=3``, ``noise_std=0.5``, ``hidden=100``,
    ``scaling="campbell"``, ``depth=4``, ``x_sampler="skewed"``,
    ``x_sampler_kwargs={"condition_number": 10.0}``). ``ood`` optionally wraps the task in
    out-of-distribution shifts (see :mod:`hookedicl.tasks.ood`).

    Raises ``ValueError`` for an unknown name (listing the valid ones), an unknown keyword
    argument (naming it), or an invalid value (naming the field).
    """
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid names: {list_tasks()}")
    cls = TASKS[name]
    check_kwargs(cls, kwargs, what=f"task {name!r}", skip=("n_dims",))
    task = cls(n_dims, **kwargs)
    if ood is not None:
        task = apply_ood(task, ood)
    return task
