"""Least squares and ridge against numpy / scikit-learn fitted prefix by prefix in a plain loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge as SkRidge

import hookedicl.baselines as B
from hookedicl.baselines import _prefix_solve


def gaussian(batch, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, d, generator=g), torch.randn(batch, n, generator=g)


def loop_lstsq(xs, ys, rcond=None):
    x, y = xs.double().numpy(), ys.double().numpy()
    batch, n, d = x.shape
    w = np.zeros((batch, n, d))
    for b in range(batch):
        for i in range(1, n):
            w[b, i] = np.linalg.lstsq(x[b, :i], y[b, :i], rcond=rcond)[0]
    return w


def loop_sklearn_ridge(xs, ys, alpha):
    x, y = xs.double().numpy(), ys.double().numpy()
    batch, n, d = x.shape
    w = np.zeros((batch, n, d))
    for b in range(batch):
        for i in range(1, n):
            w[b, i] = SkRidge(alpha=alpha, fit_intercept=False).fit(x[b, :i], y[b, :i]).coef_
    return w


def assert_rel_close(w, ref, tol=1e-4):
    """Per prompt and prefix: ‖w − ref‖ <= tol·‖ref‖ (absolute tol where ref is ~0)."""
    w = np.asarray(w, dtype=np.float64)
    err = np.linalg.norm(w - ref, axis=-1)
    scale = np.maximum(np.linalg.norm(ref, axis=-1), 1e-6)
    worst = np.unravel_index(np.argmax(err / scale), err.shape)
    assert (err <= tol * scale).all(), f"relative error {err[worst] / scale[worst]:.3g} at {worst}"


SHAPES = [(6, 10, 9), (6, 25, 8), (6, 9, 8), (6, 10, 8), (4, 41, 20), (5, 12, 1)]


@pytest.mark.parametrize("batch, n, d", SHAPES)
def test_least_squares_matches_numpy_lstsq_every_prefix(batch, n, d):
    xs, ys = gaussian(batch, n, d, seed=n * 100 + d)
    w = B.get("least_squares").weights(xs, ys)
    assert_rel_close(w, loop_lstsq(xs, ys))
    pred = B.get("least_squares").predict(xs, ys)
    ref = np.einsum("bnd,bnd->bn", loop_lstsq(xs, ys), xs.double().numpy())
    np.testing.assert_allclose(pred.numpy(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("alpha", [1e-3, 0.5, 10.0])
@pytest.mark.parametrize("batch, n, d", SHAPES[:4])
def test_ridge_matches_sklearn_every_prefix(batch, n, d, alpha):
    xs, ys = gaussian(batch, n, d, seed=7 * n + d)
    w = B.get("ridge", alpha=alpha).weights(xs, ys)
    assert_rel_close(w, loop_sklearn_ridge(xs, ys, alpha))


def degenerate_batch():
    """A batch mixing well-posed prompts with rank-deficient ones of several kinds."""
    xs, ys = gaussian(8, 16, 6, seed=11)
    xs[1, 4] = xs[1, 1]                                  # duplicated point
    xs[2, :, 3] = 0                                      # a coordinate unused in one prompt
    xs[3, 2] = 2.5 * xs[3, 0] - xs[3, 1]                 # linearly dependent point
    g = torch.Generator().manual_seed(5)
    basis = torch.randn(3, 6, generator=g)
    xs[4] = torch.randn(16, 3, generator=g) @ basis      # all points in a 3-dim subspace
    xs[5, :3] = 1e-3 * xs[5, :3]                         # badly scaled leading points
    return xs, ys


@pytest.mark.parametrize("name", ["least_squares", "ridge"])
def test_rank_deficient_prompts(name):
    xs, ys = degenerate_batch()
    if name == "least_squares":
        w = B.get("least_squares", rcond=1e-6).weights(xs, ys)
        ref = loop_lstsq(xs, ys, rcond=1e-6)
    else:
        w = B.get("ridge", alpha=0.3).weights(xs, ys)
        ref = loop_sklearn_ridge(xs, ys, 0.3)
    assert_rel_close(w, ref)


def test_batch_wide_zero_coordinates_get_zero_weight():
    xs, ys = gaussian(5, 14, 8, seed=3)
    xs[..., 5:] = 0                                      # curriculum-style padding
    w = B.get("least_squares").weights(xs, ys)
    assert w[..., 5:].eq(0).all()
    assert_rel_close(w, loop_lstsq(xs, ys))
    w_small = B.get("least_squares").weights(xs[..., :5].contiguous(), ys)
    torch.testing.assert_close(w[..., :5], w_small)


def test_fast_path_agrees_with_spectral_path():
    xs, ys = gaussian(6, 22, 8, seed=21)
    x, y = xs.double(), ys.double()
    for alpha in (0.0, 0.7):
        fast, ok = _prefix_solve._fast_path(x, y, alpha, 1e-6)
        assert ok.all()
        slow = _prefix_solve._spectral_path(x, y, alpha, 1e-6)
        torch.testing.assert_close(fast, slow, rtol=1e-8, atol=1e-8)


def test_ill_conditioned_prompt_leaves_the_fast_path():
    xs, ys = gaussian(3, 12, 5, seed=4)
    xs[0, 4] = xs[0, 3] + 1e-7 * xs[0, 4]                # leading block nearly singular
    _, ok = _prefix_solve._fast_path(xs.double(), ys.double(), 0.0, 1e-6)
    assert ok.tolist() == [False, True, True]
    assert_rel_close(B.get("least_squares").weights(xs, ys), loop_lstsq(xs, ys, rcond=1e-6))


def test_ridge_with_vanishing_alpha_tends_to_least_squares():
    xs, ys = gaussian(6, 24, 8, seed=9)
    ls = B.get("least_squares").weights(xs, ys).double().numpy()
    errs = []
    for alpha in (1e-1, 1e-3, 1e-5, 1e-7, 1e-9):
        w = B.get("ridge", alpha=alpha).weights(xs, ys).double().numpy()
        errs.append(np.abs(w - ls).max())
    # the gap shrinks in proportion to alpha (about alpha/σ_min² relative) down to float32 level
    assert errs == sorted(errs, reverse=True)
    assert errs[-1] < 0.05 * errs[-2]
    assert errs[-1] < 1e-5 * np.abs(ls).max()


def test_least_squares_error_curve_is_max_d_minus_i():
    """Noiseless isotropic linear data: E[(ŷ_i − y_i)²] = max(d − i, 0) (with w, x ~ N(0, I))."""
    batch, n, d = 4000, 16, 8
    g = torch.Generator().manual_seed(123)
    w = torch.randn(batch, d, generator=g)
    xs = torch.randn(batch, n, d, generator=g)
    ys = (xs * w[:, None]).sum(-1)
    err = (B.get("least_squares").predict(xs, ys) - ys).double().square()
    mean = err.mean(0)
    for i in range(n):
        k = max(d - i, 0)
        if k == 0:
            # exact up to float32 rounding of the data, amplified by the conditioning at i = d
            assert mean[i] < 1e-7, (i, mean[i].item())
        else:
            # (ŷ − y)² = (w_⊥·x_i)², w_⊥ the part of w outside the span of the context:
            # mean k, variance 2k² + 6k
            se = math.sqrt((2 * k * k + 6 * k) / batch)
            assert abs(mean[i].item() - k) < 5 * se, (i, mean[i].item(), k)


def test_least_squares_interpolates_context_when_underdetermined():
    xs, ys = gaussian(4, 9, 12, seed=8)
    w = B.get("least_squares").weights(xs, ys).double()
    fitted = torch.einsum("bid,bjd->bij", w, xs.double())
    for i in range(1, 9):
        torch.testing.assert_close(fitted[:, i, :i], ys[:, :i].double(), rtol=1e-5, atol=1e-5)


def test_gradients_flow_through_least_squares_and_ridge():
    xs, ys = gaussian(2, 8, 3, seed=1)
    for name in ("least_squares", "ridge"):
        x = xs.clone().requires_grad_(True)
        y = ys.clone().requires_grad_(True)
        B.get(name).predict(x, y).sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 3), n=st.integers(1, 12), d=st.integers(1, 6),
       seed=st.integers(0, 2**16), duplicate=st.booleans(), alpha=st.sampled_from([0.0, 0.05, 3.0]))
def test_prefix_solvers_match_numpy_on_random_shapes(batch, n, d, seed, duplicate, alpha):
    xs, ys = gaussian(batch, n, d, seed)
    if duplicate and n >= 3:
        xs[0, 2] = xs[0, 0]                              # forces the exact fallback for prompt 0
    if alpha == 0:
        w = B.get("least_squares").weights(xs, ys)
        ref = loop_lstsq(xs, ys, rcond=1e-6)
    else:
        w = B.get("ridge", alpha=alpha).weights(xs, ys)
        x, y = xs.double().numpy(), ys.double().numpy()
        ref = np.zeros((batch, n, d))
        for b in range(batch):
            for i in range(1, n):
                xi = x[b, :i]
                ref[b, i] = np.linalg.solve(xi.T @ xi + alpha * np.eye(d), xi.T @ y[b, :i])
    assert w.shape == (batch, n, d)
    assert_rel_close(w, ref)
