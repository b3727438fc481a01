"""Argument checks shared by the task modules.

Every check raises ``ValueError`` whose message names the argument and shows the offending
value. Nothing is coerced: a float where an int is expected (``batch_size=64.0``) is an error,
and so is a bool where a number is expected.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch


def check_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None, maximum_name: str | None = None
) -> int:
    """Return ``value`` as a Python int if it is an integer within ``[minimum, maximum]``
    (``maximum_name`` names the argument the maximum comes from, e.g. ``n_dims``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        bound = f"{maximum_name} = {maximum}" if maximum_name else str(maximum)
        raise ValueError(f"{name} must be <= {bound}, got {value}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    strictly_positive: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite real number (ints accepted) within range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if strictly_positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_generator(generator: Any) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


def rng(generator: torch.Generator | None) -> dict[str, Any]:
    """Keyword arguments for torch's random constructors: the generator and its device.

    Without a generator, torch's global RNG is used and tensors are created on the CPU.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    return {"generator": generator, "device": device}


def active_mask(n_dims: int, n_dims_active: int, device: torch.device) -> torch.Tensor:
    """Float mask ``(n_dims,)`` with ones on the first ``n_dims_active`` coordinates."""
    mask = torch.zeros(n_dims, dtype=torch.float32, device=device)
    mask[:n_dims_active] = 1.0
    return mask


def random_subsets(
    batch_size: int, n_active: int, k: int, generator: torch.Generator | None
) -> torch.Tensor:
    """``(batch_size, k)`` int64: for each row, ``k`` distinct indices uniform in ``[0, n_active)``.

    Vectorised: the ranks of i.i.d. uniforms give an independent uniform permutation per row.
    """
    keys = torch.rand(batch_size, n_active, **rng(generator))
    return keys.argsort(dim=1)[:, :k]


def check_kwargs(target: Any, kwargs: dict[str, Any], *, what: str, skip: tuple[str, ...] = ()) -> None:
    """Raise ``ValueError`` naming any key of ``kwargs`` that ``target``'s constructor lacks,
    or any required constructor argument (other than ``skip``) that ``kwargs`` lacks."""
    import inspect

    params = inspect.signature(target).parameters
    valid = [
        n
        for n, p in params.items()
        if n not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    for key in kwargs:
        if key not in valid:
            raise ValueError(f"unknown argument {key!r} for {what}; valid arguments: {valid}")
    for name in valid:
        if params[name].default is inspect.Parameter.empty and name not in kwargs:
            raise ValueError(f"missing argument {name!r} for {what}")
