"""Sweeps: grid expansion and validation, skip/resume, failures recorded, aggregation, the local
process pool, the Ray executor on a local instance, the CLI and the shipped sweep configs."""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from hookedicl.cli import app
from hookedicl.models import CAMPBELL_ZOO
from hookedicl.sweep import LocalExecutor, SweepSpec, auto_workers, collect, make_executor, plan, point_state, run_sweep
from hookedicl.sweep.aggregate import n_params
from hookedicl.sweep.runner import read_status
from hookedicl.training import Run, train

CONFIGS = Path(__file__).resolve().parents[1] / "hookedicl" / "configs" / "sweeps"

TINY = {
    "steps": 20,
    "batch_size": 16,
    "threads": 1,
    "model": {"arch": "gpt2", "d_model": 16, "n_layers": 2, "n_heads": 2},
    "task": {"name": "linear_regression", "n_dims": 3, "n_points": 7},
    "optim": {"name": "adamw", "lr": 3e-3},
    "log": {"every": 5, "progress": False},
    "checkpoint": {"every": 10},
    "eval": {"n_prompts": 24, "batch_size": 24, "baselines": ["least_squares"]},
}
DIVERGES = {"optim.lr": 1.0e10}  # NaN loss at step 1: TrainingDiverged


def spec(**fields) -> SweepSpec:
    return SweepSpec.model_validate({"name": "t", "base": copy.deepcopy(TINY), **fields})


# ----------------------------------------------------------------------------- expansion
def test_grid_variants_and_points_expand_in_order_with_configs():
    s = spec(
        set={"optim.lr": 0.002},
        grid={"model.arch": ["gpt2", "llama"], "seed": [0, 1]},
        variants={
            "linear": {"task.name": "linear_regression"},
            "sparse": {"task.name": "sparse_linear_regression", "task.kwargs": {"k": 2}, "eval.score_baseline": "lasso"},
        },
    )
    pts = s.expand()
    assert [p.id for p in pts[:3]] == [
        "variant=linear__arch=gpt2__seed=0", "variant=linear__arch=gpt2__seed=1", "variant=linear__arch=llama__seed=0",
    ]
    assert len(pts) == 8 and len({p.id for p in pts}) == 8
    last = pts[-1]
    assert last.id == "variant=sparse__arch=llama__seed=1"
    assert last.labels == {"variant": "sparse", "model.arch": "llama", "seed": 1}
    c = last.config
    assert (c.model.arch, c.seed, c.task.name, c.task.kwargs, c.eval.score_baseline) == (
        "llama", 1, "sparse_linear_regression", {"k": 2}, "lasso",
    )
    assert c.optim.lr == 0.002 and c.model.d_model == 16 and c.name == f"t.{last.id}"
    assert pts[0].config.eval.score_baseline == "least_squares" and pts[0].config.task.kwargs == {}
    assert (last.num_cpus, last.num_gpus) == (1.0, 0.0)  # threads: 1, device cpu
    # a list of points crossed with a grid; axes sharing a last component keep their full path
    pts = spec(points=[{"optim.lr": 0.001}, {"optim.lr": 0.01}], grid={"seed": [3], "eval.seed": [7]}).expand()
    assert [p.id for p in pts] == ["lr=0.001__seed=3__eval.seed=7", "lr=0.01__seed=3__eval.seed=7"]
    assert pts[1].config.optim.lr == 0.01 and pts[1].config.eval.seed == 7


def test_load_resolves_a_relative_base_file(tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "base.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "s.yaml").write_text("name: s\nbase: cfg/base.yaml\ngrid: {seed: [0, 1]}\n")
    s = SweepSpec.load(tmp_path / "s.yaml")
    assert [p.config.seed for p in s.expand()] == [0, 1]
    assert s.resolved().base["model"]["d_model"] == 16  # what sweep.yaml stores


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"grid": {"model.archh": ["gpt2"]}}, ["grid['model.archh']", "no field 'archh'"]),
        ({"grid": {"model.d_model.x": [1]}}, ["grid['model.d_model.x']", "model.d_model is a value"]),
        ({"grid": {"model.arch": []}}, ["grid['model.arch'] is an empty list"]),
        ({"grid": {"seed": [0, 0]}}, ["grid['seed'] repeats"]),
        ({"grid": {"model.arch": ["gpt2", "nope"]}}, ["point 'arch=nope'", "grid['model.arch']='nope'", "nope"]),
        ({"grid": {"model.d_model": [-4]}}, ["point 'd_model=-4'", "model.d_model"]),
        ({"grid": {"name": ["x"]}}, ["grid['name']", "'name' is set by the sweep"]),
        ({"grid": {"seed": [0]}, "variants": {"a": {"seed": 1}}}, ["sets 'seed'", "overlaps 'seed'"]),
        ({"grid": {"seed": [0]}, "set": {"seed": 1}}, ["set['seed'] are also varied"]),
        ({"grid": {"task.name": ["linear_regression"]}, "points": [{"task": {"n_dims": 2}}]}, ["overlaps 'task'"]),
        ({"points": [{"optim.lr": 0.001}, {"optim.lr": 0.001}]}, ["two points get the directory name 'lr=0.001'"]),
        ({"grid": {"seed": [0]}, "results": {"error_at_k": [7]}}, ["results.error_at_k", "task.n_points=7"]),
        ({"grid": {"seed": [0]}, "results": {"rows": ["model.arch"]}}, ["results.rows", "model.arch"]),
        ({"gird": {"seed": [0]}}, ["gird"]),
        ({}, ["at least one of grid, variants or points"]),
        (
            {"grid": {"task.name": ["sparse_linear_regression"]},
             "set": {"curriculum": {"dims": {"start": 2, "end": 3, "inc": 1, "interval": 5},
                                    "points": {"start": 7, "end": 7, "inc": 0, "interval": 1}}}},
            ["n_dims_active=2", "k=3", "curriculum"],
        ),
    ],
)
def test_invalid_sweeps_name_the_field_and_write_nothing(tmp_path, fields, expected):
    with pytest.raises(ValueError) as e:
        run_sweep(spec(**fields), tmp_path / "out")
    for text in expected:
        assert text in str(e.value)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- running
def test_skips_finished_resumes_unfinished_and_aggregates(tmp_path):
    s = spec(grid={"seed": [0, 1]})
    out = tmp_path / "sw"
    p0, p1 = s.expand()
    # point seed=1 was interrupted: a checkpoint at step 10 of its 20 steps
    train(p1.config.model_copy(update={"steps": 10}), out / "runs" / p1.id)
    assert dict((p.id, st) for p, st in plan(s, out)) == {p0.id: "pending", p1.id: "partial"}

    res = run_sweep(s, out)
    assert set(res.records) == {p0.id, p1.id} and not res.failed
    assert res.records[p1.id]["trained"] and res.records[p1.id]["evaluated"]
    resumed = Run(out / "runs" / p1.id)
    assert resumed.metrics()["step"].tolist() == [5, 10, 15, 20] and resumed.checkpoints == [10, 20]
    assert all(point_state(out / "runs" / p.id, p.config) == "done" for p in (p0, p1))

    # aggregation
    df = pd.read_csv(out / "results.csv")
    assert df["point"].tolist() == [p0.id, p1.id] and (df["status"] == "done").all()
    assert (df["icl_score_ci_low"] <= df["icl_score"]).all() and (df["icl_score"] <= df["icl_score_ci_high"]).all()
    assert (df["score_baseline"] == "least_squares").all() and (df["step"] == 20).all()
    assert {"err_k3", "err_k3_ci_low", "err_k3_ci_high", "baseline_err_k3", "err_k6", "train_s", "wall_s"} <= set(df.columns)
    assert df["baseline_err_k3"].abs().max() < 1e-6  # least squares is exact from k = d on
    assert (df["n_params"] == n_params(p0.config)).all()
    assert n_params(p0.config) == sum(t.numel() for t in Run(out / "runs" / p0.id).load_model().parameters())
    assert (df["train_s"] > 0).all() and (df["wall_s"] > 0).all()
    summary = json.loads((out / "runs" / p0.id / "eval" / "summary.json").read_text())
    assert df.loc[0, "icl_score"] == pytest.approx(summary["icl_score"]["value"])
    assert df.loc[0, "err_k3"] == pytest.approx(summary["normalized_errors"]["model"][3])
    md = (out / "results.md").read_text()
    assert "## ICL score (against least_squares)" in md and f"| {p0.id} | done |" in md and "(2)" in md
    for f in ("scores", "training_curves"):
        assert (out / "figures" / f"{f}.png").stat().st_size > 0 and (out / "figures" / f"{f}.svg").is_file()
    assert yaml.safe_load((out / "sweep.yaml").read_text())["base"]["model"]["d_model"] == 16

    # re-running skips both; nothing is rewritten
    ckpt = out / "runs" / p0.id / "checkpoints" / "step_0000020.safetensors"
    mtime = ckpt.stat().st_mtime_ns
    again = run_sweep(s, out, aggregate=False)
    assert again.records == {} and sorted(again.skipped) == [p0.id, p1.id]
    assert ckpt.stat().st_mtime_ns == mtime and read_status(out, p0.id)["attempts"] == 1

    # a trained run whose evaluation is missing is only evaluated
    (out / "runs" / p0.id / "eval" / "summary.json").unlink()
    rec = run_sweep(s, out, aggregate=False).records[p0.id]
    assert (rec["status"], rec["trained"], rec["evaluated"]) == ("done", False, True)
    assert ckpt.stat().st_mtime_ns == mtime and read_status(out, p0.id)["attempts"] == 2

    # a changed config for an existing point is reported, not silently mixed in
    changed = spec(grid={"seed": [0, 1]}, set={"model.d_model": 32})
    assert {st for _, st in plan(changed, out)} == {"conflict"}
    res = run_sweep(changed, out, aggregate=False)
    assert set(res.failed) == {p0.id, p1.id} and "differs in ['model']" in res.records[p0.id]["error"]
    assert set(collect(changed, out)["status"]) == {"failed"}


def test_failing_point_is_recorded_and_the_sweep_goes_on_cli(tmp_path):
    s = {"name": "f", "base": TINY, "points": [DIVERGES, {"optim.lr": 0.003}], "grid": {"seed": [0]}}
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(s))
    out = tmp_path / "out"
    runner = CliRunner()
    dry = runner.invoke(app, ["sweep", str(tmp_path / "f.yaml"), "--out", str(out), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "pending   lr=10000000000.0__seed=0" in dry.output and "2 points, 2 to run" in dry.output
    assert not out.exists()

    res = runner.invoke(app, ["sweep", str(tmp_path / "f.yaml"), "--out", str(out)])
    assert res.exit_code == 1, res.output
    bad, good = "lr=10000000000.0__seed=0", "lr=0.003__seed=0"
    assert f"{good}: done" in res.output and f"{bad}: failed" in res.output
    status = read_status(out, bad)
    assert status["status"] == "failed" and status["error"].startswith("TrainingDiverged: loss became nan")
    assert "Traceback" in status["traceback"]
    df = pd.read_csv(out / "results.csv").set_index("point")
    assert df.loc[good, "status"] == "done" and pd.notna(df.loc[good, "icl_score"])
    assert df.loc[bad, "status"] == "failed" and "loss became nan" in df.loc[bad, "error"]
    assert f"- `{bad}`: TrainingDiverged" in (out / "results.md").read_text()

    # bad options fail cleanly, naming the option
    for args, text in ((["--executor", "dask"], "unknown executor 'dask'"), (["--workers", "two"], "--workers"),
                       (["--address", "auto"], "--address only applies to the ray executor"),
                       (["--executor", "ray", "--workers", "2"], "--workers only applies to the local executor")):
        r = runner.invoke(app, ["sweep", str(tmp_path / "f.yaml"), "--out", str(out), *args])
        assert r.exit_code == 2 and text in r.output, r.output


def test_local_process_pool_runs_points_in_worker_processes(tmp_path):
    # three points on two workers (one reused); two of them diverge at step 1
    s = spec(points=[DIVERGES, {"optim.lr": 0.003}, {"optim.lr": 1.0e12}])
    res = run_sweep(s, tmp_path / "out", executor=LocalExecutor(workers=2), aggregate=False)
    assert set(res.records) == {p.id for p in s.expand()}
    assert sorted(res.failed) == ["lr=10000000000.0", "lr=1000000000000.0"]
    assert all("TrainingDiverged" in res.records[p]["error"] for p in res.failed)
    pids = {r["pid"] for r in res.records.values()}
    assert os.getpid() not in pids and len(pids) == 2
    assert res.records["lr=0.003"]["status"] == "done"
    assert Run(tmp_path / "out" / "runs" / "lr=0.003").eval_summary()["icl_score"]["baseline"] == "least_squares"
    assert auto_workers(s.expand()) >= 1
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        LocalExecutor(workers=0)
    with pytest.raises(ValueError, match="unknown executor"):
        make_executor("threads")


def test_ray_executor_on_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray")
    from hookedicl.sweep import RayExecutor

    # each point declares both CPUs: the two tasks run one after the other on one Ray worker
    s = spec(points=[{"optim.lr": 0.003}, DIVERGES], grid={"seed": [0]}, resources={"num_cpus": 2})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = run_sweep(s, tmp_path / "out", executor=RayExecutor())
        assert ray.is_initialized()  # a Ray instance the caller started is left running
    finally:
        ray.shutdown()
    good, bad = "lr=0.003__seed=0", "lr=10000000000.0__seed=0"
    assert res.records[good]["status"] == "done" and res.records[good]["pid"] != os.getpid()
    assert res.failed == [bad] and "TrainingDiverged" in res.records[bad]["error"]
    df = pd.read_csv(tmp_path / "out" / "results.csv").set_index("point")
    assert df.loc[good, "status"] == "done" and df.loc[bad, "status"] == "failed"


# ----------------------------------------------------------------------------- shipped configs
def test_shipped_sweeps_expand_and_cover_the_zoo():
    for name, n in (("example", 4), ("zoo_cpu", 48), ("zoo_gpu", 24)):
        pts = SweepSpec.load(CONFIGS / f"{name}.yaml").expand()
        assert len(pts) == n, name
    cpu = SweepSpec.load(CONFIGS / "zoo_cpu.yaml").expand()
    assert {p.config.model.arch for p in cpu} == set(CAMPBELL_ZOO) and len(CAMPBELL_ZOO) == 12
    assert {p.config.seed for p in cpu} == {0, 1}
    assert {(p.config.task.name, p.config.eval.score_baseline) for p in cpu} == {
        ("linear_regression", "least_squares"), ("sparse_linear_regression", "lasso"),
    }
    c = cpu[0].config
    assert (c.task.n_dims, c.model.n_layers, c.model.d_model, c.threads) == (5, 4, 64, 1)
    gpu = SweepSpec.load(CONFIGS / "zoo_gpu.yaml").expand()
    g = gpu[0].config
    assert (g.model.n_layers, g.model.d_model, g.model.n_heads, g.task.n_dims, g.task.n_points) == (12, 256, 8, 20, 41)
    assert (g.optim.name, g.optim.lr, g.batch_size, g.steps, g.device) == ("adam", 1e-4, 64, 500_000, "cuda")
    assert (gpu[0].num_gpus, gpu[0].num_cpus) == (1.0, 4.0)


def test_ray_connection_failure_is_one_line_with_what_to_try(tmp_path):
    pytest.importorskip("ray")
    import socket

    from ray.exceptions import AuthenticationError

    from hookedicl.sweep.executors import ray_connection_error

    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "f.yaml").write_text(yaml.safe_dump({"name": "t", "base": copy.deepcopy(TINY), "grid": {"seed": [0]}}))
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["sweep", str(tmp_path / "f.yaml"), "--out", str(tmp_path / "out"), "--executor", "ray",
                              "--address", f"127.0.0.1:{port}"])
    assert time.perf_counter() - t0 < 30  # refused at once, not after Ray's minutes of retries
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 2 and lines[0].startswith("sweep t: 1 points")  # the plan, then one error line
    line = lines[1]
    assert line.startswith(f"error: could not connect to the Ray cluster at '127.0.0.1:{port}': nothing accepts connections")
    assert "RAY_AUTH_MODE" in line and "check the address" in line and "Traceback" not in res.output

    msg = ray_connection_error("127.0.0.1:6379", AuthenticationError("Unauthenticated: no token presented"), "2.60.0")
    assert "\n" not in msg and "AuthenticationError: Unauthenticated: no token presented;" in msg
    assert "RAY_AUTH_TOKEN" in msg and "RAY_AUTH_MODE=disabled" in msg and "Ray version (here 2.60.0)" in msg
    local = ray_connection_error(None, RuntimeError("raylet died\nlong details"))
    assert local.startswith("could not start a local Ray instance: RuntimeError: raylet died; try: ") and "--executor local" in local
