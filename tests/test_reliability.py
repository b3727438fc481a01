"""Crash safety and failure handling of training runs: SIGKILL at random moments, corrupted
checkpoints, NaN/inf losses and gradients, locks, unwritable or full output locations."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from hookedicl.models import HookedICLModel
from hookedicl.training import Run, RunLockedError, TrainConfig, TrainingDiverged, train
from hookedicl.training.checkpoints import _index, _verify, latest_good
from hookedicl.training.recorder import read_index
from hookedicl.training.run import read_metrics, run_lock

KILL = {
    "name": "kill", "seed": 3, "steps": 300, "batch_size": 8, "threads": 1,
    "model": {"arch": "gpt2", "d_model": 16, "n_layers": 2, "n_heads": 2},
    "task": {"name": "linear_regression", "n_dims": 3, "n_points": 6},
    "optim": {"name": "adamw", "lr": 3e-3, "warmup_steps": 10, "schedule": "cosine"},
    "log": {"every": 5, "progress": False},
    "checkpoint": {"every": 10, "keep": 2},
    "capture": {"hooks": ["blocks.*.hook_resid_post"], "every": 10, "n_prompts": 4},
    "eval": {"n_prompts": 16, "batch_size": 16},
}


def _check_run_consistent(path: Path) -> None:
    """What a reader may rely on at any moment: a verified checkpoint, clean metrics, shards."""
    ckpts = path / "checkpoints"
    entry = latest_good(ckpts)
    assert entry is not None, "no loadable checkpoint"
    for e in _index(ckpts):  # the index never names a missing or partial file
        assert _verify(ckpts, e) is None, e
    Run(path).load_model()
    steps = [r["step"] for r in read_metrics(path / "metrics.jsonl")]
    assert steps == sorted(set(steps)), f"duplicated or unordered metrics lines: {steps}"
    store = Run(path).activations
    for e in read_index(path / "activations"):
        store.load(e["step"])  # verifies the checksum


def _train_cmd(config: Path, out: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "hookedicl.cli", "train", str(config), "--out", str(out)] + (["--resume"] if resume else [])


def _last_logged_step(path: Path) -> int:
    rows = read_metrics(path / "metrics.jsonl")
    return rows[-1]["step"] if rows else 0


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path):
    """Kill the training process at random steps (and random moments around them: mid-step,
    mid-checkpoint, mid-shard, mid-metrics line), check the directory after every kill, resume,
    and compare with an uninterrupted run bit for bit."""
    config = tmp_path / "kill.yaml"
    config.write_text(yaml.safe_dump(KILL))
    ref = train(TrainConfig.model_validate(KILL), tmp_path / "ref")
    out, rng, kills = tmp_path / "killed", random.Random(0), 0
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for trial in range(4):
        target = rng.randint(60 * trial + 15, 60 * trial + 55)  # one band of steps per trial
        proc = subprocess.Popen(_train_cmd(config, out, resume=trial > 0), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if (out / "checkpoints" / "index.json").exists() and _last_logged_step(out) >= target:
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.03))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read().decode()[-2000:]
        proc.stderr.close()
        _check_run_consistent(out)
    assert kills == 4, "a kill did not land during training"
    done = subprocess.run(_train_cmd(config, out, resume=True), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    _check_run_consistent(out)
    got, want = Run(out), ref
    assert got.metrics()["step"].tolist() == want.metrics()["step"].tolist()
    assert got.metrics()["loss"].tolist() == want.metrics()["loss"].tolist()
    assert got.activations.steps == want.activations.steps
    for step in want.activations.steps:
        a, b = got.activations.load(step), want.activations.load(step)
        for hook, t in b["act"].items():
            assert torch.equal(a["act"][hook], t), (step, hook)
    for (k, va), vb in zip(got.load_model().state_dict().items(), want.load_model().state_dict().values()):
        assert torch.equal(va, vb), k
    assert not list(out.rglob("*.tmp")) and not (out / ".lock").exists()


TINY = {
    "name": "tiny", "steps": 30, "batch_size": 8, "threads": 1,
    "model": {"arch": "gpt2", "d_model": 16, "n_layers": 2, "n_heads": 2},
    "task": {"name": "linear_regression", "n_dims": 3, "n_points": 6},
    "optim": {"name": "adamw", "lr": 3e-3, "schedule": "constant"},
    "log": {"every": 5, "progress": False},
    "checkpoint": {"every": 10},
    "eval": {"n_prompts": 16, "batch_size": 16},
}


def cfg(**over) -> TrainConfig:
    d = json.loads(json.dumps(TINY))
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return TrainConfig.model_validate(d)


def test_corrupted_newest_checkpoint_falls_back_and_says_so(tmp_path):
    full = train(cfg(), tmp_path / "full")
    run = train(cfg(steps=20), tmp_path / "r")
    f = run.checkpoint_dir / "step_0000020.safetensors"
    f.write_bytes(f.read_bytes()[:-7])  # truncated
    with pytest.raises(ValueError, match="corrupted"):
        run.load_model(20)
    with pytest.warns(UserWarning, match="skipping checkpoint at step 20.*falling back"):
        resumed = train(cfg(), tmp_path / "r", resume=True)
    assert resumed.metrics()["loss"].tolist() == full.metrics()["loss"].tolist()


class _Inject:
    """Patch HookedICLModel.forward so that chosen training forwards (0-based calls) go bad."""

    def __init__(self, monkeypatch, calls: set[int], where: str = "loss") -> None:
        self.calls, self.n, self.where = calls, 0, where
        original = HookedICLModel.forward

        def forward(model, *a, **k):
            out = original(model, *a, **k)
            i, self.n = self.n, self.n + 1
            if i not in self.calls:
                return out
            if self.where == "loss":
                return out * float("nan")
            out = out.clone()
            out.register_hook(lambda g: torch.full_like(g, float("inf")))  # finite loss, inf gradients
            return out

        monkeypatch.setattr(HookedICLModel, "forward", forward)


@pytest.mark.parametrize("where,word", [("loss", "loss became nan"), ("grad", "gradient norm became")])
def test_nonfinite_stops_naming_the_step_and_stays_resumable(tmp_path, monkeypatch, where, word):
    c = cfg()
    _Inject(monkeypatch, {13}, where)
    with pytest.raises(TrainingDiverged, match=f"{word}.* at step 13"):
        train(c, tmp_path / "r")
    run = Run(tmp_path / "r")
    assert run.checkpoints == [10] and not (run.path / ".lock").exists()
    assert [r["step"] for r in read_metrics(run.path / "metrics.jsonl")] == [5, 10]
    monkeypatch.undo()
    resumed = train(c, tmp_path / "r", resume=True)
    assert resumed.checkpoints[-1] == 30
    assert resumed.metrics()["loss"].tolist() == train(c, tmp_path / "clean").metrics()["loss"].tolist()


def test_skip_policy_drops_bad_batches_and_counts_them(tmp_path, monkeypatch):
    inject = _Inject(monkeypatch, {3, 17}, "loss")
    run = train(cfg(optim={"on_nonfinite": "skip", "max_skipped": 2}), tmp_path / "r")
    m = run.metrics()
    assert m["skipped"].tolist() == [1, 1, 1, 2, 2, 2] and m["loss"].notna().all()
    assert all(torch.isfinite(t).all() for t in run.load_model().state_dict().values())
    inject.n, inject.where = 0, "grad"
    inject.calls = {1, 2, 4}
    with pytest.raises(TrainingDiverged, match=r"gradient norm became (inf|nan) at step 4 after 2 skipped batches \(optim.max_skipped\)"):
        train(cfg(optim={"on_nonfinite": "skip", "max_skipped": 2}), tmp_path / "r2")


def test_skip_policy_resumes_with_its_count(tmp_path, monkeypatch):
    c = cfg(optim={"on_nonfinite": "skip", "max_skipped": 5})
    _Inject(monkeypatch, {3, 25}, "loss")
    full = train(c, tmp_path / "full")
    monkeypatch.undo()
    _Inject(monkeypatch, {3}, "loss")
    train(c.model_copy(update={"steps": 20}), tmp_path / "part")
    monkeypatch.undo()
    _Inject(monkeypatch, {5}, "loss")  # step 25 is the 6th forward after resuming at step 20
    resumed = train(c, tmp_path / "part", resume=True)
    assert resumed.metrics()["skipped"].tolist() == full.metrics()["skipped"].tolist() == [1, 1, 1, 1, 1, 2]
    assert resumed.metrics()["loss"].tolist() == full.metrics()["loss"].tolist()


def test_a_live_lock_stops_a_second_writer_and_a_stale_one_is_taken_over(tmp_path):
    c = cfg(steps=5)
    out = tmp_path / "r"
    out.mkdir()
    with run_lock(out):  # this (live) process holds the run
        with pytest.raises(RunLockedError, match=f"being written by process {os.getpid()}"):
            train(c, out)
    assert not (out / ".lock").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(str(dead.pid))  # a writer that died without cleaning up
    train(c, out)
    assert not (out / ".lock").exists()


def test_unwritable_location_is_reported_before_training(tmp_path):
    with pytest.raises(ValueError, match="/proc is not writable"):
        train(cfg(), Path("/proc/hookedicl-run"))


def test_full_disk_is_reported_before_training(tmp_path, monkeypatch):
    import shutil

    from hookedicl.training.run import estimate_run_bytes

    c = cfg(capture={"hooks": ["blocks.*.hook_resid_post"], "every": 1})
    need = estimate_run_bytes(c)
    real = train(c, tmp_path / "real")
    written = sum(f.stat().st_size for f in real.path.rglob("*") if f.is_file())
    assert written <= need < 4 * written  # an upper estimate, not a wild one
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=need // 2))
    with pytest.raises(ValueError, match=r"not enough free space .* needs about .* MiB"):
        train(c, tmp_path / "full")
    assert not (tmp_path / "full").exists()


def test_stale_temporaries_are_removed_on_resume(tmp_path):
    run = train(cfg(steps=10), tmp_path / "r")
    stale = run.checkpoint_dir / ".step_0000020.safetensors.abc123.tmp"
    stale.write_bytes(b"partial")
    train(cfg(steps=20), tmp_path / "r", resume=True)
    assert not stale.exists()
