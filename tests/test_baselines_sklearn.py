"""lasso / knn / decision_tree / gradient_boosting against scikit-learn per prefix; relu_net."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Lasso
from sklearn.neighbors import KNeighborsRegressor
from sklearn.tree import DecisionTreeRegressor
from threadpoolctl import threadpool_limits

import hookedicl.baselines as B


def data(batch, n, d, seed, sparse=False):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(batch, n, d, generator=g)
    w = torch.randn(batch, d, generator=g)
    if sparse:
        w[:, 3:] = 0
    return xs, (xs * w[:, None]).sum(-1)


def per_prefix(xs, ys, fit_predict):
    x, y = xs.double().numpy(), ys.double().numpy()
    batch, n, _ = x.shape
    out = np.zeros((batch, n))
    with threadpool_limits(limits=1):  # tiny fits: multi-threading only adds overhead
        for b in range(batch):
            for i in range(1, n):
                out[b, i] = fit_predict(x[b, :i], y[b, :i], x[b, i:i + 1])
    return out


@pytest.mark.parametrize("alpha", [0.01, 0.1])
def test_lasso_matches_sklearn(alpha):
    xs, ys = data(3, 12, 6, seed=1, sparse=True)
    w = B.get("lasso", alpha=alpha).weights(xs, ys).double().numpy()
    x, y = xs.double().numpy(), ys.double().numpy()
    for b in range(3):
        for i in range(1, 12):
            ref = Lasso(alpha=alpha, fit_intercept=False, max_iter=10000, tol=1e-4)
            np.testing.assert_allclose(w[b, i], ref.fit(x[b, :i], y[b, :i]).coef_, rtol=1e-5,
                                       atol=1e-6)


def test_lasso_recovers_sparse_weights():
    xs, ys = data(4, 21, 10, seed=2, sparse=True)
    w = B.get("lasso", alpha=0.01).weights(xs, ys)[:, -1]
    assert w[:, 3:].abs().max() < 0.05
    truth = torch.linalg.lstsq(xs[:, :20, :3], ys[:, :20, None]).solution[..., 0]
    torch.testing.assert_close(w[:, :3], truth, rtol=0.0, atol=0.1)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("weights, power, sk_weights", [
    ("uniform", 2.0, "uniform"),
    ("distance", 1.0, "distance"),
    ("distance", 2.0, lambda dist: 1.0 / dist**2),
])
def test_knn_matches_sklearn(k, weights, power, sk_weights):
    xs, ys = data(3, 10, 4, seed=3)
    pred = B.get("knn", k=k, weights=weights, power=power).predict(xs, ys)

    def fit_predict(x, y, q):
        model = KNeighborsRegressor(n_neighbors=min(k, len(x)), weights=sk_weights)
        return model.fit(x, y).predict(q)[0]

    np.testing.assert_allclose(pred.numpy(), per_prefix(xs, ys, fit_predict), rtol=1e-5,
                               atol=1e-6)


def test_knn_distance_weights_use_exact_matches_only():
    xs, ys = data(1, 5, 2, seed=4)
    xs[0, 4] = xs[0, 1]                                  # the query duplicates context point 1
    pred = B.get("knn", k=3, weights="distance").predict(xs, ys)
    assert pred[0, 4].item() == pytest.approx(ys[0, 1].item(), rel=1e-6)


@pytest.mark.parametrize("max_depth", [None, 2])
def test_decision_tree_matches_sklearn(max_depth):
    xs, ys = data(2, 12, 3, seed=5)
    pred = B.get("decision_tree", max_depth=max_depth).predict(xs, ys)

    def fit_predict(x, y, q):
        return DecisionTreeRegressor(max_depth=max_depth, random_state=0).fit(x, y).predict(q)[0]

    np.testing.assert_allclose(pred.numpy(), per_prefix(xs, ys, fit_predict), rtol=1e-6,
                               atol=1e-6)


def test_gradient_boosting_matches_configured_sklearn_model():
    xs, ys = data(2, 7, 3, seed=6)
    pred = B.get("gradient_boosting", n_estimators=10).predict(xs, ys)

    def fit_predict(x, y, q):
        model = HistGradientBoostingRegressor(
            max_iter=10, max_depth=4, learning_rate=0.1, l2_regularization=1.0,
            min_samples_leaf=1, max_leaf_nodes=None, early_stopping=False, random_state=0)
        return model.fit(x, y).predict(q)[0]

    np.testing.assert_allclose(pred.numpy(), per_prefix(xs, ys, fit_predict), rtol=1e-5,
                               atol=1e-6)


def test_gradient_boosting_restores_thread_settings():
    before = torch.get_num_threads()
    B.get("gradient_boosting", n_estimators=2).predict(*data(1, 4, 2, seed=7))
    assert torch.get_num_threads() == before


def test_relu_net_is_seeded_and_prompts_are_independent():
    xs, ys = data(3, 6, 3, seed=8)
    net = B.get("relu_net", steps=20, hidden=8, seed=1)
    a = net.predict(xs, ys)
    torch.testing.assert_close(a, net.predict(xs, ys))                   # reproducible
    assert not torch.allclose(a, B.get("relu_net", steps=20, hidden=8, seed=2).predict(xs, ys))
    xs2, ys2 = xs.clone(), ys.clone()
    xs2[1:], ys2[1:] = -3 * xs2[1:], ys2[1:] + 7                      # change other prompts
    torch.testing.assert_close(net.predict(xs2, ys2)[0], a[0])            # prompt 0 unaffected


def test_relu_net_equals_independent_per_prefix_training():
    """Full-batch mode: each (prompt, prefix) net trained alone with torch.optim.Adam agrees."""
    xs, ys = data(2, 5, 2, seed=9)
    hidden, steps, lr, seed = 4, 25, 0.05, 3
    pred = B.get("relu_net", hidden=hidden, steps=steps, lr=lr, batch_size=None,
                 seed=seed).predict(xs, ys)
    batch, n, d = xs.shape
    nets = batch * (n - 1)
    # same initial values: uniform(±1/sqrt(fan_in)) drawn in the order w1, b1, w2, b2
    gen = torch.Generator().manual_seed(seed)
    w1 = (2 * torch.rand(nets, d, hidden, generator=gen) - 1) / d**0.5
    b1 = (2 * torch.rand(nets, 1, hidden, generator=gen) - 1) / d**0.5
    w2 = (2 * torch.rand(nets, hidden, 1, generator=gen) - 1) / hidden**0.5
    b2 = (2 * torch.rand(nets, 1, 1, generator=gen) - 1) / hidden**0.5
    expected = torch.zeros(batch, n)
    for k in range(nets):
        b, i = divmod(k, n - 1)
        i += 1
        params = [t[k].clone().requires_grad_(True) for t in (w1, b1, w2, b2)]
        opt = torch.optim.Adam(params, lr=lr)

        def f(x):
            return (torch.relu(x @ params[0] + params[1]) @ params[2] + params[3])[..., 0]

        for _ in range(steps):
            loss = (f(xs[b, :i]) - ys[b, :i]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            expected[b, i] = f(xs[b, i:i + 1])[0]
    torch.testing.assert_close(pred, expected, rtol=1e-4, atol=1e-5)


def test_relu_net_learns_linear_functions_in_context():
    xs, ys = data(8, 16, 2, seed=10)
    pred = B.get("relu_net", steps=150, hidden=16).predict(xs, ys)
    err = (pred - ys).square()[:, 10:].mean()
    zero_err = ys.square()[:, 10:].mean()
    assert err < 0.1 * zero_err, (err, zero_err)
