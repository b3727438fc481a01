"""Numerical parity with HF: `from_hf` models reproduce GPT2Model / LlamaModel / MambaModel wrappers.

HF transformers is the oracle here (test-time only). Everything runs on CPU in fp32 on small random
models; hidden states must agree to 1e-4 (observed: < 1e-6).
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hookedicl.models import scan  # noqa: E402
from hookedicl.models.convert import from_hf  # noqa: E402

TOL = 1e-4
N_DIMS = 5



def garg_tokens(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Garg et al.'s `_combine`: x token = x, y token = [y, 0, ..., 0]."""
    b, n, d = xs.shape
    y_wide = torch.cat([ys.view(b, n, 1), torch.zeros(b, n, d - 1)], dim=2)
    return torch.stack([xs, y_wide], dim=2).view(b, 2 * n, d)


def prompts(b: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, N_DIMS, generator=g), torch.randn(b, n, generator=g)


def wrapper_parts(backbone, seed: int = 0):
    torch.manual_seed(seed)
    d = backbone.config.hidden_size
    return torch.nn.Linear(N_DIMS, d), torch.nn.Linear(d, 1)


def check_against_hf(backbone, n_points=(5, 11), batch=3) -> float:
    """Convert, then compare final hidden states and predictions with the HF wrapper; returns max diff."""
    backbone.eval()
    read_in, read_out = wrapper_parts(backbone)
    model = from_hf(backbone, read_in, read_out)
    worst = 0.0
    for n in n_points:
        xs, ys = prompts(batch, n, seed=n)
        with torch.no_grad():
            hidden = backbone(inputs_embeds=read_in(garg_tokens(xs, ys))).last_hidden_state
            want = read_out(hidden)[:, ::2, 0]
            preds, cache = model.run_with_cache(xs, ys, names_filter="ln_final.hook_normalized")
            plain = model(xs, ys)  # the un-hooked (fused-kernel) path
        ours = cache["ln_final.hook_normalized"]
        assert ours.shape == hidden.shape == (batch, 2 * n, backbone.config.hidden_size)
        diffs = [(ours - hidden).abs().max().item(), (preds - want).abs().max().item(), (plain - want).abs().max().item()]
        assert max(diffs) <= TOL, diffs
        assert preds.shape == want.shape == (batch, n)
        worst = max(worst, *diffs)
    return worst


# ------------------------------------------------------------------------------------------ GPT-2
@pytest.mark.parametrize("attn", [None, "eager"])
@pytest.mark.parametrize(
    "extra",
    [
        {},  # gelu_new, d_mlp = 4 d
        {"activation_function": "gelu", "n_inner": 80, "layer_norm_epsilon": 1e-3},
        {"activation_function": "relu", "reorder_and_upcast_attn": True},
    ],
    ids=["gelu_new", "gelu_inner_eps", "relu_upcast"],
)
def test_gpt2_matches_hf(attn, extra):
    torch.manual_seed(1)
    kw = {"attn_implementation": attn} if attn else {}
    cfg = transformers.GPT2Config(n_embd=48, n_layer=3, n_head=4, n_positions=32, **extra, **kw)
    backbone = transformers.GPT2Model(cfg)
    with torch.no_grad():  # O(1) activations (peaked attention, MLP in GELU's curved range), non-trivial norms
        for name, p in backbone.named_parameters():
            if "ln" in name or p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
            elif "wpe" not in name:
                p.mul_(10.0)
    check_against_hf(backbone)
    model = from_hf(backbone, *wrapper_parts(backbone))
    assert model.spec.name == "gpt2" and model.spec.n_ctx == 32 and model.spec.norm_eps == cfg.layer_norm_epsilon
    assert model.spec.blocks[0].ffn.d_mlp == (extra.get("n_inner") or 4 * 48)


# ------------------------------------------------------------------------------------------ LLaMA
@pytest.mark.parametrize("attn", [None, "eager"])
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"attention_bias": True, "mlp_bias": True, "rope_theta": 500.0, "rms_norm_eps": 1e-5},
        {"num_key_value_heads": 2},  # grouped-query attention: K/V heads repeated
    ],
    ids=["plain", "bias_theta_eps", "gqa"],
)
def test_llama_matches_hf(attn, extra):
    torch.manual_seed(2)
    kw = {"attn_implementation": attn} if attn else {}
    cfg = transformers.LlamaConfig(
        hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=80, **extra, **kw
    )
    backbone = transformers.LlamaModel(cfg)
    with torch.no_grad():  # O(1) activations and peaked attention, non-trivial norms and biases
        for name, p in backbone.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
            elif p.ndim == 1:  # biases start at 0
                p.normal_(std=0.3)
            else:
                p.mul_(10.0)
    check_against_hf(backbone)
    model = from_hf(backbone, *wrapper_parts(backbone))
    attn_spec = model.spec.blocks[0].mixer
    assert model.spec.name == "llama" and attn_spec.rope and attn_spec.rope_theta == extra.get("rope_theta", 10000.0)
    assert attn_spec.bias == extra.get("attention_bias", False)
    assert model.spec.blocks[0].ffn.bias == extra.get("mlp_bias", False)


# ------------------------------------------------------------------------------------------ Mamba
def perturbed_mamba(seed: int = 3, **extra):
    torch.manual_seed(seed)
    cfg = transformers.MambaConfig(hidden_size=32, num_hidden_layers=2, state_size=8, expand=2, **extra)
    backbone = transformers.MambaModel(cfg).eval()
    with torch.no_grad():  # move A, D, Δ and the norms away from their structured init
        for layer in backbone.layers:
            mx = layer.mixer
            mx.A_log.add_(0.5 * torch.randn_like(mx.A_log))
            mx.D.copy_(torch.randn_like(mx.D))
            mx.dt_proj.bias.add_(torch.randn_like(mx.dt_proj.bias))
            mx.dt_proj.weight.mul_(3.0)
            mx.x_proj.weight.mul_(5.0)
            layer.norm.weight.add_(0.3 * torch.randn_like(layer.norm.weight))
            if mx.conv1d.bias is not None:
                mx.conv1d.bias.normal_(std=0.1)
    return backbone


@pytest.mark.parametrize(
    "extra", [{}, {"use_bias": True, "use_conv_bias": False, "conv_kernel": 3, "time_step_rank": 5}],
    ids=["default", "bias_noconvbias_k3_rank5"],
)
def test_mamba_matches_hf(extra):
    backbone = perturbed_mamba(**extra)
    check_against_hf(backbone, n_points=(1, 5, 11))
    model = from_hf(backbone, *wrapper_parts(backbone))
    m = model.spec.blocks[0].mixer
    assert model.spec.name == "mamba"
    assert (m.d_state, m.expand, m.d_conv) == (8, 2, extra.get("conv_kernel", 4))
    assert m.dt_rank == extra.get("time_step_rank", 2) and m.bias == extra.get("use_bias", False)
    assert m.conv_bias == extra.get("use_conv_bias", True)


def test_mamba_layer_by_layer_and_states():
    """Each mixer equals HF's MambaMixer (slow path) on the same input, by every scan method; every
    layer's residual stream matches; the last `hook_ssm_state` is HF's cached recurrent state."""
    backbone = perturbed_mamba(use_mambapy=False)
    read_in, read_out = wrapper_parts(backbone)
    model = from_hf(backbone, read_in, read_out)
    g = torch.Generator().manual_seed(0)
    for i, layer in enumerate(backbone.layers):
        for length in (1, 4, 9):
            x = torch.randn(2, length, 32, generator=g)
            with torch.no_grad():
                want = layer.mixer(x)
                for method in ("chunked", "parallel", "sequential"):
                    model.blocks[i].mixer.scan_method = method
                    got = model.blocks[i].mixer(x)
                    assert (got - want).abs().max().item() <= 1e-5, (i, length, method)  # outputs ~0.1
            model.blocks[i].mixer.scan_method = "auto"

    xs, ys = prompts(2, 7, seed=4)
    with torch.no_grad():
        out = backbone(inputs_embeds=read_in(garg_tokens(xs, ys)), use_cache=True, output_hidden_states=True)
        names = [f"blocks.{i}.hook_resid_post" for i in range(2)] + [f"blocks.{i}.mixer.hook_ssm_state" for i in range(2)]
        preds, cache = model.run_with_cache(xs, ys, names_filter=lambda n: n in names)
    for i in range(2):
        assert (cache[f"blocks.{i}.hook_resid_post"] - out.hidden_states[i]).abs().max().item() <= TOL
        c = out.cache_params
        hf_state = c.get_recurrent_state(i, state_idx=0) if hasattr(c, "get_recurrent_state") else c.ssm_states[i]
        ours = cache[f"blocks.{i}.mixer.hook_ssm_state"]
        assert ours.shape == (2, 14, 64, 8)
        assert (ours[:, -1] - hf_state).abs().max().item() <= TOL
    assert (preds - read_out(out.last_hidden_state)[:, ::2, 0]).abs().max().item() <= TOL


# ------------------------------------------------------------------------------- scans (no HF)
@pytest.mark.parametrize("length", [1, 2, 3, 5, 8, 13, 33])
def test_parallel_scan_matches_sequential_with_gradients(length):
    g = torch.Generator().manual_seed(length)
    b, d, n = 2, 6, 4
    u = torch.randn(b, length, d, generator=g)
    dt = torch.nn.functional.softplus(torch.randn(b, length, d, generator=g))
    A = -torch.exp(torch.randn(d, n, generator=g))
    B = torch.randn(b, length, n, generator=g)
    C = torch.randn(b, length, n, generator=g)
    D = torch.randn(d, generator=g)
    w = torch.randn(b, length, d, generator=g)  # a random cotangent
    results = {}
    for method in ("chunked", "parallel", "sequential"):
        leaves = [t.clone().requires_grad_(True) for t in (u, dt, A, B, C, D)]
        y = scan.selective_scan(*leaves, method=method)
        (y * w).sum().backward()
        states = scan.ssm_states(*leaves[:4], method="sequential" if method == "chunked" else method)
        # (at length 1, h_0 does not depend on A, so the parallel path leaves A.grad None: zero)
        grads = [torch.zeros_like(t) if t.grad is None else t.grad for t in leaves]
        results[method] = (y.detach(), states.detach(), grads)
    ys_, hs, gs = results["sequential"]
    for method in ("parallel", "chunked"):
        yp, hp, gp = results[method]
        assert yp.shape == (b, length, d) and hp.shape == (b, length, d, n)
        assert (yp - ys_).abs().max().item() <= 1e-5, method
        assert (hp - hs).abs().max().item() <= 1e-5, method
        for name, a, c in zip(("u", "dt", "A", "B", "C", "D"), gp, gs):
            assert (a - c).abs().max().item() <= 1e-5 * max(1.0, c.abs().max().item()), (method, name)


@pytest.mark.parametrize("length", [1, 4, 10])
def test_chunked_scan_gradcheck(length):
    g = torch.Generator().manual_seed(length)
    b, d, n = 2, 3, 2
    f64 = dict(dtype=torch.float64)
    args = (
        torch.randn(b, length, d, generator=g, **f64), torch.rand(b, length, d, generator=g, **f64) * 0.5,
        -torch.rand(d, n, generator=g, **f64) * 2, torch.randn(b, length, n, generator=g, **f64),
        torch.randn(b, length, n, generator=g, **f64), torch.randn(d, generator=g, **f64),
    )
    args = tuple(a.requires_grad_(True) for a in args)
    assert torch.autograd.gradcheck(lambda *a: scan.selective_scan(*a, method="chunked"), args)
