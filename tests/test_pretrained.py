"""Shipped pretrained checkpoints: cards, checksums, loading, export as a run directory, the
`hookedicl pretrained` command, and the training script end to end on a tiny config."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import hookedicl as hi
from hookedicl.cli import app
from hookedicl.evaluation.run_eval import evaluate_run
from hookedicl.pretrained import (
    CARD,
    METRICS,
    WEIGHTS,
    PretrainedCard,
    PretrainedIntegrityError,
    export_pretrained,
    list_pretrained,
    load_pretrained,
    package_run,
    pretrained_card,
    train_seconds_from_metrics,
)
from hookedicl.training import Run, TrainConfig

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "hookedicl" / "pretrained"
SHIPPED = ("gpt2-linreg-d5", "llama-linreg-d5", "mamba-linreg-d5", "hybrid-linreg-d5", "mambaformer-linreg-d5")
ARCHS = {"gpt2-linreg-d5": "gpt2", "llama-linreg-d5": "llama", "mamba-linreg-d5": "mamba", "hybrid-linreg-d5": "standard_hybrid",
         "mambaformer-linreg-d5": "mambaformer"}
runner = CliRunner()


# ------------------------------------------------------------------------------ shipped ones
def test_the_five_checkpoints_are_shipped_with_their_configs():
    assert set(SHIPPED) <= set(list_pretrained())
    assert {p.stem for p in (PKG / "configs").glob("*.yaml")} == set(list_pretrained())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_card_describes_its_weights(name):
    card = pretrained_card(name)
    folder = PKG / name
    assert card.name == name and card.arch == ARCHS[name]
    assert 50_000 < (folder / WEIGHTS).stat().st_size < 2_000_000  # at most ~300k fp32 parameters
    cfg = card.train_config
    assert cfg.task.name == "linear_regression" and cfg.task.n_dims == 5 and cfg.task.n_points == 11
    assert cfg.task.kwargs.get("noise_std", 0.0) == 0.0
    # the config file in the repository reproduces the shipped model
    assert TrainConfig.load(PKG / "configs" / f"{name}.yaml").model_dump() == cfg.model_dump()
    assert card.steps == cfg.steps and card.train_seconds > 0
    s = card.icl_score
    assert s["baseline"] == "least_squares" and s["n_prompts"] == cfg.eval.n_prompts
    assert s["ci_low"] <= s["value"] <= s["ci_high"]
    assert card.eval_summary["icl_score"]["value"] == s["value"] and card.eval_summary["step"] == card.steps
    assert len([json.loads(line) for line in (folder / METRICS).read_text().splitlines()]) > 0
    model = load_pretrained(name)
    assert model.n_params == card.n_params and not model.training
    from safetensors import safe_open

    with safe_open(str(folder / WEIGHTS), "pt") as f:  # shipped under today's parameter names
        assert set(f.keys()) == set(model.state_dict())
    assert model.spec.n_dims == 5


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_scores_what_its_card_says(name):
    """The weights are the ones measured: a fresh evaluation on other prompts agrees with the card."""
    card = pretrained_card(name)
    model = hi.load_pretrained(name) if hasattr(hi, "load_pretrained") else load_pretrained(name)
    task = card.train_config.build_task()
    B = hi.baselines
    res = hi.evaluate({"model": model, "least_squares": B.get("least_squares")}, task, n_prompts=192,
                      n_points=card.n_points, seed=99)
    score = res.icl_score("model", "least_squares")
    assert abs(score.value - card.icl_score["value"]) < 0.1, (score, card.icl_score)


def test_shipped_models_learn_in_context():
    """Every shipped model beats the zero predictor by a wide margin and improves with k."""
    for name in SHIPPED:
        card = pretrained_card(name)
        assert card.icl_score["ci_low"] > 0.5, (name, card.icl_score)
        err = card.eval_summary["normalized_errors"]["model"]
        assert err[-1] < 0.5 * err[0], (name, err)


# ------------------------------------------------------------------------------ errors, integrity
def test_unknown_and_bad_names_are_rejected():
    with pytest.raises(ValueError, match="unknown pretrained checkpoint 'gpt5'.*available: .*gpt2-linreg-d5"):
        load_pretrained("gpt5")
    with pytest.raises(ValueError, match="non-empty string"):
        pretrained_card("")
    with pytest.raises(ValueError, match="unknown pretrained checkpoint 'configs'"):
        pretrained_card("configs")  # the config folder is not a checkpoint


@pytest.fixture()
def copied_root(tmp_path):
    root = tmp_path / "pkg"
    shutil.copytree(PKG / "gpt2-linreg-d5", root / "gpt2-linreg-d5")
    return root


def test_corrupted_weights_fail_the_checksum(copied_root):
    path = copied_root / "gpt2-linreg-d5" / WEIGHTS
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PretrainedIntegrityError, match="corrupted: sha256"):
        load_pretrained("gpt2-linreg-d5", root=copied_root)
    with pytest.raises(PretrainedIntegrityError, match="corrupted"):
        export_pretrained("gpt2-linreg-d5", copied_root / "out", root=copied_root)
    assert not (copied_root / "out").exists()


def test_missing_weights_and_broken_cards(copied_root):
    folder = copied_root / "gpt2-linreg-d5"
    card = json.loads((folder / CARD).read_text())
    (folder / CARD).write_text(json.dumps({k: v for k, v in card.items() if k != "sha256"}))
    with pytest.raises(ValueError, match=r"missing field\(s\) \['sha256'\]"):
        pretrained_card("gpt2-linreg-d5", root=copied_root)
    (folder / CARD).write_text(json.dumps({**card, "colour": "blue"}))
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['colour'\]"):
        pretrained_card("gpt2-linreg-d5", root=copied_root)
    (folder / CARD).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        pretrained_card("gpt2-linreg-d5", root=copied_root)
    (folder / CARD).write_text(json.dumps(card))
    (folder / WEIGHTS).unlink()
    with pytest.raises(PretrainedIntegrityError, match="is missing"):
        load_pretrained("gpt2-linreg-d5", root=copied_root)


# ------------------------------------------------------------------------------ export
def test_export_is_an_ordinary_run_directory(tmp_path):
    run = export_pretrained("gpt2-linreg-d5", tmp_path / "run")
    card = pretrained_card("gpt2-linreg-d5")
    assert isinstance(run, Run) and run.checkpoints == [card.steps]
    assert run.config.model_dump() == card.train_config.model_dump()
    a, b = run.load_model(), load_pretrained("gpt2-linreg-d5")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert run.eval_summary()["icl_score"] == card.eval_summary["icl_score"]
    assert len(run.metrics()) > 0
    _, summary = evaluate_run(run, n_prompts=64)  # `hookedicl eval` accepts it
    assert summary["step"] == card.steps and summary["icl_score"]["value"] > 0.3
    with pytest.raises(ValueError, match="exists and is not an empty directory"):
        export_pretrained("gpt2-linreg-d5", tmp_path / "run")
    (tmp_path / "empty").mkdir()
    assert export_pretrained("mamba-linreg-d5", tmp_path / "empty").config.model.arch == "mamba"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "run"]  # no temporary directory left
    # resuming needs optimiser state, which is not shipped: a clear error; fine-tuning works
    longer = run.config.model_copy(update={"steps": card.steps + 2})
    with pytest.raises(ValueError, match="holds no optimiser state.*not resumed"):
        hi.train(longer, run.path, resume=True)
    assert run.checkpoints == [card.steps] and not (run.path / ".lock").exists()
    ft_cfg = run.config.model_copy(update={"steps": 2, "init_from": str(run.path), "curriculum": None})
    ft = hi.train(ft_cfg.model_copy(update={"log": ft_cfg.log.model_copy(update={"progress": False})}), tmp_path / "ft")
    assert ft.lineage["parents"][0]["step"] == card.steps


# ------------------------------------------------------------------------------ packaging a run
def _tiny_config(name: str = "tiny-linreg") -> dict:
    return {
        "name": name, "seed": 0, "steps": 8, "batch_size": 8, "threads": 1,
        "model": {"arch": "gpt2", "d_model": 16, "n_layers": 1, "n_heads": 2},
        "task": {"name": "linear_regression", "n_dims": 3, "n_points": 6},
        "log": {"every": 4, "progress": False}, "checkpoint": {"every": 4},
        "eval": {"n_prompts": 32, "baselines": ["least_squares"]},
    }


def test_package_run_round_trip(tmp_path):
    run = hi.train(TrainConfig.model_validate(_tiny_config()), tmp_path / "run")
    _, summary = evaluate_run(run)
    rows = run.metrics().to_dict("records")
    seconds = train_seconds_from_metrics(rows)
    card = package_run(run, description="  A tiny\n test model. ", eval_summary=summary, train_seconds=seconds,
                       root=tmp_path / "pkg")
    assert card.description == "A tiny test model."
    assert list_pretrained(tmp_path / "pkg") == ["tiny-linreg"]
    again = pretrained_card("tiny-linreg", root=tmp_path / "pkg")
    assert again == card and PretrainedCard.from_dict(card.to_dict()) == card
    assert card.steps == 8 and card.icl_score["value"] == summary["icl_score"]["value"]
    model = load_pretrained("tiny-linreg", root=tmp_path / "pkg")
    xs, ys = torch.randn(2, 6, 3), torch.randn(2, 6)
    torch.testing.assert_close(model(xs, ys), run.load_model()(xs, ys))
    with pytest.raises(ValueError, match="no icl_score"):
        package_run(run, description="x", eval_summary={**summary, "icl_score": None}, train_seconds=1.0, root=tmp_path / "p2")
    with pytest.raises(ValueError, match="name must be a plain folder name"):
        package_run(run, description="x", eval_summary=summary, train_seconds=1.0, name="configs", root=tmp_path / "p2")
    with pytest.raises(ValueError, match="description"):
        package_run(run, description=" ", eval_summary=summary, train_seconds=1.0, root=tmp_path / "p2")
    assert not (tmp_path / "p2").exists()


def test_train_seconds_from_metrics():
    rows = [{"step": 100, "steps_per_s": 50.0}, {"step": 300, "steps_per_s": 100.0}]
    assert train_seconds_from_metrics(rows) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="step 300 has no positive steps_per_s"):
        train_seconds_from_metrics([rows[0], {"step": 300, "steps_per_s": 0}])


def _script():
    spec = importlib.util.spec_from_file_location("train_pretrained", REPO / "scripts" / "train_pretrained.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_pretrained"] = module
    spec.loader.exec_module(module)
    return module


def test_training_script_end_to_end(tmp_path):
    """The script trains every config of a folder, evaluates it and writes loadable package data."""
    script = _script()
    configs = tmp_path / "configs"
    configs.mkdir()
    text = "# A one-block GPT-2 for testing the script.\n# Re-train with the script.\n" + yaml.safe_dump(_tiny_config())
    (configs / "tiny-linreg.yaml").write_text(text)
    assert script.description_of(configs / "tiny-linreg.yaml") == "A one-block GPT-2 for testing the script."
    args = ["--configs", str(configs), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "pkg")]
    assert script.main(args) == 0
    card = pretrained_card("tiny-linreg", root=tmp_path / "pkg")
    assert card.description == "A one-block GPT-2 for testing the script." and card.steps == 8
    assert card.train_config.model_dump() == TrainConfig.load(configs / "tiny-linreg.yaml").model_dump()
    load_pretrained("tiny-linreg", root=tmp_path / "pkg")
    with pytest.raises(SystemExit):
        script.main([*args, "--only", "nope"])
    (configs / "bad.yaml").write_text(yaml.safe_dump(_tiny_config("other-name")))
    with pytest.raises(ValueError, match="must equal the file name"):
        script.main([*args, "--only", "bad"])


# ------------------------------------------------------------------------------ CLI
def test_cli_lists_exports_and_prints_cards(tmp_path):
    res = runner.invoke(app, ["pretrained"])
    assert res.exit_code == 0, res.output
    for name in SHIPPED:
        assert name in res.output
    assert f"{pretrained_card('gpt2-linreg-d5').icl_score['value']:.3f}" in res.output
    res = runner.invoke(app, ["pretrained", "--card", "mamba-linreg-d5"])
    assert res.exit_code == 0 and json.loads(res.output)["arch"] == "mamba"
    res = runner.invoke(app, ["pretrained", "--export", "llama-linreg-d5", str(tmp_path / "llama")])
    assert res.exit_code == 0, res.output
    assert Run(tmp_path / "llama").config.model.arch == "llama"
    res = runner.invoke(app, ["pretrained", "--export", "nope", str(tmp_path / "x")])
    assert res.exit_code == 2 and "unknown pretrained checkpoint 'nope'" in res.output
    res = runner.invoke(app, ["pretrained", "--export", "llama-linreg-d5", str(tmp_path / "y"), "--card", "x"])
    assert res.exit_code == 2 and "not both" in res.output
