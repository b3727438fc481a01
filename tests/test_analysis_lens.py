"""Readout lens: exactness at the last layer, calibration, per-layer matching, argument checks,
hook hygiene, analyze_run."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

import hookedicl as hi
from hookedicl.analysis import lens, match
from hookedicl.training import TrainConfig, train

from analysis_helpers import N_DIMS, N_POINTS, assert_only_callers_hook, no_hooks, tiny
from analysis_helpers import prompts as _prompts


def prompts(batch: int = 12, n_points: int = N_POINTS, seed: int = 0):
    return _prompts(batch, n_points, seed)


@pytest.mark.parametrize("arch", hi.list_architectures())
def test_last_layer_lens_is_the_model_output_on_every_preset(arch):
    model = tiny(arch, n_layers=2)
    xs, ys = prompts()
    with torch.no_grad():
        raw = lens.lens_predictions(model, xs, ys)
        out = model(xs, ys)
    assert raw.shape == (len(model.blocks) + 1, *ys.shape)
    assert torch.equal(raw[-1], out)
    table = lens.readout_lens(model, xs, ys)
    assert len(table) == raw.shape[0] * N_POINTS
    last = table[table["layer"] == len(model.blocks)].sort_values("k")
    want = ((out.double() - ys.double()) ** 2 / ys.double().pow(2).mean()).mean(0).numpy()
    np.testing.assert_allclose(last["mean"].to_numpy(), want, rtol=1e-9)
    assert (table["ci_low"] <= table["mean"] + 1e-12).all() and (table["mean"] <= table["ci_high"] + 1e-12).all()
    assert no_hooks(model)


def test_intermediate_lens_decodes_that_layer():
    model = tiny("gpt2", n_layers=2)
    xs, ys = prompts()
    with torch.no_grad():
        _, cache = model.run_with_cache(xs, ys)
        got = lens.lens_predictions(model, xs, ys, [0, 1])
        for i, name in enumerate(["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post"]):
            want = model.read_out(model.ln_final(cache[name]))[:, 0::2, 0]
            torch.testing.assert_close(got[i], want)
    assert not torch.allclose(got[0], got[1])


def test_calibration_absorbs_an_affine_change_of_the_readout():
    # the residual stream does not depend on read_out, so read_out -> 3 * read_out + 0.5 maps
    # every layer's lens affinely: calibrated errors must not change, raw errors must.
    model = tiny("gpt2_rms", n_layers=2)
    xs, ys = prompts(batch=40)
    a = lens.readout_lens(model, xs, ys, calibrate=True, y_scale=3.0)
    with torch.no_grad():
        model.read_out.weight.mul_(3.0)
        model.read_out.bias.mul_(3.0).add_(0.5)
    b = lens.readout_lens(model, xs, ys, calibrate=True, y_scale=3.0)
    cal_a, cal_b = a[a["calibrated"]], b[b["calibrated"]]
    np.testing.assert_allclose(cal_a["mean"].to_numpy(), cal_b["mean"].to_numpy(), rtol=1e-4)
    np.testing.assert_allclose(cal_b["scale"].to_numpy() * 3.0, cal_a["scale"].to_numpy(), rtol=1e-4)
    assert not np.allclose(a[~a["calibrated"]]["mean"], b[~b["calibrated"]]["mean"], rtol=1e-2)
    # calibrated rows are evaluated on the held-out half only: 20 prompts
    assert set(a.columns) >= {"layer", "hook", "k", "calibrated", "scale", "offset", "mean", "ci_low", "ci_high"}
    assert a[~a["calibrated"]]["scale"].isna().all()


def test_calibration_fit_is_least_squares_on_the_fit_split():
    model = tiny("llama", n_layers=1)
    xs, ys = prompts(batch=10)
    t = lens.readout_lens(model, xs, ys, layers=[1], calibrate=True, calib_frac=0.5)
    with torch.no_grad():
        p = model(xs, ys)[:5].double().flatten()
    y = ys[:5].double().flatten()
    A = torch.stack([p, torch.ones_like(p)], 1)
    scale, offset = torch.linalg.lstsq(A, y[:, None]).solution[:, 0].tolist()
    row = t[t["calibrated"]].iloc[0]
    assert row["scale"] == pytest.approx(scale, rel=1e-6) and row["offset"] == pytest.approx(offset, abs=1e-6)


def test_lens_match_last_layer_agrees_with_match_on_the_model():
    model = tiny("linear_attention", n_layers=2)
    xs, ys = prompts()
    per_layer = lens.lens_match(model, xs, ys, references=["least_squares", "averaging"])
    assert sorted(per_layer["layer"].unique()) == [0, 1, 2]
    direct = match.match(model, xs, ys, references=["least_squares", "averaging"], metrics=("spd",))
    last = per_layer[per_layer["layer"] == 2].drop(columns="layer").reset_index(drop=True)
    np.testing.assert_allclose(last["mean"].to_numpy(), direct["mean"].to_numpy(), rtol=1e-6)
    best = match.best_match(per_layer, "spd")
    assert set(best["layer"]) == {0, 1, 2} and len(best) == 3 * N_POINTS
    assert set(best["predictor"]) <= {"least_squares", "averaging"}
    assert no_hooks(model)


def test_lens_predictor_gradients_flow_for_sensitivity():
    model = tiny("gpt2", n_layers=2)
    xs, ys = prompts(batch=4)
    g = match.query_gradients(lens.LensPredictor(model, 1), xs, ys, ks=[2, 3])
    assert g.shape == (4, 2, N_DIMS) and torch.isfinite(g).all() and g.abs().sum() > 0
    assert no_hooks(model)


def test_bad_arguments_raise_value_errors():
    model = tiny("gpt2")
    xs, ys = prompts()
    with pytest.raises(ValueError, match="out of range"):
        lens.readout_lens(model, xs, ys, layers=[5])
    with pytest.raises(ValueError, match="out of range"):
        lens.LensPredictor(model, -1)
    with pytest.raises(ValueError, match="ys must"):
        lens.readout_lens(model, xs, ys[:5])
    with pytest.raises(ValueError, match="n_dims"):
        lens.readout_lens(model, torch.randn(4, 6, 5), torch.randn(4, 6))
    with pytest.raises(ValueError, match="HookedICLModel"):
        lens.readout_lens(hi.baselines.get("least_squares"), xs, ys)
    with pytest.raises(ValueError, match="at least 4 prompts"):
        lens.readout_lens(model, xs[:3], ys[:3], calibrate=True)
    with pytest.raises(ValueError, match="y_scale"):
        lens.readout_lens(model, xs, ys, y_scale=-1.0)
    with pytest.raises(ValueError, match="calib_frac"):
        lens.readout_lens(model, xs, ys, calibrate=True, calib_frac=1.5)
    with pytest.raises(ValueError, match="unknown reference"):
        lens.lens_match(model, xs, ys, references=["ols"])
    assert no_hooks(model)


def test_no_hooks_left_after_exceptions():
    model = tiny("mambaformer")
    xs, ys = prompts()

    def boom(t, hook):
        raise RuntimeError("boom in a hook")

    model.add_hook("blocks.0.hook_resid_post", boom)  # the caller's hook fires while the lens hooks are attached
    with pytest.raises(RuntimeError, match="boom in a hook"):
        lens.readout_lens(model, xs, ys)
    assert_only_callers_hook(model, "blocks.0.hook_resid_post")

    original = model.ln_final.forward
    model.ln_final.forward = lambda x: (_ for _ in ()).throw(RuntimeError("boom in the analysis"))
    try:
        with pytest.raises(RuntimeError, match="boom in the analysis"):
            lens.lens_predictions(model, xs, ys)
        assert no_hooks(model)
    finally:
        model.ln_final.forward = original


def test_analyze_run(tmp_path):
    cfg = TrainConfig.model_validate({
        "name": "lens", "steps": 2, "batch_size": 8,
        "model": {"arch": "gpt2_rope", "d_model": 16, "n_layers": 2, "n_heads": 2},
        "task": {"name": "linear_regression", "n_dims": N_DIMS, "n_points": N_POINTS},
        "log": {"every": 1, "progress": False, "baselines": []}, "checkpoint": {"every": 2},
        "eval": {"n_prompts": 8, "batch_size": 8, "baselines": []},
    })
    run = train(cfg, tmp_path / "run")
    table, fig = lens.analyze_run(run, n_prompts=16)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert set(table["calibrated"]) == {False, True}
    assert len(table) == 2 * 3 * N_POINTS
    assert fig.axes[0].get_xlabel() and fig.axes[0].get_ylabel() and fig._suptitle is not None
    matplotlib.pyplot.close(fig)
