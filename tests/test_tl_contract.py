"""The TransformerLens contract: `run_with_cache` returns TL's `ActivationCache`, `model.cfg` carries
the fields TL's helpers read, attention exposes TL-shaped weight views, `forward` has a loss mode.

Every check compares a TL helper's result with a quantity computed here from raw hooks and the
projection weights (`qkv_proj`, `out_proj`), not with the helper itself.
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens import ActivationCache

import hookedicl as hi
from analysis_helpers import N_DIMS, no_hooks, prompts, tiny


def raw(model, xs, ys, names):
    """Activations captured by plain forward hooks (no run_with_cache)."""
    got = {}

    def grab(t, hook):
        got[hook.name] = t.detach().clone()

    with torch.no_grad(), model.hooks(fwd_hooks=[(n, grab) for n in names]):
        model(xs, ys)
    return got


def test_run_with_cache_is_a_tl_activation_cache_with_tl_shorthand():
    m = tiny("gpt2", n_layers=2)
    xs, ys = prompts()
    preds, cache = m.run_with_cache(xs, ys)
    assert isinstance(cache, ActivationCache)
    ref = raw(m, xs, ys, ["blocks.1.hook_resid_post", "blocks.0.attn.hook_pattern", "blocks.0.ln1.hook_scale"])
    torch.testing.assert_close(cache["resid_post", 1], ref["blocks.1.hook_resid_post"])
    torch.testing.assert_close(cache["resid_post", -1], ref["blocks.1.hook_resid_post"])
    torch.testing.assert_close(cache["pattern", 0], ref["blocks.0.attn.hook_pattern"])
    torch.testing.assert_close(cache["scale", 0, "ln1"], ref["blocks.0.ln1.hook_scale"])
    torch.testing.assert_close(preds, m(xs, ys))
    _, plain = m.run_with_cache(xs, ys, return_cache_object=False)
    assert type(plain) is dict and set(plain) == set(cache.keys())
    assert no_hooks(m)


@pytest.mark.parametrize(
    "arch, norm, pos, attn_only, gated, act",
    [
        ("gpt2", "LN", "standard", False, False, "gelu"),
        ("llama", "RMS", "rotary", False, True, "silu"),
        ("mamba", "RMS", "none", True, False, "relu"),
        ("gpt2_rope", "LN", "rotary", False, False, "gelu"),
    ],
)
def test_cfg_is_derived_from_the_spec(arch, norm, pos, attn_only, gated, act):
    m = tiny(arch, n_layers=2)
    cfg = m.cfg
    spec = m.spec
    assert cfg.n_layers == len(spec.blocks) == len(m.blocks)
    assert cfg.d_model == spec.d_model and cfg.n_ctx == spec.n_ctx
    assert cfg.normalization_type == norm and cfg.positional_embedding_type == pos
    assert cfg.attn_only is attn_only and cfg.gated_mlp is gated and cfg.act_fn == act
    attn = [b.attn for b in m.blocks if hasattr(b, "attn")]
    assert cfg.n_heads == (attn[0].n_heads if attn else 0)
    assert cfg.d_head == (attn[0].d_head if attn else 0)
    mlps = [b.mlp for b in m.blocks if hasattr(b, "mlp")]
    assert cfg.d_mlp == (mlps[0].W_out.in_features if mlps else None)
    assert cfg.dtype == torch.float32 and cfg.device == "cpu"
    m.to(torch.float64)
    assert m.cfg.dtype == torch.float64  # derived, never stored


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_weight_views_reproduce_q_k_v_and_head_results(arch):
    m = tiny(arch, n_layers=2)
    xs, ys = prompts()
    _, cache = m.run_with_cache(xs, ys)
    attn = m.blocks[1].attn
    x = cache["blocks.1.ln1.hook_normalized"]
    w = attn.qkv_proj.weight
    d, H, dh = m.spec.d_model, attn.n_heads, attn.d_head
    for i, (W, b, name) in enumerate([(attn.W_Q, attn.b_Q, "q"), (attn.W_K, attn.b_K, "k"), (attn.W_V, attn.b_V, "v")]):
        assert W.shape == (H, d, dh) and b.shape == (H, dh)
        # independent: the rows of the fused projection for this head, applied by hand
        for h in range(H):
            rows = w[i * d + h * dh: i * d + (h + 1) * dh]
            want = x @ rows.T + (0 if attn.qkv_proj.bias is None else attn.qkv_proj.bias[i * d + h * dh: i * d + (h + 1) * dh])
            torch.testing.assert_close(cache[f"blocks.1.attn.hook_{name}"][:, :, h], want, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(x @ W[h] + b[h], want, atol=1e-5, rtol=1e-5)
    assert attn.W_O.shape == (H, dh, d) and attn.b_O.shape == (d,)
    per_head, labels = cache.stack_head_results(layer=2, return_labels=True)
    assert labels == [f"L{l}H{h}" for l in range(2) for h in range(H)]
    for l in range(2):
        z = cache[f"blocks.{l}.attn.hook_z"]
        wo = m.blocks[l].attn.out_proj.weight  # (d_model, H * d_head)
        for h in range(H):
            want = z[:, :, h] @ wo[:, h * dh:(h + 1) * dh].T
            torch.testing.assert_close(per_head[l * H + h], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(per_head[l * H:(l + 1) * H].sum(0) + m.blocks[l].attn.b_O,
                                   cache[f"blocks.{l}.hook_attn_out"], atol=1e-5, rtol=1e-5)


def test_weight_views_share_storage_with_the_projections():
    m = tiny("gpt2")
    attn = m.blocks[0].attn
    with torch.no_grad():
        attn.out_proj.weight.zero_()
    assert float(attn.W_O.detach().abs().sum()) == 0.0
    assert attn.W_Q.data_ptr() == attn.qkv_proj.weight.data_ptr()


def test_tl_residual_helpers_against_raw_hooks():
    m = tiny("gpt2", n_layers=2)
    xs, ys = prompts()
    _, cache = m.run_with_cache(xs, ys)
    parts, labels = cache.decompose_resid(return_labels=True)
    assert labels == ["embed", "pos_embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]
    torch.testing.assert_close(parts.sum(0), cache["blocks.1.hook_resid_post"], atol=1e-5, rtol=1e-5)
    acc = cache.accumulated_resid(apply_ln=True)
    assert acc.shape[0] == 3
    # TL's apply_ln divides the centred stream by the cached scale, without the norm's affine
    # weights: times ln_final's weight plus its bias it must be ln_final's own output.
    ln = m.ln_final
    torch.testing.assert_close(acc[-1] * ln.w + ln.b, cache["ln_final.hook_normalized"], atol=1e-5, rtol=1e-5)
    stacked = cache.stack_activation("resid_post")
    torch.testing.assert_close(stacked[1], cache["blocks.1.hook_resid_post"])


def test_rms_models_apply_ln_without_centering():
    m = tiny("mamba", n_layers=2)
    xs, ys = prompts()
    _, cache = m.run_with_cache(xs, ys)
    acc = cache.accumulated_resid(apply_ln=True)
    torch.testing.assert_close(acc[-1] * m.ln_final.w, cache["ln_final.hook_normalized"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["mamba", "standard_hybrid", "mambaformer"])
def test_tl_helpers_that_cannot_apply_say_why(arch):
    m = tiny(arch, n_layers=2)
    xs, ys = prompts()
    _, cache = m.run_with_cache(xs, ys)
    with pytest.raises(KeyError, match="do not apply to this architecture"):
        cache.decompose_resid()
    if arch == "mamba":
        with pytest.raises(KeyError, match="no attention"):
            cache.stack_head_results()
    _, part = m.run_with_cache(xs, ys, names_filter=lambda n: n.endswith("resid_post"))
    with pytest.raises(KeyError, match="not cached"):
        part["blocks.0.hook_resid_pre"]


@pytest.mark.parametrize("arch", ["gpt2", "mamba"])
def test_return_types_and_gradients_in_the_cache(arch):
    m = tiny(arch, n_layers=2)
    xs, ys = prompts()
    preds = m(xs, ys)
    loss = m(xs, ys, return_type="loss")
    torch.testing.assert_close(loss, ((preds - ys) ** 2).mean())
    p2, l2 = m(xs, ys, return_type="both")
    torch.testing.assert_close(p2, preds)
    torch.testing.assert_close(l2, loss)
    with pytest.raises(ValueError, match="return_type"):
        m(xs, ys, return_type="logits")
    # gradient of the loss w.r.t. a residual stream, by plain autograd
    kept = {}

    def keep(t, hook):
        t.retain_grad()
        kept["t"] = t
        return t

    m.zero_grad()
    with m.hooks(fwd_hooks=[("blocks.0.hook_resid_post", keep)]):
        m(xs, ys, return_type="loss").backward()
    want = kept["t"].grad.detach().clone()
    m.zero_grad()
    out, cache = m.run_with_cache(xs, ys, return_type="loss", incl_bwd=True)
    assert out.ndim == 0
    torch.testing.assert_close(cache["blocks.0.hook_resid_post_grad"], want)
    assert no_hooks(m)


def test_checkpoints_with_the_old_projection_names_load():
    m = tiny("gpt2", n_layers=2)
    sd = {
        k.replace("attn.qkv_proj.", "attn.W_qkv.").replace("attn.out_proj.", "attn.W_O."): v
        for k, v in m.state_dict().items()
    }
    assert any(".W_O." in k for k in sd)
    fresh = tiny("gpt2", n_layers=2, seed=1)
    fresh.load_state_dict(sd)
    xs, ys = prompts()
    torch.testing.assert_close(fresh(xs, ys), m(xs, ys))
    assert hi.build_model  # the public constructor is unchanged
    assert N_DIMS == m.spec.n_dims


def test_non_finite_predictions_from_finite_inputs_are_a_named_error():
    m = tiny("gpt2")
    xs, ys = prompts()
    with torch.no_grad():
        m.read_out.weight.fill_(float("inf"))
    m.eval()
    with pytest.raises(ValueError, match="non-finite predictions"):
        m(xs, ys)
    m.train()
    assert not torch.isfinite(m(xs, ys)).all()  # training leaves it to optim.on_nonfinite
