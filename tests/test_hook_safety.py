"""Hooks never leak: whichever analysis entry point is running, a failure inside the model's
forward (at its first, second or fourth pass) leaves the model with no hooks attached."""

from __future__ import annotations

import pytest
import torch

from hookedicl.analysis import ANALYSES, analyze_run
from hookedicl.training import Run, TrainConfig, train

from analysis_helpers import no_hooks


@pytest.fixture(scope="module", params=["gpt2", "mambaformer"])
def tiny_run(request, tmp_path_factory):
    cfg = TrainConfig.model_validate({
        "name": "tiny", "steps": 2, "batch_size": 8, "threads": 1,
        "model": {"arch": request.param, "d_model": 16, "n_layers": 2, "n_heads": 2, "d_state": 4, "expand": 2},
        "task": {"name": "linear_regression", "n_dims": 3, "n_points": 6},
        "log": {"every": 2, "progress": False}, "checkpoint": {"every": 2},
        "eval": {"n_prompts": 16, "batch_size": 16},
    })
    return train(cfg, tmp_path_factory.mktemp(request.param) / "run")


class Injected(RuntimeError):
    pass


@pytest.mark.parametrize("fail_at", [0, 1, 3])
@pytest.mark.parametrize("what", ANALYSES)
def test_no_hooks_after_a_failing_forward(tiny_run, monkeypatch, tmp_path, what, fail_at):
    model = tiny_run.load_model()
    calls = {"n": 0}
    point = model.hook_dict[f"blocks.{model.spec.n_layers - 1}.hook_resid_post"]

    def failing(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > fail_at:
            raise Injected(f"forward failed at pass {calls['n']}")
        return x

    monkeypatch.setattr(point, "forward", failing)
    monkeypatch.setattr(Run, "load_model", lambda self, step=None, device="cpu": model)
    try:
        analyze_run(tiny_run, what, out_dir=tmp_path, n_prompts=16)
    except Injected:
        pass
    else:
        assert calls["n"] <= fail_at, "the injected failure was swallowed"
    assert no_hooks(model), {n: hp._forward_hooks for n, hp in model.hook_dict.items() if hp._forward_hooks}
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
