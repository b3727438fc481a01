"""Nonparametric bootstrap over prompts (the single implementation used by the package).

Resampling prompts with replacement is expressed as a matrix of resampling weights
``W`` of shape ``(n_bootstrap, n)``: row ``b`` holds how often each prompt was drawn in
replicate ``b``, divided by ``n``.  The bootstrap means of any number of per-prompt
statistics are then one matrix product ``W @ values``, so several statistics computed from
the same replicate are resampled *jointly* (the same prompts for all of them) and no Python
loop runs per replicate.
"""

from __future__ import annotations

import numpy as np

from ._arrays import check_ci

SeedLike = int | np.random.Generator | None

# Upper bound on the number of entries of one chunk of the weight matrix (~32 MB in float64).
_MAX_WEIGHT_ENTRIES = 4_000_000


def as_rng(seed: SeedLike) -> np.random.Generator:
    """Return a numpy ``Generator``: ``seed`` itself if it is one, else ``default_rng(seed)``."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, a numpy Generator or None; got {type(seed).__name__}")
    return np.random.default_rng(seed)


def bootstrap_weights(n: int, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """Resampling weights for ``n_bootstrap`` bootstrap replicates of ``n`` items.

    Returns an array of shape ``(n_bootstrap, n)``: entry ``[b, j]`` is the number of times item
    ``j`` is drawn (with replacement, ``n`` draws) in replicate ``b``, divided by ``n``; every row
    sums to 1.
    """
    idx = rng.integers(0, n, size=(n_bootstrap, n))
    offsets = (np.arange(n_bootstrap) * n)[:, None]
    counts = np.bincount((idx + offsets).ravel(), minlength=n_bootstrap * n)
    return counts.reshape(n_bootstrap, n) / n


def bootstrap_means(values: np.ndarray, n_bootstrap: int = 1000, seed: SeedLike = 0) -> np.ndarray:
    """Bootstrap distribution of the mean over the first axis of ``values``.

    ``values`` has shape ``(n, *rest)`` (one row per prompt); the result has shape
    ``(n_bootstrap, *rest)``.  All trailing entries of a replicate use the same resampled
    prompts, so statistics stacked along ``rest`` are resampled jointly.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim < 1 or values.shape[0] < 1:
        raise ValueError(f"values must have at least one row; got shape {tuple(values.shape)}")
    if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive integer; got {n_bootstrap!r}")
    rng = as_rng(seed)
    n = values.shape[0]
    flat = values.reshape(n, -1)
    out = np.empty((n_bootstrap, flat.shape[1]), dtype=np.float64)
    chunk = max(1, _MAX_WEIGHT_ENTRIES // n)
    for start in range(0, n_bootstrap, chunk):
        stop = min(start + chunk, n_bootstrap)
        out[start:stop] = bootstrap_weights(n, stop - start, rng) @ flat
    return out.reshape((n_bootstrap,) + values.shape[1:])


def percentile_interval(samples: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed percentile interval of bootstrap ``samples`` along axis 0.

    ``samples`` has shape ``(n_bootstrap, *rest)``; returns ``(low, high)``, each of shape ``rest``.
    """
    check_ci(ci)
    alpha = (1.0 - float(ci)) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha], axis=0)
    return low, high
