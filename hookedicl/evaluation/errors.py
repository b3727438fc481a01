"""Per-prompt, per-position errors and their mean curves with bootstrap confidence intervals."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ._arrays import ArrayLike, check_ci, check_errors, check_finite, to_numpy
from .bootstrap import SeedLike, as_rng, bootstrap_means, percentile_interval

CURVE_COLUMNS = ["position", "k", "mean", "ci_low", "ci_high"]


def squared_errors(preds: ArrayLike, ys: ArrayLike) -> np.ndarray:
    """Squared error of every prediction.

    Args:
        preds: predictions, shape ``(n_prompts, n_points)`` (or ``(n_prompts, n_points, *y_shape)``
            for vector targets).
        ys: targets, same shape as ``preds``.

    Returns:
        float64 array ``(n_prompts, n_points)``; for vector targets the squared errors are summed
        over the trailing target dimensions (squared Euclidean error).
    """
    p = to_numpy(preds, "preds")
    y = to_numpy(ys, "ys")
    if y.ndim < 2:
        raise ValueError(f"ys must be at least 2-D (n_prompts, n_points); got shape {tuple(y.shape)}")
    if p.shape != y.shape:
        raise ValueError(f"preds has shape {tuple(p.shape)} but ys has shape {tuple(y.shape)}")
    check_finite(p, "preds")
    check_finite(y, "ys")
    err = (p - y) ** 2
    if err.ndim > 2:
        err = err.reshape(err.shape[0], err.shape[1], -1).sum(axis=-1)
    return err


def y_second_moment_from(ys: ArrayLike) -> float:
    """Empirical E[y²] (E‖y‖² for vector targets) over all prompts and positions of ``ys``."""
    y = to_numpy(ys, "ys")
    if y.ndim < 2:
        raise ValueError(f"ys must be at least 2-D (n_prompts, n_points); got shape {tuple(y.shape)}")
    check_finite(y, "ys")
    return float((y.reshape(y.shape[0], y.shape[1], -1) ** 2).sum(axis=-1).mean())


def check_second_moment(value: float) -> float:
    """Return ``value`` as a float, raising ``ValueError`` unless it is finite and positive."""
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"y_second_moment must be finite and > 0; got {value!r}")
    return v


def normalized_errors(
    preds: ArrayLike, ys: ArrayLike, *, y_second_moment: float | None = None
) -> np.ndarray:
    """Squared errors divided by E[y²], so that always predicting 0 scores 1 on average (Garg et al.).

    Args:
        preds, ys: as in :func:`squared_errors`.
        y_second_moment: E[y²] of the task (e.g. ``task.y_second_moment()``); estimated from ``ys``
            over all prompts and positions when ``None``.

    Returns:
        float64 array ``(n_prompts, n_points)``.
    """
    err = squared_errors(preds, ys)
    if y_second_moment is None:
        y_second_moment = y_second_moment_from(ys)
    return err / check_second_moment(y_second_moment)


def _curve_frame(mean: np.ndarray, low: np.ndarray, high: np.ndarray) -> pd.DataFrame:
    positions = np.arange(mean.shape[0])
    return pd.DataFrame(
        {"position": positions, "k": positions, "mean": mean, "ci_low": low, "ci_high": high}
    )


def error_curve(
    err: ArrayLike | Mapping[str, ArrayLike],
    ci: float = 0.90,
    n_bootstrap: int = 1000,
    seed: SeedLike = 0,
) -> pd.DataFrame:
    """Mean error at every position with a percentile-bootstrap confidence interval over prompts.

    Args:
        err: per-prompt errors ``(n_prompts, n_points)``, or a mapping ``name -> errors`` to
            combine several predictors in one frame.  Predictors with the same ``n_prompts`` are
            resampled jointly (the same bootstrap prompts for all of them).
        ci: confidence level of the interval (Garg et al. use 0.90).
        n_bootstrap: number of bootstrap replicates.
        seed: int seed or numpy ``Generator`` driving the resampling.

    Returns:
        Tidy DataFrame with one row per position (per predictor): ``position`` (index of the query
        in the prompt), ``k`` (number of in-context examples the prediction sees; equal to
        ``position``), ``mean``, ``ci_low``, ``ci_high``; with a leading ``predictor`` column when
        ``err`` is a mapping.
    """
    check_ci(ci)
    rng = as_rng(seed)
    if not isinstance(err, Mapping):
        arr = to_numpy(err, "err")
        check_errors(arr, "err", (2,))
        boot = bootstrap_means(arr, n_bootstrap, rng)
        low, high = percentile_interval(boot, ci)
        return _curve_frame(arr.mean(axis=0), low, high)

    if len(err) == 0:
        raise ValueError("err is an empty mapping; give at least one predictor's errors")
    arrays: dict[str, np.ndarray] = {}
    for name, e in err.items():
        arr = to_numpy(e, f"err[{name!r}]")
        check_errors(arr, f"err[{name!r}]", (2,))
        arrays[name] = arr
    n_prompts = {a.shape[0] for a in arrays.values()}
    if len(n_prompts) == 1:
        names = list(arrays)
        stacked = np.concatenate([arrays[n] for n in names], axis=1)
        boot = bootstrap_means(stacked, n_bootstrap, rng)
        splits = np.cumsum([arrays[n].shape[1] for n in names])[:-1]
        boots = dict(zip(names, np.split(boot, splits, axis=1)))
    else:
        boots = {n: bootstrap_means(a, n_bootstrap, rng) for n, a in arrays.items()}
    frames = []
    for name, arr in arrays.items():
        low, high = percentile_interval(boots[name], ci)
        frame = _curve_frame(arr.mean(axis=0), low, high)
        frame.insert(0, "predictor", name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
