"""Order sensitivity: least squares and full-batch GD are invariant, online SGD is not; the
permutations keep the query and permute the context; every preset; argument checks; analyze_run."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

import hookedicl as hi
import hookedicl.baselines as B
from hookedicl.analysis import lens, order
from hookedicl.training import TrainConfig, train



from analysis_helpers import N_DIMS, assert_only_callers_hook, no_hooks, tiny
from analysis_helpers import prompts as _prompts

N_POINTS = 7


def prompts(batch: int = 16, n_points: int = N_POINTS, seed: int = 0):
    return _prompts(batch, n_points, seed)


def rows(t, predictor_prefix, metric):
    return t[t["predictor"].str.startswith(predictor_prefix) & (t["metric"] == metric)]


def test_permuted_prompts_permute_the_context_and_keep_the_query():
    xs, ys = prompts(batch=3)
    k, P = 4, 5
    px, py = order.permuted_prompts(xs, ys, k, P, torch.Generator().manual_seed(0))
    assert px.shape == (3 * P, k + 1, N_DIMS) and py.shape == (3 * P, k + 1)
    px, py = px.reshape(3, P, k + 1, N_DIMS), py.reshape(3, P, k + 1)
    assert torch.equal(px[:, 0], xs[:, : k + 1]) and torch.equal(py[:, 0], ys[:, : k + 1])
    assert torch.equal(px[:, :, k], xs[:, None, k].expand(3, P, N_DIMS))
    for i in range(3):
        for j in range(P):
            # (x, y) pairs stay together and form the same set
            pairs = torch.cat([px[i, j, :k], py[i, j, :k, None]], -1)
            orig = torch.cat([xs[i, :k], ys[i, :k, None]], -1)
            assert torch.equal(pairs[pairs[:, 0].argsort()], orig[orig[:, 0].argsort()])
    assert any(not torch.equal(px[i, j], px[i, 0]) for i in range(3) for j in range(1, P))


def test_least_squares_and_gd_are_order_invariant_sgd_is_not():
    xs, ys = prompts(batch=24)
    refs = {"ls": B.get("least_squares"), "gd": B.get("gd", steps=3, lr=0.3), "sgd": B.get("sgd", lr=0.2)}
    t = order.order_sensitivity(tiny("gpt2"), xs, ys, refs, n_orders=8)
    assert rows(t, "ls", "spread")["mean"].max() < 1e-6
    assert rows(t, "gd", "spread")["mean"].max() < 1e-6
    assert rows(t, "sgd", "spread")["mean"].min() > 1e-3
    assert set(t["k"]) == set(range(2, N_POINTS))
    assert list(t.columns) == ["predictor", "family", "k", "metric", "mean", "ci_low", "ci_high"]


def test_a_predictor_agrees_with_itself_on_the_same_order():
    xs, ys = prompts(batch=12)
    sgd = B.get("sgd", lr=0.2)
    t = order.order_sensitivity(sgd, xs, ys, {"same sgd": B.get("sgd", lr=0.2), "ls": B.get("least_squares")},
                                n_orders=6, name="sgd")
    assert rows(t, "same sgd", "disagreement")["mean"].max() == 0.0
    assert rows(t, "ls", "disagreement")["mean"].min() > 1e-3
    self_rows = rows(t, "sgd (other order)", "disagreement")
    assert self_rows["mean"].min() > 1e-4  # SGD disagrees with itself under another order
    np.testing.assert_allclose(rows(t, "sgd", "spread")["mean"].to_numpy()[: len(self_rows)],
                               rows(t, "same sgd", "spread")["mean"].to_numpy())
    ls = order.order_sensitivity(B.get("least_squares"), xs, ys, ["least_squares"], n_orders=6, name="ls model")
    assert rows(ls, "ls model (other order)", "disagreement")["mean"].max() < 1e-10


def test_default_references_use_line_searched_step_sizes():
    xs, ys = prompts(batch=8)
    t = order.order_sensitivity(tiny("llama"), xs, ys, n_orders=3, ks=[3, 6], gd_steps=(1,))
    labels = set(t["predictor"])
    assert "least_squares" in labels and "model" in labels and "model (other order)" in labels
    assert any(lab.startswith("gd(steps=1, lr=") for lab in labels) and any(lab.startswith("sgd(lr=") for lab in labels)


@pytest.mark.parametrize("arch", hi.list_architectures())
def test_order_sensitivity_runs_on_every_preset(arch):
    model = tiny(arch)
    xs, ys = prompts(batch=4)
    t = order.order_sensitivity(model, xs, ys, {"ls": B.get("least_squares")}, n_orders=3, ks=[2, 5])
    assert set(t["k"]) == {2, 5} and np.isfinite(t["mean"]).all()
    spread = rows(t, "model", "spread").set_index("k")["mean"]
    assert spread[5] > 0  # a random model is order-sensitive
    assert no_hooks(model)


def test_works_through_the_lens_and_leaves_no_hooks():
    model = tiny("mambaformer", n_layers=1)
    xs, ys = prompts(batch=4)
    ls = {"ls": B.get("least_squares")}
    t = order.order_sensitivity(lens.LensPredictor(model, 1), xs, ys, ls, n_orders=3, name="lens 1")
    assert "lens 1 (other order)" in set(t["predictor"])
    assert no_hooks(model)

    def boom(t, hook):
        raise RuntimeError("boom in a hook")

    model.add_hook("blocks.0.hook_resid_post", boom)
    with pytest.raises(RuntimeError, match="boom"):
        order.order_sensitivity(lens.LensPredictor(model, 2), xs, ys, {"ls": B.get("least_squares")}, n_orders=3)
    assert_only_callers_hook(model, "blocks.0.hook_resid_post")


def test_bad_arguments_raise_value_errors():
    model = tiny("gpt2")
    xs, ys = prompts(batch=4)
    ls = {"ls": B.get("least_squares")}
    with pytest.raises(ValueError, match="n_orders"):
        order.order_sensitivity(model, xs, ys, ls, n_orders=1)
    with pytest.raises(ValueError, match="out of range"):
        order.order_sensitivity(model, xs, ys, ls, ks=[N_POINTS])
    with pytest.raises(ValueError, match="at least 3 points"):
        order.order_sensitivity(model, xs[:, :2], ys[:, :2], ls)
    with pytest.raises(ValueError, match="unknown reference"):
        order.order_sensitivity(model, xs, ys, ["ols"])
    with pytest.raises(ValueError, match="collides"):
        order.order_sensitivity(model, xs, ys, ls, name="ls")
    with pytest.raises(ValueError, match="ys must"):
        order.order_sensitivity(model, xs, ys[:3], ls)
    with pytest.raises(ValueError, match="n_dims"):
        order.order_sensitivity(model, torch.randn(4, 5, 2), torch.randn(4, 5), ls)
    assert no_hooks(model)


def test_analyze_run(tmp_path):
    cfg = TrainConfig.model_validate({
        "name": "order", "steps": 2, "batch_size": 8,
        "model": {"arch": "mamba", "d_model": 16, "n_layers": 1, "d_state": 4, "expand": 2},
        "task": {"name": "linear_regression", "n_dims": N_DIMS, "n_points": N_POINTS},
        "log": {"every": 1, "progress": False, "baselines": []}, "checkpoint": {"every": 2},
        "eval": {"n_prompts": 8, "batch_size": 8, "baselines": []},
    })
    run = train(cfg, tmp_path / "run")
    table, fig = order.analyze_run(run, n_prompts=8, n_orders=4)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 2
    assert set(table["metric"]) == {"spread", "disagreement"}
    assert all(ax.get_ylabel() and ax.get_title() for ax in fig.axes)
    matplotlib.pyplot.close(fig)
