"""Model merging: slerp/linear per tensor (endpoints exact, identical models unchanged, the norm
interpolated, the near-parallel fallback, known angles), merged models and merged run
directories that evaluation and analyses accept, lineage, the CLI, and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from typer.testing import CliRunner

import hookedicl as hi
from hookedicl.analysis import merge as M
from hookedicl.cli import app
from hookedicl.training import Run, TrainConfig, train

SMALL = dict(n_dims=3, d_model=16, n_layers=2, n_heads=2)
TINY_RUN = {
    "steps": 4, "batch_size": 8, "threads": 1,
    "model": {"arch": "gpt2", "d_model": 16, "n_layers": 1, "n_heads": 2},
    "task": {"name": "linear_regression", "n_dims": 3, "n_points": 5},
    "optim": {"lr": 1e-2},
    "log": {"every": 2, "progress": False}, "checkpoint": {"every": 2},
    "eval": {"n_prompts": 16, "batch_size": 16, "baselines": ["least_squares"]},
}



def model(seed: int):
    torch.manual_seed(seed)
    return hi.build_model("gpt2", **SMALL)


def rand(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge_runs")
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        cfg = TrainConfig.model_validate({**TINY_RUN, "name": name, "seed": seed})
        out[name] = train(cfg, root / name)
    return out


# ------------------------------------------------------------------------------- tensors
@pytest.mark.parametrize("shape", [(7,), (4, 5), (2, 3, 4), (1,)])
@pytest.mark.parametrize("fn", [M.slerp_tensors, M.lerp_tensors])
def test_endpoints_are_reproduced_exactly(shape, fn):
    a, b = rand(*shape, seed=1), rand(*shape, seed=2, scale=3.0)
    assert torch.equal(fn(a, b, 0.0), a) and torch.equal(fn(a, b, 1.0), b)
    assert torch.equal(fn(a, b, 0), a) and torch.equal(fn(a, b, 1), b)  # ints too


@pytest.mark.parametrize("t", [0.1, 0.5, 0.77])
def test_interpolating_a_tensor_with_itself_returns_it(t):
    a = rand(6, 5, seed=3)
    assert torch.equal(M.slerp_tensors(a, a.clone(), t), a)
    assert torch.equal(M.lerp_tensors(a, a.clone(), t), a)


@pytest.mark.parametrize("t", [0.2, 0.5, 0.9])
def test_slerp_keeps_the_interpolated_norm_and_moves_along_the_great_circle(t):
    a, b = rand(40, seed=4), rand(40, seed=5, scale=2.5)
    out = M.slerp_tensors(a, b, t).double()
    na, nb = a.double().norm(), b.double().norm()
    assert out.norm().item() == pytest.approx(((1 - t) * na + t * nb).item(), rel=1e-6)
    # the angle to a is t·ω and to b (1 − t)·ω, in the plane of a and b
    cos = lambda u, v: float(u @ v / (u.norm() * v.norm()))  # noqa: E731
    omega = math.acos(cos(a.double(), b.double()))
    assert math.acos(min(1.0, cos(out, a.double()))) == pytest.approx(t * omega, abs=1e-5)
    assert math.acos(min(1.0, cos(out, b.double()))) == pytest.approx((1 - t) * omega, abs=1e-5)
    # linear interpolation shrinks the norm of non-parallel tensors: slerp does not
    assert M.lerp_tensors(a, b, t).double().norm() < out.norm() - 1e-3


def test_slerp_of_orthogonal_unit_vectors_and_of_equal_norms_matches_the_classic_formula():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(M.slerp_tensors(a, b, 0.5), torch.tensor([0.5**0.5, 0.5**0.5]))
    torch.testing.assert_close(M.slerp_tensors(a, b, 1 / 3), torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]))
    # equal norms: the classic slerp of the raw vectors, sin((1-t)ω)/sin ω · a + sin(tω)/sin ω · b
    a, b = rand(9, seed=6), rand(9, seed=7)
    b = b * a.norm() / b.norm()
    w = math.acos(float(a @ b / (a.norm() * b.norm())))
    t = 0.3
    classic = math.sin((1 - t) * w) / math.sin(w) * a + math.sin(t * w) / math.sin(w) * b
    torch.testing.assert_close(M.slerp_tensors(a, b, t), classic, rtol=1e-5, atol=1e-6)


def test_near_parallel_antiparallel_and_zero_tensors_fall_back_to_linear():
    a = rand(30, seed=8)
    near = 2.0 * a + 1e-4 * rand(30, seed=9)  # cos > 0.9995
    for b in (near, -a, torch.zeros(30)):
        torch.testing.assert_close(M.slerp_tensors(a, b, 0.3), torch.lerp(a, b, 0.3), rtol=0, atol=0)
    # a threshold of 1 keeps slerp for the near-parallel pair: a different result
    assert not torch.equal(M.slerp_tensors(a, near, 0.3, dot_threshold=1.0), torch.lerp(a, near, 0.3))
    sd, report = M.merge_state_dicts({"p": a, "q": a, "z": a}, {"p": near, "q": rand(30, seed=10), "z": torch.zeros(30)}, 0.3)
    assert report.set_index("name")["how"].to_dict() == {"p": "linear (parallel)", "q": "slerp", "z": "linear (zero norm)"}


def test_bad_arguments_are_rejected_with_the_field_named():
    a, b = rand(3), rand(3, seed=1)
    for t in (-0.1, 1.5, float("nan"), True, "0.5", None):
        with pytest.raises(ValueError, match="t must be"):
            M.slerp_tensors(a, b, t)
    with pytest.raises(ValueError, match="shapes differ"):
        M.slerp_tensors(a, rand(4), 0.5)
    with pytest.raises(ValueError, match="dtypes differ"):
        M.lerp_tensors(a, b.double(), 0.5)
    with pytest.raises(ValueError, match="NaN or inf"):
        M.slerp_tensors(a, torch.tensor([1.0, float("nan"), 0.0]), 0.5)
    with pytest.raises(ValueError, match="dot_threshold"):
        M.slerp_tensors(a, b, 0.5, dot_threshold=0.0)
    with pytest.raises(ValueError, match="unknown merge method 'ties'"):
        M.merge_state_dicts({"x": a}, {"x": b}, 0.5, "ties")
    with pytest.raises(ValueError, match=r"only in A \['y'\]"):
        M.merge_state_dicts({"x": a, "y": a}, {"x": b}, 0.5)
    with pytest.raises(ValueError, match="x: shapes differ"):
        M.merge_state_dicts({"x": a}, {"x": rand(2, 3)}, 0.5)
    with pytest.raises(ValueError, match="non-floating tensors"):
        M.merge_state_dicts({"i": torch.arange(3)}, {"i": torch.arange(3) + 1}, 0.5)
    kept, rep = M.merge_state_dicts({"i": torch.arange(3)}, {"i": torch.arange(3)}, 0.5)
    assert torch.equal(kept["i"], torch.arange(3)) and rep["how"].tolist() == ["copy"]


# -------------------------------------------------------------------------------- models
@pytest.mark.parametrize("method", M.MERGE_METHODS)
def test_merged_models_reproduce_the_endpoints_and_self_merges(method):
    ma, mb = model(0), model(1)
    xs, ys = torch.randn(4, 5, 3), torch.randn(4, 5)
    for t, ref in ((0.0, ma), (1.0, mb)):
        merged = M.merge_models(ma, mb, t, method)
        assert all(torch.equal(v, ref.state_dict()[k]) for k, v in merged.state_dict().items())
        assert torch.equal(merged(xs, ys), ref.eval()(xs, ys))
    same = M.merge_models(ma, model(0), 0.5, method)
    assert all(torch.equal(v, ma.state_dict()[k]) for k, v in same.state_dict().items())
    half = M.merge_models(ma, mb, 0.5, method)
    assert not torch.equal(half(xs, ys), ma(xs, ys)) and not torch.equal(half(xs, ys), mb(xs, ys))
    if method == "slerp":  # every tensor keeps the mean of the endpoint norms
        for k, v in half.state_dict().items():
            na, nb = ma.state_dict()[k].norm(), mb.state_dict()[k].norm()
            assert v.norm().item() == pytest.approx(((na + nb) / 2).item(), rel=1e-5, abs=1e-7), k


def test_models_of_different_architectures_are_not_merged():
    torch.manual_seed(0)
    other = hi.build_model("gpt2", **{**SMALL, "n_layers": 1})
    with pytest.raises(ValueError, match="architectures differ"):
        M.merge_models(model(0), other)
    with pytest.raises(ValueError, match="needs a HookedICLModel"):
        M.merge_models(model(0), {"w": torch.zeros(1)})


# ---------------------------------------------------------------------------------- runs
def test_merged_run_is_an_ordinary_run_directory(runs, tmp_path):
    from hookedicl.analysis import analyze_run
    from hookedicl.evaluation.run_eval import evaluate_run

    out = tmp_path / "merged"
    run = M.merge_runs(runs["a"], runs["b"], out, method="slerp", t=0.5)
    assert isinstance(run, Run) and run.checkpoints == [0]
    assert run.config.name == "merged" and run.config.task == runs["a"].config.task
    expected = M.merge_models(runs["a"].load_model(), runs["b"].load_model(), 0.5, "slerp")
    got = run.load_model()
    assert all(torch.equal(v, expected.state_dict()[k]) for k, v in got.state_dict().items())
    _, summary = evaluate_run(run, n_prompts=16)
    assert summary["step"] == 0 and math.isfinite(summary["icl_score"]["value"])
    df = analyze_run(run, "lens", n_prompts=8)
    assert len(df) > 0 and (out / "analysis" / "lens.csv").exists()
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["how"] == "merge" and lineage["method"] == "slerp" and lineage["t"] == 0.5
    assert [p["step"] for p in lineage["parents"]] == [4, 4]
    assert [p["run"] for p in lineage["parents"]] == [str(runs["a"].path.resolve()), str(runs["b"].path.resolve())]
    assert all(len(p["sha256_model"]) == 64 for p in lineage["parents"])
    report = (out / "analysis" / "merge_tensors.csv").read_text().splitlines()
    assert report[0].startswith("name,numel,how,cos") and len(report) == 1 + len(got.state_dict())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_merged_run_at_an_endpoint_equals_that_checkpoint(runs, tmp_path):
    run = M.merge_runs(f"{runs['a'].path}:2", runs["b"], tmp_path / "m0", t=0.0)
    src = runs["a"].load_model(2)
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in run.load_model().state_dict().items())
    assert json.loads((tmp_path / "m0" / "lineage.json").read_text())["parents"][0]["step"] == 2


def test_merge_runs_refuses_bad_outputs_and_inputs_and_writes_nothing(runs, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("keep")
    with pytest.raises(ValueError, match="not an empty directory"):
        M.merge_runs(runs["a"], runs["b"], busy)
    assert [p.name for p in busy.iterdir()] == ["x"]
    with pytest.raises(ValueError, match="no checkpoint at step 3"):
        M.merge_runs(runs["a"], runs["b"], tmp_path / "m", step_a=3)
    with pytest.raises(ValueError, match="not a run directory"):
        M.merge_runs(tmp_path / "nowhere", runs["b"], tmp_path / "m")
    bigger = TrainConfig.model_validate({**TINY_RUN, "name": "c", "model": {**TINY_RUN["model"], "d_model": 32}})
    other = train(bigger, tmp_path / "c")
    with pytest.raises(ValueError, match="architectures differ"):
        M.merge_runs(runs["a"], other, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "c"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert M.merge_runs(runs["a"], runs["b"], empty, method="linear", t=0.25).checkpoints == [0]


def test_cli_merge(runs, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli_merged"
    res = runner.invoke(app, ["merge", str(runs["a"].path), str(runs["b"].path), "--method", "linear", "--t", "0.25", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "merged run written to" in res.output
    assert yaml.safe_load((out / "config.yaml").read_text())["name"] == "cli_merged"
    assert json.loads((out / "lineage.json").read_text())["method"] == "linear"
    res = runner.invoke(app, ["eval", str(out), "--n-prompts", "16"])
    assert res.exit_code == 0, res.output
    bad = runner.invoke(app, ["merge", str(runs["a"].path), str(runs["b"].path), "--t", "2", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "t must be a number in [0, 1]" in bad.output
    bad = runner.invoke(app, ["merge", str(runs["a"].path), str(runs["b"].path), "--method", "ties", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown merge method" in bad.output
