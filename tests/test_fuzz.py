"""Property-based tests over configs and API inputs: every generated input either works or raises
ValueError (pydantic's ValidationError is one) whose message names the offending field or
argument, never an unrelated exception (TypeError, KeyError, IndexError, a torch RuntimeError...).

`pytest tests/test_fuzz.py --hypothesis-show-statistics` prints how many cases ran.
"""

from __future__ import annotations

import json
import math

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import hookedicl as hi
from hookedicl import baselines as B
from hookedicl.models import HookedICLModel
from hookedicl.training import TrainConfig, train

BASE = {
    "name": "fuzz", "steps": 2, "batch_size": 4, "threads": 1,
    "model": {"arch": "gpt2", "d_model": 8, "n_layers": 1, "n_heads": 2},
    "task": {"name": "linear_regression", "n_dims": 3, "n_points": 4},
    "optim": {"name": "adam", "lr": 1e-3},
    "log": {"every": 1, "progress": False},
    "checkpoint": {"every": 1},
    "eval": {"n_prompts": 8, "batch_size": 8},
}

ARCHS = hi.list_architectures()
TASKS = hi.list_tasks()

WEIRD = st.one_of(
    st.integers(-3, 12), st.integers(-(10**9), 10**9),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(max_size=6), st.none(), st.booleans(),
    st.lists(st.integers(-2, 5), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)

# field -> plausible values (mixed with WEIRD ones): the valid path gets exercised too
FIELDS: dict[str, st.SearchStrategy] = {
    "steps": st.integers(-1, 3), "batch_size": st.integers(-1, 6), "seed": st.integers(-5, 5),
    "threads": st.integers(-1, 2),
    "model.arch": st.sampled_from(ARCHS + ["gpt5", ""]),
    "model.d_model": st.integers(-1, 12), "model.n_layers": st.integers(-1, 3), "model.n_heads": st.integers(-1, 4),
    "model.d_mlp": st.integers(-1, 16), "model.d_state": st.integers(-1, 4), "model.expand": st.integers(-1, 3),
    "model.d_conv": st.integers(-1, 4), "model.n_ctx": st.integers(-1, 10),
    "model.layout": st.sampled_from(["garg", "akyurek", "paired", "other"]), "model.init_std": st.floats(-1, 1),
    "task.name": st.sampled_from(TASKS + ["linear_regresion"]), "task.n_dims": st.integers(-1, 5),
    "task.n_points": st.integers(-1, 6),
    "task.kwargs": st.sampled_from([{"noise_std": 0.1}, {"noise_std": -1.0}, {"k": 2}, {"k": 9}, {"bogus": 1}, {}]),
    "optim.name": st.sampled_from(["adam", "adamw", "sgd"]), "optim.lr": st.floats(-1, 1),
    "optim.betas": st.lists(st.floats(-1, 2), min_size=1, max_size=3), "optim.weight_decay": st.floats(-1, 1),
    "optim.warmup_steps": st.integers(-1, 3), "optim.schedule": st.sampled_from(["constant", "cosine", "linear", "step"]),
    "optim.min_lr_ratio": st.floats(-1, 2), "optim.grad_clip": st.floats(-1, 2),
    "optim.on_nonfinite": st.sampled_from(["stop", "skip", "ignore"]), "optim.max_skipped": st.integers(-1, 3),
    "log.every": st.integers(-1, 3), "log.baselines": st.sampled_from([["least_squares"], ["ridge", "nope"], []]),
    "checkpoint.every": st.integers(-1, 3), "checkpoint.keep": st.integers(-1, 3),
    "capture.hooks": st.sampled_from([["blocks.*.hook_resid_post"], ["hook_embed"], ["blocks.9.hook_resid_post"], ["nope*"]]),
    "capture.every": st.integers(-1, 3), "capture.n_prompts": st.integers(-1, 9),
    "capture.positions": st.sampled_from(["all", "x", "y", "z", [0, 1], [-1]]),
    "capture.dtype": st.sampled_from(["float32", "float16", "int8"]),
    "eval.n_prompts": st.integers(-1, 9), "eval.baselines": st.sampled_from([["least_squares"], ["ridge", "nope"]]),
    "eval.score_baseline": st.sampled_from(["least_squares", "nope"]),
    "curriculum": st.sampled_from([
        {"dims": {"start": 2, "end": 3, "inc": 1, "interval": 1}, "points": {"start": 2, "end": 4, "inc": 1, "interval": 1}},
        {"dims": {"start": 4, "end": 2, "inc": 1, "interval": 1}, "points": {"start": 2, "end": 4, "inc": 1, "interval": 1}},
        {"dims": {"start": 2, "end": 3, "inc": 0, "interval": 1}},
    ]),
    "init_from": st.sampled_from(["", "no/such/run", "no/such/run:12", "run:abc"]),
    "unknown_field": st.integers(),
    "model.unknown_field": st.integers(),
}

MUTATIONS = st.lists(
    st.tuples(st.sampled_from(sorted(FIELDS)), st.sampled_from([True, False, False, False])).flatmap(
        lambda fw: st.tuples(st.just(fw[0]), WEIRD if fw[1] else FIELDS[fw[0]])
    ),
    min_size=1, max_size=2, unique_by=lambda m: m[0],
)


def _apply(mutations) -> dict:
    d = json.loads(json.dumps(BASE))
    for path, value in mutations:
        *parents, leaf = path.split(".")
        node = d
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return d


def _names_a_field(message: str, mutations) -> bool:
    """The error names one of the mutated fields (its leaf, or the arch/task name it set)."""
    for path, value in mutations:
        leaf = path.split(".")[-1]
        if leaf in message or (isinstance(value, str) and value and value in message):
            return True
    return False


def _validate(mutations):
    d = _apply(mutations)
    try:
        return TrainConfig.model_validate(d)
    except ValueError as e:  # includes pydantic.ValidationError
        assert _names_a_field(str(e), mutations), f"{mutations} -> {e}"
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MUTATIONS)
def test_config_validation_names_the_field(mutations):
    _validate(mutations)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(MUTATIONS)
def test_valid_configs_train_or_fail_with_a_value_error(tmp_path_factory, mutations):
    cfg = _validate(mutations)
    assume(cfg is not None)
    with torch.device("meta"):
        n_params = HookedICLModel(cfg.build_spec()).n_params
    assume(n_params < 50_000 and cfg.steps <= 3 and cfg.batch_size * cfg.task.n_points <= 4096)
    try:
        run = train(cfg, tmp_path_factory.mktemp("fuzz") / "run")
    except ValueError as e:
        assert _names_a_field(str(e), mutations), f"{mutations} -> {e}"
    else:
        assert run.checkpoints[-1] == cfg.steps


SIZES = st.one_of(st.integers(-2, 6), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.none(), st.text(max_size=3))


@settings(max_examples=250, deadline=None)
@given(
    arch=st.sampled_from(ARCHS + ["gpt5"]), n_dims=SIZES, d_model=SIZES, n_layers=SIZES, n_heads=SIZES,
    d_state=SIZES, expand=SIZES,
)
def test_build_model_arguments(arch, n_dims, d_model, n_layers, n_heads, d_state, expand):
    kwargs = dict(n_dims=n_dims, d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_state=d_state, expand=expand)
    small = all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 8 for v in kwargs.values())
    try:
        with torch.device("meta") if not small else torch.device("cpu"):
            model = hi.build_model(arch, **kwargs)
    except ValueError as e:
        assert arch in str(e) or any(k in str(e) for k in kwargs), f"{arch} {kwargs} -> {e}"
        return
    if small:
        xs, ys = torch.randn(2, 3, n_dims), torch.randn(2, 3)
        assert model(xs, ys).shape == (2, 3)


SHAPE = st.lists(st.integers(0, 5), min_size=0, max_size=4)


@settings(max_examples=250, deadline=None)
@given(xs_shape=SHAPE, ys_shape=SHAPE, dtype=st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bool]),
       nonfinite=st.booleans())
def test_model_forward_inputs(xs_shape, ys_shape, dtype, nonfinite):
    torch.manual_seed(0)
    model = hi.build_model("gpt2", n_dims=3, d_model=8, n_layers=1, n_heads=2, n_ctx=8)
    xs, ys = torch.ones(xs_shape).to(dtype), torch.ones(ys_shape).to(dtype)
    if nonfinite and xs.numel() and dtype.is_floating_point:
        xs.view(-1)[0] = float("nan")
    try:
        out = model(xs, ys)
    except ValueError as e:
        assert any(w in str(e) for w in ("xs", "ys", "n_ctx", "dtype", "shape")), f"{xs_shape} {ys_shape} {dtype} -> {e}"
    else:
        assert out.shape == tuple(xs_shape[:2])


@settings(max_examples=250, deadline=None)
@given(
    name=st.sampled_from(B.list()), b=st.integers(0, 3), n=st.integers(0, 6), d=st.integers(0, 4),
    ys_extra=st.sampled_from([0, 1, -1]), nonfinite=st.booleans(),
)
def test_baseline_inputs(name, b, n, d, ys_extra, nonfinite):
    xs = torch.randn(b, n, d)
    ys = torch.randn(b, max(n + ys_extra, 0))
    if nonfinite and ys.numel():
        ys.view(-1)[0] = float("inf")
    try:
        out = B.get(name).predict(xs, ys)
    except ValueError as e:
        assert any(w in str(e) for w in ("xs", "ys", "n_points", "n_dims", "batch", "finite", "empty")), f"{name} {xs.shape} {ys.shape} -> {e}"
    else:
        assert out.shape == (b, n)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(TASKS + ["nope"]), n_dims=SIZES,
    kwargs=st.dictionaries(st.sampled_from(["noise_std", "k", "hidden", "depth", "scaling", "bogus"]), WEIRD, max_size=2),
    batch_size=st.integers(-1, 3), n_points=st.integers(-1, 4),
)
def test_task_arguments(name, n_dims, kwargs, batch_size, n_points):
    try:
        task = hi.make_task(name, n_dims, **kwargs)
    except ValueError as e:
        assert name in str(e) or "n_dims" in str(e) or any(k in str(e) for k in kwargs), f"{name} {n_dims} {kwargs} -> {e}"
        return
    assume(task.n_dims <= 16)
    try:
        batch = task.sample(batch_size, n_points)
    except ValueError as e:
        assert "batch_size" in str(e) or "n_points" in str(e), e
    else:
        assert batch.xs.shape[:2] == (batch_size, n_points)


@settings(max_examples=200, deadline=None)
@given(
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=3), scale=st.floats(-2, 2),
    bad=st.sampled_from([None, "nan", "neg", "shape"]), ci=st.floats(-1, 2), n_bootstrap=st.integers(-1, 50),
)
def test_icl_score_inputs(shape, scale, bad, ci, n_bootstrap):
    g = torch.Generator().manual_seed(0)
    model_err = torch.rand(shape, generator=g) * abs(scale)
    base_err, zero_err = torch.rand(shape, generator=g), torch.rand(shape, generator=g) + 1
    if bad == "nan" and model_err.numel():
        model_err.view(-1)[0] = math.nan
    elif bad == "neg" and model_err.numel():
        model_err.view(-1)[0] = -1.0
    elif bad == "shape":
        zero_err = torch.rand(shape + [2], generator=g)
    try:
        s = hi.icl_regression_score(model_err, base_err, zero_err, ci=ci, n_bootstrap=max(n_bootstrap, 0) or n_bootstrap)
    except ValueError as e:
        words = ("model_err", "baseline_err", "zero_err", "ci", "n_bootstrap", "shape", "finite", "negative", "empty")
        assert any(w in str(e) for w in words), f"{shape} {bad} {ci} {n_bootstrap} -> {e}"
    else:
        assert math.isfinite(s.value) or math.isnan(s.value)
