"""Reference in-context predictors ("baselines"), batched in torch where a closed form exists.

Every predictor maps a prompt batch ``xs`` (batch, n_points, n_dims), ``ys`` (batch, n_points)
to float32 predictions (batch, n_points), where prediction ``i`` is fitted on the first ``i``
points only and prediction 0 is 0 — the same contract a trained model satisfies, so analyses
can be pointed at either.

>>> import hookedicl.baselines as B
>>> B.list()[:3]
['least_squares', 'ridge', 'averaging']
>>> ls = B.get("least_squares")            # or B.LeastSquares()
>>> ridge = B.get("ridge", alpha=0.1)

Names: least_squares, ridge, averaging, gd, sgd, gd_plus_plus, newton, knn, lasso,
decision_tree, gradient_boosting, relu_net, zero. ``LinearPredictor`` subclasses (least_squares,
ridge, averaging, gd, sgd, gd_plus_plus, newton, lasso, zero) also expose ``weights(xs, ys)``.
"""

from .base import LinearPredictor, NonFiniteOutputWarning, Predictor, check_inputs
from .gradient import GDPlusPlus, GradientDescent, OnlineSGD
from .linear import Averaging, LeastSquares, Ridge, Zero
from .neighbors import KNearestNeighbors
from .newton import IterativeNewton
from .registry import REGISTRY, available, get
from .relu_net import ReLUNet
from .sklearn_models import DecisionTree, GradientBoosting, Lasso

list = available  # noqa: A001 - ``B.list()`` is part of the public contract

# ``list`` is deliberately left out of __all__ so that a star-import cannot shadow the builtin.
__all__ = [
    "Predictor", "LinearPredictor", "NonFiniteOutputWarning", "check_inputs", "get", "available", "REGISTRY",
    "LeastSquares", "Ridge", "Averaging", "GradientDescent", "OnlineSGD", "GDPlusPlus",
    "IterativeNewton", "KNearestNeighbors", "Lasso", "DecisionTree", "GradientBoosting",
    "ReLUNet", "Zero",
]
