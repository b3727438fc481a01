"""`hookedicl.models.convert`: checkpoints of Garg/Campbell-style wrappers, files, and error messages."""

from __future__ import annotations

import ast
import inspect
import types

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from hookedicl.models import convert  # noqa: E402
from hookedicl.models.convert import from_hf, from_state_dict  # noqa: E402

N_DIMS = 4



class Wrapper(nn.Module):
    """The shape of Garg et al.'s `TransformerModel` / Campbell et al.'s models."""

    def __init__(self, backbone: nn.Module, n_dims: int = N_DIMS) -> None:
        super().__init__()
        d = backbone.config.hidden_size
        self._read_in = nn.Linear(n_dims, d)
        self._backbone = backbone
        self._read_out = nn.Linear(d, 1)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        b, n, d = xs.shape
        zs = torch.stack([xs, torch.cat([ys.view(b, n, 1), xs.new_zeros(b, n, d - 1)], 2)], 2).view(b, 2 * n, d)
        return self._read_out(self._backbone(inputs_embeds=self._read_in(zs)).last_hidden_state)[:, ::2, 0]


def gpt2(**kw):
    return transformers.GPT2Model(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=24, **kw))


def llama(**kw):
    cfg = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)
    return transformers.LlamaModel(transformers.LlamaConfig(**{**cfg, **kw}))


def mamba(**kw):
    return transformers.MambaModel(transformers.MambaConfig(hidden_size=32, num_hidden_layers=2, state_size=4, expand=2, **kw))


CASES = {
    "gpt2": (gpt2, {"n_heads": 4}),
    "llama": (llama, {"n_heads": 4}),
    "mamba": (mamba, {}),
}


def wrapper(arch: str, seed: int = 0, **kw) -> Wrapper:
    torch.manual_seed(seed)
    return Wrapper(CASES[arch][0](**kw)).eval()


def xy(n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, n, N_DIMS, generator=g), torch.randn(2, n, generator=g)


def same_params(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ------------------------------------------------------------------------ state dicts and files
@pytest.mark.parametrize("arch", list(CASES))
def test_state_dict_equals_from_hf(arch):
    w = wrapper(arch)
    via_hf = from_hf(w._backbone, w._read_in, w._read_out)
    via_sd = from_state_dict(w.state_dict(), arch, **CASES[arch][1])
    if arch == "llama":  # RoPE has no position table: n_ctx is only informative, from the config
        assert via_hf.spec.n_ctx == w._backbone.config.max_position_embeddings
        via_sd = from_state_dict(w.state_dict(), arch, n_ctx=via_hf.spec.n_ctx, **CASES[arch][1])
    assert via_sd.spec == via_hf.spec and via_sd.spec.name == arch
    same_params(via_sd, via_hf)
    xs, ys = xy()
    with torch.no_grad():
        want = w(xs, ys)
        assert torch.equal(via_sd(xs, ys), via_hf(xs, ys))
        assert (via_sd(xs, ys) - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("arch", list(CASES))
def test_inferred_sizes(arch):
    w = wrapper(arch)
    s = from_state_dict(w.state_dict(), arch, **CASES[arch][1]).spec
    assert (s.n_dims, s.y_dim, s.d_model, s.n_layers) == (N_DIMS, 1, 32, 2)
    if arch == "gpt2":
        assert s.n_ctx == 24 and s.blocks[0].ffn.d_mlp == 128 and s.blocks[0].mixer.n_heads == 4
    elif arch == "llama":
        assert s.blocks[0].ffn.d_mlp == 48 and not s.blocks[0].mixer.bias
    else:
        m = s.blocks[0].mixer
        assert (m.d_state, m.expand, m.d_conv, m.dt_rank, m.bias, m.conv_bias) == (4, 2, 4, 2, False, True)


def test_files_safetensors_and_torch(tmp_path):
    from safetensors.torch import save_file

    w = wrapper("gpt2")
    sd = {k: v.contiguous() for k, v in w.state_dict().items()}
    ref = from_state_dict(sd, "gpt2", n_heads=4)
    save_file(sd, str(tmp_path / "model.safetensors"))
    torch.save(sd, tmp_path / "model_500.pt")
    # Garg et al.'s training state file: the model under "model_state_dict" next to optimizer state.
    torch.save({"model_state_dict": sd, "optimizer_state_dict": {}, "train_step": 3}, tmp_path / "state.pt")
    for name in ("model.safetensors", "model_500.pt", "state.pt"):
        same_params(from_state_dict(tmp_path / name, "gpt2", n_heads=4), ref)
        same_params(from_state_dict(str(tmp_path / name), "gpt2", n_heads=4), ref)


def test_legacy_gpt2_buffers_and_token_tables_are_ignored():
    w = wrapper("gpt2")
    sd = dict(w.state_dict())
    assert "_backbone.wte.weight" in sd  # the unused token table
    for i in range(2):  # older transformers saved the causal mask and masked_bias buffers
        sd[f"_backbone.h.{i}.attn.bias"] = torch.ones(1, 1, 24, 24, dtype=torch.bool).tril()
        sd[f"_backbone.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    same_params(from_state_dict(sd, "gpt2", n_heads=4), from_hf(w._backbone, w._read_in, w._read_out))
    msd = dict(wrapper("mamba").state_dict())
    msd["_backbone.embedding.weight"] = msd.pop("_backbone.embeddings.weight")  # mamba-ssm's name
    from_state_dict(msd, "mamba")


def test_read_layers_without_bias_convert_with_zero_bias():
    w = wrapper("llama")
    w._read_in = nn.Linear(N_DIMS, 32, bias=False)
    w._read_out = nn.Linear(32, 1, bias=False)
    model = from_state_dict(w.state_dict(), "llama", n_heads=4)
    assert not model.read_in.bias.any() and not model.read_out.bias.any()
    xs, ys = xy()
    with torch.no_grad():
        assert (model(xs, ys) - w(xs, ys)).abs().max().item() <= 1e-5
    same_params(from_hf(w._backbone, w._read_in, w._read_out), model)


def test_gqa_state_dict_infers_kv_heads():
    w = wrapper("llama", num_key_value_heads=2)
    model = from_state_dict(w.state_dict(), "llama", n_heads=4)
    xs, ys = xy()
    with torch.no_grad():
        assert (model(xs, ys) - w(xs, ys)).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="n_kv_heads=4 was given"):
        from_state_dict(w.state_dict(), "llama", n_heads=4, n_kv_heads=4)


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("arch", list(CASES))
def test_missing_and_unexpected_keys_are_listed(arch):
    sizes = CASES[arch][1]
    sd = dict(wrapper(arch).state_dict())
    victim = next(k for k in sd if ".1." in k and k.endswith("weight"))  # a layer-1 weight
    missing = {k: v for k, v in sd.items() if k != victim}
    with pytest.raises(ValueError, match=r"missing keys: .*" + victim.replace(".", r"\.")):
        from_state_dict(missing, arch, **sizes)
    extra = {**sd, "_backbone.surprise.weight": torch.zeros(3), "_read_out.scale": torch.ones(1)}
    with pytest.raises(ValueError, match=r"unexpected keys: _backbone\.surprise\.weight, _read_out\.scale"):
        from_state_dict(extra, arch, **sizes)
    with pytest.raises(ValueError, match="missing keys: _read_in.weight"):
        from_state_dict({k: v for k, v in sd.items() if k != "_read_in.weight"}, arch, **sizes)
    prefixed = {"module." + k: v for k, v in sd.items()}
    with pytest.raises(ValueError, match="missing keys"):
        from_state_dict(prefixed, arch, **sizes)


def test_bad_arch_sizes_and_shapes():
    sd = wrapper("gpt2").state_dict()
    with pytest.raises(ValueError, match=r"unknown arch 'bert'.*gpt2, llama, mamba"):
        from_state_dict(sd, "bert")
    with pytest.raises(ValueError, match="needs n_heads"):
        from_state_dict(sd, "gpt2")
    with pytest.raises(ValueError, match="n_layers=5 was given but the state dict has n_layers=2"):
        from_state_dict(sd, "gpt2", n_heads=4, n_layers=5)
    with pytest.raises(ValueError, match="unknown size/option.*d_stat"):
        from_state_dict(sd, "gpt2", n_heads=4, d_stat=3)
    with pytest.raises(ValueError, match="n_heads=5 must divide d_model=32"):
        from_state_dict(sd, "gpt2", n_heads=5)
    bad = dict(sd)
    bad["_backbone.h.1.attn.c_proj.weight"] = torch.zeros(32, 31)
    with pytest.raises(ValueError, match=r"shape mismatch: _backbone\.h\.1\.attn\.c_proj\.weight"):
        from_state_dict(bad, "gpt2", n_heads=4)
    with pytest.raises(ValueError, match=r"missing keys: _backbone\.h\.0\.\*.*unexpected keys: _backbone\.embed_tokens"):
        from_state_dict(wrapper("llama").state_dict(), "gpt2", n_heads=4)
    with pytest.raises(ValueError, match="str -> tensor"):
        from_state_dict({**sd, "_read_in.note": "hello"}, "gpt2", n_heads=4)


@pytest.mark.parametrize(
    "cfg, field",
    [
        (lambda: transformers.GPT2Config(activation_function="quick_gelu"), "activation_function"),
        (lambda: transformers.GPT2Config(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
        (lambda: transformers.GPT2Config(scale_attn_weights=False), "scale_attn_weights"),
        (lambda: transformers.GPT2Config(add_cross_attention=True), "add_cross_attention"),
        (lambda: transformers.LlamaConfig(hidden_act="gelu"), "hidden_act"),
        (lambda: transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=8), "head_dim"),
        (lambda: transformers.LlamaConfig(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_type"),
        (lambda: transformers.MambaConfig(hidden_act="gelu"), "hidden_act"),
    ],
)
def test_unsupported_hf_config_names_the_field(cfg, field):
    fake = types.SimpleNamespace(config=cfg())  # the config is checked before any weight is read
    with pytest.raises(ValueError, match=rf"unsupported config: [\w.]*{field}="):
        from_hf(fake, nn.Linear(N_DIMS, 8), nn.Linear(8, 1))


def test_unsupported_model_type_and_non_linear_read_layers():
    w = wrapper("gpt2")
    with pytest.raises(ValueError, match=r"model_type='bert'"):
        from_hf(types.SimpleNamespace(config=types.SimpleNamespace(model_type="bert")), w._read_in, w._read_out)
    with pytest.raises(ValueError, match="read_out must be a torch.nn.Linear"):
        from_hf(w._backbone, w._read_in, nn.Identity())
    torch.manual_seed(0)
    lm = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=4, n_positions=24))
    with pytest.raises(ValueError, match=r"missing keys: _backbone\.h\.0\.\*.*unexpected keys: _backbone\.lm_head\.weight"):
        from_hf(lm, w._read_in, w._read_out)


def test_convert_does_not_import_transformers():
    tree = ast.parse(inspect.getsource(convert))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "transformers" not in imported
