"""Out-of-distribution prompt shifts (Garg et al. §4) as wrappers around any scalar task.

A wrapper is itself a :class:`~hookedicl.tasks.base.Task`: it samples from the wrapped task and
shifts the prompt. It keeps the wrapped task's ``name`` (the function class, e.g.
``"linear_regression"``) and appends its own name to ``task.ood``. Build one directly
(``Orthant(make_task("linear_regression", 20))``) or through
``make_task(name, n_dims, ood=...)`` where ``ood`` is a wrapper name, a mapping
``{"name": ..., **kwargs}``, or a list of these applied innermost first::

    make_task("linear_regression", 20, ood={"name": "scaled_x", "x_scale": 2.0})
    make_task("relu_2nn_regression", 20, ood=["orthant", {"name": "noisy_y", "noise_std": 0.5}])

Wrappers (``list_ood()``):

* ``scaled_x`` (``x_scale > 0``): inputs multiplied by ``x_scale``, same functions.
* ``scaled_y`` (``y_scale > 0``): targets multiplied by ``y_scale``.
* ``noisy_y`` (``noise_std >= 0``): i.i.d. N(0, noise_std²) added to every target.
* ``orthant`` (``query`` = ``"any"`` (default) | ``"opposite"`` | ``"same"``): all context
  points (every point but the last) lie in one orthant drawn uniformly per prompt — each x is
  replaced by |x| ⊙ s for random signs s; the query (last point) is left as drawn (``"any"``,
  Garg et al.'s ``random_quadrants``), put in the opposite orthant −s (``"opposite"``), or in
  the same orthant (``"same"``). params gain ``"orthant_signs"`` ``(batch, n_dims)``. This is
  the exact conditional distribution for samplers symmetric in each coordinate (not ``skewed``).
* ``orthogonal_query``: the last point is projected onto the orthogonal complement of the span
  of the context points and rescaled to its original norm (Garg et al.'s
  ``orthogonal_train_test``). Needs ``n_points - 1 < n_dims_active``. If the query lies in the
  span (possible only for discrete inputs) it becomes the zero vector.

Targets are recomputed with the wrapped task's ``evaluate`` on the shifted inputs; observation
noise of the wrapped task is kept. ``y_second_moment`` is E[y²] of the shifted distribution for
``scaled_x``, ``scaled_y`` and ``noisy_y`` (analytic); ``orthant`` and ``orthogonal_query``
report the wrapped task's value (unchanged for the symmetric samplers and the built-in
rotation-invariant tasks; otherwise it is the in-distribution normaliser). A skewed input
covariance is an x sampler (``x_sampler="skewed"``), not a wrapper.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from ._checks import check_choice, check_float, check_kwargs, rng
from .base import Task
from .batch import TaskBatch
from .samplers import ScaledXSampler, XSampler


class OODWrapper(Task):
    """Base class: delegates to ``self.inner`` and shifts its prompts in :meth:`_shift`."""

    ood_name: ClassVar[str] = ""

    def __init__(self, task: Task) -> None:
        if not isinstance(task, Task):
            raise ValueError(f"task must be a Task, got {type(task).__name__}")
        if task.y_dim != 1:
            raise ValueError(
                f"OOD wrappers need a scalar task (y_dim=1); task {task.name!r} has y_dim={task.y_dim}"
            )
        super().__init__(task.n_dims)
        self.inner = task

    # The wrapped task's identity and conventions.
    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def loss_positions(self) -> str:  # type: ignore[override]
        return self.inner.loss_positions

    @property
    def noise_std(self) -> float:  # type: ignore[override]
        return self.inner.noise_std

    @property
    def ood(self) -> tuple[str, ...]:  # type: ignore[override]
        return (*self.inner.ood, self.ood_name)

    @property
    def x_sampler(self) -> XSampler:
        if not hasattr(self.inner, "x_sampler"):
            raise ValueError(f"task {self.inner.name!r} has no x sampler")
        return self.inner.x_sampler

    def unwrap(self) -> Task:
        return self.inner.unwrap()

    def with_x_sampler(self, sampler: XSampler) -> OODWrapper:
        new = copy.copy(self)
        new.inner = self.inner.with_x_sampler(sampler)
        new._mc_cache = {}
        return new

    def _check_sample(self, n_points, n_dims_active):
        self.inner._check_sample(n_points, n_dims_active)

    def _sample(self, batch_size, n_points, generator, n_dims_active):
        batch = self.inner._sample(batch_size, n_points, generator, n_dims_active)
        return self._shift(batch, generator, n_dims_active)

    def _shift(self, batch: TaskBatch, generator, n_dims_active: int) -> TaskBatch:
        return batch

    def _reevaluate(self, batch: TaskBatch, xs: torch.Tensor, params: dict[str, torch.Tensor]) -> TaskBatch:
        """Targets for the shifted ``xs``, keeping the wrapped task's observation noise."""
        noise = batch.ys - self.inner.evaluate(batch.xs, batch.params)
        return TaskBatch(xs=xs, ys=self.inner.evaluate(xs, params) + noise, params=params)

    def evaluate(self, xs, params):
        return self.inner.evaluate(xs, params)

    def _y_second_moment(self, n_dims_active):
        return self.inner._y_second_moment(n_dims_active)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "inner"
        )
        return f"{type(self).__name__}({self.inner!r}{', ' if fields else ''}{fields})"


class ScaledX(OODWrapper):
    """Inputs multiplied by ``x_scale``; implemented by scaling the wrapped task's x sampler, so
    E[y²] stays analytic."""

    ood_name = "scaled_x"

    def __init__(self, task: Task, x_scale: float) -> None:
        super().__init__(task)
        self.x_scale = check_float("x_scale", x_scale, strictly_positive=True)
        if not hasattr(task, "x_sampler"):
            raise ValueError(f"scaled_x needs a task with an x sampler; {task.name!r} has none")
        self.inner = task.with_x_sampler(ScaledXSampler(task.x_sampler, self.x_scale))


class ScaledY(OODWrapper):
    """Targets multiplied by ``y_scale``: E[y²] = y_scale² · E[y²] of the wrapped task."""

    ood_name = "scaled_y"

    def __init__(self, task: Task, y_scale: float) -> None:
        super().__init__(task)
        self.y_scale = check_float("y_scale", y_scale, strictly_positive=True)

    @property
    def noise_std(self) -> float:  # type: ignore[override]
        return self.inner.noise_std * self.y_scale

    def _shift(self, batch, generator, n_dims_active):
        return TaskBatch(xs=batch.xs, ys=batch.ys * self.y_scale, params=batch.params)

    def evaluate(self, xs, params):
        return self.inner.evaluate(xs, params) * self.y_scale

    def _y_second_moment(self, n_dims_active):
        return self.inner._y_second_moment(n_dims_active) * self.y_scale**2


class NoisyY(OODWrapper):
    """Adds N(0, noise_std²) to every target. ``task.noise_std`` is then the total noise std
    √(inner² + noise_std²); E[y²] gains noise_std²; ``evaluate`` stays noise-free."""

    ood_name = "noisy_y"

    def __init__(self, task: Task, noise_std: float) -> None:
        super().__init__(task)
        self.added_noise_std = check_float("noise_std", noise_std, minimum=0.0)

    @property
    def noise_std(self) -> float:  # type: ignore[override]
        return math.sqrt(self.inner.noise_std**2 + self.added_noise_std**2)

    def _shift(self, batch, generator, n_dims_active):
        noise = torch.randn(batch.ys.shape, dtype=batch.ys.dtype, **rng(generator))
        return TaskBatch(xs=batch.xs, ys=batch.ys + self.added_noise_std * noise, params=batch.params)

    def _y_second_moment(self, n_dims_active):
        return self.inner._y_second_moment(n_dims_active) + self.added_noise_std**2


ORTHANT_QUERIES = ("any", "opposite", "same")


class Orthant(OODWrapper):
    """Context points in one random orthant; the query (last point) per ``query``."""

    ood_name = "orthant"

    def __init__(self, task: Task, query: str = "any") -> None:
        super().__init__(task)
        self.query = check_choice("query", query, ORTHANT_QUERIES)

    def _shift(self, batch, generator, n_dims_active):
        xs = batch.xs
        bits = torch.randint(0, 2, (batch.batch_size, self.n_dims), **rng(generator))
        signs = bits.to(xs.dtype) * 2.0 - 1.0
        new = xs.abs() * signs.unsqueeze(1)
        if self.query == "any":
            new[:, -1] = xs[:, -1]
        elif self.query == "opposite":
            new[:, -1] = -new[:, -1]
        params = {**batch.params, "orthant_signs": signs}
        return self._reevaluate(batch, new, params)


class OrthogonalQuery(OODWrapper):
    """The last point made orthogonal to the span of the context points (norm preserved)."""

    ood_name = "orthogonal_query"

    def _check_sample(self, n_points, n_dims_active):
        super()._check_sample(n_points, n_dims_active)
        if n_points - 1 >= n_dims_active:
            raise ValueError(
                f"orthogonal_query needs n_points - 1 < n_dims_active so the context cannot span "
                f"the input space; got n_points={n_points}, n_dims_active={n_dims_active}"
            )

    def _shift(self, batch, generator, n_dims_active):
        xs = batch.xs
        if batch.n_points == 1:
            return batch
        context = xs[:, :-1].double()  # (b, m, d)
        query = xs[:, -1].double()  # (b, d)
        # Orthonormal basis of (a space containing) the context span: reduced QR of (b, d, m).
        basis, _ = torch.linalg.qr(context.transpose(1, 2))
        perp = query - torch.bmm(basis, torch.bmm(basis.transpose(1, 2), query.unsqueeze(-1))).squeeze(-1)
        perp_norm = perp.norm(dim=-1, keepdim=True)
        scale = query.norm(dim=-1, keepdim=True) / perp_norm.clamp_min(1e-300)
        perp = torch.where(perp_norm > 1e-9 * query.norm(dim=-1, keepdim=True), perp * scale, 0.0)
        perp[:, n_dims_active:] = 0.0  # remove round-off leaking into inactive coordinates
        new = xs.clone()
        new[:, -1] = perp.to(xs.dtype)
        return self._reevaluate(batch, new, batch.params)


_OOD: dict[str, type[OODWrapper]] = {
    cls.ood_name: cls for cls in (ScaledX, ScaledY, NoisyY, Orthant, OrthogonalQuery)
}


def list_ood() -> list[str]:
    """Names of the OOD wrappers accepted by :func:`apply_ood` and ``make_task(ood=...)``."""
    return sorted(_OOD)


def apply_ood(task: Task, ood: str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]]) -> Task:
    """Wrap ``task`` with the shift(s) ``ood`` describes (see the module docstring)."""
    if isinstance(ood, (str, Mapping)):
        ood = [ood]
    if not isinstance(ood, Sequence) or isinstance(ood, (bytes, bytearray)):
        raise ValueError(f"ood must be a name, a mapping with a 'name' key, or a list of these; got {ood!r}")
    for spec in ood:
        if isinstance(spec, str):
            name, kwargs = spec, {}
        elif isinstance(spec, Mapping):
            kwargs = dict(spec)
            name = kwargs.pop("name", None)
        else:
            raise ValueError(f"each ood entry must be a name or a mapping, got {spec!r}")
        if name not in _OOD:
            raise ValueError(f"unknown ood {name!r}; valid names: {list_ood()}")
        cls = _OOD[name]
        check_kwargs(cls, kwargs, what=f"ood {name!r}", skip=("task",))
        task = cls(task, **kwargs)
    return task
