"""scikit-learn estimators fitted on every prompt and prefix: Lasso, decision tree, boosted trees.

These have no closed form across prefixes, so they loop over prompts and prefixes in Python
(``batch * (n_points - 1)`` fits) on CPU float64 copies of the inputs; expect seconds to minutes
for evaluation-sized batches. Results go back to the input's device as float32.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .base import LinearPredictor, Predictor, check_int, check_real

__all__ = ["Lasso", "DecisionTree", "GradientBoosting"]


def _to_numpy(xs: Tensor, ys: Tensor) -> tuple[np.ndarray, np.ndarray]:
    return (xs.detach().to("cpu", torch.float64).numpy(),
            ys.detach().to("cpu", torch.float64).numpy())


class Lasso(LinearPredictor):
    """``sklearn.linear_model.Lasso(fit_intercept=False)`` fitted on each prompt and prefix.

    Objective ``1/(2i) ‖y − Xw‖² + α‖w‖₁`` (scikit-learn's scaling, mean over the ``i`` points).

    Parameters
    ----------
    alpha : float, default 0.01
        L1 strength (Garg et al.'s choice for sparse linear regression).
    max_iter : int, default 10000
        Coordinate-descent iterations per fit.
    tol : float, default 1e-4
        scikit-learn's convergence tolerance.
    """

    name = "lasso"

    def __init__(self, *, alpha: float = 0.01, max_iter: int = 10000, tol: float = 1e-4) -> None:
        self.alpha = check_real(self.name, "alpha", alpha, low=0.0, low_open=True)
        self.max_iter = check_int(self.name, "max_iter", max_iter, low=1)
        self.tol = check_real(self.name, "tol", tol, low=0.0, low_open=True)

    def _weights(self, xs: Tensor, ys: Tensor) -> Tensor:
        from sklearn.linear_model import Lasso as SkLasso

        x, y = _to_numpy(xs, ys)
        B, n, d = x.shape
        w = np.zeros((B, n, d))
        for b in range(B):
            for i in range(1, n):
                model = SkLasso(alpha=self.alpha, fit_intercept=False, max_iter=self.max_iter,
                                tol=self.tol)
                model.fit(x[b, :i], y[b, :i])
                w[b, i] = model.coef_
        return torch.from_numpy(w).to(xs.device)


class DecisionTree(Predictor):
    """``sklearn.tree.DecisionTreeRegressor`` (greedy CART, squared error) per prompt and prefix.

    Parameters
    ----------
    max_depth : int or None, default None
        Depth limit (None: grow until leaves are pure or hold ``min_samples_leaf`` points).
    min_samples_leaf : int, default 1
    seed : int, default 0
        ``random_state`` of each tree (only matters for tie-breaking between equally good splits).
    """

    name = "decision_tree"

    def __init__(self, *, max_depth: int | None = None, min_samples_leaf: int = 1,
                 seed: int = 0) -> None:
        self.max_depth = check_int(self.name, "max_depth", max_depth, low=1, allow_none=True)
        self.min_samples_leaf = check_int(self.name, "min_samples_leaf", min_samples_leaf, low=1)
        self.seed = check_int(self.name, "seed", seed, low=0)

    def _predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        from sklearn.tree import DecisionTreeRegressor

        x, y = _to_numpy(xs, ys)
        B, n, _ = x.shape
        out = np.zeros((B, n))
        for b in range(B):
            for i in range(1, n):
                tree = DecisionTreeRegressor(max_depth=self.max_depth,
                                             min_samples_leaf=self.min_samples_leaf,
                                             random_state=self.seed)
                tree.fit(x[b, :i], y[b, :i])
                out[b, i] = tree.predict(x[b, i:i + 1])[0]
        return torch.from_numpy(out).to(xs.device)


class GradientBoosting(Predictor):
    """Gradient-boosted trees per prompt and prefix: the XGBoost baseline of Garg et al.

    XGBoost is not a dependency; this uses ``sklearn.ensemble.HistGradientBoostingRegressor``
    configured like XGBoost's defaults where they differ from scikit-learn's: 50 trees of depth
    at most 4 (no leaf-count cap), learning rate 0.1, squared error, L2 leaf regularisation 1
    (XGBoost ``lambda``), at least one sample per leaf (XGBoost ``min_child_weight=1``), no early
    stopping. Remaining differences: scikit-learn bins each feature into at most 255 quantile
    bins (XGBoost's exact/hist split finders differ in detail) and starts from the mean target
    rather than XGBoost's ``base_score``.

    Parameters
    ----------
    n_estimators : int, default 50
    max_depth : int, default 4
    learning_rate : float, default 0.1
    l2_regularization : float, default 1.0
    min_samples_leaf : int, default 1
    seed : int, default 0
    n_threads : int or None, default 1
        OpenMP threads for each fit, applied with ``threadpoolctl`` only while fitting and
        restored afterwards (None leaves the process setting alone). The fits are tiny, and on
        a busy 2-core machine the multi-threaded default was measured 30-100x slower per fit.
    """

    name = "gradient_boosting"

    def __init__(self, *, n_estimators: int = 50, max_depth: int = 4, learning_rate: float = 0.1,
                 l2_regularization: float = 1.0, min_samples_leaf: int = 1,
                 seed: int = 0, n_threads: int | None = 1) -> None:
        self.n_estimators = check_int(self.name, "n_estimators", n_estimators, low=1)
        self.max_depth = check_int(self.name, "max_depth", max_depth, low=1)
        self.learning_rate = check_real(self.name, "learning_rate", learning_rate, low=0.0,
                                        low_open=True)
        self.l2_regularization = check_real(self.name, "l2_regularization", l2_regularization,
                                            low=0.0)
        self.min_samples_leaf = check_int(self.name, "min_samples_leaf", min_samples_leaf, low=1)
        self.seed = check_int(self.name, "seed", seed, low=0)
        self.n_threads = check_int(self.name, "n_threads", n_threads, low=1, allow_none=True)

    def _predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        x, y = _to_numpy(xs, ys)
        if self.n_threads is None:
            return torch.from_numpy(self._fit_all(x, y)).to(xs.device)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            out = self._fit_all(x, y)
        return torch.from_numpy(out).to(xs.device)

    def _fit_all(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        from sklearn.ensemble import HistGradientBoostingRegressor

        B, n, _ = x.shape
        out = np.zeros((B, n))
        for b in range(B):
            for i in range(1, n):
                model = HistGradientBoostingRegressor(
                    max_iter=self.n_estimators, max_depth=self.max_depth,
                    learning_rate=self.learning_rate, l2_regularization=self.l2_regularization,
                    min_samples_leaf=self.min_samples_leaf, max_leaf_nodes=None,
                    early_stopping=False, random_state=self.seed)
                model.fit(x[b, :i], y[b, :i])
                out[b, i] = model.predict(x[b, i:i + 1])[0]
        return out
