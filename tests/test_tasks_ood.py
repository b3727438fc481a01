"""OOD wrappers: each shift does what it says, composes, and rejects bad input."""

from __future__ import annotations

import math

import pytest
import torch

from hookedicl.tasks import (
    NoisyY,
    Orthant,
    OrthogonalQuery,
    ScaledX,
    ScaledY,
    apply_ood,
    list_ood,
    make_task,
)

SCALAR_TASKS = [
    "linear_regression",
    "noisy_linear_regression",
    "sparse_linear_regression",
    "relu_2nn_regression",
    "decision_tree",
    "quadratic_regression",
]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_ood_names():
    assert list_ood() == ["noisy_y", "orthant", "orthogonal_query", "scaled_x", "scaled_y"]


@pytest.mark.parametrize("name", SCALAR_TASKS)
def test_scaled_x_scales_inputs_and_keeps_function(name):
    base = make_task(name, 6)
    task = make_task(name, 6, ood={"name": "scaled_x", "x_scale": 2.5})
    a = base.sample(8, 5, generator=gen(0), n_dims_active=5)
    b = task.sample(8, 5, generator=gen(0), n_dims_active=5)
    torch.testing.assert_close(b.xs, 2.5 * a.xs)
    for key in a.params:
        torch.testing.assert_close(b.params[key], a.params[key])
    if base.noise_std == 0:
        torch.testing.assert_close(b.ys, base.evaluate(b.xs, b.params))
    assert task.name == name and task.ood == ("scaled_x",)


@pytest.mark.parametrize(
    "name, power", [("linear_regression", 2), ("relu_2nn_regression", 2), ("quadratic_regression", 4), ("decision_tree", 0)]
)
def test_scaled_x_second_moment(name, power):
    base = make_task(name, 8)
    task = ScaledX(base, x_scale=3.0)
    assert task.y_second_moment() == pytest.approx(base.y_second_moment() * 3.0**power)
    ys = task.sample(4096, 8, generator=gen(1)).ys.double()
    per_prompt = (ys**2).mean(1)
    stderr = per_prompt.std().item() / math.sqrt(4096)
    assert abs(per_prompt.mean().item() - task.y_second_moment()) < 5 * stderr


def test_scaled_y():
    base = make_task("noisy_linear_regression", 5, noise_std=0.5)
    task = ScaledY(base, y_scale=3.0)
    a = base.sample(6, 7, generator=gen(2))
    b = task.sample(6, 7, generator=gen(2))
    torch.testing.assert_close(b.xs, a.xs)
    torch.testing.assert_close(b.ys, 3.0 * a.ys)
    torch.testing.assert_close(task.evaluate(a.xs, a.params), 3.0 * base.evaluate(a.xs, a.params))
    assert task.y_second_moment() == pytest.approx(9.0 * (5 + 0.25))
    assert task.noise_std == pytest.approx(1.5)


def test_noisy_y():
    base = make_task("linear_regression", 5)
    task = NoisyY(base, noise_std=0.4)
    b = task.sample(1024, 16, generator=gen(3))
    residual = b.ys - task.evaluate(b.xs, b.params)
    assert abs(residual.std().item() - 0.4) < 0.01
    assert task.noise_std == pytest.approx(0.4)
    assert task.y_second_moment() == pytest.approx(5 + 0.16)
    both = NoisyY(make_task("noisy_linear_regression", 5, noise_std=0.3), noise_std=0.4)
    assert both.noise_std == pytest.approx(0.5)


@pytest.mark.parametrize("query", ["any", "opposite", "same"])
@pytest.mark.parametrize("name", ["linear_regression", "relu_2nn_regression", "decision_tree"])
def test_orthant(query, name):
    base = make_task(name, 6)
    task = Orthant(base, query=query)
    b = task.sample(32, 9, generator=gen(4), n_dims_active=5)
    signs = b.params["orthant_signs"]
    assert signs.shape == (32, 6)
    active = slice(0, 5)
    context_signs = torch.sign(b.xs[:, :-1, active])
    assert (context_signs == signs[:, None, active]).all()
    last = torch.sign(b.xs[:, -1, active])
    if query == "opposite":
        assert (last == -signs[:, active]).all()
    elif query == "same":
        assert (last == signs[:, active]).all()
    else:
        plain = base.sample(32, 9, generator=gen(4), n_dims_active=5)
        torch.testing.assert_close(b.xs[:, -1], plain.xs[:, -1])
        torch.testing.assert_close(b.xs[:, :-1].abs(), plain.xs[:, :-1].abs())
        # the query is not confined to the context orthant
        assert (last != signs[:, active]).any()
    assert (b.xs[..., 5:] == 0).all()
    torch.testing.assert_close(b.ys, task.evaluate(b.xs, b.params))


def test_orthant_keeps_inner_noise():
    task = Orthant(make_task("noisy_linear_regression", 4, noise_std=0.2))
    b = task.sample(2048, 8, generator=gen(5))
    residual = b.ys - task.evaluate(b.xs, b.params)
    assert abs(residual.std().item() - 0.2) < 0.01


@pytest.mark.parametrize("name", ["linear_regression", "quadratic_regression", "sparse_parity"])
@pytest.mark.parametrize("n_points, n_active", [(2, 8), (6, 8), (8, 8), (4, 5)])
def test_orthogonal_query(name, n_points, n_active):
    d = 10 if name == "sparse_parity" else 8
    task = OrthogonalQuery(make_task(name, d))
    plain = make_task(name, d).sample(64, n_points, generator=gen(6), n_dims_active=n_active)
    b = task.sample(64, n_points, generator=gen(6), n_dims_active=n_active)
    context, query = b.xs[:, :-1].double(), b.xs[:, -1].double()
    dots = torch.einsum("bmd,bd->bm", context, query)
    scale = context.norm(dim=-1) * query.norm(dim=-1, keepdim=True)
    assert (dots.abs() <= 1e-5 * scale + 1e-6).all()
    # context untouched; query norm preserved unless it lay in the span (discrete inputs)
    torch.testing.assert_close(b.xs[:, :-1], plain.xs[:, :-1])
    nonzero = query.norm(dim=-1) > 0
    if name != "sparse_parity":
        assert nonzero.all()
    torch.testing.assert_close(
        query.norm(dim=-1)[nonzero], plain.xs[:, -1].double().norm(dim=-1)[nonzero], rtol=1e-5, atol=1e-6
    )
    assert (b.xs[..., n_active:] == 0).all()
    torch.testing.assert_close(b.ys, task.evaluate(b.xs, b.params))


def test_orthogonal_query_needs_room():
    task = make_task("linear_regression", 8, ood="orthogonal_query")
    with pytest.raises(ValueError, match="n_points"):
        task.sample(4, 9)
    with pytest.raises(ValueError, match="n_dims_active"):
        task.sample(4, 5, n_dims_active=4)
    assert task.sample(4, 8).xs.shape == (4, 8, 8)


def test_composition_and_identity():
    task = make_task(
        "relu_2nn_regression",
        6,
        ood=["orthant", {"name": "scaled_y", "y_scale": 2.0}, {"name": "noisy_y", "noise_std": 0.1}],
    )
    assert task.name == "relu_2nn_regression"
    assert task.ood == ("orthant", "scaled_y", "noisy_y")
    assert task.unwrap().ood == () and task.unwrap().name == "relu_2nn_regression"
    assert task.y_second_moment() == pytest.approx(4 * 6 + 0.01)
    b = task.sample(3, 4, generator=gen(0))
    assert b.ys.shape == (3, 4)
    assert task.loss_positions == "all" and task.y_dim == 1 and task.n_dims == 6
    assert apply_ood(make_task("linear_regression", 3), "orthant").ood == ("orthant",)


def test_wrappers_need_scalar_tasks():
    with pytest.raises(ValueError, match="y_dim"):
        make_task("vector_mqar", 4, ood="orthant")


@pytest.mark.parametrize(
    "ood, field",
    [
        ("upside_down", "upside_down"),
        ({"name": "scaled_x"}, "x_scale"),
        ({"name": "scaled_x", "x_scale": -1.0}, "x_scale"),
        ({"name": "scaled_y", "y_scale": 0}, "y_scale"),
        ({"name": "noisy_y", "noise_std": -0.1}, "noise_std"),
        ({"name": "orthant", "query": "diagonal"}, "query"),
        ({"name": "orthant", "qeury": "any"}, "qeury"),
        ({"x_scale": 2.0}, "None"),
        (3, "ood"),
    ],
)
def test_bad_ood_specs(ood, field):
    with pytest.raises(ValueError, match=field):
        make_task("linear_regression", 4, ood=ood)
