"""Evaluate several predictors on the same sampled prompts of a task."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch

from ..progress import progress_bar
from .bootstrap import SeedLike, bootstrap_means, percentile_interval
from .errors import check_second_moment, error_curve
from .icl_score import ICLScore, icl_regression_score

ZERO = "zero"
"""Name under which the zero predictor's errors (y²) are stored."""


@runtime_checkable
class HasPredict(Protocol):
    """A baseline: ``predict(xs (b, n, d), ys (b, n)) -> (b, n)``."""

    def predict(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor: ...


Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | HasPredict


def _predict_fn(name: str, predictor: Any) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    if isinstance(predictor, HasPredict):
        return predictor.predict
    if callable(predictor):
        return predictor
    raise ValueError(
        f"predictors[{name!r}] must be callable f(xs, ys) or have .predict(xs, ys); "
        f"got {type(predictor).__name__}"
    )


def _module_of(predictor: Any) -> torch.nn.Module | None:
    """The ``nn.Module`` behind a predictor (the predictor itself, or the owner of ``.predict``)."""
    if isinstance(predictor, torch.nn.Module):
        return predictor
    owner = getattr(getattr(predictor, "predict", None), "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


def _device_of(module: torch.nn.Module | None) -> torch.device | None:
    if module is None:
        return None
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return None


@contextmanager
def _eval_mode(modules: list[torch.nn.Module]) -> Iterator[None]:
    """Put ``modules`` in eval mode; restore every submodule's own ``training`` flag afterwards."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, training in saved:
            m.training = training


def _task_name(task: Any) -> str:
    name = getattr(task, "name", None)
    return name if isinstance(name, str) and name else type(task).__name__


def _to_numpy(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().to("cpu", torch.float64).numpy()
    return np.asarray(t, dtype=np.float64)


def _sq_err(preds: np.ndarray, ys: np.ndarray) -> np.ndarray:
    err = (preds - ys) ** 2
    return err.reshape(err.shape[0], err.shape[1], -1).sum(axis=-1)


@dataclass
class EvalResult:
    """Squared errors of several predictors on the same prompts.

    Attributes:
        errors: ``name -> (n_prompts, n_points)`` squared errors, including ``"zero"`` (= y²).
            Row p of every array comes from the same prompt p.
        y_second_moment: E[y²] used to normalise errors (the task's value, or estimated).
        task: task name.
        y_second_moment_source: ``"task"``, ``"given"`` or ``"estimated"``.
        n_dims_active: active input dimensions the prompts were sampled with (``None``: all).
        seed: seed of the prompt generator (``None`` when a generator was passed in).
        y_second_moment_empirical: mean y² over the sampled prompts.
    """

    errors: dict[str, np.ndarray]
    y_second_moment: float
    task: str
    y_second_moment_source: str = "task"
    n_dims_active: int | None = None
    seed: int | None = None
    y_second_moment_empirical: float | None = None

    def __post_init__(self) -> None:
        if ZERO not in self.errors:
            raise ValueError(f"errors must contain the zero predictor under {ZERO!r}; got {list(self.errors)}")
        shapes = {tuple(e.shape) for e in self.errors.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"errors must all share one 2-D shape (n_prompts, n_points); got {shapes}")
        self.y_second_moment = check_second_moment(self.y_second_moment)

    def __repr__(self) -> str:
        return (
            f"EvalResult(task={self.task!r}, n_prompts={self.n_prompts}, n_points={self.n_points}, "
            f"predictors={self.predictors}, y_second_moment={self.y_second_moment:.4g} ({self.y_second_moment_source}))"
        )

    def summary_ks(self, max_columns: int = 6) -> list[int]:
        """At most ``max_columns`` context lengths, evenly spaced from 0 to ``n_points - 1``."""
        n = self.n_points
        return sorted({int(round(v)) for v in np.linspace(0, n - 1, min(n, max_columns))})

    def _repr_html_(self) -> str:
        from .._html import html_table

        ks = self.summary_ks()
        rows = [[name, *self.normalized_errors(name).mean(axis=0)[ks].tolist()] for name in [*self.predictors, ZERO]]
        caption = (
            f"EvalResult: {self.task}, {self.n_prompts} prompts x {self.n_points} points; mean squared error "
            f"/ E[y²] ({self.y_second_moment:.4g}, {self.y_second_moment_source}) after k examples"
        )
        return html_table(["predictor", *(f"k = {k}" for k in ks)], rows, caption)

    @property
    def n_prompts(self) -> int:
        return int(self.errors[ZERO].shape[0])

    @property
    def n_points(self) -> int:
        return int(self.errors[ZERO].shape[1])

    @property
    def predictors(self) -> list[str]:
        """Names of the evaluated predictors (without ``"zero"``)."""
        return [n for n in self.errors if n != ZERO]

    def _get(self, name: str, what: str = "name") -> np.ndarray:
        if name not in self.errors:
            raise ValueError(f"{what} {name!r} is not among the evaluated predictors {list(self.errors)}")
        return self.errors[name]

    def normalized_errors(self, name: str) -> np.ndarray:
        """Squared errors of ``name`` divided by E[y²], shape ``(n_prompts, n_points)``."""
        return self._get(name) / self.y_second_moment

    def curves(
        self,
        *,
        ci: float = 0.90,
        n_bootstrap: int = 1000,
        seed: SeedLike = 0,
        predictors: list[str] | None = None,
        normalized: bool = True,
    ) -> pd.DataFrame:
        """Tidy error curves: columns ``predictor, position, k, mean, ci_low, ci_high``.

        Errors are normalised by E[y²] unless ``normalized=False``; CIs are percentile bootstrap
        intervals over prompts (all predictors resampled jointly).  ``predictors`` selects and
        orders the predictors (default: all, then ``"zero"``).
        """
        names = predictors if predictors is not None else self.predictors + [ZERO]
        scale = self.y_second_moment if normalized else 1.0
        return error_curve(
            {n: self._get(n, "predictor") / scale for n in names}, ci=ci, n_bootstrap=n_bootstrap, seed=seed
        )

    def icl_score(
        self,
        name: str,
        baseline: str = "least_squares",
        *,
        ci: float = 0.95,
        n_bootstrap: int = 1000,
        seed: SeedLike = 0,
    ) -> ICLScore:
        """ICL regression score of ``name`` against ``baseline`` (same-prompts mode, bootstrap CI)."""
        return icl_regression_score(
            self._get(name),
            self._get(baseline, "baseline"),
            self.errors[ZERO],
            ci=ci,
            n_bootstrap=n_bootstrap,
            seed=seed,
            mode="same_prompts",
        )

    def _default_model(self, baseline: str) -> str | None:
        candidates = [n for n in self.predictors if n != baseline]
        if "model" in candidates:
            return "model"
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            return None
        raise ValueError(f"several predictors {candidates}; pass model= to choose the one to score")

    def to_json_dict(
        self,
        model: str | None = None,
        baseline: str = "least_squares",
        *,
        ci: float = 0.90,
        score_ci: float = 0.95,
        n_bootstrap: int = 1000,
        seed: SeedLike = 0,
    ) -> dict[str, Any]:
        """JSON-serialisable summary (the content of ``RUN/eval/summary.json``).

        Keys: ``icl_score`` (``{"value", "ci_low", "ci_high", "baseline", "model", ...}`` for
        ``model`` against ``baseline``; ``None`` when the baseline was not evaluated or there is no
        other predictor), ``normalized_errors`` (``name -> per-position mean``, ``"zero"``
        included), ``ci`` (``{"level", "n_bootstrap", "method", "low": {name: [...]},
        "high": {name: [...]}}``), ``icl_scores`` (every non-baseline predictor against
        ``baseline``), ``k``, ``n_prompts``, ``n_points``, ``task``, ``y_second_moment``,
        ``y_second_moment_source``, ``y_second_moment_empirical``, ``n_dims_active``, ``seed``.

        ``model`` defaults to the predictor named ``"model"``, else the only non-baseline predictor.
        """
        if model is not None:
            self._get(model, "model")
        score: dict[str, Any] | None = None
        scores: dict[str, Any] = {}
        if baseline in self.errors and baseline != ZERO:
            model = model if model is not None else self._default_model(baseline)
            for name in self.predictors:
                if name == baseline:
                    continue
                s = self.icl_score(name, baseline, ci=score_ci, n_bootstrap=n_bootstrap, seed=seed)
                scores[name] = {**s.to_dict(), "baseline": baseline}
            if model is not None:
                score = {**scores[model], "model": model}
        names = self.predictors + [ZERO]
        stacked = np.concatenate([self.normalized_errors(n) for n in names], axis=1)
        boot = bootstrap_means(stacked, n_bootstrap, seed)
        low, high = percentile_interval(boot, ci)
        means = stacked.mean(axis=0)

        def split(a: np.ndarray) -> dict[str, list[float]]:
            return {n: [float(v) for v in part] for n, part in zip(names, np.split(a, len(names)))}

        return {
            "icl_score": score,
            "normalized_errors": split(means),
            "ci": {
                "level": float(ci),
                "n_bootstrap": int(n_bootstrap),
                "method": "percentile bootstrap over prompts",
                "low": split(low),
                "high": split(high),
            },
            "icl_scores": scores,
            "k": list(range(self.n_points)),
            "n_prompts": self.n_prompts,
            "n_points": self.n_points,
            "task": self.task,
            "y_second_moment": float(self.y_second_moment),
            "y_second_moment_source": self.y_second_moment_source,
            "n_dims_active": self.n_dims_active,
            "seed": self.seed,
            "y_second_moment_empirical": self.y_second_moment_empirical,
        }


def _sampler(task: Any, n_dims_active: int | None) -> Callable[..., Any]:
    sample = task.sample
    if n_dims_active is None:
        return sample
    params = inspect.signature(sample).parameters
    if "n_dims_active" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise ValueError(f"n_dims_active={n_dims_active} given but {type(task).__name__}.sample does not accept it")
    return lambda **kw: sample(n_dims_active=n_dims_active, **kw)


def _task_second_moment(task: Any, n_dims_active: int | None) -> float | None:
    method = getattr(task, "y_second_moment", None)
    if method is None:
        return None
    try:
        value = method(n_dims_active=n_dims_active)
    except NotImplementedError:
        return None
    return None if value is None else float(value)


def evaluate(
    predictors: Mapping[str, Predictor],
    task: Any,
    *,
    n_prompts: int = 1280,
    n_points: int | None = None,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    seed: int = 0,
    n_dims_active: int | None = None,
    y_second_moment: float | None = None,
    progress: bool | None = None,
) -> EvalResult:
    """Squared errors of every predictor (and of the zero predictor) on the same prompts.

    Prompts are drawn from ``task.sample(batch_size=, n_points=, generator=)`` in batches; every
    predictor sees exactly the same ``(xs (b, n_points, n_dims), ys (b, n_points))``.  Predictors
    are callables ``f(xs, ys) -> (b, n_points)`` (models) or objects with ``.predict(xs, ys)``
    (baselines).  Evaluation runs under ``torch.no_grad()``; ``nn.Module`` predictors are put in
    eval mode and their (and their submodules') training flags restored afterwards; inputs are
    moved to a module's device.

    Args:
        predictors: ``name -> predictor``; the name ``"zero"`` is reserved.
        task: object with ``sample(...)`` and optionally ``y_second_moment(n_dims_active=)``.
        n_prompts: number of prompts (Garg et al. use 1280).
        n_points: points per prompt (default: ``task.n_points`` if it exists).
        batch_size: prompts per sampled batch.
        generator: torch generator for sampling; default ``torch.Generator().manual_seed(seed)``.
        seed: seed used when ``generator`` is ``None``.
        n_dims_active: forwarded to ``task.sample`` and ``task.y_second_moment`` when given.
        y_second_moment: E[y²] for normalisation; default the task's value, else estimated from
            the sampled ys.
        progress: a progress bar over the prompts (``None``: when stderr is a terminal; see
            :mod:`hookedicl.progress`).

    Returns:
        :class:`EvalResult` with errors of shape ``(n_prompts, n_points)`` per predictor.
    """
    if not isinstance(predictors, Mapping):
        raise ValueError(f"predictors must be a mapping name -> predictor; got {type(predictors).__name__}")
    if ZERO in predictors:
        raise ValueError(f"predictors: the name {ZERO!r} is reserved for the zero predictor")
    if not isinstance(n_prompts, int) or n_prompts < 1:
        raise ValueError(f"n_prompts must be a positive integer; got {n_prompts!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    if n_points is None:
        n_points = getattr(task, "n_points", None)
        if n_points is None:
            raise ValueError("n_points must be given (the task has no n_points attribute)")
    if not isinstance(n_points, int) or n_points < 1:
        raise ValueError(f"n_points must be a positive integer; got {n_points!r}")

    fns = {name: _predict_fn(name, p) for name, p in predictors.items()}
    modules = {name: _module_of(p) for name, p in predictors.items()}
    devices = {name: _device_of(m) for name, m in modules.items()}
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
        used_seed: int | None = seed
    else:
        used_seed = None
    sample = _sampler(task, n_dims_active)

    chunks: dict[str, list[np.ndarray]] = {name: [] for name in [*predictors, ZERO]}
    y2_sum, y2_count = 0.0, 0
    unique_modules = list({id(m): m for m in modules.values() if m is not None}.values())
    bar = progress_bar(total=n_prompts, desc="eval", unit="prompt", enabled=progress)
    with bar, torch.no_grad(), _eval_mode(unique_modules):
        for start in range(0, n_prompts, batch_size):
            b = min(batch_size, n_prompts - start)
            batch = sample(batch_size=b, n_points=n_points, generator=generator)
            xs, ys = batch.xs, batch.ys
            ys_np = _to_numpy(ys)
            if ys_np.ndim < 2 or ys_np.shape[:2] != (b, n_points):
                raise ValueError(
                    f"task.sample returned ys of shape {tuple(ys_np.shape)}; expected ({b}, {n_points}, ...)"
                )
            zero_err = _sq_err(np.zeros_like(ys_np), ys_np)
            chunks[ZERO].append(zero_err)
            y2_sum += float(zero_err.sum())
            y2_count += zero_err.size
            for name, fn in fns.items():
                device = devices[name]
                if device is not None:
                    preds = fn(xs.to(device), ys.to(device))
                else:
                    preds = fn(xs, ys)
                p = _to_numpy(preds)
                if p.shape != ys_np.shape:
                    raise ValueError(
                        f"predictor {name!r} returned shape {tuple(p.shape)}; expected {tuple(ys_np.shape)}"
                    )
                if not np.all(np.isfinite(p)):
                    raise ValueError(f"predictor {name!r} returned non-finite predictions")
                chunks[name].append(_sq_err(p, ys_np))
            bar.update(b)

    errors = {name: np.concatenate(parts, axis=0) for name, parts in chunks.items()}
    if y_second_moment is not None:
        ey2, source = float(y_second_moment), "given"
    else:
        from_task = _task_second_moment(task, n_dims_active)
        if from_task is not None:
            ey2, source = from_task, "task"
        else:
            ey2, source = y2_sum / max(y2_count, 1), "estimated"
    if not math.isfinite(ey2) or ey2 <= 0:
        raise ValueError(f"y_second_moment ({source}) must be finite and > 0; got {ey2!r}")
    return EvalResult(
        errors=errors,
        y_second_moment=ey2,
        task=_task_name(task),
        y_second_moment_source=source,
        n_dims_active=n_dims_active,
        seed=used_seed,
        y_second_moment_empirical=y2_sum / max(y2_count, 1),
    )
