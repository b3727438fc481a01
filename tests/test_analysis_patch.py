"""Activation patching: exact answers (full clean residual at the last layer → 1, nothing or the
corrupted activation itself → 0, the corrupted y token at the embedding → 1, tokens after the query
→ 0, per-head effects add up in a linear model), the near-zero-gap rule, pair construction, every
preset, vector targets, bad arguments, cleanup."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import hookedicl as hi
from hookedicl.analysis import patch as Pt
from hookedicl.models.sites import Site
from hookedicl.training import TrainConfig, train

SMALL = dict(n_dims=3, d_model=16, n_layers=2, n_heads=2, d_state=4, expand=2)
TASK = hi.make_task("linear_regression", n_dims=3)



def build(arch: str):
    # an untrained linear-attention model at the default init is numerically blind to its context
    # (a product of three 0.02-scale weights); a larger init gives it measurable gaps. Seeded, so the
    # checks below do not depend on the order the tests run in.
    torch.manual_seed(0)
    return hi.build_model(arch, **SMALL, **({"init_std": 0.15} if arch == "linear_attention" else {}))


def no_hooks(model) -> bool:
    return all(not hp._forward_hooks and not hp._backward_hooks for hp in model.hook_dict.values())


def test_make_pairs_kinds():
    nf = Pt.make_pairs(TASK, "new_function", n_points=6, n_prompts=16, seed=1)
    assert torch.equal(nf.clean.xs, nf.corrupted.xs) and nf.query == 5
    assert torch.allclose(nf.corrupted.ys, torch.einsum("bnd,bd->bn", nf.clean.xs, nf.corrupted.params["w"]), atol=1e-5)
    assert (nf.clean.ys != nf.corrupted.ys).all()
    cy = Pt.make_pairs(TASK, "corrupt_y", n_points=6, n_prompts=16, index=2, seed=1)
    changed = (cy.clean.ys != cy.corrupted.ys)
    assert changed[:, 2].all() and not changed[:, [0, 1, 3, 4, 5]].any()
    assert torch.equal(cy.clean.xs, cy.corrupted.xs)
    assert set(cy.corrupted.ys[:, 2].tolist()) <= set(cy.clean.ys[:, 2].tolist())  # taken from another prompt
    pm = Pt.make_pairs(TASK, "permute", n_points=6, n_prompts=16, query=3, seed=1)
    assert pm.query == 3
    for j in range(16):
        before = {tuple(r) for r in torch.cat([pm.clean.xs[j, :3], pm.clean.ys[j, :3, None]], 1).tolist()}
        after = {tuple(r) for r in torch.cat([pm.corrupted.xs[j, :3], pm.corrupted.ys[j, :3, None]], 1).tolist()}
        assert before == after and not torch.equal(pm.clean.xs[j, :3], pm.corrupted.xs[j, :3])
    assert torch.equal(pm.clean.xs[:, 3:], pm.corrupted.xs[:, 3:]) and torch.equal(pm.clean.ys[:, 3:], pm.corrupted.ys[:, 3:])
    with pytest.raises(ValueError, match="kind"):
        Pt.make_pairs(TASK, "swap", n_points=6)
    with pytest.raises(ValueError, match="index"):
        Pt.make_pairs(TASK, "corrupt_y", n_points=6, index=5)
    with pytest.raises(ValueError, match="query"):
        Pt.make_pairs(TASK, "new_function", n_points=6, query=6)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "mamba", "mambaformer", "linear_attention"])
def test_exact_answers(arch):
    model = build(arch)
    L = len(model.blocks)
    pairs = Pt.make_pairs(TASK, "new_function", n_points=5, n_prompts=24, seed=0)
    # the full clean residual at the last layer restores the clean prediction: effect 1 per example
    ex = Pt.patch_examples(model, pairs, layers=[L], positions="all", one_at_a_time=False)
    kept = ex[~ex.dropped]
    assert len(kept) >= 20 and np.allclose(kept["effect"], 1.0, atol=1e-4)
    # ... and, position by position, only the query's own x token matters there
    sw = Pt.patch_sweep(model, pairs, layers=[L], n_bootstrap=50)
    assert list(sw["pos"]) == list(range(9))
    assert sw.set_index("pos").loc[8, "mean"] == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(sw[sw.pos < 8]["mean"], 0.0, atol=1e-4)
    # tokens after the query cannot matter (causality)
    late = Pt.patch_sweep(model, pairs, query=2, positions=[5, 6, 7], n_bootstrap=20)
    assert np.allclose(late["mean"].dropna(), 0.0, atol=1e-5)
    # patching the corrupted activation into itself (or nothing) leaves the corrupted prediction
    k = pairs.corrupted
    _, cache = model.run_with_cache(k.xs, k.ys, names_filter=["blocks.0.hook_resid_post"])
    same = Pt.patched_predictions(model, k, cache, [Site("blocks.0.hook_resid_post")])
    torch.testing.assert_close(same[0], model(k.xs, k.ys).detach(), atol=1e-5, rtol=0)
    assert Pt.patched_predictions(model, k, cache, []).shape == (0, 24, 5)
    assert no_hooks(model)


def test_corrupted_y_token_at_the_embedding_restores_everything():
    model = hi.build_model("gpt2", **SMALL)
    pairs = Pt.make_pairs(TASK, "corrupt_y", n_points=5, n_prompts=24, index=1, seed=0)
    sw = Pt.patch_sweep(model, pairs, layers=[0], n_bootstrap=50)
    by_pos = sw.set_index("pos")["mean"]
    assert by_pos[3] == pytest.approx(1.0, abs=1e-4)  # y_1 is token 3: the only difference
    assert np.allclose(by_pos.drop(3), 0.0, atol=1e-4)
    assert sw.loc[sw.pos == 3, "token"].item() == "y"
    row = sw.set_index("pos").loc[3]
    assert row.ci_low <= 1.0 + 1e-6 and row.ci_high >= 1.0 - 1e-6 and row.n + row.n_dropped == 24


def test_per_head_effects_add_up_in_a_linear_model():
    # last block of linear attention: prediction is linear in hook_z at the query token
    model = hi.build_model("linear_attention", **SMALL, init_std=0.15)
    pairs = Pt.make_pairs(TASK, "new_function", n_points=5, n_prompts=32, seed=3)
    heads = Pt.patch_sweep(model, pairs, hooks="attn.hook_z", layers=[1], positions=[8], n_bootstrap=20)
    whole = Pt.patch_sweep(model, pairs, hooks="blocks.1.attn.hook_z", positions=[8], per_head=False, n_bootstrap=20)
    assert list(heads["head"]) == [0, 1] and list(whole["head"]) == [-1]
    assert heads["mean"].sum() == pytest.approx(whole["mean"].item(), abs=1e-4)
    ex = Pt.patch_examples(model, pairs, hooks="blocks.1.attn.hook_z", positions=[8])
    per = ex.pivot(index="example", columns="head", values="effect")
    both = Pt.patch_examples(model, pairs, hooks="blocks.1.attn.hook_z", positions=[8], per_head=False)
    np.testing.assert_allclose(per[0] + per[1], both.set_index("example")["effect"], atol=1e-3)


def test_near_zero_gaps_are_dropped_and_counted():
    model = hi.build_model("gpt2", **SMALL)
    pairs = Pt.make_pairs(TASK, "new_function", n_points=4, n_prompts=16, seed=0)
    same = Pt.PromptPairs(pairs.clean, pairs.clean, "identical", 3)
    sw = Pt.patch_sweep(model, same, layers=[2], positions="all", one_at_a_time=False, n_bootstrap=20)
    assert sw["n"].item() == 0 and sw["n_dropped"].item() == 16 and np.isnan(sw["mean"].item())
    huge = Pt.patch_sweep(model, pairs, layers=[2], positions="all", one_at_a_time=False, min_gap=1e9, n_bootstrap=20)
    assert huge["n"].item() == 0 and huge["n_dropped"].item() == 16
    # linear attention has no positions: permuting the demonstrations changes nothing but rounding
    lin = hi.build_model("linear_attention", **SMALL)
    perm = Pt.make_pairs(TASK, "permute", n_points=5, n_prompts=16, seed=0)
    assert Pt.patch_sweep(lin, perm, layers=[2], positions="all", one_at_a_time=False, n_bootstrap=20)["n"].item() == 0
    # the aggregate is the gap²-weighted mean of the per-example effects
    ex = Pt.patch_examples(model, pairs, layers=[1], positions=[4])
    agg = Pt.patch_sweep(model, pairs, layers=[1], positions=[4], n_bootstrap=20)
    kept = ex[~ex.dropped]
    w = kept["gap"] ** 2
    assert agg["mean"].item() == pytest.approx(float((kept["effect"] * w).sum() / w.sum()), rel=1e-9)
    assert agg["mean_per_example"].item() == pytest.approx(float(kept["effect"].mean()), rel=1e-9)


@pytest.mark.parametrize("arch", hi.list_architectures())
def test_sweep_runs_on_every_preset(arch):
    model = build(arch)
    pairs = Pt.make_pairs(TASK, "corrupt_y", n_points=4, n_prompts=12, seed=0)
    hooks = ["resid", "hook_attn_out", "attn.hook_z"] if any(hasattr(b, "attn") for b in model.blocks) else ["resid"]
    if any("hook_ssm_state" in k for k in model.hook_dict):
        hooks += ["mixer.hook_ssm_state"] if any(k.endswith("mixer.hook_ssm_state") for k in model.hook_dict) else ["ffn.hook_ssm_state"]
    df = Pt.patch_sweep(model, pairs, hooks=hooks, n_bootstrap=20)
    assert list(df.columns) == ["site", "hook", "layer", "pos", "token", "head", "mean", "ci_low", "ci_high", "mean_per_example", "n", "n_dropped"]
    assert set(df["pos"]) == set(range(7))
    if "attn.hook_z" in hooks:
        n_heads = model.blocks[-1].attn.n_heads
        assert sorted(df[df.hook.str.endswith("hook_z")]["head"].unique()) == list(range(n_heads))
    else:
        assert (df["head"] == -1).all()
    last = df[df.hook == f"blocks.{len(model.blocks) - 1}.hook_resid_post"].set_index("pos")["mean"]
    assert last[6] == pytest.approx(1.0, abs=1e-4)
    assert no_hooks(model)


def test_vector_targets():
    task = hi.make_task("vector_mqar", n_dims=4)
    model = hi.build_model("gpt2", n_dims=4, y_dim=4, d_model=16, n_layers=1, n_heads=2)
    pairs = Pt.make_pairs(task, "new_function", n_points=5, n_prompts=16, seed=0)
    ex = Pt.patch_examples(model, pairs, layers=[1], positions="all", one_at_a_time=False)
    kept = ex[~ex.dropped]
    assert len(kept) > 0 and np.allclose(kept["effect"], 1.0, atol=1e-4)


def test_bad_arguments_are_rejected():
    model = hi.build_model("gpt2", **SMALL)
    pairs = Pt.make_pairs(TASK, "new_function", n_points=4, n_prompts=8, seed=0)
    short = Pt.make_pairs(TASK, "new_function", n_points=4, n_prompts=4, seed=0)
    cases = [
        (dict(hooks="blocks.0.hook_resid_mad"), "hook_resid_mad"),
        (dict(layers=[3]), "layer"),
        (dict(hooks="attn.hook_z", heads=[2]), "head"),
        (dict(hooks="hook_mlp_out", heads=[0]), "no head axis"),
        (dict(hooks="attn.hook_z", heads=[0], per_head=False), "per_head"),
        (dict(positions=[8]), "out of range"),
        (dict(positions=[1, 1]), "repeated"),
        (dict(positions="odd"), "positions"),
        (dict(query=4), "query"),
        (dict(ci=1.5), "ci"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            Pt.patch_sweep(model, pairs, **kw)
    with pytest.raises(ValueError, match="must match"):
        Pt.patch_sweep(model, (pairs.clean, short.corrupted))
    with pytest.raises(ValueError, match="pairs"):
        Pt.patch_sweep(model, pairs.clean)
    with pytest.raises(ValueError, match="TaskBatches"):
        Pt.patch_sweep(model, ((pairs.clean.xs, pairs.clean.ys), (pairs.corrupted.xs, pairs.corrupted.ys)))
    mamba = hi.build_model("mamba", **SMALL)
    with pytest.raises(ValueError, match="attn.hook_z"):
        Pt.patch_sweep(mamba, pairs, hooks="attn.hook_z")
    assert no_hooks(model) and no_hooks(mamba)


def test_no_hooks_remain_when_a_patch_hook_raises():
    model = hi.build_model("gpt2", **SMALL)
    pairs = Pt.make_pairs(TASK, "new_function", n_points=4, n_prompts=8, seed=0)
    wrong = {"blocks.0.hook_resid_post": torch.zeros(8, 8, 5)}  # wrong d_model: the write fails inside the hook
    with pytest.raises(ValueError, match="shape"):
        Pt.patched_predictions(model, pairs.corrupted, wrong, [Site("blocks.0.hook_resid_post", [2])])
    assert no_hooks(model)


def test_analyze_run(tmp_path):
    from matplotlib.figure import Figure

    cfg = TrainConfig.model_validate({
        "name": "tiny", "steps": 10, "batch_size": 16,
        "model": {"arch": "gpt2", "d_model": 16, "n_layers": 1, "n_heads": 2},
        "task": {"name": "linear_regression", "n_dims": 3, "n_points": 5},
        "log": {"every": 10, "progress": False}, "checkpoint": {"every": 10},
    })
    run = train(cfg, tmp_path / "r")
    torch.set_num_threads(1)
    df, fig = Pt.analyze_run(run, n_prompts=16, n_bootstrap=20)
    assert isinstance(df, pd.DataFrame) and isinstance(fig, Figure)
    assert set(df["layer"]) == {0, 1} and set(df["pos"]) == set(range(9))
    assert fig.axes[0].get_xlabel() and fig.axes[0].get_title()
    df2, _ = Pt.analyze_run(run, n_prompts=16, kind="corrupt_y", hooks=["resid", "attn.hook_z"], n_bootstrap=20)
    assert set(df2["head"]) == {-1, 0, 1}
