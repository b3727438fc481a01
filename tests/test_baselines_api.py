"""Contract of hookedicl.baselines: registry, validation, shapes, prediction 0, causality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hookedicl.baselines as B

# Cheap settings so that every predictor runs on tiny prompts in well under a second.
CHEAP = {
    "relu_net": {"steps": 15, "hidden": 8},
    "gradient_boosting": {"n_estimators": 3},
    "newton": {"steps": 4},
    "gd": {"steps": 3, "lr": 0.1},
    "gd_plus_plus": {"steps": 3, "lr": 0.1, "gamma": 0.05},
}
ALL = [
    "least_squares", "ridge", "averaging", "gd", "sgd", "gd_plus_plus", "newton", "knn",
    "lasso", "decision_tree", "gradient_boosting", "relu_net", "zero",
]
LINEAR = ["least_squares", "ridge", "averaging", "gd", "sgd", "gd_plus_plus", "newton", "lasso",
          "zero"]


def make(name: str) -> B.Predictor:
    return B.get(name, **CHEAP.get(name, {}))


def data(batch=3, n=7, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(batch, n, d, generator=g)
    ys = torch.randn(batch, n, generator=g)
    return xs, ys


def test_registry_lists_every_name():
    assert B.list() == ALL
    assert B.available() == ALL
    for name in ALL:
        p = B.get(name)
        assert p.name == name
        assert isinstance(p, B.Predictor)
        assert isinstance(p, B.LinearPredictor) == (name in LINEAR)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="least_squares") as exc:
        B.get("ols")
    assert "'ols'" in str(exc.value)


@pytest.mark.parametrize(
    "name, hyper, word",
    [
        ("ridge", {"lam": 1.0}, "lam"),
        ("ridge", {"alpha": -1.0}, "alpha"),
        ("ridge", {"alpha": 0.0}, "alpha"),
        ("ridge", {"alpha": float("nan")}, "alpha"),
        ("least_squares", {"rcond": 0.0}, "rcond"),
        ("gd", {"steps": 1.5}, "steps"),
        ("gd", {"steps": True}, "steps"),
        ("gd", {"steps": -1}, "steps"),
        ("gd", {"lr": "0.1"}, "lr"),
        ("sgd", {"lr": 0.0}, "lr"),
        ("gd_plus_plus", {"gamma": -0.1}, "gamma"),
        ("newton", {"init_scale": 2.0}, "init_scale"),
        ("knn", {"weights": "inverse"}, "weights"),
        ("knn", {"k": 0}, "k"),
        ("lasso", {"alpha": -0.01}, "alpha"),
        ("decision_tree", {"max_depth": 0}, "max_depth"),
        ("gradient_boosting", {"n_estimators": 0}, "n_estimators"),
        ("relu_net", {"batch_size": 0}, "batch_size"),
        ("zero", {"alpha": 1.0}, "alpha"),
    ],
)
def test_bad_hyperparameters_raise_value_error_naming_them(name, hyper, word):
    with pytest.raises(ValueError, match=word):
        B.get(name, **hyper)


def test_get_params_and_repr_round_trip():
    p = B.get("ridge", alpha=0.25)
    assert p.get_params() == {"alpha": 0.25}
    assert repr(p) == "Ridge(alpha=0.25)"
    q = B.get("knn", k=5, weights="distance")
    assert B.get("knn", **q.get_params()).get_params() == q.get_params()


# A non-default value for every hyperparameter of every registered predictor (cheap ones).
OTHER = {
    "least_squares": {"rcond": 1e-3}, "ridge": {"alpha": 0.3}, "averaging": {}, "zero": {},
    "gd": {"steps": 2, "lr": 0.2, "loss": "sum"}, "sgd": {"lr": 0.05},
    "gd_plus_plus": {"steps": 3, "lr": 0.05, "gamma": 0.1}, "newton": {"steps": 3, "init_scale": 0.5},
    "knn": {"k": 2, "weights": "distance", "power": 1.0}, "lasso": {"alpha": 0.05, "max_iter": 500, "tol": 1e-3},
    "decision_tree": {"max_depth": 2, "min_samples_leaf": 2, "seed": 1},
    "gradient_boosting": {"n_estimators": 3, "max_depth": 2, "learning_rate": 0.2, "l2_regularization": 0.5,
                          "min_samples_leaf": 2, "seed": 1, "n_threads": 2},
    "relu_net": {"hidden": 8, "steps": 15, "lr": 1e-2, "batch_size": 4, "seed": 1},
}


def test_other_covers_every_hyperparameter_of_the_registry():
    assert sorted(OTHER) == sorted(B.REGISTRY)
    for name, cls in B.REGISTRY.items():
        assert sorted(OTHER[name]) == sorted(cls._param_names()), name
        defaults = cls().get_params()
        assert all(OTHER[name][k] != defaults[k] for k in OTHER[name]), name


@pytest.mark.parametrize("name", ALL)
def test_sklearn_parameter_protocol_and_clone(name):
    from sklearn.base import clone

    xs, ys = data()
    direct = B.REGISTRY[name](**OTHER[name])  # the constructor, not set_params
    p = B.REGISTRY[name]()
    assert p.set_params(**OTHER[name]) is p
    assert p.get_params(deep=True) == p.get_params(deep=False) == OTHER[name]
    for q in (clone(p), clone(direct)):
        assert type(q) is type(p) and q is not p and q.get_params() == OTHER[name]
        torch.testing.assert_close(q.predict(xs, ys), direct.predict(xs, ys), rtol=0, atol=0)
    torch.testing.assert_close(p.predict(xs, ys), direct.predict(xs, ys), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown hyperparameter.*'nope'"):
        p.set_params(nope=1)
    assert p.get_params() == OTHER[name]


@pytest.mark.parametrize("name, hyper, word", [
    ("ridge", {"alpha": -1.0}, "alpha"), ("gd", {"loss": "l1"}, "loss"), ("knn", {"k": 0}, "'k'"),
])
def test_set_params_checks_values_and_leaves_the_predictor_unchanged(name, hyper, word):
    p = B.get(name)
    before = p.get_params()
    with pytest.raises(ValueError, match=word):
        p.set_params(**hyper)
    assert p.get_params() == before


@pytest.mark.parametrize("name", ALL)
def test_shape_dtype_and_prediction_zero(name):
    xs, ys = data()
    ys = ys + 5.0  # a non-zero mean would leak into prediction 0 of a careless implementation
    pred = make(name).predict(xs, ys)
    assert pred.shape == ys.shape
    assert pred.dtype == torch.float32
    assert torch.isfinite(pred).all()
    assert torch.equal(pred[:, 0], torch.zeros(xs.shape[0]))


@pytest.mark.parametrize("name", LINEAR)
def test_linear_predictors_predict_with_their_weights(name):
    xs, ys = data(seed=1)
    p = make(name)
    w = p.weights(xs, ys)
    assert w.shape == xs.shape and w.dtype == torch.float32
    assert torch.equal(w[:, 0], torch.zeros_like(w[:, 0]))
    torch.testing.assert_close(p.predict(xs, ys), (w * xs).sum(-1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("i", [1, 3, 5])
def test_causal_prediction_i_ignores_points_from_i_on(name, i):
    xs, ys = data(n=7, d=3, seed=2)
    xs2, ys2 = xs.clone(), ys.clone()
    g = torch.Generator().manual_seed(10 + i)
    ys2[:, i:] = 10 * torch.randn(ys2[:, i:].shape, generator=g)       # targets j >= i
    xs2[:, i + 1:] = 10 * torch.randn(xs2[:, i + 1:].shape, generator=g)  # inputs j > i
    p = make(name)
    a, b = p.predict(xs, ys), p.predict(xs2, ys2)
    torch.testing.assert_close(a[:, : i + 1], b[:, : i + 1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[:, i + 1:], b[:, i + 1:]) or name == "zero"


@pytest.mark.parametrize("name", ["least_squares", "gd", "knn", "zero"])
def test_float64_and_empty_inputs(name):
    xs, ys = data()
    p = make(name)
    assert p.predict(xs.double(), ys.double()).dtype == torch.float32
    assert p.predict(xs.half(), ys.half()).dtype == torch.float32  # computed in float32
    torch.testing.assert_close(p.predict(xs.half(), ys.half()), p.predict(xs.half().float(), ys.half().float()))
    for empty in ((xs[:0], ys[:0]), (xs[:, :0], ys[:, :0])):
        with pytest.raises(ValueError, match="empty prompts"):
            p.predict(*empty)
    assert p.predict(xs[:, :1], ys[:, :1]).eq(0).all()


BAD_INPUTS = [
    (lambda x, y: (x[0], y), ValueError,
     r"xs must have shape \(batch, n_points, n_dims\).*\(7, 3\)"),
    (lambda x, y: (x, y[0]), ValueError, r"ys must have shape \(batch, n_points\).*\(7,\)"),
    (lambda x, y: (x, y[..., None].expand(3, 7, 2)), ValueError, "vector targets"),
    (lambda x, y: (x, y[:2]), ValueError, r"batch size mismatch.*\(3, 7, 3\).*\(2, 7\)"),
    (lambda x, y: (x, y[:, :5]), ValueError, r"n_points mismatch.*\(3, 7, 3\).*\(3, 5\)"),
    (lambda x, y: (x.index_fill(1, torch.tensor([2]), float("nan")), y), ValueError,
     r"xs \(shape \(3, 7, 3\)\) contains NaN or inf"),
    (lambda x, y: (x, y.index_fill(1, torch.tensor([4]), float("inf"))), ValueError,
     r"ys \(shape \(3, 7\)\) contains NaN or inf"),
    (lambda x, y: (x[..., :0], y), ValueError, "n_dims == 0"),
    (lambda x, y: (x.numpy(), y), TypeError, "xs must be a torch.Tensor"),
    (lambda x, y: (x, y.to(torch.int64)), TypeError, "ys must have a floating-point dtype"),
]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("case", range(len(BAD_INPUTS)))
def test_bad_inputs_raise_naming_the_problem(name, case):
    xs, ys = data()
    make_bad, exc, pattern = BAD_INPUTS[case]
    bx, by = make_bad(xs, ys)
    p = make(name)
    with pytest.raises(exc, match=pattern):
        p.predict(bx, by)
    if isinstance(p, B.LinearPredictor):
        with pytest.raises(exc, match=pattern):
            p.weights(bx, by)


def test_zero_is_zero_and_averaging_formula():
    xs, ys = data(batch=2, n=6, d=4, seed=3)
    assert B.get("zero").predict(xs, ys).eq(0).all()
    w = B.get("averaging").weights(xs, ys).double().numpy()
    x, y = xs.double().numpy(), ys.double().numpy()
    for b in range(2):
        for i in range(1, 6):
            np.testing.assert_allclose(w[b, i], (x[b, :i] * y[b, :i, None]).mean(0), rtol=1e-6)
