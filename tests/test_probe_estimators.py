"""The probes as scikit-learn estimators: scikit-learn's own estimator checks; the linear probe
against scikit-learn's RidgeCV / Ridge (directly, in a Pipeline, under cross_val_score and
GridSearchCV); 1-D targets; and the batched fast path (`fit_stack`) against probes fitted one at
a time."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from hookedicl.analysis.probe import LinearProbe, MLPProbe

ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)

# scikit-learn's estimator checks that the probes are expected to fail: none. One check is
# skipped, by scikit-learn itself: check_array_api_input runs only when SCIPY_ARRAY_API=1 is set
# (the probes compute in numpy / torch and do not declare array-API support). MLPProbe runs the
# checks with steps=100 (instead of 300) to keep them fast; it still passes the score check.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks([LinearProbe(), MLPProbe(steps=100)], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def data(n: int = 120, f: int = 6, t: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features on different scales and offsets; a noisy linear target `(n,)` or `(n, t)`."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, f)) * rng.uniform(0.1, 5.0, f) + rng.normal(size=f)
    Y = X[:, :3] @ rng.normal(size=(3, t or 1)) + rng.normal(size=(n, t or 1))
    return X, (Y[:, 0] if t is None else Y)


@pytest.mark.parametrize("n, f, t", [(80, 6, None), (80, 6, 3), (30, 40, 2), (25, 5, None)])
def test_linear_probe_is_ridgecv_on_standardised_features(n, f, t):
    X, y = data(n, f, t, seed=n + f)
    scaler = StandardScaler().fit(X)
    ref = RidgeCV(alphas=ALPHAS).fit(scaler.transform(X), y)
    probe = LinearProbe(alphas=ALPHAS).fit(X, y)
    assert probe.alpha_ == ref.alpha_
    X_new = data(17, f, seed=1)[0]
    np.testing.assert_allclose(probe.predict(X_new), ref.predict(scaler.transform(X_new)).reshape(probe.predict(X_new).shape),
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(probe.coef_, ref.coef_ / scaler.scale_, rtol=1e-8, atol=1e-10)
    assert probe.coef_.shape == ((f,) if t is None else (t, f))


def test_the_leave_one_out_choice_of_alpha_follows_the_data():
    X, _ = data(60, 5, seed=3)
    noise = np.random.default_rng(0).normal(size=60)
    assert LinearProbe().fit(X, X[:, 0] + 1e-3 * noise).alpha_ == min(ALPHAS)  # almost exact: no shrinkage
    assert LinearProbe().fit(X, noise).alpha_ >= 100.0  # unrelated to X: shrink towards the mean


@pytest.mark.parametrize("probe", [LinearProbe(), MLPProbe(steps=30)], ids=["linear", "mlp"])
def test_target_rank_is_kept(probe):
    X, y = data(40, 4)
    X_new = X[:7]
    assert clone(probe).fit(X, y).predict(X_new).shape == (7,)
    assert clone(probe).fit(X, y[:, None]).predict(X_new).shape == (7, 1)
    assert clone(probe).fit(X, np.stack([y, -y, 2 * y], 1)).predict(X_new).shape == (7, 3)
    stack = clone(probe).fit_stack(np.stack([X, X]), np.stack([y, -y]))
    assert [e.predict(X_new).shape for e in stack] == [(7,), (7,)]


def test_clone_cross_val_score_pipeline_and_grid_search_match_scikit_learn_ridge():
    X, y = data(150, 8, seed=5)
    probe = LinearProbe(alphas=(3.0,)).fit(X, y)
    copy = clone(probe)
    assert copy.get_params() == {"alphas": (3.0,)} and not hasattr(copy, "coef_")
    with pytest.raises(NotFittedError):
        copy.predict(X)
    cv = KFold(5, shuffle=True, random_state=0)
    ridge = make_pipeline(StandardScaler(), Ridge(alpha=3.0))
    np.testing.assert_allclose(cross_val_score(probe, X, y, cv=cv), cross_val_score(ridge, X, y, cv=cv), rtol=1e-10)
    np.testing.assert_allclose(
        cross_val_score(probe, X, y, cv=cv, scoring="neg_mean_squared_error"),
        cross_val_score(ridge, X, y, cv=cv, scoring="neg_mean_squared_error"), rtol=1e-10,
    )
    poly = PolynomialFeatures(2, include_bias=False)
    ours = make_pipeline(poly, LinearProbe()).fit(X, y)
    theirs = make_pipeline(clone(poly), StandardScaler(), RidgeCV(alphas=ALPHAS)).fit(X, y)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-8, atol=1e-8)
    grid = [0.01, 1.0, 30.0, 1000.0]
    g_ours = GridSearchCV(LinearProbe(), {"alphas": [(a,) for a in grid]}, cv=cv).fit(X, y)
    g_ref = GridSearchCV(make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": grid}, cv=cv).fit(X, y)
    np.testing.assert_allclose(g_ours.cv_results_["mean_test_score"], g_ref.cv_results_["mean_test_score"], rtol=1e-10)
    assert g_ours.best_params_ == {"alphas": (g_ref.best_params_["ridge__alpha"],)}


def test_grid_search_over_mlp_probe_hyperparameters():
    X, _ = data(90, 3, seed=2)
    y = np.abs(X[:, 0]) + X[:, 1] ** 2  # non-linear: the linear probe cannot fit it
    g = GridSearchCV(MLPProbe(steps=80), {"hidden": [2, 32]}, cv=3).fit(X, y)
    assert g.best_params_ == {"hidden": 32}
    assert g.best_estimator_.score(X, y) > cross_val_score(LinearProbe(), X, y, cv=3).mean() + 0.2


def test_linear_fit_stack_equals_probes_fitted_one_at_a_time():
    rng = np.random.default_rng(4)
    X3 = rng.normal(size=(5, 70, 6)) * rng.uniform(0.2, 3.0, size=(5, 1, 6))
    Y3 = np.einsum("pnf,pft->pnt", X3, rng.normal(size=(5, 6, 2))) + rng.normal(size=(5, 70, 2)) * [[[0.1]], [[1]], [[3]], [[10]], [[30]]]
    stack = LinearProbe().fit_stack(X3, Y3)
    assert len({e.alpha_ for e in stack}) > 1  # the problems are fitted independently
    for p, est in enumerate(stack):
        solo = LinearProbe().fit(X3[p], Y3[p])
        assert est.alpha_ == solo.alpha_ and est.n_features_in_ == 6
        np.testing.assert_allclose(est.coef_, solo.coef_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(est.intercept_, solo.intercept_, rtol=1e-10, atol=1e-12)


def test_mlp_fit_stack_equals_probes_fitted_one_at_a_time():
    # float32 training: a batched and a single matmul may round differently, so equal to ~1e-4
    rng = np.random.default_rng(6)
    X3 = rng.normal(size=(4, 80, 5))
    Y3 = np.stack([X3[p, :, p] ** 2 + X3[p, :, 4] for p in range(4)])
    stack = MLPProbe(steps=150).fit_stack(X3, Y3)
    for p, est in enumerate(stack):
        solo = MLPProbe(steps=150).fit(X3[p], Y3[p])
        assert est.score(X3[p], Y3[p]) > 0.9
        np.testing.assert_allclose(est.predict(X3[p]), solo.predict(X3[p]), atol=1e-3 * Y3[p].std())


def test_hyperparameters_are_checked_when_fitting_and_stacks_by_shape():
    X, y = data(30, 3)
    bad = [(LinearProbe(alphas=(1.0, -1.0)), "alphas"), (LinearProbe(alphas=()), "alphas"),
           (MLPProbe(hidden=0), "hidden"), (MLPProbe(steps=2.5), "steps"), (MLPProbe(lr=0), "lr"),
           (MLPProbe(val_frac=1.0), "val_frac"), (MLPProbe(weight_decay=-1), "weight_decay")]
    for probe, word in bad:  # constructing does not raise (scikit-learn's contract); fitting does
        with pytest.raises(ValueError, match=word):
            probe.fit(X, y)
    with pytest.raises(ValueError, match=r"X \(P, n, f\).*got X \(30, 3\)"):
        LinearProbe().fit_stack(X, y)
    with pytest.raises(ValueError, match="NaN"):
        LinearProbe().fit_stack(np.full((2, 5, 3), np.nan), np.zeros((2, 5)))
    with pytest.raises(ValueError, match="3 features"):
        LinearProbe().fit(X, y).predict(X[:, :2])
