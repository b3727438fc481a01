"""gd / sgd / newton / gd_plus_plus against plain Python loops written from the formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hookedicl.baselines as B


def gaussian(batch, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(batch, n, d, generator=g)
    w = torch.randn(batch, d, generator=g)
    ys = (xs * w[:, None]).sum(-1) + 0.3 * torch.randn(batch, n, generator=g)
    return xs, ys


def as_np(xs, ys):
    return xs.double().numpy(), ys.double().numpy()


def loop_gd(xs, ys, steps, lr):
    x, y = as_np(xs, ys)
    batch, n, d = x.shape
    out = np.zeros((batch, n, d))
    for b in range(batch):
        for i in range(1, n):
            w = np.zeros(d)
            for _ in range(steps):
                grad = sum((w @ x[b, j] - y[b, j]) * x[b, j] for j in range(i)) / i
                w = w - lr * grad
            out[b, i] = w
    return out


def loop_sgd(xs, ys, lr):
    x, y = as_np(xs, ys)
    batch, n, d = x.shape
    out = np.zeros((batch, n, d))
    for b in range(batch):
        for i in range(1, n):
            w = np.zeros(d)
            for j in range(i):
                w = w - lr * (w @ x[b, j] - y[b, j]) * x[b, j]
            out[b, i] = w
    return out


def loop_newton(xs, ys, steps, init_scale):
    x, y = as_np(xs, ys)
    batch, n, d = x.shape
    out = np.zeros((batch, n, d))
    for b in range(batch):
        for i in range(1, n):
            X, Y = x[b, :i], y[b, :i]
            S = X.T @ X
            lam = np.linalg.eigvalsh(S)[-1]
            M = init_scale / lam**2 * S
            for _ in range(steps):
                M = 2 * M - M @ S @ M
            out[b, i] = M @ X.T @ Y
    return out


def loop_gd_plus_plus(xs, ys, steps, lr, gamma):
    """Token-level simulation: residual targets and explicitly transformed inputs.

    The query token starts with target 0; each step moves every target by the GD-on-residuals
    update computed from the current inputs, and at the same time maps every input (context and
    query) through (I − γ·mean_j x_j x_jᵀ) of the current context inputs. Prediction = −target.
    """
    x, y = as_np(xs, ys)
    batch, n, d = x.shape
    out = np.zeros((batch, n))
    for b in range(batch):
        for i in range(1, n):
            ctx, q = x[b, :i].copy(), x[b, i].copy()
            r, rq = y[b, :i].copy(), 0.0
            for _ in range(steps):
                v = (r[:, None] * ctx).sum(0)                 # Σ_j r_j x_j
                new_r = r - lr / i * (ctx @ v)
                new_rq = rq - lr / i * (q @ v)
                gram = ctx.T @ ctx / i
                ctx = ctx @ (np.eye(d) - gamma * gram).T
                q = (np.eye(d) - gamma * gram) @ q
                r, rq = new_r, new_rq
            out[b, i] = -rq
    return out


@pytest.mark.parametrize("steps, lr", [(1, 1.0), (1, 0.3), (4, 0.2), (0, 0.5)])
def test_gd_matches_loop(steps, lr):
    xs, ys = gaussian(3, 9, 4, seed=1)
    w = B.get("gd", steps=steps, lr=lr).weights(xs, ys)
    np.testing.assert_allclose(w.numpy(), loop_gd(xs, ys, steps, lr), rtol=1e-5, atol=1e-6)


def test_one_gd_step_is_lr_over_i_times_xty():
    xs, ys = gaussian(2, 7, 3, seed=2)
    x, y = as_np(xs, ys)
    w = B.get("gd", steps=1, lr=0.7).weights(xs, ys).double().numpy()
    for i in range(1, 7):
        np.testing.assert_allclose(w[:, i], 0.7 / i * np.einsum("bjd,bj->bd", x[:, :i], y[:, :i]),
                                   rtol=1e-6)
    torch.testing.assert_close(B.get("gd", steps=1, lr=1.0).weights(xs, ys),
                               B.get("averaging").weights(xs, ys))


def test_many_gd_steps_converge_to_least_squares():
    xs, ys = gaussian(3, 14, 3, seed=3)
    gd = B.get("gd", steps=500, lr=0.5).weights(xs, ys)
    ls = B.get("least_squares").weights(xs, ys)
    torch.testing.assert_close(gd[:, 8:], ls[:, 8:], rtol=1e-4, atol=1e-4)


def test_gd_gradient_wrt_query_by_autograd():
    xs, ys = gaussian(2, 6, 3, seed=4)
    x = xs.clone().requires_grad_(True)
    lr = 0.5
    B.get("gd", steps=1, lr=lr).predict(x, ys).sum().backward()
    # ŷ_i = (lr/i) Σ_{j<i} y_j x_jᵀ x_i   =>   ∂ŷ_i/∂x_i = (lr/i) Σ_{j<i} y_j x_j (+ nothing else
    # from later predictions at the last point, which is only ever a query)
    i = 5
    expected = lr / i * (ys[:, :i, None] * xs[:, :i]).sum(1)
    torch.testing.assert_close(x.grad[:, i], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lr", [0.01, 0.1])
def test_sgd_matches_loop(lr):
    xs, ys = gaussian(3, 9, 4, seed=5)
    w = B.get("sgd", lr=lr).weights(xs, ys)
    np.testing.assert_allclose(w.numpy(), loop_sgd(xs, ys, lr), rtol=1e-5, atol=1e-6)


def test_sgd_depends_on_order_gd_does_not():
    xs, ys = gaussian(2, 8, 3, seed=6)
    perm = torch.tensor([3, 1, 6, 0, 2, 5, 4, 7])        # permutes the 7 context points
    for name, hyper, same in (("sgd", {"lr": 0.1}, False), ("gd", {"steps": 5, "lr": 0.2}, True)):
        p = B.get(name, **hyper)
        a = p.predict(xs, ys)[:, -1]
        b = p.predict(xs[:, perm], ys[:, perm])[:, -1]
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5) == same, name


@pytest.mark.parametrize("steps, init_scale", [(0, 1.0), (3, 1.0), (6, 1.5)])
def test_newton_matches_loop(steps, init_scale):
    xs, ys = gaussian(3, 9, 4, seed=7)
    w = B.get("newton", steps=steps, init_scale=init_scale).weights(xs, ys)
    np.testing.assert_allclose(w.numpy(), loop_newton(xs, ys, steps, init_scale), rtol=1e-4,
                               atol=1e-5)


def test_newton_converges_to_min_norm_least_squares():
    xs, ys = gaussian(3, 10, 4, seed=8)
    newton = B.get("newton", steps=60).weights(xs, ys)
    ls = B.get("least_squares").weights(xs, ys)
    torch.testing.assert_close(newton, ls, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("steps, lr, gamma", [(1, 0.3, 0.2), (3, 0.2, 0.1), (4, 0.1, 0.05)])
def test_gd_plus_plus_matches_token_level_loop(steps, lr, gamma):
    xs, ys = gaussian(3, 8, 3, seed=9)
    pred = B.get("gd_plus_plus", steps=steps, lr=lr, gamma=gamma).predict(xs, ys)
    np.testing.assert_allclose(pred.numpy(), loop_gd_plus_plus(xs, ys, steps, lr, gamma),
                               rtol=1e-4, atol=1e-5)


def test_gd_plus_plus_without_transform_is_gd():
    xs, ys = gaussian(2, 8, 3, seed=10)
    torch.testing.assert_close(B.get("gd_plus_plus", steps=4, lr=0.2, gamma=0.0).weights(xs, ys),
                               B.get("gd", steps=4, lr=0.2).weights(xs, ys))


def test_gd_plus_plus_beats_gd_on_ill_conditioned_inputs():
    g = torch.Generator().manual_seed(11)
    batch, n, d = 256, 31, 4
    scale = torch.tensor([3.0, 1.0, 0.5, 0.25])
    xs = torch.randn(batch, n, d, generator=g) * scale
    w = torch.randn(batch, d, generator=g)
    ys = (xs * w[:, None]).sum(-1)
    err = {}
    for name, hyper in (("gd", {"steps": 5, "lr": 0.2}),
                        ("gd_plus_plus", {"steps": 5, "lr": 0.2, "gamma": 0.08})):
        pred = B.get(name, **hyper).predict(xs, ys)
        err[name] = (pred - ys)[:, 20:].square().mean().item()
    assert err["gd_plus_plus"] < 0.8 * err["gd"], err


def test_gd_sum_loss_is_eta_xty_at_every_prefix():
    import hookedicl.baselines as B

    g = torch.Generator().manual_seed(3)
    xs, ys = torch.randn(4, 7, 3, generator=g), torch.randn(4, 7, generator=g)
    w = B.get("gd", steps=1, lr=0.3, loss="sum").weights(xs, ys)
    for i in range(7):
        want = 0.3 * torch.einsum("bnd,bn->bd", xs[:, :i].double(), ys[:, :i].double())
        assert torch.allclose(w[:, i].double(), want, atol=1e-6)
    with pytest.raises(ValueError, match="loss"):
        B.get("gd", loss="median")
