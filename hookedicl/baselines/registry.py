"""Name -> predictor class registry behind :func:`hookedicl.baselines.get`."""

from __future__ import annotations

from typing import Any

from .base import Predictor
from .gradient import GDPlusPlus, GradientDescent, OnlineSGD
from .linear import Averaging, LeastSquares, Ridge, Zero
from .neighbors import KNearestNeighbors
from .newton import IterativeNewton
from .relu_net import ReLUNet
from .sklearn_models import DecisionTree, GradientBoosting, Lasso

__all__ = ["REGISTRY", "available", "get"]

REGISTRY: dict[str, type[Predictor]] = {
    cls.name: cls
    for cls in (
        LeastSquares, Ridge, Averaging, GradientDescent, OnlineSGD, GDPlusPlus, IterativeNewton,
        KNearestNeighbors, Lasso, DecisionTree, GradientBoosting, ReLUNet, Zero,
    )
}


def available() -> list[str]:
    """Names accepted by :func:`get`, in registry order."""
    return list(REGISTRY)


def get(name: str, **hyper: Any) -> Predictor:
    """Construct the predictor registered as ``name`` with keyword hyperparameters.

    Raises ``ValueError`` for an unknown name (listing the valid ones), an unknown
    hyperparameter (listing the accepted ones) or an invalid hyperparameter value.
    """
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"unknown baseline {name!r}; valid names: {', '.join(REGISTRY)}")
    return REGISTRY[name]().set_params(**hyper)
