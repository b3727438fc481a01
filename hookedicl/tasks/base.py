"""Base classes: `Task` (any prompt distribution) and `FunctionTask` (y = f(x) with x from a sampler).

A task draws a function per prompt and a prompt ``(x_1, f(x_1), ..., x_n, f(x_n))`` from it.
Conventions shared by every task:

* all randomness comes from the ``generator`` passed to :meth:`Task.sample` (torch's global RNG
  when it is ``None``); tensors are created on the generator's device, float32;
* ``n_dims_active`` (curriculum) zeroes the input coordinates ``>= n_dims_active`` and the
  sampled function only depends on the active coordinates, as in Garg et al.;
* :meth:`Task.evaluate` applies the sampled functions to new inputs, noise-free: for a noisy
  task ``ys = evaluate(xs, params) + noise``;
* :meth:`Task.y_second_moment` is E[y²] (E‖y‖² for vector targets, summed over coordinates),
  the normaliser of the squared error, so that predicting 0 scores 1.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

import torch

from ._checks import check_generator, check_int, rng
from .batch import TaskBatch
from .samplers import XSampler, make_x_sampler


class Task:
    """A distribution over in-context prompts.

    Class attributes: ``name`` (the registry name), ``y_dim`` (1 for scalar targets),
    ``loss_positions`` (``"all"``, or ``"last"`` when only the final position is a query).
    ``noise_std`` is the standard deviation of the observation noise on ys (0 for noiseless
    tasks) and ``ood`` the names of the OOD shifts applied (empty for an unwrapped task).
    """

    name: ClassVar[str] = ""
    y_dim: int = 1
    loss_positions: Literal["all", "last"] = "all"
    noise_std: float = 0.0
    ood: tuple[str, ...] = ()

    # Monte Carlo fallback for y_second_moment (used only where no analytic value is known).
    _mc_chunks: ClassVar[int] = 8
    _mc_batch: ClassVar[int] = 2048
    _mc_points: ClassVar[int] = 8

    def __init__(self, n_dims: int) -> None:
        self.n_dims = check_int("n_dims", n_dims, minimum=1)
        self._mc_cache: dict[int, float] = {}

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        batch_size: int,
        n_points: int,
        generator: torch.Generator | None = None,
        n_dims_active: int | None = None,
    ) -> TaskBatch:
        """Draw ``batch_size`` prompts of ``n_points`` (x, y) pairs each.

        Raises ``ValueError`` naming the argument for a non-int or out-of-range ``batch_size``,
        ``n_points`` or ``n_dims_active`` (which must lie in ``[1, n_dims]``).
        """
        batch_size = check_int("batch_size", batch_size, minimum=1)
        n_points = check_int("n_points", n_points, minimum=1)
        check_generator(generator)
        active = self.check_n_dims_active(n_dims_active)
        self._check_sample(n_points, active)
        return self._sample(batch_size, n_points, generator, active)

    def check_n_dims_active(self, n_dims_active: int | None) -> int:
        """``n_dims_active`` validated against ``[1, n_dims]``; ``None`` means all dims."""
        if n_dims_active is None:
            return self.n_dims
        return check_int("n_dims_active", n_dims_active, minimum=1, maximum=self.n_dims, maximum_name="n_dims")

    def _check_sample(self, n_points: int, n_dims_active: int) -> None:
        """Task-specific constraints on a sampling request (e.g. ``k <= n_dims_active``)."""

    def _sample(
        self, batch_size: int, n_points: int, generator: torch.Generator | None, n_dims_active: int
    ) -> TaskBatch:
        raise NotImplementedError

    def evaluate(self, xs: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply each prompt's function to ``xs`` ``(batch, m, n_dims)``; noise-free targets."""
        raise NotImplementedError

    def _check_evaluate(self, xs: torch.Tensor, params: dict[str, torch.Tensor], keys: tuple[str, ...]) -> None:
        if not isinstance(xs, torch.Tensor) or xs.ndim != 3 or xs.shape[-1] != self.n_dims:
            shape = tuple(xs.shape) if isinstance(xs, torch.Tensor) else type(xs).__name__
            raise ValueError(f"xs must have shape (batch, n_points, {self.n_dims}), got {shape}")
        for key in keys:
            if key not in params:
                raise ValueError(f"params is missing {key!r} (has {sorted(params)}) for task {self.name!r}")
            if params[key].shape[0] != xs.shape[0]:
                raise ValueError(
                    f"params[{key!r}] has batch {params[key].shape[0]}, xs has batch {xs.shape[0]}"
                )

    # ------------------------------------------------------------------ moments
    def y_second_moment(self, n_dims_active: int | None = None) -> float:
        """E[y²] (E‖y‖² for vector targets) of a prompt's targets, noise included.

        Analytic for every built-in task with the built-in samplers; otherwise a Monte Carlo
        estimate from a fixed seed (deterministic, relative standard error about 1%).
        """
        active = self.check_n_dims_active(n_dims_active)
        return float(self._y_second_moment(active))

    def _y_second_moment(self, n_dims_active: int) -> float:
        return self._monte_carlo_second_moment(n_dims_active)

    def _monte_carlo_second_moment(self, n_dims_active: int) -> float:
        if n_dims_active not in self._mc_cache:
            g = torch.Generator().manual_seed(0)
            total, count = 0.0, 0
            n_points = self._mc_points
            for _ in range(self._mc_chunks):
                ys = self.sample(self._mc_batch, n_points, generator=g, n_dims_active=n_dims_active).ys
                sq = ys.double() ** 2
                total += float(sq.sum())
                count += ys.shape[0] * ys.shape[1]
            self._mc_cache[n_dims_active] = total / count
        return self._mc_cache[n_dims_active]

    # ------------------------------------------------------------------ misc
    def with_x_sampler(self, sampler: XSampler) -> Task:
        """A copy of this task whose inputs come from ``sampler`` (same function class)."""
        raise ValueError(f"task {self.name!r} does not take an x sampler")

    def unwrap(self) -> Task:
        """The task without OOD wrappers (itself for an unwrapped task)."""
        return self

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class FunctionTask(Task):
    """y = f(x) (+ Gaussian noise of std ``noise_std``) with x drawn from an :class:`XSampler`.

    Subclasses implement :meth:`sample_params` and :meth:`evaluate` (and usually
    :meth:`_y_second_moment`). A prompt is drawn as: xs from the sampler (inactive coordinates
    zeroed), then the function's parameters, then the noise — in this order from ``generator``.
    """

    def __init__(
        self,
        n_dims: int,
        x_sampler: str | XSampler = "gaussian",
        x_sampler_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(n_dims)
        self.x_sampler = make_x_sampler(x_sampler, self.n_dims, x_sampler_kwargs)

    def sample_xs(
        self, batch_size: int, n_points: int, generator: torch.Generator | None, n_dims_active: int
    ) -> torch.Tensor:
        xs = self.x_sampler.sample(batch_size, n_points, generator)
        if n_dims_active < self.n_dims:
            xs[..., n_dims_active:] = 0.0
        return xs

    def sample_params(
        self, batch_size: int, generator: torch.Generator | None, n_dims_active: int
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _sample(self, batch_size, n_points, generator, n_dims_active):
        xs = self.sample_xs(batch_size, n_points, generator, n_dims_active)
        params = self.sample_params(batch_size, generator, n_dims_active)
        ys = self.evaluate(xs, params)
        if self.noise_std > 0:
            ys = ys + self.noise_std * torch.randn(ys.shape, dtype=ys.dtype, **rng(generator))
        return TaskBatch(xs=xs, ys=ys, params=params)

    def with_x_sampler(self, sampler: XSampler) -> FunctionTask:
        new = copy.copy(self)
        new.x_sampler = make_x_sampler(sampler, self.n_dims)
        new._mc_cache = {}
        return new

    def _active_second_moments(self, n_dims_active: int) -> torch.Tensor:
        return self.x_sampler.second_moments()[:n_dims_active]

    def _active_fourth_moments(self, n_dims_active: int) -> torch.Tensor:
        return self.x_sampler.fourth_moments()[:n_dims_active]
