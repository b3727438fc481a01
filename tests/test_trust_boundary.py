"""A run directory is untrusted input: crafted run directories must not make hookedicl read or
write outside them, lose rows or checkpoints silently, or report on the wrong model."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import hookedicl as hi
from hookedicl.analysis import analyze_run
from hookedicl.cli import app
from hookedicl.evaluation.run_eval import evaluate_run
from hookedicl.layout import UnsafePathError
from hookedicl.report import write_report
from hookedicl.training import Run, RunLockedError, TrainConfig, train
from hookedicl.training.run import SpecMismatchError, preflight, read_metrics, run_lock

TINY = {
    "name": "tb", "steps": 20, "batch_size": 8, "threads": 1, "seed": 1,
    "model": {"arch": "gpt2", "d_model": 16, "n_layers": 1, "n_heads": 2},
    "task": {"name": "linear_regression", "n_dims": 3, "n_points": 5},
    "log": {"every": 2, "progress": False},
    "checkpoint": {"every": 10},
    "capture": {"hooks": ["blocks.0.hook_resid_post"], "every": 10, "n_prompts": 2},
    "eval": {"n_prompts": 16, "batch_size": 16, "baselines": ["least_squares"]},
}


def cfg(**over) -> TrainConfig:
    return TrainConfig.model_validate({**TINY, **over})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = train(cfg(), tmp_path_factory.mktemp("src") / "run")
    evaluate_run(run)
    return run.path


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A fresh copy of a trained, evaluated run, inside tmp_path/runs (victims live beside it)."""
    dst = tmp_path / "runs" / "run"
    shutil.copytree(trained, dst)
    return dst


@pytest.fixture
def victim(tmp_path) -> Path:
    v = tmp_path / "victim.txt"
    v.write_text("precious")
    return v


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and not p.is_symlink()}


# --------------------------------------------------------------------------- escapes
def test_activation_index_escape_is_refused_on_resume(run, victim):
    rel = os.path.relpath(victim, run / "activations")
    _edit_json(run / "activations" / "index.json", lambda ix: ix[-1].update(file=rel))
    with pytest.raises(UnsafePathError, match=r"activations/index.json entry \d+ \(file\)"):
        train(cfg(steps=30), run, resume=True)
    assert victim.read_text() == "precious"


def test_checkpoint_index_escape_is_refused_before_pruning(run, victim):
    rel = os.path.relpath(victim, run / "checkpoints")
    _edit_json(run / "checkpoints" / "index.json", lambda ix: ix[0].update(model=rel))
    with pytest.raises(UnsafePathError, match=r"checkpoints/index.json entry 0 \(model\)"):
        train(cfg(steps=30), run, resume=True)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("sub", ["eval", "report", "analysis", "checkpoints", "activations"])
def test_symlinked_run_entries_are_refused(run, tmp_path, sub):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = run / sub
    if target.exists():
        shutil.rmtree(target)
    target.symlink_to(elsewhere, target_is_directory=True)
    for action in (lambda: evaluate_run(run), lambda: write_report(run), lambda: train(cfg(steps=30), run, resume=True),
                   lambda: analyze_run(run, "lens", n_prompts=8)):
        with pytest.raises(UnsafePathError, match=f"{sub} is a symlink"):
            action()
    assert list(elsewhere.iterdir()) == []


def test_symlinked_report_file_is_replaced_not_written_through(run, victim):
    write_report(run)
    (run / "report" / "training_loss.png").unlink()
    (run / "report" / "training_loss.png").symlink_to(victim)
    write_report(run)
    assert victim.read_text() == "precious"
    p = run / "report" / "training_loss.png"
    assert not p.is_symlink() and p.read_bytes()[:4] == b"\x89PNG"


def test_symlinked_analysis_figure_is_not_copied_into_report(run, victim):
    (run / "analysis").mkdir()
    (run / "analysis" / "leak.png").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="leak.png is a symlink"):
        write_report(run)
    assert not (run / "report" / "leak.png").exists()


def test_index_pointing_at_another_runs_weights_is_refused(run, trained, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    rel = os.path.relpath(other / "checkpoints" / "step_0000020.safetensors", run / "checkpoints")
    _edit_json(run / "checkpoints" / "index.json", lambda ix: ix[-1].update(model=rel))
    with pytest.raises(UnsafePathError, match="not a plain path"):
        evaluate_run(run)
    # a weights file copied in under another step's name: its own metadata gives it away
    ckpt = run / "checkpoints"
    _edit_json(ckpt / "index.json", lambda ix: ix[-1].update(model="step_0000020.safetensors"))
    shutil.copyfile(ckpt / "step_0000010.safetensors", ckpt / "step_0000020.safetensors")
    digest = hashlib.sha256((ckpt / "step_0000020.safetensors").read_bytes()).hexdigest()
    _edit_json(ckpt / "index.json", lambda ix: ix[-1].update(sha256_model=digest))
    with pytest.raises(ValueError, match="holds the weights of step 10, but .* lists it as step 20"):
        evaluate_run(run)


@pytest.mark.parametrize("name", ["../../x", "a/b", "/abs", ".hidden", "", "x\x00y"])
def test_run_and_sweep_names_are_one_path_component(name):
    with pytest.raises(ValueError, match="name"):
        cfg(name=name)
    from hookedicl.sweep import SweepSpec

    with pytest.raises(ValueError, match="name"):
        SweepSpec.model_validate({"name": name, "base": TINY})


# ----------------------------------------------------------------------- silent loss
def _corrupt_metrics_line(run: Path, line: int = 3, text: str = '{"step": 6, "loss": 0.5') -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    lines[line - 1] = text
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return rows


@pytest.mark.parametrize("bad", ['{"step": 6, "loss": 0.5', '{"loss": 0.5}', '[1, 2]', '{"step": true}'])
def test_malformed_metrics_line_is_named_and_repair_is_explicit(run, bad):
    rows = _corrupt_metrics_line(run, 3, bad)
    with pytest.raises(ValueError, match=r"metrics.jsonl line 3: .*--repair-metrics"):
        Run(run).metrics()
    with pytest.raises(ValueError, match=r"metrics.jsonl line 3"):
        write_report(run)
    with pytest.raises(ValueError, match=r"metrics.jsonl line 3"):
        train(cfg(steps=30), run, resume=True)
    with pytest.warns(UserWarning, match="line 3"):
        got = Run(run).metrics(repair=True)["step"].tolist()
    assert got == [r["step"] for i, r in enumerate(rows) if i != 2]


def test_resume_truncates_by_step_and_keeps_every_earlier_row(run):
    rows = read_metrics(run / "metrics.jsonl")  # steps 2..20
    # the run "crashed" after step 20's checkpoint was dropped: resume from step 10
    _edit_json(run / "checkpoints" / "index.json", lambda ix: ix.pop())
    train(cfg(steps=20), run, resume=True)
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [r["step"] for r in rows]
    assert [r["loss"] for r in read_metrics(run / "metrics.jsonl")][:5] == [r["loss"] for r in rows][:5]


@pytest.mark.parametrize("damage", ["missing", "empty", "corrupt", "garbage"])
def test_resume_never_restarts_from_zero_on_its_own(run, damage):
    ckpt = run / "checkpoints"
    if damage == "missing":
        (ckpt / "index.json").unlink()
    elif damage == "empty":
        (ckpt / "index.json").write_text("[]")
    elif damage == "corrupt":
        for f in ckpt.glob("*.safetensors"):
            f.write_bytes(b"\0" * 16)
    else:
        (ckpt / "index.json").write_text("not json")
    before = _tree(run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"cannot resume .*--restart"):
            train(cfg(), run, resume=True)
    assert _tree(run) == before
    with pytest.warns(UserWarning, match="restarting"):
        again = train(cfg(), run, resume=True, restart=True)
    assert again.checkpoints == [10, 20] and read_metrics(run / "metrics.jsonl")[0]["step"] == 2


def test_eval_outputs_are_written_as_a_set(run, monkeypatch):
    import hookedicl.evaluation.run_eval as re_

    before = _tree(run / "eval")

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(re_, "atomic_write_json", full_disk)  # curves.csv is staged, summary.json fails
    with pytest.raises(OSError):
        evaluate_run(run, n_prompts=8)
    assert _tree(run / "eval") == before
    assert not [p for p in (run / "eval").iterdir() if p.name.endswith(".tmp")]


def test_malformed_index_names_the_file_and_field(run):
    (run / "checkpoints" / "index.json").write_text("{")
    with pytest.raises(ValueError, match=r"checkpoints/index.json is not valid JSON"):
        evaluate_run(run)
    (run / "checkpoints" / "index.json").write_text('[{"step": 10, "model": "a", "state": "b", "sha256_state": "0"}]')
    with pytest.raises(ValueError, match=r"index.json entry 0 lacks \['sha256_model'\]"):
        evaluate_run(run)
    (run / "activations" / "index.json").write_text('[{"file": "x"}]')
    with pytest.raises(ValueError, match=r"activations/index.json entry 0 lacks \['step'"):
        Run(run).activations


# ---------------------------------------------------------------------- silent wrong
def test_edited_architecture_is_a_named_error(run):
    text = (run / "config.yaml").read_text().replace("arch: gpt2", "arch: llama")
    (run / "config.yaml").write_text(text)
    for action in (lambda: evaluate_run(run), lambda: write_report(run), lambda: analyze_run(run, "lens", n_prompts=8)):
        with pytest.raises(SpecMismatchError, match="holds a gpt2 model, but config.yaml describes llama"):
            action()


def test_the_lock_is_taken_before_any_check(tmp_path, monkeypatch):
    import hookedicl.training.trainer as T

    out = tmp_path / "r"
    out.mkdir()
    seen = []
    monkeypatch.setattr(T, "prepare_run_dir", lambda *a, **k: seen.append((out / ".lock").exists()) or None)
    with run_lock(out):  # another writer holds the run
        with pytest.raises(RunLockedError):
            train(cfg(), out)
    assert seen == [] and list(out.iterdir()) == []
    monkeypatch.undo()
    train(cfg(steps=2), out)
    assert Run(out).checkpoints == [2]


def test_safetensors_headers_are_deterministic(tmp_path):
    code = (
        "import torch,sys; from hookedicl.io import save_safetensors; "
        "print(save_safetensors(sys.argv[1], {'b': torch.arange(3.), 'a': torch.ones(2)}, "
        "{'step': '1', 'spec': '{}', 'name': 'x', 'z': 'q'}))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    digests = {subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{i}.st")], env=env, capture_output=True,
                              text=True, check=True).stdout for i in range(4)}
    assert len(digests) == 1


# ---------------------------------------------------------------------------- config
@pytest.mark.parametrize(("text", "field"), [
    ("steps: true", "steps"), ("steps: 1:30", "steps"), ("steps: 5\nsteps: 6", "duplicate key 'steps'"),
    ("device: nonsense", "device"), ("optim: {lr: .inf}", "optim.lr"), ("seed: 1180591620717411303424", "seed"),
    ("batch_size: 1e9", "batch_size"), ("model: {n_layers: 200000}", "model.n_layers"),
    ("capture: {hooks: [hook_embed], positions: [1000000]}", "capture.positions"), ("name: ../../x", "name"),
    ("a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")),
     "aliases"), ("steps: !!python/object:os.system x", "constructor"), ("steps: [1, 2", "invalid YAML"),
])
def test_cli_names_every_bad_config_on_one_line_and_writes_nothing(tmp_path, text, field):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["train", str(p), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and field in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_memory_preflight_refuses_with_the_estimate_and_the_limit(tmp_path):
    big = cfg(batch_size=2**24, task={"name": "linear_regression", "n_dims": 3, "n_points": 2**12})
    with pytest.raises(ValueError, match=r"cannot fit in memory: training needs about [\d.]+ GiB .* has [\d.]+ GiB available"):
        preflight(big)
    with pytest.raises(ValueError, match="cannot fit in memory"):
        train(big, tmp_path / "big")
    assert not (tmp_path / "big").exists()


def test_spec_param_count_matches_the_built_model():
    for arch in hi.list_architectures():
        spec = hi.models.preset(arch, n_dims=3, d_model=16, n_layers=2, n_heads=2)
        with torch.device("meta"):
            assert spec.n_params == hi.models.HookedICLModel(spec).n_params, arch


def test_cli_os_errors_are_one_line(run, monkeypatch):
    import hookedicl.report as R

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(run / "report" / "index.html"))

    monkeypatch.setattr(R, "atomic_write_text", denied)
    res = CliRunner().invoke(app, ["report", str(run)])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "Permission denied" in res.output
    assert not (run / "report" / "index.html").exists()


# ------------------------------------------------------------------------ API inputs
@pytest.mark.parametrize("arch", ["gpt2", "mamba", "mambaformer"])
def test_model_inputs_are_refused_by_name(arch):
    torch.manual_seed(0)
    model = hi.build_model(arch, n_dims=3, d_model=8, n_layers=1, n_heads=2)
    xs, ys = torch.randn(2, 4, 3), torch.randn(2, 4)
    for dt in (torch.float64, torch.float16, torch.bfloat16):
        with pytest.raises(ValueError, match="dtype"):
            model(xs.to(dt), ys.to(dt))
    with pytest.raises(ValueError, match="empty prompts"):
        model.run_with_cache(xs[:, :0], ys[:, :0])
    with pytest.raises(ValueError, match="magnitude"):
        model(xs * 1e30, ys)


@pytest.mark.parametrize("bad", [torch.ones(3, dtype=torch.bool), torch.ones(3, dtype=torch.complex64)])
def test_icl_score_refuses_bool_and_complex(bad):
    with pytest.raises(ValueError, match="real numbers"):
        hi.icl_regression_score(bad, torch.ones(3), torch.ones(3))


def test_written_config_round_trips_through_the_strict_loader(run):
    assert TrainConfig.load(run / "config.yaml").model_dump() == cfg().model_dump()
    assert yaml.safe_load((run / "config.yaml").read_text())["name"] == "tb"
