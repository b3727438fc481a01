"""Probing: planted signals are decoded (R² ≈ 1), noise and shuffled targets are not (R² ≈ 0), the
token-position ↔ examples-seen mapping, every preset, bad arguments, hook cleanup, and the
emergence curve over a tiny run's captured activations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import hookedicl as hi
from hookedicl.analysis import probe as P
from hookedicl.tasks import TaskBatch
from hookedicl.training import TrainConfig, train

SMALL = dict(n_dims=3, d_model=16, n_layers=2, n_heads=2, d_state=4, expand=2)



def no_hooks(model) -> bool:
    return all(not hp._forward_hooks and not hp._backward_hooks for hp in model.hook_dict.values())


def prompts(b: int = 96, n: int = 6, d: int = 3, seed: int = 0) -> TaskBatch:
    task = hi.make_task("linear_regression", n_dims=d)
    return task.sample(batch_size=b, n_points=n, generator=torch.Generator().manual_seed(seed))


def test_planted_linear_signal_is_decoded_and_noise_is_not():
    batch = prompts(b=128)
    g = torch.Generator().manual_seed(1)
    A = torch.randn(3, 24, generator=g)
    planted = batch.params["w"] @ A + 0.01 * torch.randn(128, 24, generator=g)
    acts = {"planted": planted[:, None], "noise": torch.randn(128, 1, 24, generator=g)}
    df = P.probe_activations(acts, batch, "w", probes=("linear", "mlp"), controls="shuffle")
    assert len(df) == 2 * 2 * 2 and set(df.columns) >= {"hook", "layer", "pos", "k", "target", "probe", "mean", "ci_low", "ci_high", "mse"}
    r = df.set_index(["hook", "probe", "control"])["mean"]
    assert r["planted", "linear", "none"] > 0.999
    assert r["planted", "mlp", "none"] > 0.99
    for probe in ("linear", "mlp"):
        assert abs(r["noise", probe, "none"]) < 0.15
        assert abs(r["planted", probe, "shuffle"]) < 0.15
    row = df[(df.hook == "planted") & (df.probe == "linear") & (df.control == "none")].iloc[0]
    assert row.ci_low <= row["mean"] <= row.ci_high and row.ci_low > 0.99
    assert row.n_train + row.n_test == 128 and row.n_test == 32


def test_mlp_probe_decodes_a_nonlinear_target_the_linear_probe_cannot():
    batch = prompts(b=160)
    planted = batch.params["w"] @ torch.randn(3, 16, generator=torch.Generator().manual_seed(2))
    sq = P.Target("w_sq", lambda b: (b.params["w"] ** 2).sum(-1, keepdim=True))
    df = P.probe_activations({"planted": planted[:, None]}, batch, sq, probes=("linear", P.MLPProbe(hidden=64, seed=0)))
    r = df.set_index("probe")["mean"]
    assert r["mlp"] > r["linear"] + 0.3


def test_position_mapping_k_examples_seen():
    # plant Xᵀy over the first k(p) = (p + 1) // 2 examples at every token p; decoding it must be
    # exact at every position, and undefined (NaN) at k = 0 where the target is constant
    batch = prompts(b=96, n=5)
    table = P.xty().fn(batch)  # (b, n + 1, d)
    assert table.shape == (96, 6, 3)
    assert torch.allclose(table[:, 3], (batch.xs[:, :3] * batch.ys[:, :3, None]).sum(1).double(), atol=1e-6)
    k = (torch.arange(10) + 1) // 2
    A = torch.randn(3, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    acts = {"planted": (table[:, k] @ A).float()}
    df = P.probe_activations(acts, batch, "xty", positions="all")
    assert list(df["pos"]) == list(range(10)) and list(df["k"]) == k.tolist()
    assert list(df["token"]) == ["x", "y"] * 5
    assert np.isnan(df["mean"].iloc[0])
    assert (df["mean"].iloc[1:] > 0.999).all()
    # with the wrong alignment (one example behind at the y tokens) the fit is no longer exact
    shifted = {"planted": (table[:, torch.arange(10) // 2] @ A).float()}
    bad = P.probe_activations(shifted, batch, "xty", positions="y")
    assert (bad["mean"] < 0.99).all()


def test_baseline_targets_follow_the_weights_convention():
    batch = prompts(b=8, n=5)
    ols = P.ols().fn(batch)
    assert ols.shape == (8, 6, 3)
    full = torch.linalg.lstsq(batch.xs.double(), batch.ys.double()[..., None]).solution[..., 0]
    assert torch.allclose(ols[:, 5], full, atol=1e-4)  # row n: fitted on all n points
    assert torch.allclose(ols[:, 0], torch.zeros(8, 3, dtype=torch.float64))
    assert P.ridge(0.5).name == "ridge(alpha=0.5)" and P.gd(2, 0.1).fn(batch).shape == (8, 6, 3)
    assert P.as_target(hi.baselines.get("averaging")).fn(batch).shape == (8, 6, 3)


def test_probe_reads_the_embedding_of_the_query_at_layer_zero():
    # layer 0 (embedding) at token 2i is read_in(x_i) + pos: x_i is linearly decodable, exactly
    model = hi.build_model("gpt2", **SMALL)
    batch = prompts(b=64, n=4)
    df = P.probe(model, batch.xs, batch.ys, P.Target("x", lambda b: b.xs), layers=[0])
    assert list(df["pos"]) == [0, 2, 4, 6] and list(df["k"]) == [0, 1, 2, 3]
    assert (df["mean"] > 0.999).all()
    assert no_hooks(model)


@pytest.mark.parametrize("arch", hi.list_architectures())
def test_probe_runs_on_every_preset(arch):
    model = hi.build_model(arch, **SMALL)
    batch = prompts(b=16, n=4)
    df = P.probe(model, batch.xs, batch.ys, ["w", "ols"], params=batch.params, positions="last", controls=("untrained",))
    n_layers = len(model.blocks) + 1
    assert len(df) == n_layers * 2 * 2
    assert sorted(df["layer"].unique()) == list(range(n_layers))
    assert set(df["control"]) == {"none", "untrained"}
    assert df["mean"].notna().all() and (df["pos"] == 6).all()
    assert no_hooks(model)


def test_probe_block_hooks_and_head_hooks():
    model = hi.build_model("mambaformer", **SMALL)
    batch = prompts(b=16, n=4)
    df = P.probe(model, batch.xs, batch.ys, "ols", hooks=["mixer.hook_ssm_state", "attn.hook_z"], positions=[6])
    assert list(df["hook"]) == ["blocks.0.mixer.hook_ssm_state", "blocks.1.attn.hook_z", "blocks.2.attn.hook_z"]
    assert list(df["layer"]) == [0, 1, 2]


def test_bad_arguments_are_rejected():
    model = hi.build_model("gpt2", **SMALL)
    batch = prompts(b=16, n=4)
    xs, ys = batch.xs, batch.ys
    with pytest.raises(ValueError, match="blocks.9.hook_resid_post"):
        P.probe(model, xs, ys, hooks="blocks.9.hook_resid_post")
    with pytest.raises(ValueError, match="layer"):
        P.probe(model, xs, ys, layers=[5])
    with pytest.raises(ValueError, match="unknown target"):
        P.probe(model, xs, ys, "w_ols")
    with pytest.raises(ValueError, match="params"):
        P.probe(model, xs, ys, "w")  # no params given
    with pytest.raises(ValueError, match="control"):
        P.probe(model, xs, ys, controls="random")
    with pytest.raises(ValueError, match="probe"):
        P.probe(model, xs, ys, probes="svm")
    with pytest.raises(ValueError, match="position"):
        P.probe(model, xs, ys, positions=[8])
    with pytest.raises(ValueError, match="ys"):
        P.probe(model, xs, ys[:8])
    with pytest.raises(ValueError, match="batch"):
        P.probe(model, xs, ys, "w", params={"w": batch.params["w"][:8]})
    with pytest.raises(ValueError, match="test_frac"):
        P.probe(model, xs, ys, test_frac=1.5)
    with pytest.raises(ValueError, match="batch"):
        P.probe_activations({"a": torch.randn(8, 1, 4)}, batch, "w")
    with pytest.raises(ValueError, match="untrained"):
        P.probe_activations({"a": torch.randn(16, 1, 4)}, batch, "w", controls="untrained")
    with pytest.raises(ValueError, match="rows"):
        P.probe(model, xs, ys, P.Target("bad", lambda b: torch.zeros(16, 2, 3)))
    assert no_hooks(model)


def test_no_hooks_remain_when_a_target_raises():
    model = hi.build_model("gpt2", **SMALL)
    batch = prompts(b=16, n=4)

    def boom(b):
        raise RuntimeError("target failed")

    with pytest.raises(RuntimeError, match="target failed"):
        P.probe(model, batch.xs, batch.ys, boom)
    assert no_hooks(model)


# ------------------------------------------------------------------------- captured activations
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = TrainConfig.model_validate({
        "name": "tiny", "steps": 20, "batch_size": 32, "seed": 0,
        "model": {"arch": "gpt2", "d_model": 16, "n_layers": 2, "n_heads": 2},
        "task": {"name": "linear_regression", "n_dims": 3, "n_points": 6},
        "optim": {"name": "adamw", "lr": 3e-3},
        "log": {"every": 10, "progress": False},
        "checkpoint": {"every": 10},
        "capture": {"hooks": ["blocks.*.hook_resid_post"], "every": 10, "n_prompts": 32, "positions": "x"},
        "eval": {"n_prompts": 64, "batch_size": 64},
    })
    run = train(cfg, tmp_path_factory.mktemp("probe") / "r")
    torch.set_num_threads(1)
    return run


def test_probe_over_training(tiny_run):
    df = P.probe_over_training(tiny_run, "blocks.1.hook_resid_post", ["w", "ols"], controls=("shuffle", "untrained"))
    steps = tiny_run.activations.steps
    assert sorted(df["step"].unique()) == steps == [0, 10, 19]
    assert list(df.columns[:2]) == ["step", "hook"]
    # x tokens only were captured: 6 positions per (step, target, control)
    assert len(df) == len(steps) * 6 * 2 * 3
    assert set(df["pos"]) == {0, 2, 4, 6, 8, 10} and set(df["layer"]) == {2}
    # the step-0 capture is the init model: probing it matches probing the same init model fresh
    shard = tiny_run.activations.load(0)
    spec = tiny_run.config.build_spec()
    torch.manual_seed(0)
    init = hi.HookedICLModel(spec)
    fresh = P.probe(init, shard["xs"], shard["ys"], "ols", layers=[2])
    stored = df[(df.step == 0) & (df.target == "ols") & (df.control == "none")]
    np.testing.assert_allclose(stored["mean"].to_numpy(), fresh["mean"].to_numpy(), atol=1e-4, equal_nan=True)
    with pytest.raises(ValueError, match="not captured"):
        P.probe_over_training(tiny_run, "blocks.0.hook_attn_out", "ols")
    with pytest.raises(ValueError, match="step"):
        P.probe_over_training(tiny_run, "blocks.1.hook_resid_post", "ols", steps=[5])
    with pytest.raises(ValueError, match="captured"):
        P.probe_over_training(tiny_run, "blocks.1.hook_resid_post", "ols", positions="y")


def test_analyze_run(tiny_run):
    from matplotlib.figure import Figure

    df, fig = P.analyze_run(tiny_run, n_prompts=32, n_bootstrap=50)
    assert isinstance(df, pd.DataFrame) and isinstance(fig, Figure)
    assert set(df["target"]) == {"w", "xty", "ols"} and set(df["control"]) == {"none", "untrained"}
    assert fig.axes[0].get_xlabel() and fig.axes[0].get_title()
