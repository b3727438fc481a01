"""Input conversion and validation shared by the evaluation modules."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ArrayLike = Any  # torch.Tensor | np.ndarray | float | sequence of floats


def to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    """Return ``x`` (tensor, array, scalar or nested sequence) as a float64 numpy array.

    Raises ``ValueError`` naming ``name`` when ``x`` is not numeric.
    """
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"{name} must hold real numbers; got a {x.dtype} tensor")
        return x.detach().to("cpu", torch.float64).numpy()
    raw = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if raw.dtype == np.bool_ or np.iscomplexobj(raw):
        raise ValueError(f"{name} must hold real numbers; got {raw.dtype} values")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric (tensor or array); got {type(x).__name__}") from exc
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` if ``arr`` holds NaN or infinite values."""
    if not np.all(np.isfinite(arr)):
        n_bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name} contains {n_bad} non-finite value(s) (NaN or inf); shape {tuple(arr.shape)}"
        )


def check_errors(arr: np.ndarray, name: str, ndims: tuple[int, ...]) -> None:
    """Validate an error array: allowed rank, finite and non-negative."""
    if arr.ndim not in ndims:
        expected = " or ".join(
            {0: "a scalar", 1: "1-D (n_points,)", 2: "2-D (n_prompts, n_points)"}[d] for d in ndims
        )
        raise ValueError(f"{name} must be {expected}; got shape {tuple(arr.shape)}")
    if arr.ndim >= 1 and arr.shape[-1] == 0:
        raise ValueError(f"{name} has no positions; got shape {tuple(arr.shape)}")
    if arr.ndim == 2 and arr.shape[0] == 0:
        raise ValueError(f"{name} has no prompts; got shape {tuple(arr.shape)}")
    check_finite(arr, name)
    if np.any(arr < 0):
        raise ValueError(f"{name} must hold non-negative squared errors; got shape {tuple(arr.shape)} "
                         f"with minimum {float(arr.min())}")


def check_ci(ci: float) -> None:
    """Raise ``ValueError`` unless ``0 < ci < 1``."""
    if not (isinstance(ci, (int, float)) and 0.0 < float(ci) < 1.0):
        raise ValueError(f"ci must be a confidence level in (0, 1); got {ci!r}")
