"""Input (x) distributions for the regression tasks.

A sampler draws ``xs`` of shape ``(batch, n_points, n_dims)``, float32, i.i.d. over batch and
points, and knows its low-order moments so tasks can state E[y²] analytically.

Names accepted by :func:`make_x_sampler` (and by a task's ``x_sampler=`` argument):

* ``"gaussian"`` — isotropic N(0, I) (the default everywhere).
* ``"skewed"`` — N(0, Σ). Σ = U diag(λ) Uᵀ with λ given as ``eigenvalues`` or, with
  ``condition_number=κ``, log-spaced from 1 down to 1/κ; without either, Garg et al.'s skewed
  spectrum λ_i = 1/i. U is a Haar-random rotation drawn from ``seed`` (``rotate=False`` keeps
  the axes). With ``normalize=True`` (default) λ is rescaled so that tr Σ = n_dims, as for the
  isotropic default.
* ``"uniform"`` — each coordinate uniform on [-a, a]; default ``a = √3`` (unit variance).
* ``"rademacher"`` — each coordinate ±1 with probability 1/2.

:class:`ScaledXSampler` multiplies another sampler's draws by a constant (used by the
``scaled_x`` OOD wrapper).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from ._checks import check_float, check_generator, check_int, check_kwargs, rng


class XSampler:
    """Base class: i.i.d. inputs ``(batch, n_points, n_dims)``, float32.

    Subclasses implement :meth:`sample`, :meth:`covariance` and :meth:`fourth_moments`.
    ``independent`` says whether the coordinates are mutually independent; ``symmetric`` says
    whether the distribution is invariant under flipping the sign of any coordinate (the
    orthant OOD wrapper is exact only for such samplers).
    """

    name: ClassVar[str] = ""
    independent: ClassVar[bool] = True
    symmetric: ClassVar[bool] = True

    def __init__(self, n_dims: int) -> None:
        self.n_dims = check_int("n_dims", n_dims, minimum=1)

    def sample(
        self, batch_size: int, n_points: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        batch_size = check_int("batch_size", batch_size, minimum=1)
        n_points = check_int("n_points", n_points, minimum=1)
        check_generator(generator)
        return self._sample(batch_size, n_points, generator)

    def _sample(self, batch_size: int, n_points: int, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def covariance(self) -> torch.Tensor:
        """E[x xᵀ], ``(n_dims, n_dims)`` float64 (every sampler here has mean zero)."""
        raise NotImplementedError

    def second_moments(self) -> torch.Tensor:
        """E[x_i²] per coordinate, ``(n_dims,)`` float64."""
        return torch.diagonal(self.covariance()).clone()

    def fourth_moments(self) -> torch.Tensor:
        """E[x_i⁴] per coordinate, ``(n_dims,)`` float64."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_dims={self.n_dims})"


class GaussianXSampler(XSampler):
    """x ~ N(0, I)."""

    name = "gaussian"

    def _sample(self, batch_size, n_points, generator):
        return torch.randn(batch_size, n_points, self.n_dims, dtype=torch.float32, **rng(generator))

    def covariance(self):
        return torch.eye(self.n_dims, dtype=torch.float64)

    def fourth_moments(self):
        return torch.full((self.n_dims,), 3.0, dtype=torch.float64)


class SkewedGaussianXSampler(XSampler):
    """x ~ N(0, Σ) with Σ = U diag(λ) Uᵀ (see the module docstring for the arguments)."""

    name = "skewed"
    independent = False
    symmetric = False

    def __init__(
        self,
        n_dims: int,
        eigenvalues: Sequence[float] | torch.Tensor | None = None,
        condition_number: float | None = None,
        rotate: bool = True,
        normalize: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(n_dims)
        if eigenvalues is not None and condition_number is not None:
            raise ValueError("give either eigenvalues or condition_number, not both")
        if not isinstance(rotate, bool):
            raise ValueError(f"rotate must be a bool, got {rotate!r}")
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be a bool, got {normalize!r}")
        self.seed = check_int("seed", seed, minimum=0)
        self.rotate = rotate
        self.normalize = normalize
        d = self.n_dims
        if eigenvalues is not None:
            if isinstance(eigenvalues, (str, bytes)):
                raise ValueError(f"eigenvalues must be a sequence of numbers, got {eigenvalues!r}")
            values = eigenvalues.tolist() if isinstance(eigenvalues, torch.Tensor) else list(eigenvalues)
            lam = torch.as_tensor([check_float("eigenvalues", v) for v in values], dtype=torch.float64)
            if lam.shape != (d,):
                raise ValueError(f"eigenvalues must have length n_dims={d}, got {lam.shape[0]}")
            if bool((lam < 0).any()) or float(lam.sum()) <= 0:
                raise ValueError(f"eigenvalues must be >= 0 with a positive sum, got {lam.tolist()}")
            self.condition_number = None
        elif condition_number is not None:
            kappa = check_float("condition_number", condition_number, minimum=1.0)
            self.condition_number = kappa
            lam = torch.logspace(0.0, -math.log10(kappa), d, dtype=torch.float64)
        else:
            self.condition_number = None
            lam = 1.0 / torch.arange(1, d + 1, dtype=torch.float64)
        if normalize:
            lam = lam * (d / lam.sum())
        self.eigenvalues = lam
        if rotate:
            g = torch.Generator().manual_seed(self.seed)
            q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
            # Fix the column signs so that q is Haar-distributed.
            self.basis = q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)
        else:
            self.basis = torch.eye(d, dtype=torch.float64)
        # x = z @ factorᵀ with z ~ N(0, I) gives Cov(x) = factor factorᵀ = U diag(λ) Uᵀ.
        self._factor = (self.basis * lam.sqrt()).to(torch.float32)

    def _sample(self, batch_size, n_points, generator):
        z = torch.randn(batch_size, n_points, self.n_dims, dtype=torch.float32, **rng(generator))
        return z @ self._factor.to(z.device).T

    def covariance(self):
        return (self.basis * self.eigenvalues) @ self.basis.T

    def fourth_moments(self):
        # Each coordinate is N(0, Σ_ii): E[x_i⁴] = 3 Σ_ii².
        return 3.0 * self.second_moments() ** 2

    def __repr__(self) -> str:
        return (
            f"SkewedGaussianXSampler(n_dims={self.n_dims}, eigenvalues={self.eigenvalues.tolist()}, "
            f"rotate={self.rotate}, normalize={self.normalize}, seed={self.seed})"
        )


class UniformXSampler(XSampler):
    """Each coordinate i.i.d. uniform on [-a, a] (default a = √3, unit variance)."""

    name = "uniform"

    def __init__(self, n_dims: int, a: float = math.sqrt(3.0)) -> None:
        super().__init__(n_dims)
        self.a = check_float("a", a, strictly_positive=True)

    def _sample(self, batch_size, n_points, generator):
        u = torch.rand(batch_size, n_points, self.n_dims, dtype=torch.float32, **rng(generator))
        return (2.0 * u - 1.0) * self.a

    def covariance(self):
        return torch.eye(self.n_dims, dtype=torch.float64) * (self.a**2 / 3.0)

    def fourth_moments(self):
        return torch.full((self.n_dims,), self.a**4 / 5.0, dtype=torch.float64)

    def __repr__(self) -> str:
        return f"UniformXSampler(n_dims={self.n_dims}, a={self.a})"


class RademacherXSampler(XSampler):
    """Each coordinate i.i.d. ±1 with probability 1/2."""

    name = "rademacher"

    def _sample(self, batch_size, n_points, generator):
        bits = torch.randint(0, 2, (batch_size, n_points, self.n_dims), **rng(generator))
        return bits.to(torch.float32) * 2.0 - 1.0

    def covariance(self):
        return torch.eye(self.n_dims, dtype=torch.float64)

    def fourth_moments(self):
        return torch.ones(self.n_dims, dtype=torch.float64)


class ScaledXSampler(XSampler):
    """``scale · x`` with x drawn from ``base``."""

    name = "scaled"

    def __init__(self, base: XSampler, scale: float) -> None:
        if not isinstance(base, XSampler):
            raise ValueError(f"base must be an XSampler, got {type(base).__name__}")
        super().__init__(base.n_dims)
        self.base = base
        self.scale = check_float("x_scale", scale, strictly_positive=True)

    @property
    def independent(self) -> bool:  # type: ignore[override]
        return self.base.independent

    @property
    def symmetric(self) -> bool:  # type: ignore[override]
        return self.base.symmetric

    def _sample(self, batch_size, n_points, generator):
        return self.base._sample(batch_size, n_points, generator) * self.scale

    def covariance(self):
        return self.base.covariance() * self.scale**2

    def fourth_moments(self):
        return self.base.fourth_moments() * self.scale**4

    def __repr__(self) -> str:
        return f"ScaledXSampler({self.base!r}, scale={self.scale})"


_SAMPLERS: dict[str, type[XSampler]] = {
    cls.name: cls
    for cls in (GaussianXSampler, SkewedGaussianXSampler, UniformXSampler, RademacherXSampler)
}


def list_x_samplers() -> list[str]:
    """Names accepted by :func:`make_x_sampler`."""
    return sorted(_SAMPLERS)


def make_x_sampler(
    x_sampler: str | XSampler, n_dims: int, x_sampler_kwargs: dict[str, Any] | None = None
) -> XSampler:
    """Build a sampler from its name and keyword arguments, or pass an instance through.

    Raises ``ValueError`` for an unknown name, an unknown keyword, or an instance whose
    ``n_dims`` differs from ``n_dims``.
    """
    if x_sampler_kwargs is not None and not isinstance(x_sampler_kwargs, dict):
        raise ValueError(f"x_sampler_kwargs must be a dict, got {type(x_sampler_kwargs).__name__}")
    kwargs = dict(x_sampler_kwargs or {})
    if isinstance(x_sampler, XSampler):
        if kwargs:
            raise ValueError("x_sampler_kwargs must be empty when x_sampler is an XSampler instance")
        if x_sampler.n_dims != n_dims:
            raise ValueError(f"x_sampler has n_dims={x_sampler.n_dims}, the task has n_dims={n_dims}")
        return x_sampler
    if not isinstance(x_sampler, str) or x_sampler not in _SAMPLERS:
        raise ValueError(f"x_sampler must be one of {list_x_samplers()}, got {x_sampler!r}")
    cls = _SAMPLERS[x_sampler]
    check_kwargs(cls, kwargs, what=f"x_sampler {x_sampler!r}", skip=("n_dims",))
    return cls(n_dims, **kwargs)
