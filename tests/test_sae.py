"""Sparse autoencoders: recovery of known sparse directions (TopK and L1-ReLU), the decoder-norm
constraint, dead-feature handling (auxiliary loss, resampling), metrics against hand-computed
values, splicing into a model (exact SAE = clean model; positions; hook cleanup), activations of
runs (captured and sampled), files, the CLI, and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import hookedicl as hi
from hookedicl.analysis import sae as S
from hookedicl.analysis import sae_eval as E
from hookedicl.cli import app
from hookedicl.training import TrainConfig, train



def synthetic(n: int = 6000, d: int = 12, m: int = 24, p: float = 3 / 24, seed: int = 0, offset: float = 1.0):
    """Tokens x = Σ_i a_i f_i + noise with m unit directions f_i, each on with probability p."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(m, d, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    on = torch.rand(n, m, generator=g) < p
    x = (on * (torch.rand(n, m, generator=g) + 0.5)) @ dirs + 0.01 * torch.randn(n, d, generator=g) + offset
    return x, dirs


def exact_sae(d: int) -> S.SparseAutoencoder:
    """A ReLU SAE with 2d features that reconstructs any input exactly: relu(x) − relu(−x) = x."""
    sae = S.SparseAutoencoder(d, 2 * d, kind="relu")
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.W_enc.copy_(torch.cat([eye, -eye]).T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


@pytest.mark.parametrize("kind,extra", [("topk", {"k": 3}), ("relu", {"l1_coeff": 0.05})])
def test_sae_recovers_known_sparse_directions(kind, extra):
    x, dirs = synthetic()
    sae, history = S.train_sae(x, d_sae=48, kind=kind, steps=600, batch_size=256, seed=0, **extra)
    best = (dirs @ sae.directions.T).max(1).values
    assert (best >= 0.9).float().mean() >= 0.9, best
    m = E.sae_metrics(sae, x)
    assert m["fvu"] < 0.3 and m["dead_fraction"] < 0.25
    if kind == "topk":
        assert m["l0"] == pytest.approx(3.0, abs=0.01)
    else:
        assert m["l0"] < 24
    assert history["fvu"].iloc[-1] < history["fvu"].iloc[0]
    assert list(history.columns) == ["step", "loss", "mse", "fvu", "l0", "aux", "dead_fraction", "resampled"]
    # decoder-norm constraint
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(48), rtol=0, atol=1e-5)
    # a random SAE of the same size recovers far less
    rand = S.SparseAutoencoder(12, 48, kind="topk", k=3)
    assert ((dirs @ rand.directions.T).max(1).values >= 0.9).float().mean() < 0.5


def test_training_is_seeded_and_scale_free():
    x, _ = synthetic(n=2000)
    a, _ = S.train_sae(x, d_sae=16, k=2, steps=50, batch_size=128, seed=3)
    b, _ = S.train_sae(x, d_sae=16, k=2, steps=50, batch_size=128, seed=3)
    c, _ = S.train_sae(100.0 * x, d_sae=16, k=2, steps=50, batch_size=128, seed=3)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    # inputs scaled by 100: the same directions; reconstructions scale along
    torch.testing.assert_close(c.directions, a.directions, atol=1e-4, rtol=0)
    torch.testing.assert_close(c(100.0 * x[:50]), 100.0 * a(x[:50]), rtol=1e-3, atol=1e-2)


def test_aux_loss_trains_only_dead_features():
    torch.manual_seed(0)
    sae = S.SparseAutoencoder(8, 32, kind="topk", k=2)
    xb = torch.randn(64, 8)
    cfg = S.SAEConfig(d_sae=32, k=2, aux_coeff=1.0)
    dead = torch.zeros(32, dtype=torch.bool)
    dead[20:] = True
    _, parts, _ = S.sae_loss(sae, xb, cfg, dead, aux_k=4)
    _, none, _ = S.sae_loss(sae, xb, cfg, None)
    assert parts["aux"] > 0 and none["aux"] == 0
    assert parts["mse"] == pytest.approx(none["mse"])
    # the gradient of the auxiliary term alone reaches the dead features' encoder columns only
    sae.zero_grad()
    loss_aux, _, _ = S.sae_loss(sae, xb, cfg, dead, aux_k=4)
    loss_main, _, _ = S.sae_loss(sae, xb, cfg, None)
    (loss_aux - loss_main).backward()
    g = sae.W_enc.grad.abs().sum(0)
    assert g[:20].max() == 0 and g[20:].max() > 0


def test_resampling_points_dead_features_at_badly_reconstructed_inputs():
    x, _ = synthetic(n=3000)
    sae, _ = S.train_sae(x, d_sae=24, k=2, steps=30, batch_size=128, dead="none")
    xs = x * sae.input_scale
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    loss, _, _ = S.sae_loss(sae, xs[:128], S.SAEConfig(d_sae=24, k=2))
    loss.backward()
    opt.step()
    dead = torch.zeros(24, dtype=torch.bool)
    dead[[1, 5, 7]] = True
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    assert S._resample(sae, opt, dead, xs, torch.Generator().manual_seed(0)) == 3
    with torch.no_grad():
        for i in (1, 5, 7):
            assert sae.W_dec[i].norm().item() == pytest.approx(1.0, abs=1e-5)
            assert sae.b_enc[i] == 0
            # the new encoder column is parallel to the new decoder row
            cos = torch.nn.functional.cosine_similarity(sae.W_enc[:, i], sae.W_dec[i], dim=0)
            assert cos.item() == pytest.approx(1.0, abs=1e-5)
            assert (opt.state[sae.W_dec]["exp_avg"][i] == 0).all() and (opt.state[sae.W_enc]["exp_avg"][:, i] == 0).all()
        alive = ~dead
        assert torch.equal(sae.W_dec[alive], before["W_dec"][alive]) and torch.equal(sae.W_enc[:, alive], before["W_enc"][:, alive])
        assert not torch.equal(sae.W_dec[dead], before["W_dec"][dead])
    assert S._resample(sae, opt, torch.zeros(24, dtype=torch.bool), xs, torch.Generator()) == 0
    # a strong L1 penalty at a high learning rate kills features within a few dozen steps;
    # resampling re-initialises them (and they fire again), without it they stay dead
    kw = dict(d_sae=24, kind="relu", l1_coeff=0.5, lr=0.03, steps=60, batch_size=128, dead_steps=5, resample_every=20, resample_until=1.0, log_every=20)
    _, off = S.train_sae(x, dead="none", **kw)
    _, on = S.train_sae(x, dead="resample", **kw)
    assert off["resampled"].iloc[-1] == 0 and off["dead_fraction"].iloc[-1] > 0.2
    assert on["resampled"].iloc[-1] > 0 and on["l0"].iloc[-1] > off["l0"].iloc[-1]


def test_metrics_match_hand_computed_values():
    sae = exact_sae(4)
    x = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
    x[:, 3] = -x[:, 3].abs() - 0.1  # coordinate 3 always negative: feature 3 never fires, feature 7 always
    m = E.sae_metrics(sae, x)
    assert m["fvu"] == pytest.approx(0.0, abs=1e-10) and m["cosine"] == pytest.approx(1.0)
    assert m["n_dead"] == 1 and m["dead_fraction"] == 1 / 8
    assert m["l0"] == pytest.approx(float((x != 0).sum()) / 100)
    # drop the negative half: x̂ = relu(x)
    with torch.no_grad():
        sae.W_dec[4:] = 0.0
    rec = x.clamp_min(0)
    m = E.sae_metrics(sae, x, batch_size=7)
    fvu = float((rec - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert m["fvu"] == pytest.approx(fvu, rel=1e-5) and m["mse"] == pytest.approx(float((rec - x).pow(2).mean()), rel=1e-5)
    torch.testing.assert_close(E.feature_activations(sae, x), torch.relu(torch.cat([x, -x], 1)))


# ------------------------------------------------------------------------- model splice
def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return hi.build_model("gpt2", n_dims=3, d_model=16, n_layers=2, n_heads=2, init_std=0.2)


def prompts(b: int = 16, n: int = 6, seed: int = 0):
    return hi.make_task("linear_regression", n_dims=3).sample(batch_size=b, n_points=n, generator=torch.Generator().manual_seed(seed))


def no_hooks(model) -> bool:
    return all(not hp._forward_hooks for hp in model.hook_dict.values())


def test_collect_activations_matches_run_with_cache_and_flattens_head_hooks():
    model, batch = tiny_model(), prompts()
    acts = E.collect_activations(model, batch, ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"], batch_size=5)
    _, cache = model.run_with_cache(batch.xs, batch.ys)
    torch.testing.assert_close(acts["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_post"])
    assert acts["blocks.1.attn.hook_z"].shape == (16, 12, 2, 8)
    assert no_hooks(model)
    with pytest.raises(ValueError, match="attention patterns"):
        E.collect_activations(model, batch, "blocks.0.attn.hook_pattern")
    with pytest.raises(ValueError, match="unknown hook"):
        E.collect_activations(model, batch, "blocks.9.hook_resid_post")


@pytest.mark.parametrize("hook,d", [("blocks.0.hook_resid_post", 16), ("blocks.1.attn.hook_z", 16)])
def test_splicing_an_exact_sae_leaves_the_model_unchanged(hook, d):
    model, batch = tiny_model(), prompts()
    clean = model(batch.xs, batch.ys)
    out = E.spliced_predictions(model, exact_sae(d), hook, batch)
    torch.testing.assert_close(out, clean, atol=1e-5, rtol=0)
    summary, curves = E.splice_effect(model, exact_sae(d), hook, batch, n_bootstrap=50)
    assert summary["delta_score"] == pytest.approx(0.0, abs=1e-4) and summary["score_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert summary["fvu"] == pytest.approx(0.0, abs=1e-8)
    assert set(curves["predictor"]) == {"clean", "spliced", "ablated", "baseline", "zero"} and len(curves) == 5 * 6
    assert no_hooks(model)


def test_splicing_a_constant_sae_equals_the_manual_edit_at_the_chosen_positions():
    model, batch = tiny_model(), prompts()
    hook = "blocks.1.hook_resid_pre"
    sae = S.SparseAutoencoder(16, 8, kind="relu")
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.fill_(-1.0)  # no feature ever fires: x̂ = b_dec
        sae.b_dec.copy_(torch.linspace(-1, 1, 16))

    def edit(act, hook):
        act = act.clone()
        act[:, 1::2] = torch.linspace(-1, 1, 16)
        return act

    with model.hooks(fwd_hooks=[(hook, edit)]):
        want = model(batch.xs, batch.ys)
    got = E.spliced_predictions(model, sae, hook, batch, positions="y")
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert not torch.allclose(got, E.spliced_predictions(model, sae, hook, batch))
    summary, _ = E.splice_effect(model, sae, hook, batch, n_bootstrap=50)
    assert summary["score"]["spliced"]["value"] < summary["score"]["clean"]["value"]
    assert summary["error"]["spliced"] > summary["error"]["clean"]


def test_splice_rejects_bad_input_and_removes_its_hook_on_error():
    model, batch = tiny_model(), prompts()
    with pytest.raises(ValueError, match="expects d_in=8"):
        E.spliced_predictions(model, S.SparseAutoencoder(8, 4, k=2), "blocks.0.hook_resid_post", batch)
    assert no_hooks(model)
    with pytest.raises(ValueError, match="must be a SparseAutoencoder"):
        E.spliced_predictions(model, torch.nn.Identity(), "blocks.0.hook_resid_post", batch)
    with pytest.raises(ValueError, match="out of range"):
        E.spliced_predictions(model, exact_sae(16), "blocks.0.hook_resid_post", batch, positions=[0, 99])
    with pytest.raises(ValueError, match="positions must be"):
        E.spliced_predictions(model, exact_sae(16), "blocks.0.hook_resid_post", batch, positions="odd")


def test_bad_training_input_is_rejected():
    with pytest.raises(ValueError, match="k=9 exceeds d_sae=8"):
        S.SAEConfig(d_sae=8, k=9)
    with pytest.raises(ValueError, match="steps"):
        S.SAEConfig(steps=0)
    with pytest.raises(ValueError, match="extra_forbidden|Extra inputs"):
        S.SAEConfig(width=3)
    with pytest.raises(ValueError, match="NaN or inf"):
        S.train_sae(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), d_sae=4, k=1)
    with pytest.raises(ValueError, match="floating-point"):
        S.train_sae(torch.ones(4, 3, dtype=torch.long), d_sae=4, k=1)
    with pytest.raises(ValueError, match=r"\(n_tokens, d_in\)"):
        S.train_sae(torch.ones(5), d_sae=4, k=1)
    with pytest.raises(ValueError, match="constant"):
        S.train_sae(torch.ones(10, 3), d_sae=4, k=1)
    with pytest.raises(ValueError, match="d_in=3"):
        exact_sae(3).encode(torch.ones(2, 4))
    with pytest.raises(ValueError, match="k must be"):
        S.SparseAutoencoder(4, 8, kind="topk", k=0)


def test_save_and_load_round_trip(tmp_path):
    x, _ = synthetic(n=1000)
    sae, _ = S.train_sae(x, d_sae=16, k=2, steps=20, batch_size=100)
    sha = S.save_sae(sae, tmp_path / "s.safetensors", metadata={"hook": "h"})
    assert len(sha) == 64
    back, meta = S.load_sae(tmp_path / "s.safetensors")
    assert meta == {"hook": "h"} and back.kind == "topk" and back.k == 2
    torch.testing.assert_close(back(x[:20]), sae(x[:20]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="not found"):
        S.load_sae(tmp_path / "none.safetensors")
    from hookedicl.io import save_safetensors

    save_safetensors(tmp_path / "other.safetensors", {"a": torch.zeros(1)})
    with pytest.raises(ValueError, match="not an SAE file"):
        S.load_sae(tmp_path / "other.safetensors")


# -------------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = TrainConfig.model_validate({
        "name": "sae", "steps": 4, "batch_size": 16, "threads": 1,
        "model": {"arch": "gpt2", "d_model": 16, "n_layers": 2, "n_heads": 2},
        "task": {"name": "linear_regression", "n_dims": 3, "n_points": 5},
        "log": {"every": 2, "progress": False}, "checkpoint": {"every": 2},
        "capture": {"hooks": ["blocks.*.hook_resid_post"], "every": 2, "n_prompts": 8},
        "eval": {"n_prompts": 16, "batch_size": 16, "baselines": ["least_squares"]},
    })
    return train(cfg, tmp_path_factory.mktemp("sae_run") / "r")


def test_run_activations_from_captures_and_fresh_prompts(run):
    cap = E.run_activations(run, "blocks.1.hook_resid_post", source="capture")
    stored = run.activations.load(run.activations.steps[-1])["act"]["blocks.1.hook_resid_post"]
    torch.testing.assert_close(cap, stored.reshape(-1, 16))
    assert E.run_activations(run, "blocks.1.hook_resid_post", source="capture", step=2, positions="x").shape == (8 * 5, 16)
    fresh = E.run_activations(run, "blocks.0.hook_resid_post", n_prompts=10, seed=1)
    assert fresh.shape == (10 * 10, 16)
    torch.testing.assert_close(fresh, E.run_activations(run, "blocks.0.hook_resid_post", n_prompts=10, seed=1))
    with pytest.raises(ValueError, match="was not captured"):
        E.run_activations(run, "blocks.0.hook_resid_mid", source="capture")
    with pytest.raises(ValueError, match="source must be"):
        E.run_activations(run, "blocks.0.hook_resid_post", source="cache")


def test_train_run_sae_and_cli(run, tmp_path):
    from hookedicl.analysis.sae_run import train_run_sae

    m = train_run_sae(run, "blocks.1.hook_resid_post", tmp_path / "s", S.SAEConfig(d_sae=32, k=4, steps=30, batch_size=64), n_prompts=32, eval_prompts=48)
    assert {"fvu", "l0", "dead_fraction", "splice"} <= set(m) and m["l0"] == pytest.approx(4.0)
    assert m["splice"]["baseline"] == "least_squares" and m["n_train_tokens"] == 32 * 10
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["hook"] == "blocks.1.hook_resid_post"
    assert (tmp_path / "s" / "history.csv").exists() and (tmp_path / "s" / "splice_curves.csv").exists()
    sae, meta = S.load_sae(tmp_path / "s" / "sae.safetensors")
    assert meta["hook"] == "blocks.1.hook_resid_post" and sae.d_sae == 32
    res = CliRunner().invoke(app, [
        "sae", str(run.path), "--hook", "blocks.0.hook_resid_post", "--kind", "relu", "--d-sae", "16", "--steps", "20",
        "--n-prompts", "16", "--eval-prompts", "48", "--source", "capture",
    ])
    assert res.exit_code == 0, res.output
    assert "FVU" in res.output and "spliced" in res.output
    assert (run.path / "sae" / "blocks.0.hook_resid_post" / "sae.safetensors").exists()
    bad = CliRunner().invoke(app, ["sae", str(run.path), "--hook", "blocks.7.hook_resid_post"])
    assert bad.exit_code == 2 and "unknown hook" in bad.output
    bad = CliRunner().invoke(app, ["sae", str(run.path), "--hook", "blocks.0.hook_resid_post", "--k", "999", "--d-sae", "8"])
    assert bad.exit_code == 2 and "exceeds d_sae" in bad.output
