"""Base classes, input validation and hyperparameter checks shared by every reference predictor.

Contract (every predictor):

* ``predict(xs, ys)`` takes ``xs`` of shape ``(batch, n_points, n_dims)`` and ``ys`` of shape
  ``(batch, n_points)`` and returns float32 predictions of shape ``(batch, n_points)``.
* Prediction ``i`` (for the query ``xs[:, i]``) is fitted on the first ``i`` points only
  (``xs[:, :i]``, ``ys[:, :i]``); prediction 0 has no context and is 0.
* Predictors that produce an implicit weight vector derive from :class:`LinearPredictor` and
  expose ``weights(xs, ys)`` of shape ``(batch, n_points, n_dims)``: row ``i`` is the ŵ fitted on
  the first ``i`` points (row 0 is 0), and ``predict = (weights * xs).sum(-1)``.

Hyperparameters live in the constructor (keyword-only, documented defaults) and are checked
there; nothing is fitted or computed before ``predict``. They follow scikit-learn's parameter
protocol: ``get_params(deep)``, ``set_params(**params)`` (re-checked by the constructor) and
``sklearn.base.clone`` work on every predictor; ``predict`` keeps the in-context signature
``predict(xs, ys)``, so they are not scikit-learn estimators otherwise. Inputs are never silently coerced:
non-tensors, non-floating dtypes, wrong ranks, mismatched shapes or devices and non-finite values
raise. Vector targets ``(batch, n_points, y_dim)`` are not supported by any predictor here.
"""

from __future__ import annotations

import abc
import inspect
import math
import numbers
from typing import Any

import torch
from torch import Tensor

__all__ = ["Predictor", "LinearPredictor", "NonFiniteOutputWarning", "check_inputs", "check_outputs"]


def check_inputs(xs: Any, ys: Any, name: str = "predictor") -> tuple[Tensor, Tensor]:
    """Validate a prompt batch and return it unchanged.

    Raises ``TypeError`` for non-tensors and non-floating dtypes and ``ValueError`` (naming the
    argument and its shape) for wrong ranks, mismatched batch / n_points, mismatched devices,
    ``n_dims == 0``, empty prompts (batch or n_points 0), vector targets and NaN/inf entries.
    float16 / bfloat16 inputs are returned as float32 (too coarse for the solvers); float32 and
    float64 unchanged.
    """
    for arg, value in (("xs", xs), ("ys", ys)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(
                f"{name}: {arg} must have a floating-point dtype, got {value.dtype} "
                f"(shape {tuple(value.shape)}); convert it explicitly"
            )
    if xs.dim() != 3:
        raise ValueError(
            f"{name}: xs must have shape (batch, n_points, n_dims), got shape {tuple(xs.shape)}"
        )
    if xs.shape[-1] == 0:
        raise ValueError(f"{name}: xs has n_dims == 0 (shape {tuple(xs.shape)})")
    if ys.dim() == 3:
        raise ValueError(
            f"{name}: ys has shape {tuple(ys.shape)} = (batch, n_points, y_dim); vector targets "
            "are not supported by the reference predictors, pass scalar targets of shape "
            "(batch, n_points)"
        )
    if ys.dim() != 2:
        raise ValueError(
            f"{name}: ys must have shape (batch, n_points), got shape {tuple(ys.shape)}"
        )
    if ys.shape[0] != xs.shape[0]:
        raise ValueError(
            f"{name}: batch size mismatch: xs has shape {tuple(xs.shape)}, "
            f"ys has shape {tuple(ys.shape)}"
        )
    if ys.shape[1] != xs.shape[1]:
        raise ValueError(
            f"{name}: n_points mismatch: xs has shape {tuple(xs.shape)}, "
            f"ys has shape {tuple(ys.shape)}"
        )
    if xs.device != ys.device:
        raise ValueError(f"{name}: xs is on {xs.device} but ys is on {ys.device}")
    if xs.shape[0] == 0 or xs.shape[1] == 0:
        raise ValueError(f"{name}: empty prompts: xs has shape {tuple(xs.shape)}; give at least one prompt of at least one point")
    for arg, value in (("xs", xs), ("ys", ys)):
        if not _all_finite(value):
            raise ValueError(f"{name}: {arg} (shape {tuple(value.shape)}) contains NaN or inf")
    if xs.dtype in (torch.float16, torch.bfloat16):
        xs = xs.float()
    if ys.dtype in (torch.float16, torch.bfloat16):
        ys = ys.float()
    return xs, ys


class NonFiniteOutputWarning(RuntimeWarning):
    """A predictor turned finite inputs into NaN/inf outputs (overflow, or a diverging iteration)."""


def check_outputs(out: Tensor, name: str, what: str = "predictions") -> Tensor:
    """`out` unchanged; warns (`NonFiniteOutputWarning`, naming the predictor and the count)
    when finite inputs gave NaN or inf entries: a step size too large for the data (gd, sgd)
    diverges, and inputs beyond float32's range overflow. Never silent, not fatal: the finite
    positions stay usable (e.g. gd converged at the later positions)."""
    if not _all_finite(out):
        import warnings

        n_bad = int((~torch.isfinite(out)).sum())
        warnings.warn(
            f"{name}: finite xs and ys gave {n_bad} non-finite {what} (NaN or inf) of {out.numel()}: "
            f"a diverging iteration (lower lr) or inputs too large for float32 (rescale them)",
            NonFiniteOutputWarning, stacklevel=3,
        )
    return out


def _all_finite(t: Tensor) -> bool:
    if t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t.detach())  # NaN propagates into both, ±inf shows up in one
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


class Predictor(abc.ABC):
    """A reference in-context predictor mapping ``(xs, ys)`` to per-position predictions."""

    name: str = ""

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Predictions ``(batch, n_points)`` in float32; entry ``i`` uses points ``< i`` only.

        Accepts float16, bfloat16, float32 and float64 inputs (half precisions are computed in
        float32). Raises ValueError for empty prompts (no prompt or no point); when finite
        inputs give NaN/inf predictions: a `NonFiniteOutputWarning` says how many."""
        xs, ys = check_inputs(xs, ys, self.name)
        out = self._predict(xs, ys).to(torch.float32)
        return check_outputs(out, self.name)

    def __call__(self, xs: Tensor, ys: Tensor) -> Tensor:
        return self.predict(xs, ys)

    @abc.abstractmethod
    def _predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Predictions for validated, non-empty inputs (any floating dtype)."""

    # scikit-learn's parameter protocol (get_params / set_params; sklearn.base.clone works) ---
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self"
                and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor hyperparameters and their current values (scikit-learn's protocol;
        no hyperparameter is itself an estimator, so ``deep`` changes nothing)."""
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params: Any) -> "Predictor":
        """Set hyperparameters in place and return ``self`` (scikit-learn's protocol). The new
        values are checked by the constructor, so an invalid or unknown hyperparameter raises
        ``ValueError`` naming it and leaves the predictor unchanged."""
        accepted = self._param_names()
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown hyperparameter(s) {', '.join(map(repr, unknown))}; "
                f"accepted: {', '.join(accepted) if accepted else '(none)'}"
            )
        checked = type(self)(**{**self.get_params(), **params})
        vars(self).update(vars(checked))
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class LinearPredictor(Predictor):
    """A predictor whose prediction at position ``i`` is ``ŵ_i · x_i`` for an implicit ŵ_i."""

    def weights(self, xs: Tensor, ys: Tensor) -> Tensor:
        """ŵ fitted on the first ``i`` points, shape ``(batch, n_points, n_dims)``, float32."""
        xs, ys = check_inputs(xs, ys, self.name)
        return check_outputs(self._weights(xs, ys).to(torch.float32), self.name, "weights")

    @abc.abstractmethod
    def _weights(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Weights for validated, non-empty inputs (any floating dtype, float64 preferred)."""

    def _predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        w = self._weights(xs, ys)
        return (w * xs.to(w.dtype)).sum(-1)


# --------------------------------------------------------------------------------------------
# hyperparameter checks (raise ValueError naming the hyperparameter)


def check_real(owner: str, name: str, value: Any, *, low: float | None = None,
               high: float | None = None, low_open: bool = False) -> float:
    """A finite real number within [low, high] (or (low, high] when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{owner}: hyperparameter {name!r} must be a finite real number, "
                         f"got {value!r}")
    value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        bound = ">" if low_open else ">="
        raise ValueError(f"{owner}: hyperparameter {name!r} must be {bound} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{owner}: hyperparameter {name!r} must be <= {high}, got {value!r}")
    return value


def check_int(owner: str, name: str, value: Any, *, low: int | None = None,
              allow_none: bool = False) -> int | None:
    """An integer (not a bool) >= low, or None when allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{owner}: hyperparameter {name!r} must be an integer"
                         f"{' or None' if allow_none else ''}, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{owner}: hyperparameter {name!r} must be >= {low}, got {value!r}")
    return value


def check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{owner}: hyperparameter {name!r} must be one of {choices}, "
                         f"got {value!r}")
    return value


def prefix_mask(n: int, device: torch.device | str | None = None) -> Tensor:
    """Boolean ``(n, n)`` mask, ``[i, j] = j < i``: point j is in the context of query i."""
    idx = torch.arange(n, device=device)
    return idx[None, :] < idx[:, None]


def exclusive_cumsum(t: Tensor, dim: int) -> Tensor:
    """Cumulative sum along ``dim`` that excludes the current element (first entry is 0)."""
    c = torch.cumsum(t, dim=dim)
    zero = torch.zeros_like(t.narrow(dim, 0, 1))
    return torch.cat([zero, c.narrow(dim, 0, t.shape[dim] - 1)], dim=dim)
