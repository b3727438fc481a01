"""The `hookedicl` command line: archs, hooks, train/eval/report, demo (tiny), errors."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

import hookedicl as hi
from hookedicl.cli import app

runner = CliRunner()


def test_archs_lists_every_preset_with_params():
    res = runner.invoke(app, ["archs", "--n-dims", "5"])
    assert res.exit_code == 0, res.output
    for name in hi.list_architectures():
        assert f"\n{name} " in "\n" + res.output
    assert "12 x [attention | mlp]" in res.output


def test_hooks_prints_names_and_shapes():
    res = runner.invoke(app, ["hooks", "mambaformer"])
    assert res.exit_code == 0, res.output
    assert "blocks.0.mixer.hook_ssm_state" in res.output and "[2, 8, 128, 16]" in res.output
    assert "blocks.1.attn.hook_pattern" in res.output


def test_unknown_arch_is_a_clear_error():
    res = runner.invoke(app, ["hooks", "gpt3"])
    assert res.exit_code == 2
    assert "unknown architecture 'gpt3'" in res.output


def test_train_eval_report(tmp_path):
    cfg = {
        "name": "cli", "steps": 6, "batch_size": 8,
        "model": {"arch": "llama", "d_model": 16, "n_layers": 1, "n_heads": 2},
        "task": {"name": "linear_regression", "n_dims": 3, "n_points": 5},
        "log": {"every": 3, "progress": False}, "checkpoint": {"every": 3},
        "eval": {"n_prompts": 32, "batch_size": 32},
    }
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", str(p), "--out", str(out)]).exit_code == 0
    res = runner.invoke(app, ["eval", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert set(summary["icl_score"]) >= {"value", "ci_low", "ci_high", "baseline"}
    assert summary["icl_score"]["baseline"] == "least_squares"
    assert set(summary["normalized_errors"]) >= {"model", "least_squares", "ridge", "gd", "averaging"}
    assert len(summary["normalized_errors"]["model"]) == 5
    res = runner.invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    page = (out / "report" / "index.html").read_text()
    assert "ICL regression score" in page and (out / "report" / "error_curves.png").exists()
    # fine-tune it
    res = runner.invoke(app, ["train", str(p), "--out", str(tmp_path / "ft"), "--init-from", f"{out}:3"])
    assert res.exit_code == 0, res.output
    assert hi.Run(tmp_path / "ft").lineage["parents"][0]["step"] == 3
    res = runner.invoke(app, ["train", str(p), "--out", str(tmp_path / "ft2"), "--init-from", f"{out}:4"])
    assert res.exit_code == 2 and "no checkpoint at step 4" in res.output


def test_bad_config_exits_with_message_and_writes_nothing(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"task": {"name": "linear_regression", "n_points": -3}}))
    res = runner.invoke(app, ["train", str(p), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "n_points" in res.output
    assert not (tmp_path / "run").exists()


def test_demo_runs_end_to_end_on_a_tiny_budget(tmp_path):
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--out", str(out), "--steps", "20", "--n-prompts", "64"])
    assert res.exit_code == 0, res.output
    assert "ICL score vs least_squares" in res.output
    assert (out / "report" / "index.html").exists()
    assert (out / "activations" / "index.json").exists()
