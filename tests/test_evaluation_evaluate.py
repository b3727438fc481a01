"""`evaluate` and `EvalResult` with small fake tasks and predictors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from hookedicl.evaluation import ZERO, EvalResult, evaluate


class FakeLinearTask:
    """y = wᵀx with x, w ~ N(0, I): E[y²] = number of active dims."""

    name = "fake_linear"

    def __init__(self, n_dims: int = 4, second_moment: bool = True):
        self.n_dims = n_dims
        self.calls: list[dict] = []
        if not second_moment:
            self.y_second_moment = None  # behaves like a task without the method

    def sample(self, batch_size, n_points, generator=None, n_dims_active=None):
        self.calls.append({"batch_size": batch_size, "n_points": n_points, "n_dims_active": n_dims_active})
        d = self.n_dims
        xs = torch.randn(batch_size, n_points, d, generator=generator)
        if n_dims_active is not None:
            xs[..., n_dims_active:] = 0
        w = torch.randn(batch_size, d, generator=generator)
        ys = torch.einsum("bnd,bd->bn", xs, w)
        return SimpleNamespace(xs=xs, ys=ys, params={"w": w})

    def y_second_moment(self, n_dims_active=None):
        return float(n_dims_active or self.n_dims)


class LeastSquares:
    """Min-norm least squares on each prefix (predicts 0 with no context)."""

    def predict(self, xs, ys):
        b, n, d = xs.shape
        out = torch.zeros(b, n)
        for i in range(1, n):
            w = torch.linalg.pinv(xs[:, :i]) @ ys[:, :i, None]
            out[:, i] = (xs[:, i : i + 1] @ w)[:, 0, 0]
        return out


class Recorder(torch.nn.Module):
    """A tiny model that records what it saw."""

    def __init__(self, n_dims: int = 4):
        super().__init__()
        self.read = torch.nn.Linear(n_dims, 1)
        self.inner = torch.nn.Dropout(0.5)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.flags: list[tuple[bool, bool, bool]] = []

    def forward(self, xs, ys):
        self.seen.append((xs.clone(), ys.clone()))
        self.flags.append((self.training, self.inner.training, torch.is_grad_enabled()))
        return self.inner(self.read(xs))[..., 0]


def test_all_predictors_see_identical_prompts():
    task = FakeLinearTask()
    a, b = Recorder(), Recorder()
    b.load_state_dict(a.state_dict())
    res = evaluate({"a": a, "b": b}, task, n_prompts=70, n_points=6, batch_size=32, seed=3)
    assert len(a.seen) == len(b.seen) == 3  # 32 + 32 + 6
    for (xa, ya), (xb, yb) in zip(a.seen, b.seen):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    np.testing.assert_array_equal(res.errors["a"], res.errors["b"])
    assert res.errors["a"].shape == res.errors[ZERO].shape == (70, 6)
    assert [c["batch_size"] for c in task.calls] == [32, 32, 6]
    # the zero predictor's errors are y² of exactly those prompts
    ys = torch.cat([y for _, y in a.seen]).double().numpy()
    np.testing.assert_allclose(res.errors[ZERO], ys**2)
    # same seed → same prompts
    res2 = evaluate({"a": a}, task, n_prompts=70, n_points=6, batch_size=32, seed=3)
    np.testing.assert_array_equal(res2.errors["a"], res.errors["a"])
    res3 = evaluate({"a": a}, task, n_prompts=70, n_points=6, batch_size=32, seed=4)
    assert not np.array_equal(res3.errors["a"], res.errors["a"])


def test_eval_mode_no_grad_and_training_flags_restored():
    model = Recorder()
    model.train()
    model.read.eval()  # a submodule with its own flag must come back as it was
    evaluate({"m": model}, FakeLinearTask(), n_prompts=8, n_points=4, batch_size=8)
    assert model.flags == [(False, False, False)]
    assert model.training and model.inner.training and not model.read.training
    assert torch.is_grad_enabled()


def test_flags_restored_when_a_predictor_fails():
    model = Recorder().train()

    def broken(xs, ys):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        evaluate({"m": model, "broken": broken}, FakeLinearTask(), n_prompts=4, n_points=3)
    assert model.training and model.inner.training


def test_zero_predictor_normalised_error_is_about_one_and_least_squares_is_exact():
    d = 4
    res = evaluate({"least_squares": LeastSquares()}, FakeLinearTask(d), n_prompts=1280, n_points=8, batch_size=256)
    assert res.y_second_moment == d and res.y_second_moment_source == "task"
    zero = res.normalized_errors(ZERO)
    assert zero.mean() == pytest.approx(1.0, abs=0.05)
    ls = res.normalized_errors("least_squares").mean(axis=0)
    assert ls[0] == pytest.approx(zero.mean(axis=0)[0])  # no context → predicts 0
    assert np.all(ls[d:] < 1e-6)  # noiseless: exact once k ≥ d
    assert 0.1 < ls[d - 1] < 0.6  # one example short: about (d − k)/d = 1/4
    curves = res.curves(n_bootstrap=200)
    assert list(curves.columns) == ["predictor", "position", "k", "mean", "ci_low", "ci_high"]
    assert list(curves["predictor"].unique()) == ["least_squares", ZERO]
    z = curves[curves.predictor == ZERO]
    assert (z["ci_low"] < 1.0).mean() > 0.5 and (z["ci_high"] > 1.0).mean() > 0.5
    raw = res.curves(n_bootstrap=50, normalized=False, predictors=[ZERO])
    np.testing.assert_allclose(raw["mean"], res.errors[ZERO].mean(axis=0))


def test_icl_score_and_json_summary():
    model = Recorder(n_dims=3)
    res = evaluate(
        {"model": model, "least_squares": LeastSquares(), "copy": LeastSquares()},
        FakeLinearTask(3),
        n_prompts=64,
        n_points=6,
    )
    s = res.icl_score("copy")
    assert s.value == pytest.approx(1.0) and s.method == "same_prompts"
    assert res.icl_score(ZERO).value == 0.0
    with pytest.raises(ValueError, match="baseline 'ridge'"):
        res.icl_score("model", baseline="ridge")

    summary = res.to_json_dict(n_bootstrap=100)
    assert list(summary)[:2] == ["icl_score", "normalized_errors"]
    score = summary["icl_score"]
    assert {"value", "ci_low", "ci_high", "baseline"} <= set(score)
    assert score["baseline"] == "least_squares" and score["model"] == "model"
    assert score["value"] == pytest.approx(res.icl_score("model").value)
    assert set(summary["normalized_errors"]) == {"model", "least_squares", "copy", ZERO}
    assert len(summary["normalized_errors"][ZERO]) == 6
    np.testing.assert_allclose(summary["normalized_errors"]["model"], res.normalized_errors("model").mean(0))
    low, high = summary["ci"]["low"]["model"], summary["ci"]["high"]["model"]
    assert all(lo <= m <= hi for lo, m, hi in zip(low, summary["normalized_errors"]["model"], high))
    assert summary["n_prompts"] == 64 and summary["n_points"] == 6 and summary["task"] == "fake_linear"
    assert summary["y_second_moment"] == 3.0
    assert set(summary["icl_scores"]) == {"model", "copy"}
    json.dumps(summary, allow_nan=False)

    # no baseline evaluated → no score, the rest still there
    only = evaluate({"model": model}, FakeLinearTask(3), n_prompts=8, n_points=4)
    assert only.to_json_dict(n_bootstrap=20)["icl_score"] is None
    with pytest.raises(ValueError, match="model 'nope'"):
        res.to_json_dict(model="nope")


def test_second_moment_estimated_or_given_and_n_dims_active_forwarded():
    task = FakeLinearTask(6, second_moment=False)
    res = evaluate({}, task, n_prompts=2000, n_points=5, n_dims_active=2)
    assert all(c["n_dims_active"] == 2 for c in task.calls)
    assert res.y_second_moment_source == "estimated"
    assert res.y_second_moment == pytest.approx(2.0, rel=0.1)
    assert res.normalized_errors(ZERO).mean() == pytest.approx(1.0)
    given = evaluate({}, task, n_prompts=10, n_points=5, y_second_moment=7.0)
    assert given.y_second_moment == 7.0 and given.y_second_moment_source == "given"
    with_task = evaluate({}, FakeLinearTask(6), n_prompts=10, n_points=5, n_dims_active=2)
    assert with_task.y_second_moment == 2.0 and with_task.n_dims_active == 2


def test_callable_predictors_and_torch_generator():
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    half = lambda xs, ys: 0.5 * ys  # noqa: E731
    r1 = evaluate({"half": half}, FakeLinearTask(), n_prompts=16, n_points=3, generator=g1)
    r2 = evaluate({"half": half}, FakeLinearTask(), n_prompts=16, n_points=3, generator=g2)
    np.testing.assert_array_equal(r1.errors["half"], r2.errors["half"])
    np.testing.assert_allclose(r1.errors["half"], 0.25 * r1.errors[ZERO])
    assert r1.seed is None


def test_evaluate_bad_inputs():
    task = FakeLinearTask()
    with pytest.raises(ValueError, match="'zero' is reserved"):
        evaluate({"zero": LeastSquares()}, task, n_points=3)
    with pytest.raises(ValueError, match="predictor 'bad' returned shape"):
        evaluate({"bad": lambda xs, ys: ys[:, :-1]}, task, n_prompts=4, n_points=3)
    with pytest.raises(ValueError, match="predictor 'nan' returned non-finite"):
        evaluate({"nan": lambda xs, ys: ys * float("nan")}, task, n_prompts=4, n_points=3)
    with pytest.raises(ValueError, match=r"predictors\['x'\] must be callable"):
        evaluate({"x": 3}, task, n_points=3)
    with pytest.raises(ValueError, match="n_points must be given"):
        evaluate({}, task)
    with pytest.raises(ValueError, match="n_prompts must be"):
        evaluate({}, task, n_prompts=0, n_points=3)

    class NoDims:
        def sample(self, batch_size, n_points, generator=None):
            raise AssertionError("not reached")

    with pytest.raises(ValueError, match="does not accept it"):
        evaluate({}, NoDims(), n_points=3, n_dims_active=2)


def test_eval_result_validates_its_arrays():
    with pytest.raises(ValueError, match="zero predictor"):
        EvalResult(errors={"a": np.ones((2, 3))}, y_second_moment=1.0, task="t")
    with pytest.raises(ValueError, match="share one 2-D shape"):
        EvalResult(errors={ZERO: np.ones((2, 3)), "a": np.ones((2, 4))}, y_second_moment=1.0, task="t")
    with pytest.raises(ValueError, match="y_second_moment"):
        EvalResult(errors={ZERO: np.ones((2, 3))}, y_second_moment=-1.0, task="t")
    res = EvalResult(errors={ZERO: np.ones((2, 3)), "a": np.zeros((2, 3))}, y_second_moment=2.0, task="t")
    assert res.predictors == ["a"] and res.n_prompts == 2 and res.n_points == 3
    assert isinstance(res.curves(n_bootstrap=10), pd.DataFrame)
