"""Function classes: shapes, determinism, ground truth, curriculum, and E[y²]."""

from __future__ import annotations

import math

import pytest
import torch

from hookedicl.tasks import TaskBatch, list_tasks, make_task

N_DIMS = {name: 10 if name == "sparse_parity" else 12 for name in list_tasks()}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_list_tasks_names():
    assert list_tasks() == sorted(
        [
            "linear_regression",
            "noisy_linear_regression",
            "sparse_linear_regression",
            "relu_2nn_regression",
            "decision_tree",
            "sparse_parity",
            "vector_mqar",
            "quadratic_regression",
        ]
    )


@pytest.mark.parametrize("name", list_tasks())
def test_shapes_and_dtypes(name):
    d = N_DIMS[name]
    task = make_task(name, d)
    batch = task.sample(batch_size=5, n_points=9, generator=gen(0))
    assert isinstance(batch, TaskBatch)
    assert batch.xs.shape == (5, 9, d) and batch.xs.dtype == torch.float32
    assert (batch.batch_size, batch.n_points, batch.n_dims) == (5, 9, d)
    if task.y_dim == 1:
        assert batch.ys.shape == (5, 9)
    else:
        assert batch.ys.shape == (5, 9, task.y_dim)
    assert batch.ys.dtype == torch.float32
    assert batch.y_dim == task.y_dim
    for key, value in batch.params.items():
        assert value.shape[0] == 5, key
        if value.is_floating_point():
            assert value.dtype == torch.float32, key
    assert torch.isfinite(batch.xs).all() and torch.isfinite(batch.ys).all()
    assert task.name == name
    assert task.loss_positions == ("last" if name == "vector_mqar" else "all")


@pytest.mark.parametrize("name", list_tasks())
def test_determinism_under_seed(name):
    task = make_task(name, N_DIMS[name])
    a = task.sample(4, 7, generator=gen(123), n_dims_active=6)
    b = task.sample(4, 7, generator=gen(123), n_dims_active=6)
    c = task.sample(4, 7, generator=gen(124), n_dims_active=6)
    assert torch.equal(a.xs, b.xs) and torch.equal(a.ys, b.ys)
    assert a.params.keys() == b.params.keys()
    for key in a.params:
        assert torch.equal(a.params[key], b.params[key]), key
    assert not torch.equal(a.xs, c.xs)
    assert not torch.equal(a.ys, c.ys)


def test_global_rng_used_without_generator():
    task = make_task("linear_regression", 4)
    torch.manual_seed(7)
    a = task.sample(3, 5)
    torch.manual_seed(7)
    b = task.sample(3, 5)
    assert torch.equal(a.xs, b.xs) and torch.equal(a.ys, b.ys)


@pytest.mark.parametrize("name", list_tasks())
def test_evaluate_reproduces_ys(name):
    task = make_task(name, N_DIMS[name])
    batch = task.sample(6, 11, generator=gen(1), n_dims_active=7)
    expected = task.evaluate(batch.xs, batch.params)
    if name == "noisy_linear_regression":
        residual = batch.ys - expected
        assert residual.abs().max() > 0.1  # the noise is there, and evaluate is noise-free
    else:
        torch.testing.assert_close(expected, batch.ys, rtol=0, atol=0)


@pytest.mark.parametrize("name", list_tasks())
def test_evaluate_on_fresh_queries_has_prompt_shape(name):
    task = make_task(name, N_DIMS[name])
    batch = task.sample(3, 6, generator=gen(2))
    fresh = make_task(name, N_DIMS[name]).sample(3, 4, generator=gen(3)).xs
    out = task.evaluate(fresh, batch.params)
    assert out.shape == ((3, 4) if task.y_dim == 1 else (3, 4, task.y_dim))


@pytest.mark.parametrize("name", list_tasks())
def test_curriculum_zeroes_inactive_coordinates(name):
    d = N_DIMS[name]
    task = make_task(name, d)
    batch = task.sample(8, 9, generator=gen(4), n_dims_active=5)
    assert (batch.xs[..., 5:] == 0).all()
    assert (batch.xs[..., :5] != 0).any(dim=-1).all()
    if task.y_dim > 1:
        assert (batch.ys[..., 5:] == 0).all()


@pytest.mark.parametrize(
    "name",
    [
        "linear_regression",
        "sparse_linear_regression",
        "relu_2nn_regression",
        "quadratic_regression",
        "decision_tree",
        "sparse_parity",
    ],
)
def test_function_ignores_inactive_coordinates(name):
    d = N_DIMS[name]
    task = make_task(name, d)
    batch = task.sample(16, 9, generator=gen(5), n_dims_active=4)
    noisy_xs = batch.xs.clone()
    noisy_xs[..., 4:] = torch.randn(noisy_xs[..., 4:].shape, generator=gen(6))
    torch.testing.assert_close(task.evaluate(noisy_xs, batch.params), batch.ys)


def test_linear_params():
    task = make_task("linear_regression", 6)
    batch = task.sample(5, 4, generator=gen(0), n_dims_active=4)
    w = batch.params["w"]
    assert w.shape == (5, 6)
    assert (w[:, 4:] == 0).all()
    torch.testing.assert_close(batch.ys, torch.einsum("bnd,bd->bn", batch.xs, w))


def test_noisy_linear_noise_level():
    task = make_task("noisy_linear_regression", 5, noise_std=0.3)
    assert task.noise_std == 0.3
    batch = task.sample(512, 20, generator=gen(0))
    residual = batch.ys - task.evaluate(batch.xs, batch.params)
    assert abs(residual.std().item() - 0.3) < 0.01
    assert abs(residual.mean().item()) < 0.01


def test_noiseless_tasks_report_zero_noise():
    assert make_task("linear_regression", 4).noise_std == 0.0
    assert make_task("noisy_linear_regression", 4).noise_std == 1.0


@pytest.mark.parametrize("n_active", [3, 7, 12])
def test_sparse_linear_has_exactly_k_nonzeros_in_active_dims(n_active):
    task = make_task("sparse_linear_regression", 12, k=3)
    batch = task.sample(200, 5, generator=gen(n_active), n_dims_active=n_active)
    w, mask = batch.params["w"], batch.params["mask"]
    assert mask.dtype == torch.bool
    assert (mask.sum(dim=1) == 3).all()
    assert ((w != 0).sum(dim=1) == 3).all()
    assert torch.equal(w != 0, mask)
    assert not mask[:, n_active:].any()
    if n_active > 3:
        # Every active coordinate gets chosen for some prompt: the support varies per prompt.
        assert mask[:, :n_active].any(dim=0).all()


def test_sparse_parity_is_product_of_chosen_coordinates():
    task = make_task("sparse_parity", 10, k=2)
    batch = task.sample(32, 15, generator=gen(0))
    assert set(batch.xs.unique().tolist()) == {-1.0, 1.0}
    support = batch.params["support"]
    assert support.shape == (32, 2)
    assert (support[:, 0] != support[:, 1]).all()
    for b in range(32):
        i, j = support[b].tolist()
        torch.testing.assert_close(batch.ys[b], batch.xs[b, :, i] * batch.xs[b, :, j])
        assert batch.params["mask"][b].nonzero().flatten().tolist() == sorted([i, j])
    assert set(batch.ys.unique().tolist()) <= {-1.0, 1.0}


def test_sparse_parity_default_dims():
    from hookedicl.tasks import SparseParity

    assert SparseParity().n_dims == 10
    assert SparseParity().k == 2


def _tree_reference(x: list[float], split: list[int], leaves: list[float], node: int = 0) -> float:
    """Plain recursive walk of a heap-ordered tree."""
    if node >= len(split):
        return leaves[node - len(split)]
    child = 2 * node + 2 if x[split[node]] > 0 else 2 * node + 1
    return _tree_reference(x, split, leaves, child)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_decision_tree_matches_recursive_evaluation(depth):
    task = make_task("decision_tree", 6, depth=depth)
    batch = task.sample(8, 10, generator=gen(depth), n_dims_active=5)
    split, leaves = batch.params["split_coords"], batch.params["leaf_values"]
    assert split.shape == (8, 2**depth - 1) and split.dtype == torch.int64
    assert leaves.shape == (8, 2**depth)
    assert split.max() < 5
    for b in range(8):
        for n in range(10):
            ref = _tree_reference(batch.xs[b, n].tolist(), split[b].tolist(), leaves[b].tolist())
            assert batch.ys[b, n].item() == ref


def test_decision_tree_uses_many_leaves():
    task = make_task("decision_tree", 8, depth=3)
    batch = task.sample(1, 400, generator=gen(0))
    leaves = batch.params["leaf_values"][0]
    reached = {int((leaves == y).nonzero()[0]) for y in batch.ys[0].tolist()}
    assert len(reached) >= 4


def test_vector_mqar_layout():
    task = make_task("vector_mqar", 8)
    assert task.y_dim == 8 and task.loss_positions == "last"
    batch = task.sample(4, 6, generator=gen(0), n_dims_active=6)
    keys, values, q = batch.params["keys"], batch.params["values"], batch.params["query_index"]
    assert keys.shape == values.shape == (4, 5, 8) and q.shape == (4,)
    torch.testing.assert_close(batch.xs[:, :5], keys)
    torch.testing.assert_close(batch.ys[:, :5], values)
    rows = torch.arange(4)
    torch.testing.assert_close(batch.xs[:, -1], keys[rows, q])
    torch.testing.assert_close(batch.ys[:, -1], values[rows, q])
    # keys and values on the sphere of radius sqrt(d_active)
    torch.testing.assert_close(keys.norm(dim=-1), torch.full((4, 5), math.sqrt(6.0)))
    torch.testing.assert_close(values.norm(dim=-1), torch.full((4, 5), math.sqrt(6.0)))
    assert task.y_second_moment(6) == 6.0


# ---------------------------------------------------------------------------- E[y²]


def _check_second_moment(task, n_dims_active=None, batch_size=4096, n_points=16, seed=0):
    batch = task.sample(batch_size, n_points, generator=gen(seed), n_dims_active=n_dims_active)
    sq = batch.ys.double() ** 2
    if sq.ndim == 3:
        sq = sq.sum(-1)
    per_prompt = sq.mean(dim=1)  # prompts are independent; points within one are not
    mean = per_prompt.mean().item()
    stderr = per_prompt.std().item() / math.sqrt(batch_size)
    expected = task.y_second_moment(n_dims_active)
    assert abs(mean - expected) < 5 * stderr + 1e-5 * expected, (mean, expected, stderr)
    return expected


@pytest.mark.parametrize(
    "name, kwargs, expected_full",
    [
        ("linear_regression", {}, 12.0),
        ("noisy_linear_regression", {"noise_std": 0.5}, 12.25),
        ("sparse_linear_regression", {"k": 3}, 3.0),
        ("relu_2nn_regression", {"scaling": "garg"}, 12.0),
        ("relu_2nn_regression", {"scaling": "campbell"}, 100 * 12 / 2),
        ("quadratic_regression", {}, 12.0),
        ("decision_tree", {}, 1.0),
        ("sparse_parity", {}, 1.0),
        ("vector_mqar", {}, 12.0),
    ],
)
def test_second_moment_gaussian(name, kwargs, expected_full):
    task = make_task(name, 12, **kwargs)
    assert task.y_second_moment() == pytest.approx(expected_full)
    _check_second_moment(task)


def test_relu_second_moment_campbell_standard_value():
    task = make_task("relu_2nn_regression", 20, scaling="campbell")
    assert task.y_second_moment() == pytest.approx(1000.0)


@pytest.mark.parametrize(
    "name", ["linear_regression", "sparse_linear_regression", "relu_2nn_regression", "quadratic_regression"]
)
@pytest.mark.parametrize(
    "sampler, sampler_kwargs",
    [
        ("uniform", {"a": 2.0}),
        ("rademacher", {}),
        ("skewed", {"condition_number": 20.0}),
    ],
)
def test_second_moment_other_samplers_and_curriculum(name, sampler, sampler_kwargs):
    task = make_task(name, 9, x_sampler=sampler, x_sampler_kwargs=sampler_kwargs)
    _check_second_moment(task, n_dims_active=6, batch_size=2048)


def test_second_moment_depends_on_active_dims():
    task = make_task("linear_regression", 20)
    assert task.y_second_moment(5) == 5.0
    assert task.y_second_moment() == 20.0
    _check_second_moment(task, n_dims_active=5)


def test_sparse_parity_second_moment_with_uniform_inputs():
    task = make_task("sparse_parity", 6, k=3, x_sampler="uniform", x_sampler_kwargs={"a": 1.5})
    assert task.y_second_moment() == pytest.approx((1.5**2 / 3) ** 3)
    _check_second_moment(task, batch_size=2048)


def test_sparse_parity_second_moment_monte_carlo_for_correlated_inputs():
    task = make_task("sparse_parity", 6, k=2, x_sampler="skewed", x_sampler_kwargs={"seed": 3})
    cov = task.x_sampler.covariance()
    # Exact E over pairs of E[x_i² x_j²] = Σii Σjj + 2 Σij² for a Gaussian.
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    exact = sum(cov[i, i] * cov[j, j] + 2 * cov[i, j] ** 2 for i, j in pairs).item() / len(pairs)
    assert task.y_second_moment() == pytest.approx(exact, rel=0.05)
