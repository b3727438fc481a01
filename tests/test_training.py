"""Training loop: learning, exact resume, activation capture round trip, config validation."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

import hookedicl as hi
from hookedicl.training import Run, TrainConfig, train
from hookedicl.training.run import read_metrics

TINY = {
    "name": "tiny",
    "steps": 40,
    "batch_size": 16,
    "threads": 1,
    "model": {"arch": "gpt2", "d_model": 32, "n_layers": 2, "n_heads": 2},
    "task": {"name": "linear_regression", "n_dims": 3, "n_points": 7},
    "optim": {"name": "adamw", "lr": 3e-3, "warmup_steps": 5, "schedule": "cosine"},
    "log": {"every": 5, "progress": False},
    "checkpoint": {"every": 10},
    "eval": {"n_prompts": 64, "batch_size": 64},
}


def cfg(**over) -> TrainConfig:
    d = json.loads(json.dumps(TINY))
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k].update(v)
        else:
            d[k] = v
    return TrainConfig.model_validate(d)


def test_loss_decreases(tmp_path):
    # the untrained model's output offset puts its loss above E[y^2] = d; training removes it
    # (in-context learning proper takes thousands of steps: see tests marked slow and docs/training.md)
    run = train(cfg(steps=300, task={"n_dims": 2, "n_points": 6}, optim={"lr": 3e-3}, log={"every": 30}), tmp_path / "r")
    m = run.metrics()
    assert m["loss"].iloc[-5:].mean() < 0.9 * m["loss"].iloc[0]
    assert {"step", "loss", "lr", "steps_per_s", "baseline/least_squares", "n_points"} <= set(m.columns)
    assert run.checkpoints[-1] == 300


def test_extending_a_finished_run_equals_a_longer_run(tmp_path):
    # with a step-independent schedule, training 20 steps then resuming to 30 equals training 30
    const = {"schedule": "constant", "warmup_steps": 0}
    full = train(cfg(steps=30, optim=const), tmp_path / "full")
    part = train(cfg(steps=20, optim=const), tmp_path / "part")
    resumed = train(cfg(steps=30, optim=const), tmp_path / "part", resume=True)
    a, b = full.metrics(), resumed.metrics()
    assert list(a["step"]) == list(b["step"]) == [5, 10, 15, 20, 25, 30]
    assert a["loss"].tolist() == b["loss"].tolist()
    wa, wb = full.load_model(), resumed.load_model()
    for (k, va), (_, vb) in zip(wa.state_dict().items(), wb.state_dict().items()):
        assert torch.equal(va, vb), k
    assert part.path == resumed.path


def test_resume_after_crash_drops_newer_metrics_and_shards(tmp_path):
    c = cfg(steps=30, capture={"hooks": ["hook_embed"], "every": 5, "n_prompts": 2})
    full = train(c, tmp_path / "full")
    run = train(c, tmp_path / "crash")
    # simulate a crash after step 20's checkpoint: newer checkpoint gone, later lines/shards exist
    idx_path = run.checkpoint_dir / "index.json"
    idx = json.loads(idx_path.read_text())
    idx_path.write_text(json.dumps([e for e in idx if e["step"] <= 20]))
    with open(run.path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 35, "loss": 1.0')  # torn line
    train(c, tmp_path / "crash", resume=True)
    assert [r["step"] for r in read_metrics(run.path / "metrics.jsonl")] == [5, 10, 15, 20, 25, 30]
    assert run.metrics()["loss"].tolist() == full.metrics()["loss"].tolist()
    assert run.activations.steps == full.activations.steps == [0, 5, 10, 15, 20, 25, 29]


def test_captured_activations_round_trip(tmp_path):
    c = cfg(steps=12, capture={"hooks": ["blocks.*.hook_resid_post", "blocks.0.attn.hook_pattern"], "every": 5, "n_prompts": 4, "positions": "x"})
    run = train(c, tmp_path / "r")
    store = run.activations
    assert store.steps == [0, 5, 10, 11]
    assert store.hooks == ["blocks.0.attn.hook_pattern", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    shard = store.load(5)
    xs, ys, w = shard["xs"], shard["ys"], shard["params"]["w"]
    assert xs.shape == (4, 7, 3) and ys.shape == (4, 7) and w.shape == (4, 3)
    assert torch.allclose(ys, torch.einsum("bnd,bd->bn", xs, w), atol=1e-5)
    resid = shard["act"]["blocks.1.hook_resid_post"]
    assert resid.shape == (4, 7, 32)  # x positions only
    assert shard["act"]["blocks.0.attn.hook_pattern"].shape == (4, 2, 7, 14)
    # the captured residual at the last step equals a fresh forward of the model that produced it
    steps, stacked = store.stack("blocks.1.hook_resid_post")
    assert stacked.shape == (4, 4, 7, 32)


def test_capture_matches_fresh_cache_at_step_zero(tmp_path):
    c = cfg(steps=1, capture={"hooks": ["blocks.1.hook_resid_post"], "every": 1, "n_prompts": 3})
    run = train(c, tmp_path / "r")
    shard = run.activations.load(0)
    torch.manual_seed(c.seed)
    init = hi.HookedICLModel(c.build_spec())
    _, cache = init.run_with_cache(shard["xs"], shard["ys"], names_filter="blocks.1.hook_resid_post")
    assert torch.allclose(cache["blocks.1.hook_resid_post"], shard["act"]["blocks.1.hook_resid_post"], atol=1e-6)


def test_corrupted_shard_is_detected(tmp_path):
    run = train(cfg(steps=5, capture={"hooks": ["hook_embed"], "every": 5, "n_prompts": 2}), tmp_path / "r")
    f = run.path / "activations" / "step_0000000.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted"):
        run.activations.load(0)


@pytest.mark.parametrize(
    "over,field",
    [
        ({"task": {"name": "linear_regresion"}}, "linear_regresion"),
        ({"model": {"arch": "gpt5"}}, "gpt5"),
        ({"model": {"d_model": -8}}, "d_model"),
        ({"task": {"n_points": 0}}, "n_points"),
        ({"steps": 0}, "steps"),
        ({"model": {"dmodel": 8}}, "dmodel"),
        ({"optim": {"lr": -1}}, "lr"),
        ({"compile": "yes"}, "compile"),
        ({"curriculum": {"dims": {"start": 2, "end": 9, "inc": 1, "interval": 5}, "points": {"start": 3, "end": 7, "inc": 2, "interval": 5}}}, "n_dims"),
        ({"capture": {"hooks": ["blocks.7.hook_resid_post"]}}, "blocks.7.hook_resid_post"),
        ({"task": {"name": "sparse_linear_regression"}, "curriculum": {"dims": {"start": 2, "end": 3, "inc": 1, "interval": 5}, "points": {"start": 3, "end": 7, "inc": 2, "interval": 5}}}, r"at step 0 \(dims=2"),
    ],
)
def test_bad_config_names_field_and_writes_nothing(tmp_path, over, field):
    d = json.loads(json.dumps(TINY))
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match=field):
        train(TrainConfig.load(p), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_run_needs_resume_and_matching_config(tmp_path):
    train(cfg(steps=5), tmp_path / "r")
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg(steps=5), tmp_path / "r")
    with pytest.raises(ValueError, match="batch_size"):
        train(cfg(steps=10, batch_size=8), tmp_path / "r", resume=True)


def test_vector_mqar_trains_on_last_position(tmp_path):
    run = train(cfg(steps=5, task={"name": "vector_mqar", "n_dims": 4, "n_points": 5}), tmp_path / "r")
    model = run.load_model()
    assert model.spec.y_dim == 4
    assert "baseline/least_squares" not in run.metrics().columns


def test_config_yaml_round_trip(tmp_path):
    c = cfg(curriculum={"dims": {"start": 2, "end": 3, "inc": 1, "interval": 5}, "points": {"start": 3, "end": 7, "inc": 2, "interval": 5}})
    assert TrainConfig.from_yaml(c.to_yaml()) == c
    run = train(c.model_copy(update={"steps": 3}), tmp_path / "r")
    assert Run(run.path).config.curriculum == c.curriculum


def test_preset_layout_is_kept_unless_overridden():
    c = cfg(model={"arch": "linear_attention", "d_model": 16, "n_layers": 1, "n_heads": 2})
    assert c.build_spec().layout == "paired"
    c = cfg(model={"arch": "gpt2", "layout": "akyurek"})
    assert c.build_spec().layout == "akyurek"


def test_init_from_fine_tunes_from_a_checkpoint_and_records_lineage(tmp_path):
    base = train(cfg(steps=20), tmp_path / "base")
    ft_cfg = cfg(steps=5, task={"name": "sparse_linear_regression", "kwargs": {"k": 2}},
                 init_from=f"{base.path}:10", capture={"hooks": ["blocks.1.hook_resid_post"], "every": 100, "n_prompts": 2})
    ft = train(ft_cfg, tmp_path / "ft")
    # the capture at step 0 is the parent's step-10 model on the fine-tune's first batch
    shard = ft.activations.load(0)
    parent = base.load_model(10)
    _, cache = parent.run_with_cache(shard["xs"], shard["ys"], names_filter="blocks.1.hook_resid_post")
    assert torch.allclose(cache["blocks.1.hook_resid_post"], shard["act"]["blocks.1.hook_resid_post"], atol=1e-6)
    lin = ft.lineage
    assert lin["how"] == "init_from" and len(lin["parents"]) == 1
    p = lin["parents"][0]
    assert p["run"] == str(base.path.resolve()) and p["step"] == 10 and p["lineage"] is None
    assert p["config"]["task"]["name"] == "linear_regression"
    index = json.loads((base.checkpoint_dir / "index.json").read_text())
    assert p["sha256_model"] == next(e["sha256_model"] for e in index if e["step"] == 10)
    # a fine-tune of the fine-tune keeps the whole chain; resuming keeps the lineage
    ft2 = train(cfg(steps=3, init_from=str(ft.path)), tmp_path / "ft2")
    assert ft2.lineage["parents"][0]["lineage"]["parents"][0]["step"] == 10
    train(cfg(steps=6, init_from=str(ft.path)), tmp_path / "ft2", resume=True)
    assert Run(tmp_path / "ft2").lineage == ft2.lineage
    assert base.lineage is None


@pytest.mark.parametrize(
    "init_from,over,match",
    [
        ("{base}:7", {}, "no checkpoint at step 7"),
        ("{base}/nope", {}, "not a run directory"),
        ("{base}:x1", {}, "must be a checkpoint step"),
        ("{base}", {"model": {"d_model": 16}}, r"differs from this config's model in \['d_model'"),
    ],
)
def test_init_from_errors_name_the_problem_and_write_nothing(tmp_path, init_from, over, match):
    base = train(cfg(steps=10), tmp_path / "base")
    with pytest.raises(ValueError, match=match):
        train(cfg(steps=3, init_from=init_from.format(base=base.path), **over), tmp_path / "ft")
    assert not (tmp_path / "ft").exists()


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_training_matches_eager_and_still_captures(tmp_path):
    # compile: the steps without capture run the compiled module, capture steps the eager one
    c = dict(steps=6, model={"n_layers": 1, "d_model": 16}, log={"every": 1},
             capture={"hooks": ["blocks.0.hook_resid_post"], "every": 3, "n_prompts": 2})
    eager = train(cfg(**c), tmp_path / "eager")
    fast = train(cfg(compile=True, **c), tmp_path / "compiled")
    assert fast.activations.steps == eager.activations.steps == [0, 3, 5]
    a, b = eager.metrics()["loss"].to_numpy(), fast.metrics()["loss"].to_numpy()
    assert abs(a - b).max() < 1e-4 * abs(a).max()
    for step in eager.activations.steps:
        ea, fa = eager.activations.load(step)["act"], fast.activations.load(step)["act"]
        assert torch.allclose(ea["blocks.0.hook_resid_post"], fa["blocks.0.hook_resid_post"], atol=1e-4)
    # the compile flag is an execution setting: a run may be resumed with it switched
    train(cfg(**{**c, "steps": 8}), tmp_path / "compiled", resume=True)
