"""Predictor matching: exact answers on reference predictors (SPD = ILWD = 0 against itself,
ridge -> least squares, R² = 1 for linear predictors, analytic = autograd sensitivities, line
search recovers a known step size), every preset, argument checks, hooks, analyze_run."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

import hookedicl as hi
import hookedicl.baselines as B
from hookedicl.analysis import lens, match
from hookedicl.tasks import make_task
from hookedicl.training import TrainConfig, train



from analysis_helpers import N_DIMS, assert_only_callers_hook, no_hooks, tiny
from analysis_helpers import prompts as _prompts

N_POINTS = 7


def prompts(batch: int = 16, n_points: int = N_POINTS, seed: int = 0):
    return _prompts(batch, n_points, seed)


def metric(table, name, reference=None):
    t = table[table["metric"] == name]
    return t if reference is None else t[t["predictor"] == reference]


def test_least_squares_matched_against_itself_is_exact():
    xs, ys = prompts()
    t = match.match(B.get("least_squares"), xs, ys, references=["least_squares"], name="ls")
    assert set(t["metric"]) == {"spd", "spd/d", "pred_diff", "ilwd", "ilwd/d", "r2", "sensitivity_cos"}
    for m in ("spd", "ilwd", "pred_diff"):
        assert np.abs(metric(t, m)[["mean", "ci_low", "ci_high"]].to_numpy()).max() == 0.0
    np.testing.assert_allclose(metric(t, "sensitivity_cos")["mean"], 1.0, atol=1e-12)
    assert metric(t, "sensitivity_cos")["k"].min() == 1  # ŵ = 0 at k = 0: cosine undefined, no row
    # the same through the fitted (query) path
    f = match.ilwd(B.get("least_squares"), B.get("least_squares"), xs, ys, analytic=False)
    assert metric(f, "ilwd")["mean"].max() < 1e-10
    assert metric(f, "r2")["mean"].min() > 1 - 1e-9


def test_ridge_tends_to_least_squares_as_lambda_goes_to_zero():
    xs, ys = prompts(n_points=8)
    ls = B.get("least_squares")
    alphas = (1.0, 1e-2, 1e-4, 1e-7)
    spds = [metric(match.spd(B.get("ridge", alpha=a), ls, xs, ys), "spd")["mean"].max() for a in alphas]
    assert spds[0] > 1e-3
    assert all(a > b for a, b in zip(spds, spds[1:]))
    assert spds[-1] < 1e-8
    ilwds = [metric(match.ilwd(B.get("ridge", alpha=a), ls, xs, ys), "ilwd")["mean"].max() for a in (1.0, 1e-7)]
    assert ilwds[0] > 1e-3 and ilwds[1] < 1e-8


@pytest.mark.parametrize("name, kw", [("least_squares", {}), ("ridge", {"alpha": 0.5}), ("gd", {"steps": 3, "lr": 0.2}),
                                      ("sgd", {"lr": 0.1}), ("newton", {}), ("gd_plus_plus", {})])
def test_implicit_weights_of_a_linear_predictor_fit_exactly(name, kw):
    xs, ys = prompts(batch=8)
    p = B.get(name, **kw)
    w, r2 = match.implicit_weights(p, xs, ys, n_queries=12, generator=torch.Generator().manual_seed(1))
    assert w.shape == (8, N_POINTS, N_DIMS) and r2.shape == (8, N_POINTS)
    assert r2.min() > 1 - 1e-9
    torch.testing.assert_close(w, p.weights(xs, ys).double(), atol=2e-6, rtol=1e-5)


def test_query_outputs_share_the_context_and_vary_the_query():
    xs, ys = prompts(batch=5)
    q = torch.randn(5, 9, N_DIMS, generator=torch.Generator().manual_seed(2))
    ls = B.get("least_squares")
    w = ls.weights(xs, ys).double()
    for k in (0, 2, 6):
        out = match.query_outputs(ls, xs, ys, k, q)
        torch.testing.assert_close(out, (q.double() * w[:, k, None]).sum(-1), atol=1e-6, rtol=1e-5)


def test_nonlinear_predictors_have_r2_below_one():
    xs, ys = prompts(batch=8)
    _, r2 = match.implicit_weights(B.get("knn", k=2), xs, ys, ks=[4, 6], generator=torch.Generator().manual_seed(0))
    assert r2.mean() < 0.99
    _, r2m = match.implicit_weights(tiny("gpt2"), xs, ys, ks=[3], generator=torch.Generator().manual_seed(0))
    assert (r2m < 1 - 1e-6).all()


def test_sensitivity_autograd_equals_analytic_weights():
    xs, ys = prompts(batch=6)
    gd = B.get("gd", steps=2, lr=0.3)
    analytic = match.query_gradients(gd, xs, ys)
    autograd = match.query_gradients(lambda x, y: gd.predict(x, y), xs, ys)  # a plain callable
    torch.testing.assert_close(autograd, analytic, atol=1e-6, rtol=1e-5)
    assert match.query_gradients(B.get("knn"), xs, ys, ks=[3]).isnan().all()  # no gradient path
    cos = match.sensitivity(gd, lambda x, y: gd.predict(x, y), xs, ys)
    np.testing.assert_allclose(cos["mean"], 1.0, atol=1e-6)


def test_model_query_gradient_matches_finite_differences():
    model = tiny("linear_attention").double()
    xs, ys = prompts(batch=3)
    xs, ys = xs.double(), ys.double()
    k, eps = 4, 1e-6
    g = match.query_gradients(model, xs, ys, ks=[k])[:, 0]
    fd = torch.empty_like(g)
    with torch.no_grad():
        for j in range(N_DIMS):
            up, dn = xs.clone(), xs.clone()
            up[:, k, j] += eps
            dn[:, k, j] -= eps
            fd[:, j] = (model(up, ys)[:, k] - model(dn, ys)[:, k]) / (2 * eps)
    torch.testing.assert_close(g, fd, atol=1e-6, rtol=1e-5)


def test_line_search_recovers_a_known_step_size_and_minimises_task_error():
    xs, ys = prompts(batch=32)
    truth = B.get("gd", steps=1, lr=0.37).predict(xs, ys)
    lr = match.line_search_lr(B.get("gd", steps=1), xs, ys, target=truth)
    assert lr == pytest.approx(0.37, rel=1e-3)
    lr_task = match.line_search_lr(B.get("gd", steps=2), xs, ys)

    def err(v):
        return float(((B.get("gd", steps=2, lr=v).predict(xs, ys) - ys)[:, 1:] ** 2).mean())

    assert err(lr_task) <= min(err(lr_task * 0.8), err(lr_task * 1.25))


@pytest.mark.parametrize("name, kw", [("gd", {"steps": 2}), ("gd", {"steps": 1, "loss": "sum"}), ("sgd", {})])
@pytest.mark.parametrize("to_model", [False, True])
def test_line_search_over_a_predictor_equals_the_former_factory_search(name, kw, to_model):
    # before: a factory η -> B.get(name, lr=η, **kw) (constructor-built); after: the predictor,
    # varied by clone + set_params. Same prompts (fixed seed), bit-identical step size.
    xs, ys = prompts(batch=16)
    target = B.get("gd", steps=1, lr=0.3).predict(xs, ys) if to_model else None
    before = match._search(lambda lr: B.get(name, lr=lr, **kw), xs, ys, target, (1e-4, 10.0), 29, 20)
    pred = B.get(name, **kw)
    after = match.line_search_lr(pred, xs, ys, target=target)
    assert after == before
    assert pred.get_params() == B.get(name, **kw).get_params()  # the argument itself is untouched


def test_line_search_rejects_a_factory_and_an_unknown_hyperparameter():
    xs, ys = prompts(batch=4)
    with pytest.raises(TypeError, match="get_params / set_params"):
        match.line_search_lr(lambda lr: B.get("gd", lr=lr), xs, ys)
    with pytest.raises(ValueError, match="'lr'"):
        match.line_search_lr(B.get("ridge"), xs, ys)


def test_best_match_finds_the_generating_predictor():
    # a "model" that is GD with lr 0.3: with lr_search="model" the GD reference becomes it
    xs, ys = prompts(batch=24)
    fake = B.get("gd", steps=1, lr=0.3)
    t = match.match(fake, xs, ys, references=["least_squares", "gd", "averaging"], lr_search="model",
                    gd_steps=(1,), metrics=("spd", "ilwd"))
    best = match.best_match(t, "spd")
    gd_label = [r for r in t["predictor"].unique() if r.startswith("gd(")][0]
    assert "model line search" in gd_label
    assert (best[best["k"] >= 1]["predictor"] == gd_label).all()
    assert metric(t, "spd", gd_label)["mean"].max() < 1e-8
    assert metric(t, "ilwd", gd_label)["mean"].max() < 1e-8
    assert list(best.columns) == ["k", "metric", "predictor", "mean", "ci_low", "ci_high", "runner_up", "margin"]


def test_references_expand_families_and_grids():
    xs, ys = prompts()
    refs = match.resolve_references(None, xs, ys, ridge_alphas=(0.1, 1.0), gd_steps=(1, 3), gd_lrs=(0.5,))
    fams = [r.family for r in refs]
    assert set(fams) == set(match.FAMILIES)
    assert fams.count("ridge") == 2 and fams.count("gd") == 4  # 2 step counts x (searched + 1 fixed)
    custom = match.resolve_references({"mine": lambda x, y: torch.zeros_like(y)})
    assert custom[0].label == "mine" and custom[0].family == "custom"


@pytest.mark.parametrize("arch", hi.list_architectures())
def test_match_runs_on_every_preset(arch):
    model = tiny(arch)
    xs, ys = prompts(batch=6)
    t = match.match(model, xs, ys, references=["least_squares", "gd"], gd_steps=(1,), ks=[1, 4], n_queries=6)
    assert list(t.columns) == ["predictor", "family", "k", "metric", "mean", "ci_low", "ci_high"]
    assert set(t["metric"]) == {"spd", "spd/d", "pred_diff", "ilwd", "ilwd/d", "r2", "sensitivity_cos"}
    assert set(t["k"]) == {1, 4} and np.isfinite(t["mean"]).all()
    assert (t["ci_low"] <= t["mean"] + 1e-12).all() and (t["mean"] <= t["ci_high"] + 1e-12).all()
    assert no_hooks(model)


def test_task_queries_follow_the_task_distribution():
    task = make_task("linear_regression", n_dims=N_DIMS, x_sampler="uniform")
    b = task.sample(batch_size=6, n_points=5, generator=torch.Generator().manual_seed(0))
    t = match.match(B.get("ridge", alpha=0.3), b.xs, b.ys, references=["ridge"], ridge_alphas=(0.3,), task=task,
                    analytic=False, metrics=("ilwd",))
    assert metric(t, "ilwd")["mean"].max() < 1e-10


def test_ilwd_prompts_restricts_ilwd_to_the_first_prompts():
    xs, ys = prompts(batch=10)
    model = tiny("gpt2")
    kw = dict(references=["averaging"], metrics=("ilwd",), ks=[2, 5], n_queries=8)
    part = match.match(model, xs, ys, ilwd_prompts=4, **kw)
    first = match.match(model, xs[:4], ys[:4], **kw)
    np.testing.assert_allclose(part["mean"].to_numpy(), first["mean"].to_numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="ilwd_prompts"):
        match.match(model, xs, ys, ilwd_prompts=11, **kw)


def test_bad_arguments_raise_value_errors():
    model = tiny("gpt2")
    xs, ys = prompts(batch=4)
    with pytest.raises(ValueError, match="unknown reference 'ols'"):
        match.match(model, xs, ys, references=["ols"])
    with pytest.raises(ValueError, match="unknown metric"):
        match.match(model, xs, ys, references=["least_squares"], metrics=("mse",))
    with pytest.raises(ValueError, match="out of range"):
        match.match(model, xs, ys, references=["least_squares"], ks=[N_POINTS])
    with pytest.raises(ValueError, match="ys must"):
        match.match(model, xs, ys[:2], references=["least_squares"])
    with pytest.raises(ValueError, match="n_dims"):
        match.match(model, torch.randn(4, 5, 4), torch.randn(4, 5), references=["least_squares"])
    with pytest.raises(ValueError, match="lr_search"):
        match.match(model, xs, ys, references=["gd"], lr_search="best")
    with pytest.raises(ValueError, match="n_queries"):
        match.ilwd(model, B.get("least_squares"), xs, ys, n_queries=3)
    with pytest.raises(ValueError, match="task has n_dims"):
        match.match(model, xs, ys, references=["least_squares"], task=make_task("linear_regression", n_dims=5))
    with pytest.raises(ValueError, match="expected \\(batch, n_points\\)"):
        match.spd(lambda x, y: y[:, :2], B.get("least_squares"), xs, ys)
    with pytest.raises(ValueError, match="must have shape"):
        match.spd(torch.zeros(3, 3), B.get("least_squares"), xs, ys)
    with pytest.raises(ValueError, match="not in the table"):
        match.best_match(match.spd(B.get("averaging"), B.get("least_squares"), xs, ys).assign(predictor="a"), "ilwd")
    with pytest.raises(ValueError, match="duplicate"):
        match.resolve_references(["least_squares", "least_squares"])
    assert no_hooks(model)


def test_no_hooks_left_when_a_lens_layer_fails_mid_match():
    model = tiny("standard_hybrid")
    xs, ys = prompts(batch=4)

    def boom(t, hook):
        raise RuntimeError("boom in a hook")

    model.add_hook("blocks.0.hook_resid_mid", boom)
    with pytest.raises(RuntimeError, match="boom in a hook"):
        match.match(lens.LensPredictor(model, 1), xs, ys, references=["least_squares"])
    assert_only_callers_hook(model, "blocks.0.hook_resid_mid")


def test_analyze_run(tmp_path):
    cfg = TrainConfig.model_validate({
        "name": "match", "steps": 2, "batch_size": 8,
        "model": {"arch": "linear_attention", "d_model": 16, "n_layers": 1, "n_heads": 2},
        "task": {"name": "linear_regression", "n_dims": N_DIMS, "n_points": N_POINTS},
        "log": {"every": 1, "progress": False, "baselines": []}, "checkpoint": {"every": 2},
        "eval": {"n_prompts": 8, "batch_size": 8, "baselines": []},
    })
    run = train(cfg, tmp_path / "run")
    table, fig = match.analyze_run(run, n_prompts=12, references=["least_squares", "gd", "knn"], gd_steps=(1,))
    panels = [ax for ax in fig.axes if ax.lines]  # viz.plot_matching: three panels + a legend cell
    assert isinstance(fig, matplotlib.figure.Figure) and len(panels) == 3
    assert {"spd/d", "ilwd/d", "sensitivity_cos", "r2"} <= set(table["metric"])
    assert all(ax.get_ylabel() and ax.get_title() for ax in panels)
    matplotlib.pyplot.close(fig)
