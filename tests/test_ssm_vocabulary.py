"""Mamba's SSM vocabulary (TransformerLens 4.3 names): hook_ssm_dt / hook_ssm_write /
hook_ssm_state, the effective attention of `SSMMixerProtocol` and TransformerLens's
`ActivationCache.compute_ssm_effective_attention`, patching semantics, fast-path agreement, and
the Δ initialisation. Every expected value is computed here from raw hooks, step by step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from transformer_lens import ActivationCache
from transformer_lens.model_bridge.generalized_components.ssm_protocol import SSMMixerProtocol

import hookedicl as hi
from hookedicl.analysis.summaries import ssm_effective_attention
from hookedicl.models import BlockSpec, MambaSpec, ModelSpec
from hookedicl.models import mamba as mamba_module
from hookedicl.models.hooks import is_hooked

SIZES = dict(n_dims=5, d_model=16, n_layers=2, n_heads=2, d_state=4, expand=2, init_std=0.2)
L = 8  # tokens (4 points)


def model(arch: str = "mamba", dtype: torch.dtype = torch.float64) -> hi.HookedICLModel:
    torch.manual_seed(0)
    m = hi.build_model(arch, **SIZES).to(dtype)
    with torch.no_grad():  # make Δ vary across positions (Mamba's init gives a tiny, near-constant Δ)
        for mod in m.modules():
            if isinstance(mod, mamba_module.MambaMixer):
                mod.dt_proj.weight.mul_(30)
    return m


def data(dtype: torch.dtype = torch.float64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, L // 2, 5, generator=g, dtype=dtype), torch.randn(3, L // 2, generator=g, dtype=dtype)


def direct_attention(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """M[b, c, n, t, s] = C_t[n] · Π_{r=s+1..t} exp(Δ_r[c] A[c, n]) · B_s[n], by running products."""
    b, n_pos, d = dt.shape
    out = torch.zeros(b, d, A.shape[1], n_pos, n_pos, dtype=torch.float64)
    for t in range(n_pos):
        prod = torch.ones(b, d, A.shape[1], dtype=torch.float64)
        for s in range(t, -1, -1):
            out[:, :, :, t, s] = C[:, t, None, :] * prod * B[:, s, None, :]
            prod = prod * torch.exp(dt[:, s, :, None] * A)
    return out


def raw(cache, prefix: str) -> dict[str, torch.Tensor]:
    return {k: cache[prefix + "hook_" + k].double() for k in ("x", "ssm_dt", "B", "C", "ssm_write", "ssm_state", "y")}


# ------------------------------------------------------------------------------ effective attention
def test_effective_attention_equals_the_sequential_products_of_raw_hooks():
    m = model()
    xs, ys = data()
    with torch.no_grad():
        _, cache = m.run_with_cache(xs, ys)
    mixer = m.blocks[1].mixer
    assert isinstance(mixer, SSMMixerProtocol)
    h = raw(cache, "blocks.1.mixer.")
    want = direct_attention(h["ssm_dt"], mixer.A.double(), h["B"], h["C"])  # (b, c, n, t, s)
    got = mixer.compute_effective_attention(cache, 1, per_state_coord=True)
    assert got.shape == (3, mixer.d_inner, mixer.d_state, L, L) and got.dtype == torch.float64
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    summed = mixer.compute_effective_attention(cache, 1)
    assert summed.shape == (3, mixer.d_inner, L, L)
    torch.testing.assert_close(summed, want.sum(2), atol=1e-12, rtol=1e-10)
    scaled = mixer.compute_effective_attention(cache, 1, include_dt_scaling=True)  # × Δ_s[c] on column s
    torch.testing.assert_close(scaled, want.sum(2) * h["ssm_dt"].permute(0, 2, 1)[:, :, None, :], atol=1e-12, rtol=1e-10)
    sel = mixer.compute_effective_attention(cache, 1, channels=[3, 0], reduce="abs_mean")
    torch.testing.assert_close(sel, want.sum(2)[:, [3, 0]].abs().mean(1), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_effective_attention_is_causal_and_reconstructs_hook_y(dtype, tol):
    m = model(dtype=dtype)
    xs, ys = data(dtype)
    with torch.no_grad():
        _, cache = m.run_with_cache(xs, ys)
    for l in range(2):
        mixer = m.blocks[l].mixer
        for per_state in (False, True):
            M = mixer.compute_effective_attention(cache, l, per_state_coord=per_state)
            assert torch.equal(M.triu(1), torch.zeros_like(M))  # s > t: no weight on the future
        M = mixer.compute_effective_attention(cache, l, include_dt_scaling=True)
        h = raw(cache, f"blocks.{l}.mixer.")
        y = torch.einsum("bcts,bsc->btc", M, h["x"]) + mixer.D.detach().double() * h["x"]
        assert (y - h["y"]).abs().max() <= tol * max(1.0, float(h["y"].abs().max()))


def test_transformer_lens_activation_cache_computes_it_on_a_pure_mamba():
    m = model()
    xs, ys = data()
    with torch.no_grad():
        _, cache = m.run_with_cache(xs, ys)
    tl = ActivationCache(dict(cache), m)
    assert tl.ssm_layers() == [0, 1]
    for l in range(2):
        mine = m.blocks[l].mixer.compute_effective_attention(cache, l, include_dt_scaling=True)
        torch.testing.assert_close(tl.compute_ssm_effective_attention(l, include_dt_scaling=True), mine, atol=0, rtol=0)
    h = raw(cache, "blocks.0.mixer.")
    want = direct_attention(h["ssm_dt"], m.blocks[0].mixer.A.double(), h["B"], h["C"])
    torch.testing.assert_close(tl.compute_ssm_effective_attention(0, per_state_coord=True), want, atol=1e-12, rtol=1e-10)
    stacked = tl.compute_ssm_effective_attention()  # every block is an SSM block: stacked over layers
    assert stacked.shape == (2, 3, m.blocks[0].mixer.d_inner, L, L)
    torch.testing.assert_close(stacked[0], want.sum(2), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("arch", ["mambaformer", "llama_mamba_ffn", "standard_hybrid"])
def test_ffn_slot_mamba_has_the_same_contract_through_hookedicls_helper(arch):
    m = model(arch)
    xs, ys = data()
    with torch.no_grad():
        _, cache = m.run_with_cache(xs, ys)
    tl = ActivationCache(dict(cache), m)
    layer = len(m.blocks) - 1  # attention mixer + Mamba ffn
    with pytest.raises(TypeError, match="no SSM mixer"):  # TransformerLens looks in the mixer slot only
        tl.compute_ssm_effective_attention(layer)
    ffn = m.blocks[layer].ffn
    h = raw(cache, f"blocks.{layer}.ffn.")
    for c in (cache, tl):
        M = ssm_effective_attention(c, layer, "ffn", model=m, include_dt_scaling=True)
        assert M.shape == (3, ffn.d_inner, L, L) and torch.equal(M.triu(1), torch.zeros_like(M))
        y = torch.einsum("bcts,bsc->btc", M, h["x"]) + ffn.D.detach().double() * h["x"]
        torch.testing.assert_close(y, h["y"], atol=1e-12, rtol=1e-10)
    want = direct_attention(h["ssm_dt"], ffn.A.double(), h["B"], h["C"])
    torch.testing.assert_close(ssm_effective_attention(tl, layer, per_state_coord=True), want, atol=1e-12, rtol=1e-10)
    if arch == "mambaformer":  # the leading Mamba block sits in the mixer slot: TransformerLens finds it
        assert tl.ssm_layers() == [0]
        torch.testing.assert_close(tl.compute_ssm_effective_attention(0), ssm_effective_attention(tl, 0), atol=0, rtol=0)


def test_effective_attention_argument_errors():
    m = model("mambaformer")
    xs, ys = data()
    with torch.no_grad():
        _, cache = m.run_with_cache(xs, ys, names_filter=lambda n: n.startswith("blocks.0."))
    with pytest.raises(ValueError, match="blocks.0.mixer, not in block layer_idx=2"):
        m.blocks[0].mixer.compute_effective_attention(cache, 2)
    with pytest.raises(KeyError, match="blocks.1.ffn.hook_ssm_dt"):
        m.blocks[1].ffn.compute_effective_attention(cache, 1)
    with pytest.raises(ValueError, match="model="):
        ssm_effective_attention(dict(cache), 0)
    with pytest.raises(ValueError, match="no Mamba slot"):
        ssm_effective_attention(cache, 1, model=hi.build_model("gpt2", **SIZES))
    with pytest.raises(ValueError, match="not a Mamba slot"):
        ssm_effective_attention(cache, 1, "mixer", model=m)


# ------------------------------------------------------------------------------------- the hooks
def test_write_and_state_hooks_follow_the_recurrence_from_raw_hooks():
    m = model()
    xs, ys = data()
    with torch.no_grad():
        _, cache = m.run_with_cache(xs, ys)
    mixer = m.blocks[0].mixer
    h = raw(cache, "blocks.0.mixer.")
    dt, A = h["ssm_dt"], mixer.A.double()
    torch.testing.assert_close(h["ssm_write"], (dt * h["x"])[..., None] * h["B"][:, :, None, :], atol=1e-14, rtol=0)
    state = torch.zeros_like(h["ssm_write"][:, 0])
    for t in range(L):
        state = torch.exp(dt[:, t, :, None] * A) * state + h["ssm_write"][:, t]
        torch.testing.assert_close(h["ssm_state"][:, t], state, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(h["y"], (h["ssm_state"] * h["C"][:, :, None, :]).sum(-1) + mixer.D.double() * h["x"])
    assert torch.equal(cache["blocks.0.mixer.hook_ssm_dt"], F.softplus(
        mixer.dt_proj(mixer.x_proj(cache["blocks.0.mixer.hook_x"])[..., : mixer.dt_rank])))


def test_patching_ssm_state_changes_only_that_positions_readout():
    m = model()
    xs, ys = data()
    t = 3
    names = ["blocks.0.mixer.hook_ssm_state", "blocks.0.mixer.hook_y", "blocks.0.mixer.hook_C", "blocks.0.mixer.hook_x"]
    new = torch.randn(3, m.blocks[0].mixer.d_inner, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def patch(hs, hook):
        hs = hs.clone()
        hs[:, t] = new
        return hs

    with torch.no_grad():
        clean_preds, clean = m.run_with_cache(xs, ys, names_filter=names)
        with m.hooks(fwd_hooks=[("blocks.0.mixer.hook_ssm_state", patch)]):
            preds, patched = m.run_with_cache(xs, ys, names_filter=names)
    y0, y1 = clean["blocks.0.mixer.hook_y"], patched["blocks.0.mixer.hook_y"]
    others = [p for p in range(L) if p != t]
    assert torch.equal(y1[:, others], y0[:, others])  # the recurrence is not re-run from an edited state
    C, u = clean["blocks.0.mixer.hook_C"][:, t], clean["blocks.0.mixer.hook_x"][:, t]
    torch.testing.assert_close(y1[:, t], (new * C[:, None, :]).sum(-1) + m.blocks[0].mixer.D * u)
    assert (y1[:, t] - y0[:, t]).abs().min() > 0
    assert torch.equal(preds[:, : (t + 1) // 2], clean_preds[:, : (t + 1) // 2])  # causal: earlier tokens untouched
    assert not any(is_hooked(hp) for hp in m.hook_dict.values())


def test_patching_ssm_write_carries_forward_through_the_recurrence():
    m = model()
    xs, ys = data()
    t = 2
    pre = "blocks.0.mixer."
    names = [pre + "hook_ssm_state", pre + "hook_ssm_dt", pre + "hook_y"]
    delta = torch.randn(3, m.blocks[0].mixer.d_inner, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def patch(w, hook):
        w = w.clone()
        w[:, t] += delta
        return w

    with torch.no_grad():
        _, clean = m.run_with_cache(xs, ys, names_filter=names)
        with m.hooks(fwd_hooks=[(pre + "hook_ssm_write", patch)]):
            _, patched = m.run_with_cache(xs, ys, names_filter=names)
    h0, h1 = clean[pre + "hook_ssm_state"], patched[pre + "hook_ssm_state"]
    assert torch.equal(h1[:, :t], h0[:, :t])
    dt, A = clean[pre + "hook_ssm_dt"], m.blocks[0].mixer.A.double()
    carried = delta
    for s in range(t, L):  # h'_s − h_s = Π_{r=t+1..s} exp(Δ_r A) ⊙ δ
        if s > t:
            carried = torch.exp(dt[:, s, :, None] * A) * carried
        torch.testing.assert_close(h1[:, s] - h0[:, s], carried, atol=1e-12, rtol=1e-9)
        assert (h1[:, s] - h0[:, s]).abs().min() > 0
    y0, y1 = clean[pre + "hook_y"], patched[pre + "hook_y"]
    assert torch.equal(y1[:, :t], y0[:, :t]) and ((y1[:, t:] - y0[:, t:]).abs().amax(-1) > 0).all()


def test_fast_path_is_the_default_and_agrees_with_the_hooked_paths(monkeypatch):
    m = model(dtype=torch.float32)
    xs, ys = data(torch.float32)
    pre = "blocks.0.mixer."
    with torch.no_grad():
        base, full = m.run_with_cache(xs, ys)  # every hook: writes and states materialised

    def boom(*a, **k):
        raise AssertionError("states materialised although no state/write hook is active")

    monkeypatch.setattr(mamba_module, "ssm_states", boom)
    monkeypatch.setattr(mamba_module, "states_from_writes", boom)
    with torch.no_grad():
        fast = m(xs, ys)
        fast2, ys_only = m.run_with_cache(xs, ys, names_filter=lambda n: not n.endswith(("ssm_state", "ssm_write")))
    monkeypatch.undo()
    torch.testing.assert_close(fast, base, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ys_only[pre + "hook_y"], full[pre + "hook_y"], atol=1e-5, rtol=1e-5)
    for name in ("hook_ssm_state", "hook_ssm_write"):
        with torch.no_grad():
            out, c = m.run_with_cache(xs, ys, names_filter=[pre + name, pre + "hook_y"])
        torch.testing.assert_close(out, fast, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(c[pre + name], full[pre + name], atol=1e-6, rtol=1e-5)
    m.blocks[0].mixer.scan_method = "sequential"
    with torch.no_grad():
        torch.testing.assert_close(m.run_with_hooks(xs, ys, fwd_hooks=[(pre + "hook_ssm_write", lambda w, hook: w)]), fast,
                                   atol=1e-5, rtol=1e-5)
    m.blocks[0].mixer.scan_method = "auto"
    grads = []
    for hooks in ([], [(pre + "hook_ssm_write", lambda w, hook: w)], [(pre + "hook_ssm_state", lambda w, hook: w)]):
        m.zero_grad()
        m.run_with_hooks(xs, ys, fwd_hooks=hooks).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.blocks[0].mixer.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads[2], grads[0], atol=1e-5, rtol=1e-4)


def test_one_name_per_activation():
    m = model("mambaformer")
    names = set(m.hook_dict)
    assert not any(n.endswith(".hook_dt") for n in names)  # retired in favour of hook_ssm_dt
    for slot in ("blocks.0.mixer.", "blocks.1.ffn."):
        assert {slot + f"hook_ssm_{k}" for k in ("dt", "write", "state")} <= names


# --------------------------------------------------------------------------------- Δ at init
def mamba_spec(**dt) -> ModelSpec:
    return ModelSpec(n_dims=5, d_model=64, pos_embed="none", norm="rmsnorm",
                     blocks=[BlockSpec(mixer=MambaSpec(d_state=4, expand=4, **dt))])


def init_dt(spec: ModelSpec, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return F.softplus(hi.build_model(spec).blocks[0].mixer.dt_proj.bias.detach().double())  # (d_inner,) = 256


@pytest.mark.parametrize("dt_min, dt_max", [(1e-3, 0.1), (0.01, 0.05)])
def test_dt_init_is_log_uniform_in_the_specs_range(dt_min, dt_max):
    dt = init_dt(mamba_spec(dt_min=dt_min, dt_max=dt_max, dt_init_floor=1e-5))
    assert dt.min() >= dt_min * (1 - 1e-5) and dt.max() <= dt_max * (1 + 1e-5)
    q = (dt.log() - math.log(dt_min)) / (math.log(dt_max) - math.log(dt_min))  # ~ U(0, 1)
    assert abs(float(q.mean()) - 0.5) < 0.1 and abs(float(q.std()) - 12**-0.5) < 0.06
    assert q.min() < 0.05 and q.max() > 0.95


def test_dt_init_floor_clamps_and_bad_ranges_are_rejected():
    dt = init_dt(mamba_spec(dt_min=1e-5, dt_max=1e-3, dt_init_floor=1e-4))
    assert dt.min() >= 1e-4 * (1 - 1e-5)
    assert 0.3 < float((dt < 1.0001e-4).double().mean()) < 0.7  # half of logU(1e-5, 1e-3) is below the floor
    with pytest.raises(ValidationError, match="dt_min=0.2 must be <= dt_max=0.1"):
        MambaSpec(dt_min=0.2, dt_max=0.1)
