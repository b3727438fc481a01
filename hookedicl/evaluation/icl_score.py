"""ICL regression score (Campbell et al. 2024, eq. 1) with confidence intervals.

With ξ^(i) the mean squared error at context length i,

    S = Σ_i (ξ_model^(i) − ξ_zero^(i)) / Σ_i (ξ_base^(i) − ξ_zero^(i)),   i = 0 .. n_points−1,

where ξ_zero is the error of always predicting 0.  S = 1: as good as the baseline; S > 1: better;
S = 0: no better than predicting 0; S < 0: worse than predicting 0.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from ._arrays import ArrayLike, check_ci, check_errors, to_numpy
from .bootstrap import SeedLike, bootstrap_means

Mode = Literal["same_prompts", "fixed_curves", "curves"]
MODES: tuple[str, ...] = ("same_prompts", "fixed_curves", "curves")


@dataclass(frozen=True)
class ICLScore:
    """An ICL regression score with its confidence interval.

    Attributes:
        value: the score S.
        ci_low, ci_high: confidence interval at confidence ``level`` (both equal ``value`` for
            ``method="curves"``, where there is nothing to resample).
        method: ``"same_prompts"`` (percentile bootstrap over prompts), ``"fixed_curves"``
            (mean ± z·standard error of per-prompt scores) or ``"curves"`` (point value only).
        n_prompts: number of prompts behind the model errors (``None`` for ``"curves"``).
        level: confidence level of the interval (the ``ci`` argument).
        n_bootstrap: bootstrap replicates (``None`` unless ``method="same_prompts"``).
    """

    value: float
    ci_low: float
    ci_high: float
    method: str
    n_prompts: int | None
    level: float
    n_bootstrap: int | None = None

    def to_dict(self) -> dict[str, float | int | str | None]:
        """Plain-Python dict (JSON-serialisable)."""
        return asdict(self)

    def __repr__(self) -> str:
        prompts = "" if self.n_prompts is None else f", n_prompts={self.n_prompts}"
        return (
            f"ICLScore({self.value:.4g}, {round(100 * self.level)}% CI [{self.ci_low:.4g}, {self.ci_high:.4g}], "
            f"method={self.method!r}{prompts})"
        )

    def _repr_html_(self) -> str:
        from .._html import html_table

        return html_table(
            ["ICL score", f"{round(100 * self.level)}% CI low", "CI high", "method", "prompts"],
            [[self.value, self.ci_low, self.ci_high, self.method, self.n_prompts]],
        )


def _shape(a: np.ndarray) -> tuple[int, ...]:
    return tuple(a.shape)


def _infer_mode(model: np.ndarray, base: np.ndarray, zero: np.ndarray) -> str:
    if model.ndim == 2 and base.ndim == 2:
        return "same_prompts"
    if model.ndim == 2 and base.ndim == 1:
        if zero.ndim == 2:
            raise ValueError(
                f"zero_err must be a curve (n_points,) or a scalar when baseline_err is a curve; "
                f"got shape {_shape(zero)} (pass mode='fixed_curves' to average it over prompts)"
            )
        return "fixed_curves"
    if model.ndim == 1 and base.ndim == 1 and zero.ndim <= 1:
        return "curves"
    raise ValueError(
        f"cannot infer the mode from shapes model_err {_shape(model)}, baseline_err {_shape(base)}, "
        f"zero_err {_shape(zero)}; pass mode= one of {MODES}"
    )


def _as_curve(a: np.ndarray, n_points: int) -> np.ndarray:
    """Per-position curve (n_points,) from a scalar, a curve or per-prompt errors."""
    if a.ndim == 2:
        return a.mean(axis=0)
    return np.broadcast_to(a, (n_points,)).astype(np.float64)


def icl_regression_score(
    model_err: ArrayLike,
    baseline_err: ArrayLike,
    zero_err: ArrayLike,
    *,
    ci: float = 0.95,
    n_bootstrap: int = 1000,
    seed: SeedLike = 0,
    mode: Mode | None = None,
) -> ICLScore:
    """ICL regression score S of a model against a baseline (eq. 1), with a confidence interval.

    Inputs are squared errors (torch tensors or numpy arrays), summed over every position
    including position 0.  The mode follows from the shapes unless ``mode`` is given:

    * ``"same_prompts"`` (default when ``model_err`` and ``baseline_err`` are both
      ``(n_prompts, n_points)`` from the same prompts; ``zero_err`` likewise, or a curve
      ``(n_points,)`` / scalar): S is computed from the per-position means; the CI is a percentile
      bootstrap over prompts, resampling the three error arrays jointly.
    * ``"fixed_curves"`` (the anchor code's convention; default when ``model_err`` is
      ``(n_prompts, n_points)`` and ``baseline_err`` a curve ``(n_points,)``, with ``zero_err`` a
      curve or a scalar constant — e.g. noiseless linear regression: ξ_base^(i) = max(d − i, 0),
      ξ_zero = d): each prompt p gets S_p = Σ_i (ξ_zero^(i) − e_p^(i)) / Σ_i (ξ_zero^(i) − ξ_base^(i))
      with the fixed denominator; value = mean_p S_p, CI = value ± z·SE with
      SE = std(S_p, ddof=1)/√n_prompts and z the normal quantile for ``ci``.  Given per-prompt
      baseline or zero errors, their per-position means are used.
    * ``"curves"`` (default when all inputs are curves): S from the curves; no resampling is
      possible, so ``ci_low == ci_high == value``.  Per-prompt inputs are averaged over prompts.

    Args:
        model_err: model squared errors, ``(n_prompts, n_points)`` or ``(n_points,)``.
        baseline_err: baseline squared errors, ``(n_prompts, n_points)`` or ``(n_points,)``.
        zero_err: squared errors of the zero predictor (i.e. y²), ``(n_prompts, n_points)``,
            ``(n_points,)`` or a scalar (E[y²]).
        ci: confidence level in (0, 1).
        n_bootstrap: bootstrap replicates (``"same_prompts"`` only).
        seed: int seed or numpy ``Generator`` for the bootstrap.
        mode: force ``"same_prompts"``, ``"fixed_curves"`` or ``"curves"``.

    Raises:
        ValueError: naming the argument, for a wrong rank, mismatched ``n_points`` or
            ``n_prompts``, NaN/inf or negative errors, fewer than 2 prompts when a CI is requested,
            or a non-positive denominator (baseline no better than the zero predictor in total).
    """
    check_ci(ci)
    model = to_numpy(model_err, "model_err")
    base = to_numpy(baseline_err, "baseline_err")
    zero = to_numpy(zero_err, "zero_err")
    check_errors(model, "model_err", (1, 2))
    check_errors(base, "baseline_err", (1, 2))
    check_errors(zero, "zero_err", (0, 1, 2))

    if mode is None:
        mode = _infer_mode(model, base, zero)  # type: ignore[assignment]
    elif mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} or None; got {mode!r}")

    n_points = model.shape[-1]
    for name, arr in (("baseline_err", base), ("zero_err", zero)):
        if arr.ndim >= 1 and arr.shape[-1] != n_points:
            raise ValueError(
                f"{name} has n_points={arr.shape[-1]} (shape {_shape(arr)}) but model_err has "
                f"n_points={n_points} (shape {_shape(model)})"
            )

    if mode != "curves":
        if model.ndim != 2:
            raise ValueError(
                f"model_err must be 2-D (n_prompts, n_points) for mode={mode!r}; got shape {_shape(model)}"
            )
        if model.shape[0] < 2:
            raise ValueError(
                f"model_err needs at least 2 prompts for a confidence interval; got shape {_shape(model)}"
            )

    if mode == "same_prompts":
        if base.ndim != 2:
            raise ValueError(
                f"baseline_err must be 2-D (n_prompts, n_points) for mode='same_prompts'; "
                f"got shape {_shape(base)}"
            )
        for name, arr in (("baseline_err", base), ("zero_err", zero)):
            if arr.ndim == 2 and arr.shape[0] != model.shape[0]:
                raise ValueError(
                    f"{name} has n_prompts={arr.shape[0]} (shape {_shape(arr)}) but model_err has "
                    f"n_prompts={model.shape[0]} (shape {_shape(model)}); same-prompts mode needs "
                    f"errors from the same prompts"
                )
        zero_full = np.broadcast_to(zero, model.shape) if zero.ndim < 2 else zero
        gain_model = (zero_full - model).sum(axis=1)  # per prompt: Σ_i (ξ_zero − e_model)
        gain_base = (zero_full - base).sum(axis=1)
        denominator = float(gain_base.mean())
        _check_denominator(denominator, float(zero_full.sum(axis=1).mean()))
        value = float(gain_model.mean()) / denominator
        boot = bootstrap_means(np.stack([gain_model, gain_base], axis=1), n_bootstrap, seed)
        ok = boot[:, 1] > 0
        if not np.all(ok):
            warnings.warn(
                f"{int((~ok).sum())} of {n_bootstrap} bootstrap replicates had a non-positive "
                f"denominator and were left out of the interval",
                RuntimeWarning,
                stacklevel=2,
            )
        ratios = boot[ok, 0] / boot[ok, 1]
        alpha = (1.0 - ci) / 2.0
        low, high = np.quantile(ratios, [alpha, 1.0 - alpha]) if ratios.size else (np.nan, np.nan)
        return ICLScore(value, float(low), float(high), mode, int(model.shape[0]), float(ci), int(n_bootstrap))

    zero_curve = _as_curve(zero, n_points)
    base_curve = _as_curve(base, n_points)
    denominator = float((zero_curve - base_curve).sum())
    _check_denominator(denominator, float(zero_curve.sum()))

    if mode == "fixed_curves":
        per_prompt = (zero_curve[None, :] - model).sum(axis=1) / denominator
        n = per_prompt.shape[0]
        value = float(per_prompt.mean())
        se = float(per_prompt.std(ddof=1)) / math.sqrt(n)
        z = NormalDist().inv_cdf(0.5 + ci / 2.0)
        return ICLScore(value, value - z * se, value + z * se, mode, int(n), float(ci))

    model_curve = _as_curve(model, n_points)
    value = float((zero_curve - model_curve).sum()) / denominator
    return ICLScore(value, value, value, "curves", None, float(ci))


def _check_denominator(denominator: float, zero_total: float) -> None:
    if not denominator > 1e-12 * max(abs(zero_total), 1e-300):
        raise ValueError(
            f"baseline_err: the denominator Σ_i (ξ_zero^(i) − ξ_base^(i)) = {denominator:.6g} must be "
            f"> 0 (the baseline must have lower total error than the zero predictor; zero_err total "
            f"{zero_total:.6g})"
        )


@dataclass(frozen=True)
class ScoreChange:
    """The change of a quantity between two versions of a model on the same prompts.

    Attributes:
        before, after: the quantity (an ICL score, or a mean normalised error) of each version.
        delta: ``after − before``; ``ci_low`` / ``ci_high``: its percentile-bootstrap interval over
            prompts (the errors of both versions, the baseline's and the zero predictor's
            resampled jointly); ``n_prompts``, ``level``, ``n_bootstrap`` as in ``ICLScore``.
    """

    before: float
    after: float
    delta: float
    ci_low: float
    ci_high: float
    n_prompts: int
    level: float
    n_bootstrap: int


def icl_score_change(
    before_err: ArrayLike,
    after_err: ArrayLike,
    baseline_err: ArrayLike | None,
    zero_err: ArrayLike,
    *,
    ci: float = 0.95,
    n_bootstrap: int = 1000,
    seed: SeedLike = 0,
) -> ScoreChange:
    """Paired change of the ICL regression score (same-prompts mode) from ``before_err`` to
    ``after_err``, all ``(n_prompts, n_points)`` squared errors on the same prompts.

    ``before`` / ``after`` equal ``icl_regression_score(err, baseline_err, zero_err).value``; the
    interval of ``after − before`` comes from one bootstrap over prompts of the three per-prompt
    gains Σ_i (ξ_zero − e). With ``baseline_err=None`` the quantity is instead the mean error over
    positions divided by the mean of ``zero_err`` (the normalised error), and the interval is
    that of its paired difference.
    """
    check_ci(ci)
    a = to_numpy(before_err, "before_err")
    b = to_numpy(after_err, "after_err")
    z = to_numpy(zero_err, "zero_err")
    for name, arr in (("before_err", a), ("after_err", b), ("zero_err", z)):
        check_errors(arr, name, (2,))
        if arr.shape != a.shape:
            raise ValueError(f"{name} has shape {_shape(arr)} but before_err has {_shape(a)} (same prompts needed)")
    if a.shape[0] < 2:
        raise ValueError(f"before_err needs at least 2 prompts for a confidence interval; got shape {_shape(a)}")
    alpha = (1.0 - ci) / 2.0
    if baseline_err is None:
        m2 = float(z.mean())
        diff = (b - a).mean(axis=1) / m2
        boot = bootstrap_means(diff, n_bootstrap, seed)
        lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
        before, after = float(a.mean() / m2), float(b.mean() / m2)
        return ScoreChange(before, after, after - before, float(lo), float(hi), int(a.shape[0]), float(ci), int(n_bootstrap))
    base = to_numpy(baseline_err, "baseline_err")
    check_errors(base, "baseline_err", (2,))
    if base.shape != a.shape:
        raise ValueError(f"baseline_err has shape {_shape(base)} but before_err has {_shape(a)} (same prompts needed)")
    stats = np.stack([(z - a).sum(1), (z - b).sum(1), (z - base).sum(1)], axis=1)
    m = stats.mean(0)
    _check_denominator(float(m[2]), float(z.sum(1).mean()))
    boot = bootstrap_means(stats, n_bootstrap, seed)
    ok = boot[:, 2] > 0
    delta = (boot[ok, 1] - boot[ok, 0]) / boot[ok, 2]
    lo, hi = np.quantile(delta, [alpha, 1.0 - alpha]) if delta.size else (np.nan, np.nan)
    before, after = float(m[0] / m[2]), float(m[1] / m[2])
    return ScoreChange(before, after, after - before, float(lo), float(hi), int(a.shape[0]), float(ci), int(n_bootstrap))
