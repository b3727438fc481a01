"""Fuzz the way in: YAML config text -> strict loader -> validation -> pre-flight (device,
memory), each case in a forked child under a 1 GiB address-space cap and a 10 s CPU-time cap.

Every case must end in a named ValueError or a config that passes pre-flight; none may raise
anything else (a traceback), die, pass 1 GiB of new memory or use 10 s of CPU. The limit is on
CPU time, not wall time, so a busy machine cannot fail the test (a 120 s wall guard catches a
case that blocks without computing). Also fuzzes the
model and baseline APIs: no raw exception, no silent non-finite output.

`HYPOTHESIS_PROFILE=explore pytest tests/test_preflight_fuzz.py -s` prints the counts.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import select
import signal
import time
import warnings

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hookedicl as hi
from hookedicl import baselines as B

CAP = 1 << 30  # bytes of new address space a case may take
LIMIT_S = 10.0  # CPU seconds a case may use
WALL_GUARD_S = 120.0

BASE = {
    "name": "fuzz", "steps": 2, "batch_size": 4, "threads": 1,
    "model": {"arch": "gpt2", "d_model": 8, "n_layers": 1, "n_heads": 2},
    "task": {"name": "linear_regression", "n_dims": 3, "n_points": 4},
    "log": {"every": 1, "progress": False}, "checkpoint": {"every": 1},
    "eval": {"n_prompts": 8, "batch_size": 8},
}

HUGE = st.sampled_from([10**30, 2**70, 200_000, 10**9, 2**31, -1, 0, 1.5, 1e9, float("inf"), float("nan"), True, "1:30", "yes"])
FIELDS = [
    "steps", "batch_size", "seed", "threads", "device", "name", "model.arch", "model.d_model", "model.n_layers",
    "model.n_heads", "model.d_mlp", "model.d_state", "model.expand", "model.d_conv", "model.n_ctx", "model.init_std",
    "task.n_dims", "task.n_points", "task.kwargs", "optim.lr", "optim.betas", "optim.grad_clip", "log.every",
    "checkpoint.every", "capture.hooks", "capture.positions", "capture.n_prompts", "eval.n_prompts", "eval.batch_size",
    "eval.seed", "init_from",
]
VALUES = st.one_of(
    HUGE, st.integers(-3, 64), st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(["cpu", "cuda", "cuda:7", "mps", "nonsense", "../../x", "a/b", "gpt2", "mamba", "mambaformer", "llama"]),
    st.lists(st.integers(0, 10**7), max_size=3), st.sampled_from([["blocks.*.hook_resid_post"], ["nope"], {"noise_std": 1e308}]),
    st.none(), st.text(max_size=5),
)
RAW = [  # YAML-level attacks, inserted verbatim
    "steps: 1:30", "steps: yes", "steps: 0755", "steps: 5\nsteps: 6", "steps: !!python/object:os.system x",
    "steps: [1, 2", "steps: &a [*a]", "seed: 1180591620717411303424", "optim: {lr: .inf}", "device: nonsense",
    "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")),
    "x: " + "[" * 3000 + "]" * 3000, "model: {n_layers: 1000000000000000000000000000000}", "\t bad", "- a list",
    "name: ../../x", "capture: {hooks: [hook_embed], positions: [1000000]}", "batch_size: 1e9", "",
]


def _set(d: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        d = d.setdefault(p, {}) if isinstance(d.get(p, {}), dict) else {}
    d[leaf] = value


CASES = st.one_of(
    st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1, max_size=3).map(
        lambda muts: ("dict", muts)),
    st.tuples(st.sampled_from(RAW), st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), max_size=1)).map(
        lambda t: ("raw", t)),
)


def _text(case) -> str:
    kind, payload = case
    d = json.loads(json.dumps(BASE))
    if kind == "dict":
        for path, value in payload:
            _set(d, path, value)
        return yaml.safe_dump(d)
    raw, muts = payload
    for path, value in muts:
        _set(d, path, value)
    top = raw.split(":")[0].strip()
    d.pop(top, None)
    return raw + "\n" + yaml.safe_dump(d)


def _child(text: str) -> tuple[str, str]:
    from hookedicl.training import TrainConfig
    from hookedicl.training.run import preflight

    try:
        cfg = TrainConfig.from_yaml(text, "fuzz.yaml")
        preflight(cfg)
    except ValueError as e:
        return "named", str(e)
    except BaseException as e:  # noqa: BLE001 - what the test counts as a traceback
        return "traceback", f"{type(e).__name__}: {e}"
    return "ok", ""


def run_forked(text: str) -> dict:
    """Run `_child(text)` in a forked child capped at CAP new bytes; returns its record."""
    r, w = os.pipe()
    vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        status = ("died", "")
        try:
            resource.setrlimit(resource.RLIMIT_AS, (vm + CAP, vm + CAP))
            resource.setrlimit(resource.RLIMIT_CPU, (int(LIMIT_S) + 1, int(LIMIT_S) + 1))  # SIGXCPU past it
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            status = _child(text)
            use = resource.getrusage(resource.RUSAGE_SELF)
            grew = (use.ru_maxrss - rss0) * 1024
            payload = pickle.dumps((*status, grew, use.ru_utime + use.ru_stime))
        except BaseException as e:  # noqa: BLE001
            payload = pickle.dumps(("traceback", f"{type(e).__name__}: {e}", 0, 0.0))
        os.write(w, payload)
        os._exit(0)
    os.close(w)
    ready, _, _ = select.select([r], [], [], WALL_GUARD_S)
    data = b""
    if ready:
        while chunk := os.read(r, 1 << 16):
            data += chunk
    else:
        os.kill(pid, signal.SIGKILL)
    os.close(r)
    _, code = os.waitpid(pid, 0)
    wall = time.perf_counter() - t0
    if not data:
        killed = os.WIFSIGNALED(code) and os.WTERMSIG(code) == signal.SIGXCPU
        status = "cpu_limit" if killed else ("timeout" if not ready else "died")
        return {"status": status, "message": "", "grew": 0, "cpu": LIMIT_S if killed else 0.0, "wall": wall}
    status, message, grew, cpu = pickle.loads(data)
    return {"status": status, "message": message, "grew": grew, "cpu": cpu, "wall": wall}


COUNTS: dict[str, int] = {}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(CASES)
def test_config_preflight_fuzz(case):
    text = _text(case)
    rec = run_forked(text)
    COUNTS[rec["status"]] = COUNTS.get(rec["status"], 0) + 1
    COUNTS["cases"] = COUNTS.get("cases", 0) + 1
    COUNTS["max_grew_mib"] = max(COUNTS.get("max_grew_mib", 0), rec["grew"] >> 20)
    assert rec["status"] in ("named", "ok"), f"{rec} for\n{text}"
    assert rec["grew"] < CAP and rec["cpu"] < LIMIT_S, f"{rec} for\n{text}"
    if rec["status"] == "named":
        assert "\n" not in rec["message"] or "invalid YAML" in rec["message"], rec["message"]


def test_config_fuzz_counts_are_printed():
    """Runs after the fuzzer (file order): prints what it saw, for docs/training.md."""
    if COUNTS:
        print(f"\nconfig pre-flight fuzz: {COUNTS}")


# ----------------------------------------------------------------------------- the API
API_COUNTS: dict[str, int] = {}
ARCHS = hi.list_architectures()
_MODELS: dict[str, torch.nn.Module] = {}


def _model(arch: str) -> torch.nn.Module:
    if arch not in _MODELS:
        torch.manual_seed(0)
        _MODELS[arch] = hi.build_model(arch, n_dims=3, d_model=8, n_layers=1, n_heads=2, n_ctx=16).eval()
    return _MODELS[arch]


@settings(max_examples=250, deadline=None)
@given(
    arch=st.sampled_from(ARCHS), b=st.integers(0, 3), n=st.integers(0, 6),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
    scale=st.sampled_from([0.0, 1e-30, 1.0, 1e3, 1e6, 1e7, 1e30]), cache=st.booleans(),
)
def test_model_api_fuzz(arch, b, n, dtype, scale, cache):
    model = _model(arch)
    g = torch.Generator().manual_seed(b * 7 + n)
    xs, ys = (torch.randn(b, n, 3, generator=g) * scale).to(dtype), (torch.randn(b, n, generator=g) * scale).to(dtype)
    API_COUNTS["model cases"] = API_COUNTS.get("model cases", 0) + 1
    try:
        with torch.no_grad():
            out = model.run_with_cache(xs, ys)[0] if cache else model(xs, ys)
    except ValueError as e:
        API_COUNTS["model named"] = API_COUNTS.get("model named", 0) + 1
        assert any(w in str(e) for w in ("dtype", "empty", "magnitude", "n_ctx")), e
        return
    assert torch.isfinite(out).all(), f"silent non-finite output: {arch} {dtype} scale={scale}"


@settings(max_examples=250, deadline=None)
@given(
    name=st.sampled_from(B.available()), b=st.integers(0, 3), n=st.integers(0, 6),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
    scale=st.sampled_from([0.0, 1.0, 1e6, 1e20, 1e30]),
)
def test_baseline_api_fuzz(name, b, n, dtype, scale):
    g = torch.Generator().manual_seed(b * 7 + n)
    xs, ys = (torch.randn(b, n, 3, generator=g) * scale).to(dtype), (torch.randn(b, n, generator=g) * scale).to(dtype)
    API_COUNTS["baseline cases"] = API_COUNTS.get("baseline cases", 0) + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = B.get(name).predict(xs, ys)
        except ValueError as e:
            API_COUNTS["baseline named"] = API_COUNTS.get("baseline named", 0) + 1
            assert any(w in str(e) for w in ("empty", "NaN or inf")), e
            return
    if not torch.isfinite(out).all():
        API_COUNTS["baseline warned"] = API_COUNTS.get("baseline warned", 0) + 1
        assert any(issubclass(w.category, B.NonFiniteOutputWarning) for w in caught), f"silent: {name} {dtype} {scale}"


def test_api_fuzz_counts_are_printed():
    if API_COUNTS:
        print(f"\nAPI fuzz: {API_COUNTS}")
