"""Evaluation: per-position errors, bootstrap confidence intervals, the ICL regression score.

- :mod:`.errors` — ``squared_errors``, ``normalized_errors``, ``error_curve`` (tidy DataFrame).
- :mod:`.bootstrap` — the bootstrap over prompts used everywhere in the package.
- :mod:`.icl_score` — ``icl_regression_score`` (Campbell et al. 2024, eq. 1) -> ``ICLScore``;
  ``icl_score_change``: the paired change between two versions of a model -> ``ScoreChange``.
- :mod:`.evaluate` — ``evaluate`` several predictors on the same prompts -> ``EvalResult``.
"""

from .bootstrap import as_rng, bootstrap_means, bootstrap_weights, percentile_interval
from .errors import error_curve, normalized_errors, squared_errors, y_second_moment_from
from .evaluate import ZERO, EvalResult, evaluate
from .icl_score import ICLScore, ScoreChange, icl_regression_score, icl_score_change

__all__ = [
    "ZERO",
    "EvalResult",
    "ICLScore",
    "as_rng",
    "bootstrap_means",
    "bootstrap_weights",
    "error_curve",
    "evaluate",
    "icl_regression_score",
    "icl_score_change",
    "ScoreChange",
    "normalized_errors",
    "percentile_interval",
    "squared_errors",
    "y_second_moment_from",
]
