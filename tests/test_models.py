"""Model zoo: every preset builds, runs, caches every documented hook, is causal, and rejects bad input."""

from __future__ import annotations

import re

import pytest
import torch

import hookedicl as hi
from hookedicl.models import ModelSpec, hook_catalogue, preset
from hookedicl.models.hooks import is_hooked

ARCHS = hi.list_architectures()
SMALL = dict(n_dims=5, d_model=32, n_layers=2, n_heads=2, d_state=4, expand=2)


def small(arch: str, **kw) -> hi.HookedICLModel:
    torch.manual_seed(0)
    return hi.build_model(arch, **{**SMALL, **kw})


def data(b: int = 3, n: int = 6, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=g), torch.randn(b, n, generator=g)


def test_hook_catalogue_spot_checks():
    """A few literal entries of the catalogue (2 prompts x 4 points = 8 tokens, d_model 32,
    expand 2 -> d_inner 64, d_state 4, 2 heads of 16)."""
    cat = hook_catalogue(small("mambaformer").spec)
    assert cat["blocks.0.mixer.hook_ssm_write"] == (2, 8, 64, 4) == cat["blocks.0.mixer.hook_ssm_state"]
    assert cat["blocks.1.ffn.hook_ssm_dt"] == (2, 8, 64) and cat["blocks.1.ffn.hook_B"] == (2, 8, 4)
    assert cat["blocks.1.attn.hook_pattern"] == (2, 2, 8, 8) and cat["blocks.2.hook_ffn_out"] == (2, 8, 32)
    assert "hook_pos_embed" not in cat and "blocks.0.hook_resid_mid" not in cat and len(cat) == 1 + 15 + 2 * 25 + 3
    assert list(cat)[:3] == ["hook_embed", "blocks.0.hook_resid_pre", "blocks.0.ln1.hook_scale"]
    assert list(cat)[-1] == "hook_readout"


@pytest.mark.parametrize("arch", ARCHS)
def test_hook_dict_is_the_catalogue(arch):
    m = small(arch)
    assert set(m.hook_dict) == set(hook_catalogue(m.spec))
    # in forward order, with the shapes the forward sees
    assert list(m.hook_shapes(n_points=3, batch_size=1).items()) == list(hook_catalogue(m.spec, 1, 3).items())


def test_campbell_zoo_and_extras_listed():
    assert set(ARCHS) >= {
        "gpt2", "gpt2_rms", "gpt2_rope", "gpt2_swiglu", "gpt2_rms_swiglu", "gpt2_rms_rope", "gpt2_rope_swiglu",
        "llama", "llama_nope_mamba", "llama_mamba_ffn", "mambaformer", "mamba", "standard_hybrid",
    }


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("b,n,d", [(1, 1, 5), (3, 6, 5), (2, 11, 3)])
def test_forward_shapes(arch, b, n, d):
    m = small(arch, n_dims=d)
    xs, ys = data(b, n, d)
    out = m(xs, ys)
    assert out.shape == (b, n) and torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_run_with_cache_has_every_catalogued_hook(arch):
    m = small(arch)
    xs, ys = data(2, 4)
    preds, cache = m.run_with_cache(xs, ys)
    expected = hook_catalogue(m.spec, batch=2, n_points=4)
    got = {k: tuple(v.shape) for k, v in cache.items()}
    assert got == expected
    assert torch.allclose(preds, m(xs, ys), atol=1e-6)
    assert not any(is_hooked(hp) for hp in m.hook_dict.values())


@pytest.mark.parametrize("arch", ARCHS)
def test_causal(arch):
    m = small(arch)
    xs, ys = data(2, 7)
    base = m(xs, ys)
    for i in (0, 3, 6):
        xs2, ys2 = xs.clone(), ys.clone()
        xs2[:, i + 1 :] = torch.randn_like(xs2[:, i + 1 :])
        ys2[:, i:] = torch.randn_like(ys2[:, i:])  # y_i comes after x_i: the prediction at x_i must not see it
        out = m(xs2, ys2)
        assert torch.allclose(out[:, : i + 1], base[:, : i + 1], atol=1e-5), f"prediction {i} saw the future"
        if i < 6:
            assert not torch.allclose(out[:, i + 1 :], base[:, i + 1 :])


@pytest.mark.parametrize("arch", ["gpt2", "llama", "mambaformer", "gpt2_rope"])
def test_head_ablation_changes_output_and_leaves_no_hooks(arch):
    m = small(arch)
    xs, ys = data()
    clean = m(xs, ys)
    layer = len(m.blocks) - 1

    def zero_head(z, hook):
        z = z.clone()
        z[:, :, 0] = 0
        return z

    ablated = m.run_with_hooks(xs, ys, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero_head)])
    assert not torch.allclose(ablated, clean)
    assert not any(is_hooked(hp) for hp in m.hook_dict.values())
    assert torch.equal(m(xs, ys), clean)

    def boom(z, hook):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        m.run_with_hooks(xs, ys, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", boom)])
    assert not any(is_hooked(hp) for hp in m.hook_dict.values())
    with pytest.raises(ValueError):
        m.run_with_hooks(xs[:, :, :2], ys, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero_head)])
    assert not any(is_hooked(hp) for hp in m.hook_dict.values())
    assert torch.equal(m(xs, ys), clean)


def test_sdpa_fast_path_equals_materialised_pattern():
    m = small("gpt2_rope")
    xs, ys = data()
    fast = m(xs, ys)
    slow, cache = m.run_with_cache(xs, ys, names_filter=lambda n: n.endswith("hook_pattern"))
    assert torch.allclose(fast, slow, atol=1e-6)
    pat = cache["blocks.0.attn.hook_pattern"]
    assert torch.allclose(pat.sum(-1), torch.ones(()), atol=1e-6)
    assert torch.all(pat.triu(1) == 0)


def test_ssm_state_hook_edits_flow_into_output():
    m = small("mamba")
    xs, ys = data()
    clean = m(xs, ys)
    same = m.run_with_hooks(xs, ys, fwd_hooks=[("blocks.0.mixer.hook_ssm_state", lambda h, hook: h)])
    assert torch.allclose(same, clean, atol=1e-6)
    mixer = m.blocks[0].mixer
    with m.hooks(fwd_hooks=[("blocks.0.mixer.hook_ssm_state", lambda h, hook: torch.zeros_like(h))]):
        zeroed, cache = m.run_with_cache(xs, ys, names_filter=["blocks.0.mixer.hook_y", "blocks.0.mixer.hook_x"])
    # with h = 0 the SSM output is only the skip term D * u
    assert torch.allclose(cache["blocks.0.mixer.hook_y"], cache["blocks.0.mixer.hook_x"] * mixer.D, atol=1e-7)
    assert (zeroed - clean).abs().max() > 10 * (same - clean).abs().max()


def test_linear_attention_option_has_no_softmax():
    spec = preset("gpt2", **{**SMALL, "n_layers": 1})
    blocks = [b.model_copy(update={"mixer": b.mixer.model_copy(update={"softmax": False})}) for b in spec.blocks]
    m = hi.build_model(spec.model_copy(update={"blocks": blocks}))
    xs, ys = data()
    _, cache = m.run_with_cache(xs, ys)
    pat = cache["blocks.0.attn.hook_pattern"]
    assert not torch.allclose(pat.sum(-1), torch.ones(()))
    assert torch.all(pat.triu(1) == 0)


@pytest.mark.parametrize("arch", ["gpt2", "mambaformer", "llama_nope_mamba", "standard_hybrid"])
def test_spec_round_trips_through_yaml_and_json(arch):
    spec = preset(arch, **SMALL)
    assert ModelSpec.from_yaml(spec.to_yaml()) == spec
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec
    m1 = hi.build_model(spec)
    m2 = hi.build_model(ModelSpec.from_yaml(spec.to_yaml()))
    m2.load_state_dict(m1.state_dict())
    xs, ys = data()
    assert torch.equal(m1(xs, ys), m2(xs, ys))


def test_leading_mamba_block_and_no_doubled_residual():
    m = small("mambaformer")
    assert m.blocks[0].mixer_name == "mixer" and m.blocks[0].ffn_name is None
    assert len(m.blocks) == SMALL["n_layers"] + 1
    # a block's output is exactly resid + its branches: zeroing the branch leaves the residual unchanged
    xs, ys = data()
    hooks = [("blocks.0.hook_mixer_out", lambda x, hook: torch.zeros_like(x))]
    _, cache = m.run_with_cache(xs, ys, names_filter=lambda n: n.startswith("blocks.0.hook_resid"))
    with m.hooks(fwd_hooks=hooks):
        _, cache0 = m.run_with_cache(xs, ys, names_filter=lambda n: n.startswith("blocks.0.hook_resid"))
    assert torch.equal(cache0["blocks.0.hook_resid_post"], cache0["blocks.0.hook_resid_pre"])


def test_same_standard_init_for_pure_and_hybrid_models():
    """Hybrids get the same initialisation as pure models (an anchor-code defect avoided)."""
    for arch in ("gpt2", "standard_hybrid", "mambaformer"):
        m = small(arch, d_model=64, n_layers=4)
        qkv = m.blocks[-1].attn.qkv_proj.weight
        assert abs(qkv.std().item() - 0.02) < 0.002, arch
        w_o = m.blocks[-1].attn.out_proj.weight
        assert abs(w_o.std().item() - 0.02 / (2 * len(m.blocks)) ** 0.5) < 0.002, arch


def test_vector_targets_and_akyurek_layout():
    m = hi.build_model("gpt2", **{**SMALL, "y_dim": 3})
    xs = torch.randn(2, 4, 5)
    out = m(xs, torch.randn(2, 4, 3))
    assert out.shape == (2, 4, 3)
    m = hi.build_model("llama", **SMALL, layout="akyurek")
    assert m.read_in.in_features == 6
    assert m(*data()).shape == (3, 6)
    m = hi.build_model("gpt2", **SMALL, layout="paired")
    tokens = m.interleave(*data(1, 2))
    xs, ys = data(1, 2)
    assert torch.equal(tokens[0, 1, :5], xs[0, 0]) and tokens[0, 1, 5] == ys[0, 0] and tokens[0, 0, 5] == 0


@pytest.mark.parametrize(
    "xs_shape,ys_shape,match",
    [
        ((3, 6), (3, 6), r"xs must be \(batch, n_points, n_dims\)"),
        ((3, 6, 4), (3, 6), "n_dims=4 but the model expects n_dims=5"),
        ((3, 6, 5), (3, 5), r"ys must have shape \(3, 6\)"),
        ((3, 6, 5), (2, 6), r"ys must have shape \(3, 6\)"),
        ((3, 6, 5), (3, 6, 1), r"ys must have shape \(3, 6\)"),
    ],
)
def test_bad_input_shapes(xs_shape, ys_shape, match):
    m = small("gpt2")
    with pytest.raises(ValueError, match=match):
        m(torch.randn(xs_shape), torch.randn(ys_shape))


def test_bad_input_values_and_lengths():
    m = small("gpt2", n_ctx=10)
    xs, ys = data(2, 4)
    xs[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m(xs, ys)
    with pytest.raises(ValueError, match="n_ctx=10"):
        m(*data(2, 6))
    with pytest.raises(ValueError, match="floating point"):
        m(torch.ones(2, 4, 5, dtype=torch.long), torch.ones(2, 4, dtype=torch.long))


def test_bad_specs_name_the_problem():
    with pytest.raises(ValueError, match="unknown architecture 'gpt3'"):
        hi.build_model("gpt3")
    with pytest.raises(ValueError, match="n_heads=3 must divide d_model=32"):
        hi.build_model("gpt2", d_model=32, n_heads=3)
    with pytest.raises(ValueError, match="d_model"):
        hi.build_model("gpt2", d_model=-4)
    with pytest.raises(ValueError, match="n_layers"):
        hi.build_model("gpt2", n_layers=0)
    bad = preset("gpt2", **{k: v for k, v in SMALL.items() if k not in ("d_state", "expand")}).to_dict()
    bad["blocks"][0]["mixer"]["kind"] = "convolution"
    with pytest.raises(ValueError, match=re.escape("blocks.0.mixer")):
        hi.build_model(bad)
    bad["blocks"][0]["mixer"] = {"kind": "attention", "n_heads": 2, "heads_typo": 1}
    with pytest.raises(ValueError, match="heads_typo"):
        hi.build_model(bad)


def test_backward_through_every_preset():
    for arch in ARCHS:
        m = small(arch)
        xs, ys = data(2, 5)
        loss = (m(xs, ys) - ys).pow(2).mean()
        loss.backward()
        grads = [p.grad for p in m.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), arch


@pytest.mark.parametrize("k,bias", [(4, True), (2, False), (1, True)])
def test_causal_depthwise_conv_matches_conv1d(k, bias):
    from hookedicl.models.mamba import causal_depthwise_conv

    torch.manual_seed(k)
    conv = torch.nn.Conv1d(6, 6, k, groups=6, padding=k - 1, bias=bias).double()
    x = torch.randn(3, 9, 6, dtype=torch.float64, requires_grad=True)
    ref = conv(x.transpose(1, 2))[..., :9].transpose(1, 2)
    out = causal_depthwise_conv(x, conv.weight, conv.bias)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b)
