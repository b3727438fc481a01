"""Errors, bootstrap and the ICL regression score (Campbell et al. 2024, eq. 1)."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
import torch

from hookedicl.evaluation import (
    ICLScore,
    as_rng,
    bootstrap_means,
    bootstrap_weights,
    error_curve,
    icl_regression_score,
    normalized_errors,
    percentile_interval,
    squared_errors,
)

# --------------------------------------------------------------------------- errors


def test_squared_errors_values_and_torch_input():
    preds = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    ys = np.array([[1.0, 0.0, 5.0], [1.0, -2.0, 0.5]])
    err = squared_errors(preds, ys)
    assert isinstance(err, np.ndarray) and err.dtype == np.float64
    np.testing.assert_allclose(err, [[0.0, 4.0, 4.0], [1.0, 4.0, 0.25]])


def test_squared_errors_vector_targets_sum_over_trailing_dims():
    preds = np.zeros((2, 3, 4))
    ys = np.ones((2, 3, 4))
    np.testing.assert_allclose(squared_errors(preds, ys), np.full((2, 3), 4.0))


def test_squared_errors_shape_mismatch_names_argument():
    with pytest.raises(ValueError, match="preds has shape"):
        squared_errors(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="ys must be at least 2-D"):
        squared_errors(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="preds contains"):
        squared_errors(np.array([[np.nan, 0.0]]), np.zeros((1, 2)))


def test_normalized_errors_given_and_estimated_second_moment():
    rng = np.random.default_rng(0)
    ys = rng.normal(size=(50, 7)) * 3.0
    zero = np.zeros_like(ys)
    # estimated E[y²] from ys: the zero predictor scores exactly 1 on average
    assert normalized_errors(zero, ys).mean() == pytest.approx(1.0)
    np.testing.assert_allclose(normalized_errors(zero, ys, y_second_moment=9.0), ys**2 / 9.0)
    with pytest.raises(ValueError, match="y_second_moment"):
        normalized_errors(zero, ys, y_second_moment=0.0)


def test_error_curve_columns_and_values():
    rng = np.random.default_rng(1)
    err = rng.exponential(size=(300, 6)) * np.arange(1, 7)
    df = error_curve(err, ci=0.9, n_bootstrap=500, seed=0)
    assert list(df.columns) == ["position", "k", "mean", "ci_low", "ci_high"]
    assert len(df) == 6
    np.testing.assert_array_equal(df["k"], np.arange(6))
    np.testing.assert_array_equal(df["position"], np.arange(6))
    np.testing.assert_allclose(df["mean"], err.mean(axis=0))
    assert (df["ci_low"] < df["mean"]).all() and (df["mean"] < df["ci_high"]).all()
    # width of a 90% interval for a mean is about 2·1.645·SE
    se = err.std(axis=0, ddof=1) / np.sqrt(300)
    np.testing.assert_allclose(df["ci_high"] - df["ci_low"], 2 * 1.645 * se, rtol=0.2)
    # reproducible from the seed
    pd.testing.assert_frame_equal(df, error_curve(err, ci=0.9, n_bootstrap=500, seed=0))


def test_error_curve_mapping_adds_predictor_column_and_resamples_jointly():
    rng = np.random.default_rng(2)
    a = rng.exponential(size=(100, 4))
    df = error_curve({"a": a, "b": a.copy(), "c": 2 * a}, n_bootstrap=200, seed=3)
    assert list(df.columns) == ["predictor", "position", "k", "mean", "ci_low", "ci_high"]
    assert list(df["predictor"].unique()) == ["a", "b", "c"]
    assert len(df) == 12
    da, db, dc = (df[df.predictor == n].reset_index(drop=True) for n in "abc")
    # identical errors get identical intervals only because the prompts are resampled jointly
    np.testing.assert_allclose(da[["ci_low", "ci_high"]], db[["ci_low", "ci_high"]])
    np.testing.assert_allclose(dc[["mean", "ci_low", "ci_high"]], 2 * da[["mean", "ci_low", "ci_high"]])


def test_error_curve_bad_inputs():
    with pytest.raises(ValueError, match="err must be 2-D"):
        error_curve(np.zeros(5))
    with pytest.raises(ValueError, match=r"err\['x'\] contains"):
        error_curve({"x": np.array([[np.nan, 1.0]])})
    with pytest.raises(ValueError, match="ci must be"):
        error_curve(np.ones((3, 2)), ci=90)
    with pytest.raises(ValueError, match="empty mapping"):
        error_curve({})


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_weights_are_resampling_frequencies():
    rng = np.random.default_rng(0)
    w = bootstrap_weights(7, 1000, rng)
    assert w.shape == (1000, 7)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    counts = w * 7
    np.testing.assert_allclose(counts, np.round(counts))
    assert abs(w.mean() - 1 / 7) < 1e-12
    # each item is drawn Binomial(7, 1/7) times: variance 7·(1/7)·(6/7)
    assert counts.var() == pytest.approx(6 / 7, rel=0.1)


def test_bootstrap_means_matches_explicit_resampling():
    values = np.random.default_rng(5).normal(size=(40, 3))
    boot = bootstrap_means(values, n_bootstrap=64, seed=11)
    idx = np.random.default_rng(11).integers(0, 40, size=(64, 40))
    np.testing.assert_allclose(boot, values[idx].mean(axis=1))


def test_bootstrap_means_chunks_large_inputs(monkeypatch):
    import hookedicl.evaluation.bootstrap as bs

    values = np.random.default_rng(0).normal(size=(50, 2))
    monkeypatch.setattr(bs, "_MAX_WEIGHT_ENTRIES", 120)  # 2 replicates per chunk
    boot = bs.bootstrap_means(values, n_bootstrap=9, seed=1)
    rng = np.random.default_rng(1)
    expected = np.concatenate(
        [values[rng.integers(0, 50, size=(m, 50))].mean(axis=1) for m in (2, 2, 2, 2, 1)]
    )
    np.testing.assert_allclose(boot, expected)


def test_percentile_interval_and_rng_helpers():
    samples = np.arange(101, dtype=float)[:, None] * np.ones((1, 2))
    low, high = percentile_interval(samples, 0.9)
    np.testing.assert_allclose(low, [5.0, 5.0])
    np.testing.assert_allclose(high, [95.0, 95.0])
    g = np.random.default_rng(0)
    assert as_rng(g) is g
    with pytest.raises(ValueError, match="seed"):
        as_rng("abc")
    with pytest.raises(ValueError, match="n_bootstrap"):
        bootstrap_means(np.ones((3, 2)), n_bootstrap=0)


# --------------------------------------------------------------------------- ICL score


def test_score_equals_eq1_by_hand_on_curves():
    model = np.array([3.0, 2.0, 1.0])
    base = np.array([3.0, 1.0, 0.0])
    zero = np.array([3.0, 3.0, 3.0])
    # Σ(model − zero) = 0 − 1 − 2 = −3, Σ(base − zero) = 0 − 2 − 3 = −5
    s = icl_regression_score(model, base, zero)
    assert isinstance(s, ICLScore)
    assert s.value == pytest.approx(0.6)
    assert s.ci_low == s.ci_high == s.value
    assert s.method == "curves" and s.n_prompts is None
    # position 0 is included: changing it changes the score
    assert icl_regression_score(np.array([2.0, 2.0, 1.0]), base, zero).value == pytest.approx(4 / 5)
    # scalar zero error
    assert icl_regression_score(model, base, 3.0).value == pytest.approx(0.6)


def test_score_same_prompts_is_eq1_of_per_position_means():
    rng = np.random.default_rng(0)
    n, L = 64, 9
    zero = rng.exponential(size=(n, L)) * 5
    base = zero * rng.uniform(0, 0.5, size=(n, L))
    model = zero * rng.uniform(0, 0.8, size=(n, L))
    s = icl_regression_score(model, base, zero, n_bootstrap=300)
    mm, mb, mz = model.mean(0), base.mean(0), zero.mean(0)
    assert s.method == "same_prompts" and s.n_prompts == n and s.n_bootstrap == 300
    assert s.value == pytest.approx(np.sum(mm - mz) / np.sum(mb - mz))
    assert s.ci_low < s.value < s.ci_high
    # torch tensors give the same answer
    t = icl_regression_score(torch.tensor(model), torch.tensor(base), torch.tensor(zero), n_bootstrap=300)
    assert t == s


def test_score_is_one_for_the_baseline_and_zero_for_the_zero_predictor():
    rng = np.random.default_rng(1)
    zero = rng.exponential(size=(50, 5)) * 3
    base = zero * rng.uniform(0, 0.5, size=(50, 5))
    one = icl_regression_score(base, base, zero)
    assert one.value == pytest.approx(1.0) and one.ci_low == pytest.approx(1.0) and one.ci_high == pytest.approx(1.0)
    nil = icl_regression_score(zero, base, zero)
    assert nil.value == 0.0 and nil.ci_low == 0.0 and nil.ci_high == 0.0
    # fixed-curve mode: baseline curve as model errors of every prompt
    d, L = 5, 11
    base_curve = np.maximum(d - np.arange(L), 0).astype(float)
    fixed = icl_regression_score(np.tile(base_curve, (4, 1)), base_curve, float(d))
    assert fixed.method == "fixed_curves" and fixed.value == pytest.approx(1.0)
    assert icl_regression_score(np.full((4, L), float(d)), base_curve, float(d)).value == pytest.approx(0.0)


@pytest.mark.parametrize("ci", [0.95, 0.90])
def test_fixed_curve_mode_is_mean_of_per_prompt_scores_with_normal_ci(ci):
    rng = np.random.default_rng(2)
    d, L, n = 5, 11, 200
    base_curve = np.maximum(d - np.arange(L), 0).astype(float)
    model = rng.exponential(size=(n, L)) * (base_curve + 0.05)
    s = icl_regression_score(model, base_curve, d, ci=ci)
    per_prompt = np.array([np.sum(model[p] - d) / np.sum(base_curve - d) for p in range(n)])
    z = NormalDist().inv_cdf(0.5 + ci / 2)
    se = per_prompt.std(ddof=1) / np.sqrt(n)
    assert s.method == "fixed_curves" and s.n_prompts == n and s.level == ci
    assert s.value == pytest.approx(per_prompt.mean())
    assert s.ci_low == pytest.approx(per_prompt.mean() - z * se)
    assert s.ci_high == pytest.approx(per_prompt.mean() + z * se)
    assert all(isinstance(v, float) for v in (s.value, s.ci_low, s.ci_high))


def test_mode_override_averages_per_prompt_inputs():
    rng = np.random.default_rng(3)
    zero = rng.exponential(size=(30, 4)) + 2
    base = zero * 0.3
    model = zero * rng.uniform(0.1, 0.9, size=(30, 4))
    fixed = icl_regression_score(model, base, zero, mode="fixed_curves")
    by_hand = icl_regression_score(model, base.mean(0), zero.mean(0))
    assert fixed == by_hand
    curves = icl_regression_score(model, base, zero, mode="curves")
    assert curves.method == "curves"
    assert curves.value == pytest.approx(icl_regression_score(model, base, zero).value)
    # a constant zero curve is broadcast over prompts in same-prompts mode
    s = icl_regression_score(model, base, np.full(4, 3.0))
    assert s.method == "same_prompts"
    assert s.value == pytest.approx(np.sum(model.mean(0) - 3) / np.sum(base.mean(0) - 3))


def _simulated(rng, n, L=8):
    """Errors with known expectations: E[zero] = 4, E[base] = b_i, E[model] = m_i."""
    b = np.linspace(3.0, 0.5, L)
    m = np.linspace(3.5, 1.0, L)
    zero = 4.0 * rng.exponential(size=(n, L))
    base = b * rng.exponential(size=(n, L))
    model = m * rng.exponential(size=(n, L))
    return model, base, zero, np.sum(m - 4.0) / np.sum(b - 4.0)


def test_bootstrap_ci_covers_true_value_and_shrinks_with_more_prompts():
    rng = np.random.default_rng(4)
    hits = 0
    reps = 150
    for r in range(reps):
        model, base, zero, truth = _simulated(rng, 150)
        s = icl_regression_score(model, base, zero, ci=0.9, n_bootstrap=400, seed=r)
        hits += s.ci_low <= truth <= s.ci_high
    assert 0.82 <= hits / reps <= 0.97

    widths = {}
    for n in (100, 1600):
        model, base, zero, truth = _simulated(rng, n)
        s = icl_regression_score(model, base, zero, ci=0.9, n_bootstrap=500, seed=0)
        widths[n] = s.ci_high - s.ci_low
    # the width scales like 1/√n: 16× the prompts → about 4× narrower
    assert 2.5 < widths[100] / widths[1600] < 6.0


def test_bad_inputs_raise_value_error_naming_the_argument():
    good = np.ones((4, 5))
    base = np.full((4, 5), 0.5)
    zero = np.full((4, 5), 2.0)
    with pytest.raises(ValueError, match=r"model_err must be .*got shape \(4, 5, 1\)"):
        icl_regression_score(good[..., None], base, zero)
    with pytest.raises(ValueError, match=r"baseline_err has n_points=6 .*model_err has n_points=5"):
        icl_regression_score(good, np.ones((4, 6)), zero)
    with pytest.raises(ValueError, match=r"zero_err has n_points=3"):
        icl_regression_score(good, base, np.ones(3))
    with pytest.raises(ValueError, match=r"baseline_err has n_prompts=3"):
        icl_regression_score(good, np.ones((3, 5)) * 0.5, zero)
    bad = zero.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"zero_err contains 1 non-finite"):
        icl_regression_score(good, base, bad)
    with pytest.raises(ValueError, match="model_err must hold non-negative"):
        icl_regression_score(-good, base, zero)
    # baseline worse than predicting zero → non-positive denominator
    with pytest.raises(ValueError, match="baseline_err: the denominator"):
        icl_regression_score(good, zero * 2, zero)
    with pytest.raises(ValueError, match="baseline_err: the denominator"):
        icl_regression_score(good, zero, zero)
    with pytest.raises(ValueError, match="mode must be one of"):
        icl_regression_score(good, base, zero, mode="bogus")
    with pytest.raises(ValueError, match="baseline_err must be 2-D"):
        icl_regression_score(good, base[0], zero, mode="same_prompts")
    with pytest.raises(ValueError, match="model_err needs at least 2 prompts"):
        icl_regression_score(good[:1], base[:1], zero[:1])
    with pytest.raises(ValueError, match="cannot infer the mode"):
        icl_regression_score(good[0], base, zero)
    with pytest.raises(ValueError, match="zero_err must be a curve"):
        icl_regression_score(good, base[0], zero)
    with pytest.raises(ValueError, match="ci must be"):
        icl_regression_score(good, base, zero, ci=1.5)
    with pytest.raises(ValueError, match="model_err must be numeric"):
        icl_regression_score("abc", base, zero)


def test_score_to_dict_is_plain_python():
    s = icl_regression_score(np.array([1.0, 1.0]), np.array([0.5, 0.0]), 2.0)
    d = s.to_dict()
    assert d["value"] == s.value and d["method"] == "curves"
    with pytest.raises(Exception):
        s.value = 2.0  # frozen
