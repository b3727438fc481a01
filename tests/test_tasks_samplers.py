"""x samplers: shapes, moments, skewed covariance construction."""

from __future__ import annotations

import math

import pytest
import torch

from hookedicl.tasks import (
    ScaledXSampler,
    SkewedGaussianXSampler,
    list_x_samplers,
    make_task,
    make_x_sampler,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_sampler_names():
    assert list_x_samplers() == ["gaussian", "rademacher", "skewed", "uniform"]


@pytest.mark.parametrize("name", ["gaussian", "rademacher", "skewed", "uniform"])
def test_sampler_moments_match_samples(name):
    sampler = make_x_sampler(name, 5)
    xs = sampler.sample(20000, 4, generator=gen(0)).double().reshape(-1, 5)
    assert sampler.sample(2, 3).shape == (2, 3, 5)
    assert sampler.sample(2, 3).dtype == torch.float32
    n = xs.shape[0]
    cov = xs.T @ xs / n
    torch.testing.assert_close(cov, sampler.covariance(), atol=0.05 * sampler.covariance().diagonal().max().item(), rtol=0)
    m4 = (xs**4).mean(0)
    torch.testing.assert_close(m4, sampler.fourth_moments(), rtol=0.08, atol=0)


def test_uniform_range_and_default_variance():
    sampler = make_x_sampler("uniform", 3, {"a": 0.5})
    xs = sampler.sample(100, 10, generator=gen(0))
    assert xs.abs().max() <= 0.5
    assert make_x_sampler("uniform", 3).second_moments().tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_rademacher_values():
    xs = make_x_sampler("rademacher", 4).sample(10, 10, generator=gen(0))
    assert set(xs.unique().tolist()) == {-1.0, 1.0}


def test_skewed_given_eigenvalues():
    lam = [4.0, 2.0, 1.0, 0.5]
    sampler = SkewedGaussianXSampler(4, eigenvalues=lam, normalize=False, seed=1)
    cov = sampler.covariance()
    eig = torch.linalg.eigvalsh(cov)
    torch.testing.assert_close(eig, torch.tensor(sorted(lam), dtype=torch.float64))
    # rotated: the covariance is not diagonal
    assert (cov - torch.diag(cov.diagonal())).abs().max() > 1e-3
    from_tensor = SkewedGaussianXSampler(4, eigenvalues=torch.tensor(lam), normalize=False, seed=1)
    torch.testing.assert_close(from_tensor.covariance(), cov)
    axis = SkewedGaussianXSampler(4, eigenvalues=lam, normalize=False, rotate=False)
    torch.testing.assert_close(axis.covariance(), torch.diag(torch.tensor(lam, dtype=torch.float64)))


def test_skewed_condition_number_and_normalisation():
    sampler = SkewedGaussianXSampler(6, condition_number=100.0)
    eig = torch.linalg.eigvalsh(sampler.covariance())
    assert (eig.max() / eig.min()).item() == pytest.approx(100.0)
    assert eig.sum().item() == pytest.approx(6.0)


def test_skewed_default_is_garg_spectrum():
    sampler = SkewedGaussianXSampler(5, rotate=False, normalize=False)
    assert sampler.eigenvalues.tolist() == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])


def test_skewed_covariance_fixed_by_seed():
    a = SkewedGaussianXSampler(5, condition_number=10.0, seed=3)
    b = SkewedGaussianXSampler(5, condition_number=10.0, seed=3)
    c = SkewedGaussianXSampler(5, condition_number=10.0, seed=4)
    torch.testing.assert_close(a.covariance(), b.covariance())
    assert not torch.allclose(a.covariance(), c.covariance())


def test_scaled_sampler():
    base = make_x_sampler("gaussian", 3)
    scaled = ScaledXSampler(base, 3.0)
    torch.testing.assert_close(scaled.sample(4, 5, generator=gen(0)), 3.0 * base.sample(4, 5, generator=gen(0)))
    torch.testing.assert_close(scaled.covariance(), 9.0 * torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(scaled.fourth_moments(), torch.full((3,), 3.0 * 81.0, dtype=torch.float64))


def test_task_uses_sampler():
    task = make_task("linear_regression", 4, x_sampler="uniform", x_sampler_kwargs={"a": 0.25})
    batch = task.sample(10, 10, generator=gen(0))
    assert batch.xs.abs().max() <= 0.25
    assert task.y_second_moment() == pytest.approx(4 * 0.25**2 / 3)
    # an instance can be passed instead of a name
    inst = make_x_sampler("rademacher", 4)
    assert make_task("linear_regression", 4, x_sampler=inst).x_sampler is inst


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"eigenvalues": [1.0, 2.0]}, "eigenvalues"),
        ({"eigenvalues": [1.0, -1.0, 1.0]}, "eigenvalues"),
        ({"condition_number": 0.5}, "condition_number"),
        ({"condition_number": 2.0, "eigenvalues": [1.0, 1.0, 1.0]}, "condition_number"),
        ({"seed": -1}, "seed"),
        ({"rotate": 1}, "rotate"),
    ],
)
def test_skewed_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        make_x_sampler("skewed", 3, kwargs)


def test_sampler_bad_names_and_kwargs():
    with pytest.raises(ValueError, match="gaussian"):
        make_x_sampler("cauchy", 3)
    with pytest.raises(ValueError, match="'scale'"):
        make_x_sampler("uniform", 3, {"scale": 2.0})
    with pytest.raises(ValueError, match="a must be > 0"):
        make_x_sampler("uniform", 3, {"a": 0.0})
    with pytest.raises(ValueError, match="n_dims"):
        make_task("linear_regression", 4, x_sampler=make_x_sampler("gaussian", 5))
    with pytest.raises(ValueError, match="x_sampler_kwargs"):
        make_task("linear_regression", 4, x_sampler=make_x_sampler("gaussian", 4), x_sampler_kwargs={"a": 1})
    with pytest.raises(ValueError, match="x_sampler"):
        make_task("linear_regression", 4, x_sampler="cauchy")


def test_uniform_variance_formula():
    sampler = make_x_sampler("uniform", 2, {"a": 3.0})
    assert sampler.second_moments().tolist() == pytest.approx([3.0, 3.0])
    assert sampler.fourth_moments().tolist() == pytest.approx([81 / 5, 81 / 5])
    assert math.isclose(float(sampler.covariance()[0, 1]), 0.0)
