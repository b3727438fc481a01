"""Ablations (interventions of kind zero / mean / resample at Sites): exact equivalences (zero-ablating heads = zeroing the output projection; projecting out the read-out
direction), no-op ablations leave the error curve unchanged, context independence once every head
is gone, the ICL score agrees with `icl_regression_score`, every preset, bad arguments, cleanup."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

import hookedicl as hi
from hookedicl.analysis import ablate as A
from hookedicl.analysis.interventions import Intervention, intervened_predictions
from hookedicl.models.sites import Site
from hookedicl.tasks import TaskBatch
from hookedicl.training import TrainConfig, train

SMALL = dict(n_dims=3, d_model=16, n_layers=2, n_heads=2, d_state=4, expand=2)



def no_hooks(model) -> bool:
    return all(not hp._forward_hooks and not hp._backward_hooks for hp in model.hook_dict.values())


def prompts(b: int = 32, n: int = 6, seed: int = 0) -> TaskBatch:
    task = hi.make_task("linear_regression", n_dims=3)
    return task.sample(batch_size=b, n_points=n, generator=torch.Generator().manual_seed(seed))


def all_heads(model) -> list[Site]:
    return [Site.head_of(l, h) for l, b in enumerate(model.blocks) if hasattr(b, "attn") for h in range(b.attn.n_heads)]


def ablated(model, batch, sites, kind="zero", calibration=None, seed=0):
    sites = [sites] if isinstance(sites, Site) else sites
    return intervened_predictions(model, batch, [Intervention(s, kind) for s in sites], calibration=calibration, seed=seed)


def test_ablating_with_the_prompt_itself_as_calibration_is_a_no_op():
    model = hi.build_model("gpt2", **SMALL)
    batch = prompts()
    # a direction orthogonal to everything the model reads is a no-op: the curve does not move
    curve = A.ablation_curve(model, batch, Site.slot(1, "ffn"), kind="zero")
    assert list(curve["k"]) == list(range(6)) and list(curve["pos"]) == [0, 2, 4, 6, 8, 10]
    assert list(curve.columns) == ["k", "pos", "kind", "clean", "ablated", "mean", "ci_low", "ci_high", "n"]
    # mean / resample ablation from a calibration batch holding only the prompt itself: a no-op
    one = TaskBatch(batch.xs[:1], batch.ys[:1])
    clean = model(one.xs, one.ys)
    for kind in ("mean", "resample"):
        out = ablated(model, one, all_heads(model) + [Site.slot(1, "ffn")], kind, calibration=one)
        torch.testing.assert_close(out, clean, atol=1e-6, rtol=0)
    curve_same = A.ablation_curve(model, one, Site.slot(1, "ffn"), kind="mean", calibration=one)
    assert (curve_same["mean"].abs() < 1e-6).all()


def test_zero_ablating_every_head_equals_zeroing_W_O_and_removes_the_context():
    model = hi.build_model("gpt2", **SMALL)
    batch = prompts()
    zeroed = copy.deepcopy(model)
    for b in zeroed.blocks:
        torch.nn.init.zeros_(b.attn.out_proj.weight)
    out = ablated(model, batch, all_heads(model))
    torch.testing.assert_close(out, zeroed(batch.xs, batch.ys), atol=1e-6, rtol=0)
    # with every head gone a prediction depends on its own x only: other ys change nothing ...
    other_ys = torch.randn(batch.ys.shape, generator=torch.Generator().manual_seed(5))
    for kind in ("zero", "mean"):
        a = ablated(model, batch, all_heads(model), kind, calibration=batch)
        b = ablated(model, TaskBatch(batch.xs, other_ys), all_heads(model), kind, calibration=batch)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # ... unlike the intact model; and the mean of z is not zero, so the two methods differ
    assert not torch.allclose(model(batch.xs, batch.ys), model(batch.xs, other_ys))
    mean = ablated(model, batch, all_heads(model), "mean")
    assert (mean - out).abs().max() > 1e-4
    # single heads: in the last block of a linear-attention model (no norm, no bias) the prediction
    # is linear in hook_z, so the two heads' effects add up to the effect of ablating both
    lin = hi.build_model("linear_attention", **SMALL, init_std=0.15)
    clean = lin(batch.xs, batch.ys)
    h0, h1, both = (ablated(lin, batch, c) for c in (Site.head_of(1, 0), Site.head_of(1, 1), [Site.head_of(1, 0), Site.head_of(1, 1)]))
    torch.testing.assert_close((clean - h0) + (clean - h1), clean - both, atol=1e-5, rtol=1e-4)
    assert (h0 - clean).abs().max() > 1e-2 and (h0 - h1).abs().max() > 1e-2
    assert no_hooks(model) and no_hooks(lin)


def test_slot_and_direction_ablations_are_exact():
    model = hi.build_model("gpt2", **SMALL)
    batch = prompts()
    no_mlp = copy.deepcopy(model)
    torch.nn.init.zeros_(no_mlp.blocks[1].mlp.W_out.weight)
    torch.nn.init.zeros_(no_mlp.blocks[1].mlp.W_out.bias)
    out = ablated(model, batch, Site.slot(1, "ffn"))
    torch.testing.assert_close(out, no_mlp(batch.xs, batch.ys), atol=1e-6, rtol=0)
    # linear attention has no final norm: the prediction is read_out · resid, so projecting the
    # read-out direction out of the last residual layer leaves only the read-out bias
    lin = hi.build_model("linear_attention", **SMALL)
    torch.nn.init.normal_(lin.read_out.bias)
    u = lin.read_out.weight[0].detach()
    out = ablated(lin, batch, Site.along(2, u))
    torch.testing.assert_close(out, intervened_predictions(lin, batch, Intervention(Site.along(2, u), "project_out")))
    torch.testing.assert_close(out, lin.read_out.bias.expand_as(out).detach(), atol=1e-6, rtol=0)
    # resample: the direction's coefficient comes from another prompt
    res = ablated(lin, batch, Site.along(2, 3 * u), "resample", seed=1)
    clean = lin(batch.xs, batch.ys)
    matches = [(res[j] - clean).abs().sum(-1).min() < 1e-5 for j in range(len(res))]
    assert all(matches)  # every ablated prompt reads out some clean prompt's prediction ...
    assert not torch.allclose(res, clean)  # ... but not its own


def test_mamba_state_ablation():
    torch.manual_seed(0)
    model = hi.build_model("mamba", **SMALL, init_std=0.5)  # large enough for the state to matter
    batch = prompts()
    # hooking the state computes it with the parallel scan; compare with that scan's clean output
    # (the default chunked scan agrees only to ~1e-6 at this init scale)
    for block in model.blocks:
        block.mixer.scan_method = "parallel"
    clean = model(batch.xs, batch.ys)
    zero = ablated(model, batch, Site.state(0))
    assert (zero - clean).abs().max() > 1e-5
    # ablating the state at the last token only changes the last prediction (y_t uses h_t only)
    last = ablated(model, batch, [Site.state(0, positions=[10]), Site.state(1, positions=[10])])
    torch.testing.assert_close(last[:, :-1], clean[:, :-1], atol=1e-6, rtol=0)
    assert (last[:, -1] - clean[:, -1]).abs().max() > 1e-6
    assert no_hooks(model)


def test_sweep_scores_agree_with_icl_regression_score():
    model = hi.build_model("gpt2", **SMALL)
    batch = prompts(b=48)
    df = A.ablation_sweep(model, batch, what="heads", kind="mean", n_bootstrap=200)
    assert list(df.columns) == A.SWEEP_COLUMNS
    assert list(df["site"]) == ["L0H0", "L0H1", "L1H0", "L1H1"]
    assert list(df["head"]) == [0, 1, 0, 1] and list(df["layer"]) == [0, 0, 1, 1]
    ls = hi.baselines.get("least_squares")
    err = lambda p: ((p.double() - batch.ys.double()) ** 2).detach().numpy()
    expected = hi.icl_regression_score(err(model(batch.xs, batch.ys)), err(ls.predict(batch.xs, batch.ys)), err(torch.zeros_like(batch.ys)))
    np.testing.assert_allclose(df["clean"], expected.value, rtol=1e-9)
    abl = ablated(model, batch, Site.head_of(1, 0), "mean")
    ab = hi.icl_regression_score(err(abl), err(ls.predict(batch.xs, batch.ys)), err(torch.zeros_like(batch.ys)))
    np.testing.assert_allclose(df.loc[2, "ablated"], ab.value, rtol=1e-9)
    assert (df["ci_low"] <= df["mean"]).all() and (df["mean"] <= df["ci_high"]).all()
    # groups are ablated together; metric="error" compares mean normalised errors
    grouped = A.ablation_sweep(model, batch, what=[[Site.head_of(0, 0), Site.head_of(0, 1)], Site.slot(0)], metric="error", n_bootstrap=50)
    assert list(grouped["site"]) == ["L0H0+L0H1", "L0.mixer"] and list(grouped["unit"]) == ["group", "slot"]
    m2 = float((batch.ys.double() ** 2).mean())
    np.testing.assert_allclose(grouped["clean"], err(model(batch.xs, batch.ys)).mean() / m2, rtol=1e-9)
    # W_O's bias is 0 at init: zero-ablating both heads of block 0 = zero-ablating its attention
    both_heads, slot = grouped["ablated"]
    assert both_heads == pytest.approx(slot, rel=1e-9, abs=1e-12)
    assert grouped.loc[0, "mean"] != 0


@pytest.mark.parametrize("arch", hi.list_architectures())
def test_sweep_runs_on_every_preset(arch):
    model = hi.build_model(arch, **SMALL)
    task = hi.make_task("linear_regression", n_dims=3)
    batch = task.sample(batch_size=16, n_points=5, generator=torch.Generator().manual_seed(0))
    kinds = ["slots"] + (["heads"] if any(hasattr(b, "attn") for b in model.blocks) else []) + (
        ["states"] if any("hook_ssm_state" in k for k in model.hook_dict) else [])
    for what in kinds:
        df = A.ablation_sweep(model, batch, what=what, kind="resample", n_bootstrap=50)
        assert len(df) == len(A.sites_of(model, what)) and df["mean"].notna().all()
        assert list(df.columns) == A.SWEEP_COLUMNS
    curve = A.ablation_curve(model, batch, Site.slot(0), kind="mean", n_bootstrap=50)
    assert len(curve) == 5 and curve["mean"].notna().all()
    assert no_hooks(model)


def test_bad_arguments_are_rejected():
    model = hi.build_model("gpt2", **SMALL)
    mamba = hi.build_model("mamba", **SMALL)
    batch = prompts(b=8)
    xs, ys = batch.xs, batch.ys
    cases = [
        (lambda: ablated(model, batch, Site.head_of(0, 2)), "head=2 out of range"),
        (lambda: ablated(model, batch, Site.head_of(3, 0)), "layer=3 out of range"),
        (lambda: ablated(mamba, batch, Site.head_of(0, 0)), "no attention"),
        (lambda: ablated(mamba, batch, Site.slot(0, "ffn")), "no ffn"),
        (lambda: ablated(model, batch, Site.slot(0, "mlp")), "slot"),
        (lambda: ablated(model, batch, Site.state(0)), "not a Mamba"),
        (lambda: ablated(model, batch, Site.along(3, torch.ones(16))), "layer"),
        (lambda: ablated(model, batch, Site.along(1, torch.ones(8))), "direction"),
        (lambda: A.ablation_curve(model, batch, Site.slot(0), kind="median"), "kind"),
        (lambda: ablated(model, batch, Site.slot(0, positions=[12])), "out of range"),
        (lambda: ablated(model, batch, Site.slot(0, positions="z")), "positions"),
        (lambda: A.ablation_curve(model, batch, "heads"), "Site"),
        (lambda: A.ablation_curve(model, (xs, ys), Site.slot(0)), "TaskBatch"),
        (lambda: ablated(model, TaskBatch(xs, ys[:4]), Site.slot(0)), "ys"),
        (lambda: ablated(model, batch, Site.slot(0), "mean", calibration=TaskBatch(xs[:, :4], ys[:, :4])), "n_points"),
        (lambda: A.ablation_sweep(model, batch, what="neurons"), "what"),
        (lambda: A.ablation_sweep(mamba, batch, what="heads"), "no such sites"),
        (lambda: A.ablation_sweep(model, batch, metric="accuracy"), "metric"),
        (lambda: A.ablation_sweep(model, hi.make_task("linear_regression", n_dims=3)), "TaskBatch"),
        (lambda: A.ablation_sweep(model, batch, baseline="oracle"), "oracle"),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            fn()
    assert no_hooks(model) and no_hooks(mamba)


def test_no_hooks_remain_when_an_ablation_hook_raises():
    class Broken(Site):
        def replace_in(self, act, new):
            raise RuntimeError("edit failed")

    model = hi.build_model("gpt2", **SMALL)
    batch = prompts(b=8)
    for kind in ("zero", "mean"):
        with pytest.raises(RuntimeError, match="edit failed"):
            ablated(model, batch, [Site.head_of(0, 0), Broken("blocks.1.attn.hook_z", head=1)], kind)
        assert no_hooks(model)
    with pytest.raises(RuntimeError, match="edit failed"):
        A.ablation_sweep(model, batch, what=[Broken("blocks.0.attn.hook_z", head=0)])
    assert no_hooks(model)


def test_analyze_run(tmp_path):
    from matplotlib.figure import Figure

    cfg = TrainConfig.model_validate({
        "name": "tiny", "steps": 10, "batch_size": 16,
        "model": {"arch": "mambaformer", "d_model": 16, "n_layers": 1, "n_heads": 2, "d_state": 4, "expand": 2},
        "task": {"name": "linear_regression", "n_dims": 3, "n_points": 6},
        "log": {"every": 10, "progress": False}, "checkpoint": {"every": 10},
    })
    run = train(cfg, tmp_path / "r")
    torch.set_num_threads(1)
    df, fig = A.analyze_run(run, n_prompts=32, n_bootstrap=50)
    assert isinstance(df, pd.DataFrame) and isinstance(fig, Figure)
    assert list(df["site"]) == ["L1H0", "L1H1"] and set(df["kind"]) == {"mean"}
    assert fig.axes[0].get_xlabel() and fig.axes[0].get_title()
    df2, _ = A.analyze_run(run, n_prompts=16, what="slots", metric="error", n_bootstrap=20)
    assert list(df2["site"]) == ["L0.mixer", "L1.mixer", "L1.ffn"]
