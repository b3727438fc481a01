"""Probing (Akyürek et al. 2023): what can be decoded, linearly or by a small MLP, from a hook's
activations after the model has seen k in-context examples?

Positions. Token-level hooks are `[batch, 2*n_points, ...]` over the interleaved sequence
`x_0, y_0, x_1, y_1, ...` (0-based): token `2i` is the query `x_i`, token `2i + 1` is `y_i`. At
token `p` the model has seen `k(p) = (p + 1) // 2` complete examples: `k = i` at `x_i` (where it
predicts `y_i` from examples `0..i-1`), `k = i + 1` at `y_i`. Every row reports `pos` (the token
index), `token` (`"x"` / `"y"`) and `k`. The default positions are the x tokens: "after seeing i
examples, at the query x_i".

Targets. A target maps the prompts to `(batch, t)` (one value per prompt, e.g. the task's `w`)
or to one value per prefix length, `(batch, n_points + 1, t)` with row `k` computed from the first
`k` examples (row 0 from none) — the convention of the baselines' `.weights` — or
`(batch, n_points, t)` (rows `0..n_points-1`; then the last y token has no row). Built in:
`"w"` (task parameter `w`), `"xty"` (Xᵀy over the first k points, a sum), `"ols"` (min-norm least
squares ŵ), `"ridge"` (ridge ŵ, λ = 1; `ridge(alpha)` for another λ), `"gd"` (one GD step, lr 1;
`gd(steps, lr)`), any `LinearPredictor` baseline (its `.weights`), or any callable
`target(batch) -> tensor` (`batch`: a `TaskBatch` with `.xs`, `.ys`, `.params`).

Probes. `LinearProbe` (ridge on standardised features, λ by exact leave-one-out: scikit-learn's
`RidgeCV`, computed in torch) and `MLPProbe` (one hidden ReLU layer, trained full-batch with AdamW
in torch). Both are scikit-learn estimators (`clone`, `Pipeline`, `cross_val_score`,
`GridSearchCV` work on them), and `fit_stack` fits many probes at once (one per token position),
the fast path the analyses here use; each stacked probe equals the one fitted alone. Both are
fitted on a seeded split of the prompts (`test_frac` held out; the same split for every hook,
layer and position) and scored on the held-out prompts: `mean` is the held-out R²
(`metric = "r2"`), pooled over the target's coordinates (1 − ΣSSE / ΣSST, SST around the held-out
mean; NaN when the target does not vary, e.g. Xᵀy at k = 0), with a percentile
bootstrap CI over held-out prompts; `mse` is the held-out mean squared error per coordinate.

Controls (`controls=`): `"shuffle"` (targets permuted across prompts: R² ≈ 0 expected) and
`"untrained"` (the same architecture at a fresh, seeded initialisation, probed on the same
prompts). Rows carry `control` = `"none"`, `"shuffle"` or `"untrained"`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from ..baselines import GradientDescent, LeastSquares, LinearPredictor, Ridge
from ..evaluation.bootstrap import bootstrap_means
from ..progress import progress_bar
from ..models.sites import hook_layer, hook_pos_dim
from ..models.sites import token_positions as select_tokens
from ..tasks import TaskBatch
from .common import RESID, check_prompts, hook_guard, require_model, resolve_sites

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "LinearProbe", "MLPProbe", "Target", "analyze_run", "as_target", "baseline_target", "gd", "ols", "plot_probe", "probe",
    "probe_activations", "probe_over_training", "ridge", "task_param", "xty",
]

CONTROLS = ("shuffle", "untrained")
COLUMNS = [
    "hook", "layer", "pos", "token", "k", "target", "probe", "control", "metric", "mean", "ci_low", "ci_high",
    "mse", "n_train", "n_test",
]


# ------------------------------------------------------------------------------------ targets
@dataclass(frozen=True)
class Target:
    """A named probing target; `fn(batch)` returns `(b, t)`, `(b, n_points + 1, t)` or
    `(b, n_points, t)` (see the module docstring)."""

    name: str
    fn: Callable[[TaskBatch], torch.Tensor]


def task_param(key: str = "w") -> Target:
    """The task parameter `batch.params[key]`, flattened to `(b, t)` (same for every k)."""

    def fn(batch: TaskBatch) -> torch.Tensor:
        if key not in batch.params:
            raise ValueError(f"target {key!r} needs params[{key!r}]; the prompts' params have {sorted(batch.params)}")
        p = batch.params[key]
        return p.reshape(p.shape[0], -1).to(torch.float64)

    return Target(key, fn)


def xty() -> Target:
    """Xᵀy over the first k points (a sum, not a mean): `(b, n_points + 1, n_dims * y_dim)`."""

    def fn(batch: TaskBatch) -> torch.Tensor:
        x = batch.xs.to(torch.float64)
        y = batch.ys.to(torch.float64).reshape(*x.shape[:2], -1)
        xy = torch.einsum("bnd,bny->bndy", x, y).reshape(*x.shape[:2], -1)
        return torch.cat([xy.new_zeros(xy.shape[0], 1, xy.shape[2]), xy.cumsum(1)], dim=1)

    return Target("xty", fn)


def baseline_target(predictor: LinearPredictor, name: str | None = None) -> Target:
    """The implicit weight ŵ of a linear baseline fitted on the first k points, k = 0..n_points
    (`.weights` on the prompts padded with one dummy point, so row n_points uses all of them)."""
    if not isinstance(predictor, LinearPredictor):
        raise ValueError(f"baseline_target needs a LinearPredictor (with .weights), got {type(predictor).__name__}")

    def fn(batch: TaskBatch) -> torch.Tensor:
        xs, ys = batch.xs, batch.ys
        xs_pad = torch.cat([xs, xs.new_zeros(xs.shape[0], 1, xs.shape[2])], dim=1)
        ys_pad = torch.cat([ys, ys.new_zeros(ys.shape[0], 1, *ys.shape[2:])], dim=1)
        return predictor.weights(xs_pad, ys_pad).to(torch.float64)

    return Target(name or repr(predictor), fn)


def ols() -> Target:
    """Min-norm least squares ŵ on the first k points."""
    return baseline_target(LeastSquares(), "ols")


def ridge(alpha: float = 1.0) -> Target:
    """Ridge ŵ = (XᵀX + αI)⁻¹Xᵀy on the first k points."""
    return baseline_target(Ridge(alpha=alpha), "ridge" if alpha == 1.0 else f"ridge(alpha={alpha:g})")


def gd(steps: int = 1, lr: float = 1.0) -> Target:
    """ŵ after `steps` steps of full-batch GD from 0 (see `hookedicl.baselines.GradientDescent`)."""
    default = steps == 1 and lr == 1.0
    return baseline_target(GradientDescent(steps=steps, lr=lr), "gd" if default else f"gd(steps={steps}, lr={lr:g})")


_BUILTIN: dict[str, Callable[[], Target]] = {"w": task_param, "xty": xty, "ols": ols, "ridge": ridge, "gd": gd}


def as_target(spec: Any) -> Target:
    """A `Target` from a built-in name, a `Target`, a `LinearPredictor`, or a callable."""
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, str):
        if spec not in _BUILTIN:
            raise ValueError(f"unknown target {spec!r}; built-in targets: {sorted(_BUILTIN)} (or pass a callable)")
        return _BUILTIN[spec]()
    if isinstance(spec, LinearPredictor):
        return baseline_target(spec)
    if callable(spec):
        return Target(getattr(spec, "__name__", "target"), spec)
    raise ValueError(f"a target must be a name, a Target, a LinearPredictor or a callable; got {spec!r}")


def _target_table(target: Target, batch: TaskBatch) -> np.ndarray:
    """`(b, K, t)` float64: K = 1 for a per-prompt target, else one row per prefix length."""
    t = target.fn(batch)
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"target {target.name!r} must return a torch.Tensor, got {type(t).__name__}")
    b, n = batch.xs.shape[:2]
    if t.ndim not in (2, 3) or t.shape[0] != b:
        raise ValueError(f"target {target.name!r} returned shape {tuple(t.shape)}; expected ({b}, t) or ({b}, {n} or {n + 1}, t)")
    if t.ndim == 3 and t.shape[1] not in (n, n + 1):
        raise ValueError(f"target {target.name!r} returned {t.shape[1]} rows per prompt; expected {n} or {n + 1} (k = 0..n)")
    a = t.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(a).all():
        raise ValueError(f"target {target.name!r} contains NaN or inf")
    return a[:, None, :] if a.ndim == 2 else a


# ------------------------------------------------------------------------------------- probes
class _Probe(RegressorMixin, BaseEstimator):
    """The scikit-learn side shared by the probes. `fit(X, y)`: X `(n, f)`, y `(n,)` or `(n, t)`;
    `predict(X)`: `(m,)` after a 1-D y, else `(m, t)`. `fit_stack(X, Y)` fits P independent
    problems `(P, n, f)`, `(P, n, t)` at once in torch (the fast path the probing analyses use)
    and returns P fitted estimators, each the one `clone(probe).fit(X[p], Y[p])` gives (up to
    float rounding). Hyperparameters are checked when fitting, not in `__init__`."""

    name: ClassVar[str] = ""

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: Any, y: Any) -> Self:
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        y = np.asarray(y, np.float64)
        self._check_params()
        self._set_fitted(self._fit_stack(X[None], y.reshape(len(y), -1)[None]), 0, y.ndim)
        return self

    def fit_stack(self, X: Any, Y: Any) -> list[Self]:
        """P probes fitted at once: X `(P, n, f)`, Y `(P, n)` or `(P, n, t)` → P fitted clones."""
        X3, Y3 = np.asarray(X, np.float64), np.asarray(Y, np.float64)
        y_ndim = Y3.ndim - 1
        if Y3.ndim == 2:
            Y3 = Y3[..., None]
        if X3.ndim != 3 or Y3.ndim != 3 or X3.shape[:2] != Y3.shape[:2] or 0 in X3.shape or Y3.shape[2] == 0:
            raise ValueError(
                f"{type(self).__name__}.fit_stack needs X (P, n, f) and Y (P, n) or (P, n, t) with the same "
                f"non-zero P and n; got X {np.shape(X)}, Y {np.shape(Y)}"
            )
        for arg, a in (("X", X3), ("Y", Y3)):
            if not np.isfinite(a).all():
                raise ValueError(f"{type(self).__name__}.fit_stack: {arg} (shape {a.shape}) contains NaN or inf")
        self._check_params()
        fitted = self._fit_stack(X3, Y3)
        out = []
        for p in range(X3.shape[0]):
            est = clone(self)
            est.n_features_in_ = X3.shape[2]
            est._set_fitted(fitted, p, y_ndim)
            out.append(est)
        return out

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = self._forward(X)
        return out[:, 0] if self._y_ndim == 1 else out

    # subclasses: check the hyperparameters, fit a stack (P, n, f) -> arrays with a leading P
    # axis, store problem p's fitted attributes, and map X (m, f) -> (m, t)
    def _check_params(self) -> None:
        raise NotImplementedError

    def _fit_stack(self, X: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _set_fitted(self, fitted: dict[str, np.ndarray], p: int, y_ndim: int) -> None:
        raise NotImplementedError

    def _forward(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over axis 1 of `(P, n, f)` (a constant column gets sd 1)."""
    mu = x.mean(1, keepdim=True)
    sd = x.std(1, correction=0, keepdim=True)
    return mu, torch.where(sd > 1e-8, sd, torch.ones_like(sd))


class LinearProbe(_Probe):
    """Ridge regression on features standardised with the training statistics, λ chosen from
    `alphas` by exact leave-one-out squared error (pooled over the targets; the first of tied
    λ): the model scikit-learn's `RidgeCV(alphas, fit_intercept=True)` fits on the standardised
    features, computed in torch from one SVD per problem, for a whole stack of problems at once.

    Fitted attributes: `coef_` `(f,)` or `(t, f)` and `intercept_` (float or `(t,)`) in the
    units of the input features, `alpha_` (the chosen λ), `n_features_in_`."""

    name: ClassVar[str] = "linear"

    def __init__(self, *, alphas: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)) -> None:
        self.alphas = alphas

    def _check_params(self) -> None:
        a = np.asarray(self.alphas, dtype=np.float64) if np.ndim(self.alphas) == 1 else None
        if a is None or not a.size or not np.isfinite(a).all() or (a <= 0).any():
            raise ValueError(f"LinearProbe: alphas must be a non-empty sequence of positive numbers, got {self.alphas!r}")

    def _fit_stack(self, X: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
        x, y = torch.tensor(X), torch.tensor(Y)  # copies: X may be a read-only memmap
        n = x.shape[1]
        mu, sd = _standardise(x)
        z = (x - mu) / sd
        zm, ym = z.mean(1, keepdim=True), y.mean(1, keepdim=True)
        zc, yc = z - zm, y - ym
        U, S, Vh = torch.linalg.svd(zc, full_matrices=False)  # (P, n, r), (P, r), (P, r, f)
        s2, uty = S**2, U.mT @ yc  # (P, r), (P, r, t)
        errs = []
        for alpha in np.asarray(self.alphas, np.float64):
            shrink = s2 / (s2 + alpha)  # (P, r): the hat matrix H = U diag(shrink) Uᵀ (+ 1/n, intercept)
            resid = yc - U @ (shrink[..., None] * uty)
            h = (U**2 * shrink[:, None, :]).sum(-1) + 1.0 / n  # (P, n)
            e = ((resid / (1.0 - h)[..., None]) ** 2).mean((1, 2))  # leave-one-out squared error
            errs.append(torch.where(torch.isfinite(e), e, torch.full_like(e, math.inf)))
        best = torch.stack(errs, 1).argmin(1)  # (P,): the first minimum
        alpha = torch.as_tensor(np.asarray(self.alphas, np.float64))[best]
        w = Vh.mT @ ((S / (s2 + alpha[:, None]))[..., None] * uty)  # (P, f, t) in standardised units
        b = ym - zm @ w  # (P, 1, t)
        coef = w / sd.mT
        intercept = b - mu @ coef
        return {"coef": coef.mT.numpy(), "intercept": intercept[:, 0].numpy(), "alpha": alpha.numpy()}

    def _set_fitted(self, fitted: dict[str, np.ndarray], p: int, y_ndim: int) -> None:
        self._y_ndim = y_ndim
        self.alpha_ = float(fitted["alpha"][p])
        self.coef_ = fitted["coef"][p][0] if y_ndim == 1 else fitted["coef"][p]
        self.intercept_ = float(fitted["intercept"][p][0]) if y_ndim == 1 else fitted["intercept"][p]

    def _forward(self, X: np.ndarray) -> np.ndarray:
        return X @ np.atleast_2d(self.coef_).T + self.intercept_


class MLPProbe(_Probe):
    """A one-hidden-layer ReLU MLP `(f -> hidden -> t)` on standardised features and targets,
    trained full-batch with AdamW from a seeded init (output layer 0: the probe starts by
    predicting the training mean), with early stopping: `val_frac` of the training rows
    (seeded; none when fewer than 10 rows) are held back and the probe keeps the parameters of
    its best validation loss (checked every 10 steps, up to `steps`). Trained in float32 torch;
    a stack (`fit_stack`) trains P independent probes at once, each from the same init and
    split as a probe fitted alone.

    Fitted attributes: `coefs_` `[(f, hidden), (hidden, t)]`, `intercepts_` `[(hidden,), (t,)]`
    (on standardised data), `mean_`, `scale_` `(f,)` and `y_mean_`, `y_scale_` `(t,)` (the
    standardisation), `n_features_in_`."""

    name: ClassVar[str] = "mlp"

    def __init__(
        self, *, hidden: int = 64, steps: int = 300, lr: float = 1e-2, weight_decay: float = 1e-2,
        val_frac: float = 0.2, seed: int = 0,
    ) -> None:
        self.hidden, self.steps, self.lr, self.weight_decay = hidden, steps, lr, weight_decay
        self.val_frac, self.seed = val_frac, seed

    def _check_params(self) -> None:
        for k in ("hidden", "steps", "seed"):
            v = getattr(self, k)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (0 if k == "seed" else 1):
                raise ValueError(f"MLPProbe: {k} must be a {'non-negative' if k == 'seed' else 'positive'} int, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"MLPProbe: lr must be > 0, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"MLPProbe: weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.val_frac, (int, float)) and 0 <= self.val_frac < 1):
            raise ValueError(f"MLPProbe: val_frac must be in [0, 1), got {self.val_frac!r}")

    def _fit_stack(self, X: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
        X, Y = torch.tensor(X), torch.tensor(Y)
        mu, sd = _standardise(X)
        ymu, ysd = _standardise(Y)
        x = ((X - mu) / sd).float()
        y = ((Y - ymu) / ysd).float()
        P, n, f = x.shape
        n_val = int(round(self.val_frac * n)) if n >= 10 else 0
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        fit_idx, val_idx = perm[n_val:], perm[:n_val]
        init = torch.randn(f, self.hidden, generator=torch.Generator().manual_seed(self.seed)) * math.sqrt(2.0 / f)
        w1 = init.expand(P, f, self.hidden).clone().requires_grad_()  # every problem: the init of a probe fitted alone
        b1 = torch.zeros(P, 1, self.hidden, requires_grad=True)
        w2 = torch.zeros(P, self.hidden, y.shape[2], requires_grad=True)  # starts at the train mean
        b2 = torch.zeros(P, 1, y.shape[2], requires_grad=True)
        params = [w1, b1, w2, b2]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

        def loss(idx: torch.Tensor) -> torch.Tensor:
            out = torch.relu(x[:, idx] @ w1 + b1) @ w2 + b2
            return ((out - y[:, idx]) ** 2).mean(dim=(1, 2))  # (P,)

        best = [p.detach().clone() for p in params]
        best_val = torch.full((P,), float("inf"))
        with torch.enable_grad():
            for step in range(self.steps + 1):
                if n_val and step % 10 == 0:
                    with torch.no_grad():
                        val = loss(val_idx)
                        better = val < best_val
                        best_val = torch.where(better, val, best_val)
                        for bp, p in zip(best, params):
                            bp[better] = p[better]
                if step == self.steps:
                    break
                opt.zero_grad()
                loss(fit_idx).sum().backward()
                opt.step()
        w1, b1, w2, b2 = (p.double().numpy() for p in (best if n_val else [p.detach() for p in params]))
        return {"w1": w1, "b1": b1[:, 0], "w2": w2, "b2": b2[:, 0], "mean": mu[:, 0].numpy(),
                "scale": sd[:, 0].numpy(), "y_mean": ymu[:, 0].numpy(), "y_scale": ysd[:, 0].numpy()}

    def _set_fitted(self, fitted: dict[str, np.ndarray], p: int, y_ndim: int) -> None:
        self._y_ndim = y_ndim
        self.coefs_ = [fitted["w1"][p], fitted["w2"][p]]
        self.intercepts_ = [fitted["b1"][p], fitted["b2"][p]]
        self.mean_, self.scale_ = fitted["mean"][p], fitted["scale"][p]
        self.y_mean_, self.y_scale_ = fitted["y_mean"][p], fitted["y_scale"][p]

    def _forward(self, X: np.ndarray) -> np.ndarray:
        (w1, w2), (b1, b2) = self.coefs_, self.intercepts_
        hidden = np.maximum((X - self.mean_) / self.scale_ @ w1 + b1, 0.0)
        return (hidden @ w2 + b2) * self.y_scale_ + self.y_mean_


def _as_probe(spec: Any) -> LinearProbe | MLPProbe:
    if isinstance(spec, (LinearProbe, MLPProbe)):
        return spec
    if spec == "linear":
        return LinearProbe()
    if spec == "mlp":
        return MLPProbe()
    raise ValueError(f"unknown probe {spec!r}; use 'linear', 'mlp', or a LinearProbe / MLPProbe instance")


# ------------------------------------------------------------------------------ scoring core
@dataclass(frozen=True)
class _Setup:
    train: np.ndarray
    test: np.ndarray
    ci: float
    n_bootstrap: int
    seed: int


def _split(b: int, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(test_frac, (int, float)) or not 0 < test_frac < 1:
        raise ValueError(f"test_frac must be in (0, 1), got {test_frac!r}")
    n_test = max(2, int(round(test_frac * b)))
    if b - n_test < 2:
        raise ValueError(f"need at least 4 prompts to split into train and test (got batch {b}, test_frac {test_frac})")
    perm = np.random.default_rng(seed).permutation(b)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _score(X: np.ndarray, Y: np.ndarray, probe: LinearProbe | MLPProbe, s: _Setup) -> dict[str, np.ndarray]:
    """Fit on the train prompts and score on the test prompts; X (P, b, f), Y (P, b, t)."""
    fitted = probe.fit_stack(X[:, s.train], Y[:, s.train])
    pred = np.stack([est.predict(x) for est, x in zip(fitted, X[:, s.test])])  # (P, m, t)
    y = Y[:, s.test]
    sse = ((pred - y) ** 2).sum(-1)                          # (P, m)
    sst = ((y - y.mean(1, keepdims=True)) ** 2).sum(-1)      # (P, m)
    sst_tot, sse_tot = sst.sum(1), sse.sum(1)
    flat = (y**2).sum(axis=(1, 2))
    const = sst_tot <= 1e-12 * np.maximum(flat, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(const, np.nan, 1.0 - sse_tot / np.where(const, 1.0, sst_tot))
        boot = bootstrap_means(np.stack([sse.T, sst.T], axis=-1), s.n_bootstrap, s.seed)  # (B, P, 2)
        r2_boot = np.where(boot[..., 1] > 0, 1.0 - boot[..., 0] / boot[..., 1], np.nan)
    alpha = (1.0 - s.ci) / 2.0
    lo, hi = np.full(len(r2), np.nan), np.full(len(r2), np.nan)
    for p in np.flatnonzero(~const):
        v = r2_boot[:, p][np.isfinite(r2_boot[:, p])]
        if v.size:
            lo[p], hi[p] = np.quantile(v, [alpha, 1.0 - alpha])
    return {"mean": r2, "ci_low": lo, "ci_high": hi, "mse": sse_tot / (y.shape[1] * y.shape[2])}


def _select_positions(positions: Any, stored: list[int], n_points: int) -> list[int]:
    """Token positions to probe (the one selector of `hookedicl.models.sites`), among the stored
    ones: a named selection keeps the stored tokens it names, explicit indices must be stored."""
    out = select_tokens(positions, 2 * n_points)
    if isinstance(positions, str):
        out = [p for p in out if p in stored]
    missing = [p for p in out if p not in stored]
    if missing:
        raise ValueError(f"position(s) {missing} were not captured (captured token positions: {stored})")
    if not out:
        raise ValueError(f"no token positions selected by positions={positions!r} among the captured ones {stored}")
    return out


def _probe_core(
    acts: Mapping[str, tuple[int, torch.Tensor, int]],
    stored: list[int],
    batch: TaskBatch,
    targets: list[Target],
    positions: list[int],
    probes: list[LinearProbe | MLPProbe],
    control: str,
    s: _Setup,
) -> list[dict[str, Any]]:
    """Rows for every (hook, position, target, probe). `acts[name] = (layer, tensor, pos_dim)`."""
    b, n = batch.xs.shape[:2]
    tables = [_target_table(t, batch) for t in targets]
    if control == "shuffle":
        perm = np.random.default_rng(s.seed + 1).permutation(b)
        tables = [tab[perm] for tab in tables]
    ks = [(p + 1) // 2 for p in positions]
    idx = [stored.index(p) for p in positions]
    rows: list[dict[str, Any]] = []
    for name, (layer, act, pos_dim) in progress_bar(acts.items(), total=len(acts), desc=f"probe ({control})", unit="site"):
        a = act.detach().movedim(pos_dim, 1)
        X = a[:, idx].reshape(b, len(idx), -1).to("cpu", torch.float64).numpy().transpose(1, 0, 2)  # (P, b, f)
        for target, tab in zip(targets, tables):
            rows_k = [0 if tab.shape[1] == 1 else k for k in ks]
            too_far = [p for p, r in zip(positions, rows_k) if r >= tab.shape[1]]
            if too_far:
                raise ValueError(
                    f"target {target.name!r} has rows k = 0..{tab.shape[1] - 1} only; token position(s) {too_far} "
                    f"need k = {n} (return (batch, n_points + 1, t) to cover them)"
                )
            Y = tab[:, rows_k].transpose(1, 0, 2)  # (P, b, t)
            for pr in probes:
                res = _score(X, Y, pr, s)
                for j, (p, k) in enumerate(zip(positions, ks)):
                    rows.append({
                        "hook": name, "layer": layer, "pos": p, "token": "x" if p % 2 == 0 else "y", "k": k,
                        "target": target.name, "probe": pr.name, "control": control, "metric": "r2",
                        "mean": res["mean"][j], "ci_low": res["ci_low"][j], "ci_high": res["ci_high"][j],
                        "mse": res["mse"][j], "n_train": len(s.train), "n_test": len(s.test),
                    })
    return rows


def _as_batch(batch: Any, params: Mapping[str, torch.Tensor] | None = None) -> TaskBatch:
    if isinstance(batch, TaskBatch):
        return batch
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        xs, ys = batch[0], batch[1]
        check_prompts(xs, ys)
        return TaskBatch(xs, ys, dict(batch[2] if len(batch) == 3 else (params or {})))
    raise ValueError(f"prompts must be a TaskBatch or (xs, ys[, params]); got {type(batch).__name__}")


def _check_common(controls: Any, probes: Any, targets: Any, ci: float, n_bootstrap: int) -> tuple[list[str], list, list[Target]]:
    ctrl = [controls] if isinstance(controls, str) else list(controls or ())
    bad = [c for c in ctrl if c not in CONTROLS]
    if bad:
        raise ValueError(f"unknown control(s) {bad}; valid: {CONTROLS}")
    single = isinstance(probes, (str, LinearProbe, MLPProbe))
    pr = [_as_probe(p) for p in ([probes] if single else list(probes))]
    tg = [as_target(t) for t in ([targets] if isinstance(targets, (str, Target)) or callable(targets) else list(targets))]
    if not pr or not tg:
        raise ValueError("probes and targets must each name at least one entry")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    if not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive int, got {n_bootstrap!r}")
    return ctrl, pr, tg


def _frame(rows: list[dict[str, Any]], extra: tuple[str, ...] = ()) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[*extra, *COLUMNS])


# ------------------------------------------------------------------------------- public API
def probe_activations(
    acts: Mapping[str, torch.Tensor],
    prompts: TaskBatch | tuple,
    targets: Any = ("ols",),
    *,
    token_positions: Sequence[int] | None = None,
    positions: Any = "x",
    probes: Any = ("linear",),
    controls: Any = (),
    test_frac: float = 0.25,
    seed: int = 0,
    ci: float = 0.95,
    n_bootstrap: int = 1000,
) -> pd.DataFrame:
    """Probe given activations: `acts[name]` is `(batch, P, ...)` (positions on axis 1, or axis 2
    for attention patterns), where stored position j is token `token_positions[j]` (default
    `0..P-1`). `prompts` (a `TaskBatch` or `(xs, ys[, params])`) supplies the targets. Only the
    `"shuffle"` control applies (no model here). One row per (hook, position, target, probe,
    control); see the module docstring for the columns."""
    batch = _as_batch(prompts)
    ctrl, pr, tg = _check_common(controls, probes, targets, ci, n_bootstrap)
    if "untrained" in ctrl:
        raise ValueError("control 'untrained' needs a model; use probe(model, ...) or probe_over_training(run, ...)")
    if not acts:
        raise ValueError("acts is empty")
    b, n = batch.xs.shape[:2]
    prepared: dict[str, tuple[int, torch.Tensor, int]] = {}
    n_stored = None
    for name, a in acts.items():
        if not isinstance(a, torch.Tensor) or a.ndim < 2:
            raise ValueError(f"acts[{name!r}] must be a tensor (batch, positions, ...)")
        if a.shape[0] != b:
            raise ValueError(f"acts[{name!r}] has batch {a.shape[0]} but the prompts have batch {b}")
        pd_ = hook_pos_dim(name) if a.ndim > hook_pos_dim(name) else 1
        if n_stored is not None and a.shape[pd_] != n_stored:
            raise ValueError(f"acts[{name!r}] has {a.shape[pd_]} positions, other hooks {n_stored}")
        n_stored = a.shape[pd_]
        prepared[name] = (hook_layer(name), a, pd_)
    stored = list(range(n_stored)) if token_positions is None else [int(p) for p in token_positions]
    if len(stored) != n_stored:
        raise ValueError(f"token_positions has {len(stored)} entries but the activations have {n_stored} positions")
    pos = _select_positions(positions, stored, n)
    train, test = _split(b, test_frac, seed)
    s = _Setup(train, test, ci, n_bootstrap, seed)
    rows = _probe_core(prepared, stored, batch, tg, pos, pr, "none", s)
    if "shuffle" in ctrl:
        rows += _probe_core(prepared, stored, batch, tg, pos, pr, "shuffle", s)
    return _frame(rows)


def _fresh_model(model: Any, seed: int) -> Any:
    """The same architecture at a fresh initialisation drawn from `seed` (global RNG untouched)."""
    from ..models import HookedICLModel

    p = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = HookedICLModel(model.spec)
    return fresh.to(device=p.device, dtype=p.dtype).eval()


def _cache(model: Any, xs: torch.Tensor, ys: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    p = next(model.parameters())
    with hook_guard(model), torch.no_grad():
        model.eval()
        _, cache = model.run_with_cache(xs.to(p.device, p.dtype), ys.to(p.device, p.dtype), names_filter=names)
    return {k: v for k, v in cache.items()}


def probe(
    model: Any,
    xs: torch.Tensor,
    ys: torch.Tensor,
    targets: Any = ("ols",),
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    hooks: Any = RESID,
    layers: list[int] | None = None,
    positions: Any = "x",
    probes: Any = ("linear",),
    controls: Any = (),
    test_frac: float = 0.25,
    seed: int = 0,
    ci: float = 0.95,
    n_bootstrap: int = 1000,
) -> pd.DataFrame:
    """Probe a model's activations on prompts `xs (b, n, d)`, `ys (b, n)`.

    `hooks`: `"resid"` (residual layers `layers`, default all; see `common.resolve_sites`), full
    hook names or block-relative names (`"attn.hook_z"`, `"hook_mlp_out"`, ...). `params`: the
    task parameters (needed for the `"w"` target). `positions`: `"x"` (default), `"y"`, `"all"`,
    `"last"` (the last query) or token indices. Returns one row per (hook, layer, position,
    target, probe, control) with the held-out R² in `mean` (CI over held-out prompts) and `mse`.
    """
    require_model(model, "probe")
    model.check_inputs(xs, ys)
    batch = TaskBatch(xs, ys, dict(params or {}))
    ctrl, pr, tg = _check_common(controls, probes, targets, ci, n_bootstrap)
    sites = resolve_sites(model, hooks, layers)
    n = xs.shape[1]
    stored = list(range(2 * n))
    pos = _select_positions(positions, stored, n)
    train, test = _split(xs.shape[0], test_frac, seed)
    s = _Setup(train, test, ci, n_bootstrap, seed)
    names = [name for name, _ in sites]

    def prepared(m: Any) -> dict[str, tuple[int, torch.Tensor, int]]:
        cache = _cache(m, xs, ys, names)
        return {name: (layer, cache[name], hook_pos_dim(name)) for name, layer in sites}

    with hook_guard(model):
        acts = prepared(model)
        rows = _probe_core(acts, stored, batch, tg, pos, pr, "none", s)
        if "shuffle" in ctrl:
            rows += _probe_core(acts, stored, batch, tg, pos, pr, "shuffle", s)
        if "untrained" in ctrl:
            rows += _probe_core(prepared(_fresh_model(model, seed)), stored, batch, tg, pos, pr, "untrained", s)
    return _frame(rows)


def probe_over_training(
    run: Any,
    hook: str | Sequence[str],
    target: Any = "ols",
    *,
    steps: Sequence[int] | None = None,
    positions: Any = "x",
    probes: Any = ("linear",),
    controls: Any = (),
    test_frac: float = 0.25,
    seed: int = 0,
    ci: float = 0.95,
    n_bootstrap: int = 1000,
) -> pd.DataFrame:
    """Emergence curve: probe the activations captured during training (`run.activations`) at
    every captured step (or `steps`), each on the prompts stored with them (their xs, ys and
    params give the targets). `hook`: captured hook name(s). The `"untrained"` control re-runs a
    fresh init of the run's architecture on each shard's prompts. One row per (step, hook,
    position, target, probe, control)."""
    from ..training.run import Run

    run = Run.of(run)
    store = run.activations
    if not store.steps:
        raise ValueError(f"{run.path} has no captured activations (set capture.hooks in the training config)")
    names = [hook] if isinstance(hook, str) else list(hook)
    missing = [h for h in names if h not in store.hooks]
    if missing:
        raise ValueError(f"hook(s) {missing} were not captured in {run.path}; captured hooks: {store.hooks}")
    chosen = store.steps if steps is None else list(steps)
    bad = [st for st in chosen if st not in store.steps]
    if bad:
        raise ValueError(f"step(s) {bad} have no captured activations; captured steps: {store.steps}")
    ctrl, pr, tg = _check_common(controls, probes, target, ci, n_bootstrap)
    fresh = None
    if "untrained" in ctrl:
        from ..models import HookedICLModel

        spec = run.config.build_spec()  # (loading the config builds a model: keep it out of the seeded block)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = HookedICLModel(spec).eval()
    rows: list[dict[str, Any]] = []
    for st in chosen:
        shard = store.load(st)
        batch = TaskBatch(shard["xs"].float(), shard["ys"].float(), dict(shard["params"]))
        b, n = batch.xs.shape[:2]
        stored = list(range(2 * n)) if shard["positions"] == "all" else [int(p) for p in shard["positions"]]
        present = [h for h in names if h in shard["act"]]
        if len(present) != len(names):
            raise ValueError(f"step {st} lacks hook(s) {sorted(set(names) - set(present))}")
        acts = {h: (hook_layer(h), shard["act"][h].float(), hook_pos_dim(h)) for h in names}
        pos = _select_positions(positions, stored, n)
        train, test = _split(b, test_frac, seed)
        s = _Setup(train, test, ci, n_bootstrap, seed)
        step_rows = _probe_core(acts, stored, batch, tg, pos, pr, "none", s)
        if "shuffle" in ctrl:
            step_rows += _probe_core(acts, stored, batch, tg, pos, pr, "shuffle", s)
        if fresh is not None:
            cache = _cache(fresh, batch.xs, batch.ys, names)
            idx = torch.tensor(stored)
            f_acts = {h: (hook_layer(h), cache[h].index_select(hook_pos_dim(h), idx), hook_pos_dim(h)) for h in names}
            step_rows += _probe_core(f_acts, stored, batch, tg, pos, pr, "untrained", s)
        rows += [{"step": st, **r} for r in step_rows]
    return _frame(rows, ("step",))


# ------------------------------------------------------------------------------- run + figure
def _default_targets(batch: TaskBatch) -> list[str]:
    scalar = batch.ys.ndim == 2
    out = ["w"] if "w" in batch.params else []
    return out + (["xty", "ols"] if scalar else ["xty"])


def plot_probe(df: pd.DataFrame) -> Any:
    """R² vs examples seen (k), one panel per target, one line per (hook, layer); controls dashed."""
    plt = pyplot()
    if df.empty:
        raise ValueError("nothing to plot: the probe table has no rows")
    targets = list(dict.fromkeys(df["target"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 3.4), squeeze=False, sharey=True)
    sites = list(dict.fromkeys(zip(df["hook"], df["layer"])))
    cmap = plt.get_cmap("viridis")
    for ax, target in zip(axes[0], targets):
        for i, (hook, layer) in enumerate(sites):
            color = cmap(i / max(1, len(sites) - 1))
            for control, style in (("none", "-"), ("shuffle", ":"), ("untrained", "--")):
                d = df[(df.target == target) & (df.hook == hook) & (df.control == control)].groupby("k")["mean"].mean()
                if not d.empty:
                    label = f"layer {layer}" if control == "none" else None
                    ax.plot(d.index, d.values, style, color=color, label=label, alpha=1.0 if control == "none" else 0.5)
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.set_title(f"probe target: {target}")
        ax.set_xlabel("in-context examples seen (k)")
        ax.set_ylim(-0.1, 1.05)
    axes[0][0].set_ylabel("held-out R² (dashed/dotted: controls)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def pyplot() -> Any:
    from ..viz._backend import pyplot as _pyplot

    return _pyplot()


def analyze_run(run: Any, *, n_prompts: int = 256, seed: int = 0, **kw: Any) -> tuple[pd.DataFrame, Any]:
    """Probe the run's final model on `n_prompts` fresh prompts of its task (n_points from the
    config): residual layers at the x tokens, targets w (when the task has it), Xᵀy and w_OLS,
    linear probes, plus the untrained-model control; `kw` overrides any `probe` argument.
    Returns the table and a figure (R² vs k per layer, one panel per target)."""
    from ..training.run import Run

    run = Run.of(run)
    model = run.load_model()
    batch = run.prompts(n_prompts, seed)
    targets = kw.pop("targets", None) or _default_targets(batch)
    kw.setdefault("controls", ("untrained",))
    df = probe(model, batch.xs, batch.ys, targets, params=batch.params, seed=seed, **kw)
    return df, plot_probe(df)
