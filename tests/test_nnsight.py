"""nnsight adapter: trace-style edits and reads agree with TransformerLens hooks; the user's model is untouched.

nnsight is imported only when a test needs it (not at collection), because importing it patches
`torch.Tensor.backward` for the whole process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hookedicl as hi

pytestmark = pytest.mark.skipif(importlib.util.find_spec("nnsight") is None, reason="nnsight not installed")

SMALL = dict(n_dims=5, d_model=32, n_layers=2, n_heads=2, d_state=4, expand=2)
TOL = 1e-6


@pytest.fixture(scope="module")
def nnsight():
    return pytest.importorskip("nnsight")


@pytest.fixture(scope="module")
def adapter(nnsight):
    from hookedicl.interop import nnsight as adapter

    return adapter


def small(arch: str) -> hi.HookedICLModel:
    torch.manual_seed(0)
    return hi.build_model(arch, **SMALL)


def data(b: int = 3, n: int = 6, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=g), torch.randn(b, n, generator=g)


def tl_zero(model: hi.HookedICLModel, xs, ys, name: str, index: int | slice, value: float = 0.0) -> torch.Tensor:
    """Reference: set `[:, :, index]` at hook `name` to `value` (default 0) with a TransformerLens hook."""

    def fn(t: torch.Tensor, hook) -> torch.Tensor:
        t[:, :, index] = value
        return t

    return model.run_with_hooks(xs, ys, fwd_hooks=[(name, fn)])


# ----------------------------------------------------------------- interventions
@pytest.mark.parametrize("materialize", [True, False])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_zero_ablate_head_matches_transformerlens(adapter, arch, materialize):
    model = small(arch)
    xs, ys = data()
    clean = model(xs, ys)
    nn_model = adapter.wrap(model, materialize=materialize)
    for layer, head in [(0, 0), (0, 1), (1, 1)]:
        name = f"blocks.{layer}.attn.hook_z"
        ref = tl_zero(model, xs, ys, name, head)
        with nn_model.trace(xs, ys):
            nn_model.blocks[layer].attn.hook_z.output[:, :, head] = 0
            out = nn_model.output.save()
        assert out.shape == clean.shape
        assert (out - ref).abs().max() <= TOL
        assert (out - clean).abs().max() > 1e-4, "ablating a head should change the predictions"
        helper = adapter.zero_ablate_head(nn_model, xs, ys, layer, head)
        assert (helper - ref).abs().max() <= TOL


def test_zero_ablate_head_helper_on_plain_model(adapter):
    model = small("gpt2")
    xs, ys = data()
    ref = tl_zero(model, xs, ys, "blocks.1.attn.hook_z", 0)
    out = adapter.zero_ablate_head(model, xs, ys, 1, 0)
    assert (out - ref).abs().max() <= TOL
    assert (out - model(xs, ys)).abs().max() > 1e-4


def test_replacing_output_equals_in_place_edit(adapter):
    model = small("gpt2")
    xs, ys = data()
    nn_model = adapter.wrap(model)
    with nn_model.trace(xs, ys):
        z = nn_model.blocks[0].attn.hook_z.output.clone()
        z[:, :, 1] = 0
        nn_model.blocks[0].attn.hook_z.output = z
        out = nn_model.output.save()
    ref = tl_zero(model, xs, ys, "blocks.0.attn.hook_z", 1)
    assert (out - ref).abs().max() <= TOL


@pytest.mark.parametrize(
    "arch,name,channel,value",
    [
        ("mamba", "blocks.0.mixer.hook_y", 3, 0.0),
        ("mamba", "blocks.1.mixer.hook_x", 5, 0.0),
        ("mambaformer", "blocks.1.ffn.hook_y", 0, 0.0),
        # computed only on demand (needs materialize); at init the state's share of y is tiny, so
        # zeroing one channel barely moves the output: set the whole state to 1 instead
        ("mamba", "blocks.0.mixer.hook_ssm_state", slice(None), 1.0),
    ],
)
def test_mamba_channel_edit_matches_transformerlens(adapter, arch, name, channel, value):
    model = small(arch)
    xs, ys = data()
    clean = model(xs, ys)
    ref = tl_zero(model, xs, ys, name, channel, value)
    nn_model = adapter.wrap(model)
    with nn_model.trace(xs, ys):
        nn_model.get(name + ".output")[:, :, channel] = value
        out = nn_model.output.save()
    assert (out - ref).abs().max() <= TOL
    assert (out - clean).abs().max() > 1e-5


# ------------------------------------------------------------------------ reads
@pytest.mark.parametrize("arch", ["gpt2_rope", "mamba", "mambaformer"])
def test_reading_every_hook_matches_run_with_cache(nnsight, adapter, arch):
    model = small(arch)
    xs, ys = data()
    preds, cache = model.run_with_cache(xs, ys)
    names = list(model.hook_shapes())  # every hook name, in the order the forward reaches them
    assert set(names) == set(model.hook_dict)
    nn_model = adapter.wrap(model)
    with nn_model.trace(xs, ys):
        # a container made inside the trace must itself be saved, or it is dropped at the end
        acts = nnsight.save([nn_model.get(name + ".output") for name in names])
        out = nn_model.output.save()
    assert (out - preds).abs().max() <= TOL
    for name, act in zip(names, acts):
        # masked attention scores are -inf in both; assert_close treats equal infinities as equal
        torch.testing.assert_close(act, cache[name], rtol=0, atol=TOL, msg=lambda m: f"{name}: {m}")


def test_read_single_hook_by_attribute(adapter):
    model = small("gpt2")
    xs, ys = data()
    _, cache = model.run_with_cache(xs, ys, names_filter="blocks.1.attn.hook_z")
    with (nn_model := adapter.wrap(model, materialize=False)).trace(xs, ys):
        z = nn_model.blocks[1].attn.hook_z.output.save()
    assert z.shape == (3, 12, 2, 16)
    assert (z - cache["blocks.1.attn.hook_z"]).abs().max() <= TOL


def test_materialize_false_runs_fast_path_and_skips_lazy_hooks(adapter):
    from nnsight.intervention.interleaver import OutOfOrderError

    model = small("gpt2")
    xs, ys = data()
    nn_model = adapter.wrap(model, materialize=False)
    with nn_model.trace(xs, ys):
        out = nn_model.output.save()
    assert torch.equal(out, model(xs, ys))  # same fused-attention code path as a plain forward
    with pytest.raises(OutOfOrderError):
        with nn_model.trace(xs, ys):
            nn_model.blocks[0].attn.hook_pattern.output.save()
    only = adapter.wrap(model, materialize=["blocks.1.attn.hook_pattern"])
    _, cache = model.run_with_cache(xs, ys, names_filter="blocks.1.attn.hook_pattern")
    with only.trace(xs, ys):
        pattern = only.blocks[1].attn.hook_pattern.output.save()
    assert (pattern - cache["blocks.1.attn.hook_pattern"]).abs().max() <= TOL


def test_out_of_order_request_raises(adapter):
    from nnsight.intervention.interleaver import OutOfOrderError

    model = small("gpt2")
    nn_model = adapter.wrap(model)
    with pytest.raises(OutOfOrderError):
        with nn_model.trace(*data()):
            nn_model.blocks[1].hook_resid_pre.output.save()
            nn_model.blocks[0].hook_resid_pre.output.save()


def test_materialize_rejects_bad_names(adapter):
    model = small("gpt2")
    with pytest.raises(ValueError, match="unknown hook"):
        adapter.wrap(model, materialize=["blocks.9.attn.hook_pattern"])
    with pytest.raises(TypeError):
        adapter.wrap(model, materialize="blocks.0.attn.hook_pattern")
    with pytest.raises(TypeError):
        adapter.wrap(torch.nn.Linear(2, 2))


def test_zero_ablate_head_rejects_bad_arguments(adapter):
    xs, ys = data()
    gpt2 = small("gpt2")
    with pytest.raises(ValueError, match="layer"):
        adapter.zero_ablate_head(gpt2, xs, ys, 2, 0)
    with pytest.raises(ValueError, match="head"):
        adapter.zero_ablate_head(gpt2, xs, ys, 0, 2)
    with pytest.raises(ValueError, match="no attention"):
        adapter.zero_ablate_head(small("mamba"), xs, ys, 0, 0)
    with pytest.raises(TypeError):
        adapter.zero_ablate_head(torch.nn.Linear(2, 2), xs, ys, 0, 0)


# --------------------------------------------------------------- batched invokes
def test_batched_invokes_patch_clean_into_corrupted(adapter):
    model = small("gpt2")
    xs_a, ys_a = data(seed=1)
    xs_b, ys_b = data(b=2, seed=2)
    nn_model = adapter.wrap(model)
    with nn_model.trace() as tracer:
        with tracer.invoke(xs_a, ys_a):
            out_a = nn_model.output.save()
        with tracer.invoke(xs=xs_b, ys=ys_b):
            out_b = nn_model.output.save()
    assert (out_a - model(xs_a, ys_a)).abs().max() <= TOL
    assert (out_b - model(xs_b, ys_b)).abs().max() <= TOL

    xs_b, ys_b = data(seed=2)
    name, head = "blocks.0.attn.hook_z", 1
    _, clean_cache = model.run_with_cache(xs_a, ys_a, names_filter=name)

    def patch(t, hook):
        t[:, :, head] = clean_cache[name][:, :, head]
        return t

    ref = model.run_with_hooks(xs_b, ys_b, fwd_hooks=[(name, patch)])
    with nn_model.trace() as tracer:
        barrier = tracer.barrier(2)
        with tracer.invoke(xs_a, ys_a):
            z_clean = nn_model.blocks[0].attn.hook_z.output[:, :, head].clone()
            barrier()
        with tracer.invoke(xs_b, ys_b):
            barrier()
            nn_model.blocks[0].attn.hook_z.output[:, :, head] = z_clean
            patched = nn_model.output.save()
    assert (patched - ref).abs().max() <= TOL
    assert (patched - model(xs_b, ys_b)).abs().max() > 1e-4


def test_batched_invokes_need_equal_n_points(adapter):
    nn_model = adapter.wrap(small("gpt2"))
    with pytest.raises(ValueError, match="same"):
        with nn_model.trace() as tracer:
            with tracer.invoke(*data(n=6)):
                nn_model.output.save()
            with tracer.invoke(*data(n=4)):
                nn_model.output.save()


# ------------------------------------------------------------- isolation / import
def _snapshot(model: torch.nn.Module) -> dict:
    return {
        name: (type(mod.forward), "forward" in mod.__dict__, sorted(mod.__dict__), len(mod._forward_hooks))
        for name, mod in model.named_modules()
    }


@pytest.mark.parametrize("arch", ["gpt2", "mambaformer"])
def test_wrapping_and_tracing_leave_the_model_untouched(adapter, arch):
    model = small(arch)
    xs, ys = data()
    before_out = model(xs, ys)
    before_modules = _snapshot(model)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}

    nn_model = adapter.wrap(model)
    with nn_model.trace(xs, ys):
        nn_model.blocks[1].hook_resid_pre.output[:] = 0
        nn_model.output.save()
    with torch.no_grad():  # edits to the wrapper's weights stay in the wrapper
        nn_model.read_out.weight.mul_(3.0)
    assert nn_model._module is not model

    assert _snapshot(model) == before_modules
    for mod in model.modules():
        assert "forward" not in mod.__dict__
        assert type(mod.forward).__name__ == "method" and mod.forward.__self__ is mod
    assert all(torch.equal(v, before_state[k]) for k, v in model.state_dict().items())
    assert torch.equal(model(xs, ys), before_out)
    with nn_model.trace(xs, ys):
        wrapped_out = nn_model.output.save()
    assert (wrapped_out - before_out).abs().max() > 1e-4  # the wrapper really has its own weights


def test_wrap_drops_temporary_hooks_and_keeps_permanent_ones(adapter):
    model = small("gpt2")
    xs, ys = data()
    clean = model(xs, ys)

    def zero(t, hook):
        return torch.zeros_like(t)

    with model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", zero)]):
        nn_model = adapter.wrap(model)
    assert len(model.blocks[1].hook_resid_post._forward_hooks) == 0
    with nn_model.trace(xs, ys):
        out = nn_model.output.save()
    assert (out - clean).abs().max() <= TOL

    model.add_hook("blocks.0.attn.hook_z", lambda t, hook: t * 0.5, is_permanent=True)
    hooked = model(xs, ys)
    nn_model = adapter.wrap(model)
    model.reset_hooks(including_permanent=True)
    with nn_model.trace(xs, ys):
        out = nn_model.output.save()
    assert (out - hooked).abs().max() <= TOL
    assert (out - clean).abs().max() > 1e-4


def test_importing_hookedicl_does_not_import_nnsight():
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys, hookedicl, hookedicl.interop, hookedicl.interop.nnsight\n"
        "assert 'nnsight' not in sys.modules, 'nnsight was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("arch", ["gpt2", "mambaformer"])
def test_interventions_through_nnsight_match_the_hook_path(adapter, arch):
    """The same Intervention objects give the same predictions through an nnsight trace as through
    TransformerLens hooks (`hookedicl.analysis.interventions`)."""
    from hookedicl.analysis.interventions import Intervention, intervened_predictions
    from hookedicl.models.sites import Site
    from hookedicl.tasks import TaskBatch

    model = small(arch)
    xs, ys = data()
    batch = TaskBatch(xs, ys)
    _, cache = model.run_with_cache(xs.flip(0), ys.flip(0), names_filter=["blocks.1.hook_resid_post"])
    last = len(model.blocks) - 1
    items = [
        Intervention(Site.slot(0, "mixer", positions="x"), "mean"),
        Intervention(Site.along(1, torch.ones(model.spec.d_model)), "project_out"),
        Intervention(Site("blocks.1.hook_resid_post", positions=[2, 3]), "patch", source=cache["blocks.1.hook_resid_post"]),
        Intervention(Site.resid(last + 1, positions="last"), "add", vector=torch.ones(model.spec.d_model), scale=0.5),
    ]
    got = adapter.intervened_predictions(model, batch, items, seed=3)
    want = intervened_predictions(model, batch, items, seed=3)
    torch.testing.assert_close(got.detach(), want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(want, model(xs, ys).detach(), atol=1e-3)
