"""Mixer summaries: attention shares, Δ statistics, and the SSM hidden attention, which must
reproduce the Mamba output y − D·u channel by channel; every preset; argument checks; hooks."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

import hookedicl as hi
from hookedicl.analysis import summaries as S
from hookedicl.models.scan import ssm_states
from hookedicl.training import TrainConfig, train



from analysis_helpers import N_DIMS, N_POINTS, assert_only_callers_hook, no_hooks, tiny
from analysis_helpers import prompts as _prompts


def prompts(batch: int = 8, n_points: int = N_POINTS, seed: int = 0):
    return _prompts(batch, n_points, seed)


def spread_dt(model, scale: float = 3.0) -> None:
    """Make Δ vary across positions (Mamba's init gives an almost constant, tiny Δ)."""
    with torch.no_grad():
        for l, s in S.mamba_slots(model):
            getattr(model.blocks[l], s).dt_proj.weight.mul_(scale * 10)


@pytest.mark.parametrize("arch, dtype, tol", [
    ("mamba", torch.float64, 1e-12), ("mambaformer", torch.float64, 1e-12),
    ("llama_mamba_ffn", torch.float64, 1e-12), ("standard_hybrid", torch.float32, 1e-5),
])
def test_hidden_attention_reproduces_y_minus_skip(arch, dtype, tol):
    model = tiny(arch, n_layers=2).to(dtype)
    spread_dt(model)
    xs, ys = prompts()
    xs, ys = xs.to(dtype), ys.to(dtype)
    slots = S.mamba_slots(model)
    assert slots
    with torch.no_grad():
        _, cache = model.run_with_cache(xs, ys)
    for l, s in slots:
        alpha = S.ssm_attention(model, xs, ys, l, s)  # (b, d_inner, L, L)
        d_inner = getattr(model.blocks[l], s).d_inner
        assert alpha.shape == (8, d_inner, 2 * N_POINTS, 2 * N_POINTS)
        u = cache[f"blocks.{l}.{s}.hook_x"].double()
        y = cache[f"blocks.{l}.{s}.hook_y"].double()
        D = getattr(model.blocks[l], s).D.detach().double()
        want = y - D * u
        got = torch.einsum("bcts,bsc->btc", alpha, u)
        assert (got - want).abs().max() <= tol * max(1.0, float(want.abs().max())), (l, s)
        assert torch.equal(alpha.triu(1), torch.zeros_like(alpha))  # causal: α[t, s] = 0 for s > t
    assert no_hooks(model)


def test_effective_attention_matches_the_state_recurrence_and_reductions():
    g = torch.Generator().manual_seed(0)
    b, L, d, n = 2, 7, 5, 3
    dt = torch.rand(b, L, d, generator=g, dtype=torch.float64) * 2
    A = -torch.rand(d, n, generator=g, dtype=torch.float64) * 3
    B_ = torch.randn(b, L, n, generator=g, dtype=torch.float64)
    C_ = torch.randn(b, L, n, generator=g, dtype=torch.float64)
    alpha = S.effective_attention(dt, A, B_, C_, include_dt_scaling=True, max_elements=50)  # tiny chunks: several channel chunks
    direct = S.effective_attention(dt, A, B_, C_, include_dt_scaling=True, method="direct")
    torch.testing.assert_close(direct, alpha, atol=1e-14, rtol=1e-12)
    for s in range(L):  # the impulse response of the scan to u = e_s is column s of α
        u = torch.zeros(b, L, d, dtype=torch.float64)
        u[:, s] = 1.0
        y = torch.einsum("bldn,bln->bld", ssm_states(u, dt, A, B_, method="sequential"), C_)
        torch.testing.assert_close(alpha[..., s].permute(0, 2, 1), y, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(S.effective_attention(dt, A, B_, C_, include_dt_scaling=True, reduce="mean"), alpha.mean(1))
    abs_mean = S.effective_attention(dt, A, B_, C_, include_dt_scaling=True, reduce="abs_mean", channels=[1, 3])
    torch.testing.assert_close(abs_mean, alpha[:, [1, 3]].abs().mean(1))
    torch.testing.assert_close(S.effective_attention(dt, A, B_, C_, include_dt_scaling=True, channels=[4, 0]), alpha[:, [4, 0]])


def test_effective_attention_falls_back_to_the_direct_form_for_long_decays():
    # Σ Δ A reaches about -1000: exp(-S) would overflow, so "auto" must use the direct form
    g = torch.Generator().manual_seed(1)
    b, L, d, n = 1, 40, 2, 3
    dt = 5 + torch.rand(b, L, d, generator=g, dtype=torch.float64)
    A = -torch.tensor([[1.0, 2.0, 5.0], [0.1, 0.2, 0.3]], dtype=torch.float64)
    B_ = torch.randn(b, L, n, generator=g, dtype=torch.float64)
    C_ = torch.randn(b, L, n, generator=g, dtype=torch.float64)
    alpha = S.effective_attention(dt, A, B_, C_, include_dt_scaling=True)
    assert torch.isfinite(alpha).all()
    u = torch.randn(b, L, d, generator=g, dtype=torch.float64)
    y = torch.einsum("bldn,bln->bld", ssm_states(u, dt, A, B_, method="sequential"), C_)
    torch.testing.assert_close(torch.einsum("bcts,bsc->btc", alpha, u), y, atol=1e-12, rtol=1e-10)
    with pytest.raises(ValueError, match="overflow"):
        S.effective_attention(dt, A, B_, C_, include_dt_scaling=True, method="factored")


def test_attention_mass_matches_the_pattern_and_sums_to_one():
    model = tiny("gpt2_rope", n_layers=2)
    xs, ys = prompts()
    t = S.attention_mass(model, xs, ys)
    assert len(t) == 2 * 2 * 3 and list(t.columns) == ["block", "hook", "head", "target", "mean", "ci_low", "ci_high"]
    _, cache = model.run_with_cache(xs, ys)
    p = cache["blocks.1.attn.hook_pattern"].double()[:, 0]  # (b, q, k), head 0
    q = torch.arange(2, 2 * N_POINTS, 2)
    y_share = p[:, q][..., 1::2].sum(-1).mean(-1).mean(0)
    self_share = p[:, q, q].mean(-1).mean(0)
    row = t[(t["block"] == 1) & (t["head"] == 0)].set_index("target")["mean"]
    assert row["y"] == pytest.approx(float(y_share), rel=1e-6)  # shares divide by Σp = 1 ± float32 eps
    assert row["self"] == pytest.approx(float(self_share), rel=1e-6)
    assert row["x"] + row["y"] == pytest.approx(1.0, abs=1e-12)
    assert row["self"] <= row["x"]


def test_linear_attention_shares_are_fractions_of_absolute_weight():
    model = tiny("linear_attention")
    xs, ys = prompts()
    t = S.attention_mass(model, xs, ys).set_index(["head", "target"])["mean"]
    for h in (0, 1):
        assert t[(h, "x")] + t[(h, "y")] == pytest.approx(1.0, abs=1e-12)
        assert 0 < t[(h, "self")] < t[(h, "x")]


def test_dt_stats_match_the_cached_dt():
    model = tiny("mamba", n_layers=2)
    spread_dt(model)
    xs, ys = prompts()
    t = S.dt_stats(model, xs, ys)
    assert len(t) == 2 * 2 * 2  # slots x tokens x stats
    _, cache = model.run_with_cache(xs, ys, names_filter=lambda n: n.endswith("hook_ssm_dt"))  # the same forward path
    dt = cache["blocks.1.mixer.hook_ssm_dt"].double()
    got = t[(t["block"] == 1)].set_index(["token", "stat"])["mean"]
    assert got[("x", "dt_mean")] == pytest.approx(float(dt[:, 0::2].mean()), rel=1e-9)
    assert got[("y", "dt_std")] == pytest.approx(float(dt[:, 1::2].std(1).mean()), rel=1e-9)
    assert got[("y", "dt_std")] > 0


@pytest.mark.parametrize("arch", hi.list_architectures())
def test_summarize_runs_on_every_preset(arch):
    model = tiny(arch)
    xs, ys = prompts(batch=4)
    t = S.summarize(model, xs, ys)
    kinds = set(t["kind"])
    assert ("attention_mass" in kinds) == bool(S.attention_blocks(model))
    assert ("dt" in kinds) == ("ssm_attention_mass" in kinds) == bool(S.mamba_slots(model))
    assert np.isfinite(t["mean"]).all()
    for kind in ("attention_mass", "ssm_attention_mass"):
        shares = t[t["kind"] == kind]
        assert ((shares["mean"] >= 0) & (shares["mean"] <= 1 + 1e-12)).all()
    assert no_hooks(model)


def test_models_without_a_mixer_kind_give_empty_tables():
    xs, ys = prompts(batch=4)
    assert S.attention_mass(tiny("mamba"), xs, ys).empty
    assert S.dt_stats(tiny("gpt2"), xs, ys).empty
    assert S.ssm_attention_mass(tiny("llama"), xs, ys).empty


def test_bad_arguments_raise_value_errors():
    model = tiny("mambaformer")  # block 0: Mamba mixer, block 1: attention + Mamba ffn
    xs, ys = prompts(batch=4)
    with pytest.raises(ValueError, match="out of range"):
        S.attention_mass(model, xs, ys, blocks=[7])
    with pytest.raises(ValueError, match="no attention mixer"):
        S.attention_mass(model, xs, ys, blocks=[0])
    with pytest.raises(ValueError, match="not a Mamba slot"):
        S.dt_stats(model, xs, ys, slots=[(1, "mixer")])
    with pytest.raises(ValueError, match="no Mamba slot"):
        S.ssm_attention(tiny("gpt2"), xs, ys, 0)
    with pytest.raises(ValueError, match="channels"):
        S.ssm_attention(model, xs, ys, 0, channels=[999])
    with pytest.raises(ValueError, match="reduce"):
        S.ssm_attention(model, xs, ys, 0, reduce="max")
    with pytest.raises(ValueError, match="at least 2 points"):
        S.attention_mass(model, xs[:, :1], ys[:, :1])
    with pytest.raises(ValueError, match="ys must"):
        S.dt_stats(model, xs, ys[:2])
    with pytest.raises(ValueError, match="HookedICLModel"):
        S.summarize(hi.baselines.get("least_squares"), xs, ys)
    assert no_hooks(model)


def test_no_hooks_left_after_exceptions():
    model = tiny("standard_hybrid")
    xs, ys = prompts(batch=4)

    def boom(t, hook):
        raise RuntimeError("boom in a hook")

    model.add_hook("blocks.0.ffn.hook_B", boom)  # fires while the capture hooks are attached
    with pytest.raises(RuntimeError, match="boom in a hook"):
        S.ssm_attention(model, xs, ys, 0)
    assert_only_callers_hook(model, "blocks.0.ffn.hook_B")
    original = model.blocks[0].ffn.out_proj.forward
    model.blocks[0].ffn.out_proj.forward = lambda x: (_ for _ in ()).throw(RuntimeError("boom in the forward"))
    try:
        with pytest.raises(RuntimeError, match="boom in the forward"):
            S.summarize(model, xs, ys)
        assert no_hooks(model)
    finally:
        model.blocks[0].ffn.out_proj.forward = original
    model.add_hook("blocks.0.attn.hook_pattern", boom)
    with pytest.raises(RuntimeError, match="boom in a hook"):
        S.summarize(model, xs, ys)
    assert_only_callers_hook(model, "blocks.0.attn.hook_pattern")


def test_analyze_run(tmp_path):
    cfg = TrainConfig.model_validate({
        "name": "summaries", "steps": 2, "batch_size": 8,
        "model": {"arch": "mambaformer", "d_model": 16, "n_layers": 1, "n_heads": 2, "d_state": 4, "expand": 2},
        "task": {"name": "linear_regression", "n_dims": N_DIMS, "n_points": N_POINTS},
        "log": {"every": 1, "progress": False, "baselines": []}, "checkpoint": {"every": 2},
        "eval": {"n_prompts": 8, "batch_size": 8, "baselines": []},
    })
    run = train(cfg, tmp_path / "run")
    table, fig = S.analyze_run(run, n_prompts=8)
    assert set(table["kind"]) == {"attention_mass", "ssm_attention_mass", "dt"}
    assert isinstance(fig, matplotlib.figure.Figure)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == 3 and all(ax.get_ylabel() for ax in titled)
    matplotlib.pyplot.close(fig)
