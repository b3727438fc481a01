"""Argument validation of tasks and TaskBatch: bad input raises ValueError naming the field."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hookedicl.tasks import TaskBatch, list_tasks, make_task


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError) as info:
        make_task("linear_regresion", 5)
    for name in list_tasks():
        assert name in str(info.value)


@pytest.mark.parametrize(
    "name, kwargs, field",
    [
        ("linear_regression", {"noise_std": 0.1}, "noise_std"),
        ("sparse_linear_regression", {"sparsity": 3}, "sparsity"),
        ("sparse_linear_regression", {"k": 0}, "k"),
        ("sparse_linear_regression", {"k": 9}, "k"),
        ("sparse_linear_regression", {"k": 2.0}, "k"),
        ("noisy_linear_regression", {"noise_std": -1.0}, "noise_std"),
        ("noisy_linear_regression", {"noise_std": float("nan")}, "noise_std"),
        ("noisy_linear_regression", {"noise_std": "0.1"}, "noise_std"),
        ("relu_2nn_regression", {"hidden": 0}, "hidden"),
        ("relu_2nn_regression", {"scaling": "none"}, "scaling"),
        ("decision_tree", {"depth": 0}, "depth"),
        ("decision_tree", {"depth": True}, "depth"),
        ("sparse_parity", {"k": 11}, "k"),
        ("linear_regression", {"x_sampler": "normal"}, "x_sampler"),
        ("linear_regression", {"x_sampler": "uniform", "x_sampler_kwargs": {"b": 1.0}}, "'b'"),
        ("linear_regression", {"x_sampler_kwargs": [1]}, "x_sampler_kwargs"),
        ("vector_mqar", {"x_sampler": "gaussian"}, "x_sampler"),
    ],
)
def test_bad_task_arguments(name, kwargs, field):
    n_dims = 10 if name == "sparse_parity" else 8
    with pytest.raises(ValueError, match=field):
        make_task(name, n_dims, **kwargs)


@pytest.mark.parametrize("n_dims", [0, -3, 2.0, "4", None, True])
def test_bad_n_dims(n_dims):
    with pytest.raises(ValueError, match="n_dims"):
        make_task("linear_regression", n_dims)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"batch_size": 0, "n_points": 3}, "batch_size"),
        ({"batch_size": 2.0, "n_points": 3}, "batch_size"),
        ({"batch_size": True, "n_points": 3}, "batch_size"),
        ({"batch_size": 2, "n_points": 0}, "n_points"),
        ({"batch_size": 2, "n_points": 3.5}, "n_points"),
        ({"batch_size": 2, "n_points": 3, "n_dims_active": 7}, "n_dims_active"),
        ({"batch_size": 2, "n_points": 3, "n_dims_active": 0}, "n_dims_active"),
        ({"batch_size": 2, "n_points": 3, "n_dims_active": 3.0}, "n_dims_active"),
        ({"batch_size": 2, "n_points": 3, "generator": 0}, "generator"),
    ],
)
def test_bad_sample_arguments(kwargs, field):
    task = make_task("linear_regression", 6)
    with pytest.raises(ValueError, match=field):
        task.sample(**kwargs)


def test_n_dims_active_below_k():
    with pytest.raises(ValueError, match="n_dims_active=2 must be >= k=3"):
        make_task("sparse_linear_regression", 6, k=3).sample(2, 3, n_dims_active=2)
    with pytest.raises(ValueError, match="n_dims_active"):
        make_task("sparse_parity", 10, k=2).sample(2, 3, n_dims_active=1)


def test_mqar_needs_a_pair_and_a_query():
    with pytest.raises(ValueError, match="n_points"):
        make_task("vector_mqar", 4).sample(2, 1)


def test_bad_y_second_moment_argument():
    with pytest.raises(ValueError, match="n_dims_active"):
        make_task("linear_regression", 4).y_second_moment(5)


def test_evaluate_checks_shapes():
    task = make_task("linear_regression", 4)
    batch = task.sample(3, 5)
    with pytest.raises(ValueError, match="xs"):
        task.evaluate(torch.zeros(3, 5, 5), batch.params)
    with pytest.raises(ValueError, match="'w'"):
        task.evaluate(batch.xs, {})
    with pytest.raises(ValueError, match="batch"):
        task.evaluate(batch.xs[:2], batch.params)


_values = st.one_of(
    st.integers(min_value=-3, max_value=12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(list_tasks()),
    batch_size=_values,
    n_points=_values,
    n_dims_active=_values,
)
def test_sample_argument_validation_property(name, batch_size, n_points, n_dims_active):
    """Either every argument is valid and the batch has the requested shape, or sampling raises
    ValueError naming an invalid argument."""
    n_dims = 6
    task = make_task(name, n_dims)

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    min_points = 2 if name == "vector_mqar" else 1
    min_active = getattr(task, "k", 1)
    problems = []
    if not (is_int(batch_size) and batch_size >= 1):
        problems.append("batch_size")
    if not (is_int(n_points) and n_points >= min_points):
        problems.append("n_points")
    if not (n_dims_active is None or (is_int(n_dims_active) and min_active <= n_dims_active <= n_dims)):
        problems.append("n_dims_active")

    if problems:
        with pytest.raises(ValueError) as info:
            task.sample(batch_size, n_points, n_dims_active=n_dims_active)
        assert any(p in str(info.value) for p in problems), (problems, str(info.value))
    else:
        batch = task.sample(batch_size, n_points, n_dims_active=n_dims_active)
        assert batch.xs.shape == (batch_size, n_points, n_dims)
        active = n_dims if n_dims_active is None else n_dims_active
        assert (batch.xs[..., active:] == 0).all()


# ---------------------------------------------------------------------------- TaskBatch


def test_taskbatch_validation():
    xs, ys = torch.zeros(2, 3, 4), torch.zeros(2, 3)
    TaskBatch(xs, ys, {"w": torch.zeros(2, 4)})
    TaskBatch(xs, torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="xs"):
        TaskBatch(torch.zeros(2, 3), ys)
    with pytest.raises(ValueError, match="xs"):
        TaskBatch(torch.zeros(2, 3, 4, dtype=torch.long), ys)
    with pytest.raises(ValueError, match="ys"):
        TaskBatch(xs, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="ys"):
        TaskBatch(xs, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="params\\['w'\\]"):
        TaskBatch(xs, ys, {"w": torch.zeros(3, 4)})
    with pytest.raises(ValueError, match="params\\['w'\\]"):
        TaskBatch(xs, ys, {"w": [0.0]})


def test_taskbatch_to_and_select():
    batch = make_task("decision_tree", 4).sample(5, 6, generator=torch.Generator().manual_seed(0))
    moved = batch.to("cpu")
    assert moved.device == torch.device("cpu")
    assert torch.equal(moved.xs, batch.xs) and moved.params.keys() == batch.params.keys()
    sub = batch.select(torch.tensor([0, 3]))
    assert sub.batch_size == 2
    assert torch.equal(sub.ys, batch.ys[[0, 3]])
    assert torch.equal(sub.params["leaf_values"], batch.params["leaf_values"][[0, 3]])
    sliced = batch.select(slice(1, 4))
    assert sliced.xs.shape == (3, 6, 4)
