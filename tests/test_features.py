"""Feature tracking: cosine matching (one-to-one and best-match, alive masks), persisting /
emerging / vanishing counts on hand-built dictionaries, merge origins, correlations with task
quantities on features built from those quantities, summaries, figures, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from hookedicl.analysis import features as F


def basis(d: int = 6) -> torch.Tensor:
    return torch.eye(d)


def rotated(i: int, j: int, cos: float, d: int = 6) -> torch.Tensor:
    """Unit vector at angle arccos(cos) from e_i, towards e_j."""
    v = torch.zeros(d)
    v[i], v[j] = cos, math.sqrt(1 - cos**2)
    return v


def test_cosine_matrix_and_normalisation():
    a = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 3.0], [-1.0, 0.0]])
    np.testing.assert_allclose(F.cosine_matrix(a, b), [[0.0, -1.0], [1 / math.sqrt(2), -1 / math.sqrt(2)]], atol=1e-12)
    with pytest.raises(ValueError, match="different spaces"):
        F.cosine_matrix(a, torch.ones(2, 3))
    with pytest.raises(ValueError, match="zero-norm"):
        F.cosine_matrix(torch.zeros(1, 2), b)
    with pytest.raises(ValueError, match=r"\(n_features, d_in\)"):
        F.cosine_matrix(torch.ones(3), b)


def test_matching_recovers_a_permutation_among_extra_features():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(10, 16, generator=g)
    perm = torch.randperm(10, generator=g)
    b = torch.cat([a[perm] + 0.05 * torch.randn(10, 16, generator=g), torch.randn(5, 16, generator=g)])
    for method in F.MATCH_METHODS:
        m = F.match_features(a, b, method=method)
        assert len(m) == 10 and m["cosine"].is_monotonic_decreasing and (m["cosine"] > 0.95).all()
        got = dict(zip(m["feature_a"], m["feature_b"]))
        assert got == {int(perm[j]): j for j in range(10)}
    # masks: the matched features of B are dead, so nothing good is left to match
    alive_b = torch.zeros(15, dtype=torch.bool)
    alive_b[10:] = True
    m = F.match_features(a, b, method="assignment", alive_b=alive_b)
    assert len(m) == 5 and set(m["feature_b"]) == set(range(10, 15)) and (m["cosine"] < 0.9).all()
    with pytest.raises(ValueError, match="unknown match method"):
        F.match_features(a, b, method="greedy")
    with pytest.raises(ValueError, match="boolean mask of shape"):
        F.match_features(a, b, alive_a=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no feature alive"):
        F.match_features(a, b, alive_a=torch.zeros(10, dtype=torch.bool))


def test_flow_counts_on_a_hand_built_example():
    e = basis()
    ref = e[:4]  # e0..e3
    other = torch.stack([e[0], rotated(1, 4, 0.8), e[5], rotated(0, 2, 0.75)])  # e0 kept, e1 turned by cos 0.8, two new
    a = F.flow_counts(ref, other, [0.5, 0.7, 0.78, 0.9], method="assignment").set_index("threshold")
    # one-to-one: e0-e0 (1.0), e1-e1' (0.8), e2-(cos 0.66 vs e0-ish vector) ... pairs ≥ τ
    assert a.loc[0.7, ["persisting", "vanishing", "emerging"]].tolist() == [2, 2, 2]
    assert a.loc[0.9, ["persisting", "vanishing", "emerging"]].tolist() == [1, 3, 3]
    assert (a["n_ref"] == 4).all() and (a["n_other"] == 4).all()
    # at 0.5 the fourth vector (cos 0.75 with e0, 0.66 with e2) pairs with e2 one-to-one
    assert a.loc[0.5, "persisting"] == 3
    b = F.flow_counts(ref, other, [0.5, 0.7, 0.78, 0.9], method="best").set_index("threshold")
    # best match: e0 and e1 persist at 0.78; e2's best is the fourth vector (0.66): persists at 0.5 only;
    # emerging = other features whose best match in ref is below τ: e5 always, the fourth from 0.78 on
    assert b.loc[0.5, ["persisting", "vanishing", "emerging"]].tolist() == [3, 1, 1]
    assert b.loc[0.78, ["persisting", "vanishing", "emerging"]].tolist() == [2, 2, 2]
    assert b.loc[0.9, ["persisting", "vanishing", "emerging"]].tolist() == [1, 3, 3]
    # identical dictionaries: everything persists
    same = F.flow_counts(ref, ref, [0.99])
    assert same[["persisting", "vanishing", "emerging"]].values.tolist() == [[4, 0, 0]]
    # dead features are left out on both sides
    dead = F.flow_counts(ref, other, [0.7], alive_other=torch.tensor([True, True, False, False]))
    assert dead[["n_other", "persisting", "vanishing", "emerging"]].values.tolist() == [[2, 2, 2, 0]]
    with pytest.raises(ValueError, match="thresholds"):
        F.flow_counts(ref, other, [1.5])
    with pytest.raises(ValueError, match="thresholds"):
        F.flow_counts(ref, other, [])


def test_feature_flow_table_and_merge_origins():
    e = basis()
    dirs = {"base": e[:3], "ft_a": torch.stack([e[0], e[1], e[3]]), "ft_b": torch.stack([e[0], e[4], e[2]])}
    dirs["merged"] = torch.stack([e[0], e[3], rotated(4, 5, 0.95), e[5]])
    flow = F.feature_flow(dirs, "base", [0.9])
    assert list(flow.columns[:2]) == ["model", "reference"] and set(flow["model"]) == {"ft_a", "ft_b", "merged"}
    assert len(flow) == 3 * 2  # models x methods
    row = flow[(flow["model"] == "merged") & (flow["method"] == "assignment")].iloc[0]
    assert (row["persisting"], row["vanishing"], row["emerging"]) == (1, 2, 3)
    origins = F.merge_origins(dirs["merged"], {k: dirs[k] for k in ("base", "ft_a", "ft_b")}, threshold=0.9)
    assert origins["origin"].tolist() == ["base+ft_a+ft_b", "ft_a", "ft_b", "new"]
    assert origins["cos_ft_b"].iloc[2] == pytest.approx(0.95)
    live = F.merge_origins(dirs["merged"], {"ft_a": dirs["ft_a"]}, 0.9, alive_merged=torch.tensor([False, True, True, True]))
    assert live["feature"].tolist() == [1, 2, 3] and live["origin"].tolist() == ["ft_a", "new", "new"]
    with pytest.raises(ValueError, match="reference 'none'"):
        F.feature_flow(dirs, "none")
    with pytest.raises(ValueError, match="at least one model besides"):
        F.feature_flow({"base": e[:3]}, "base")
    with pytest.raises(ValueError, match="unknown model"):
        F.feature_flow(dirs, "base", alive={"other": torch.ones(3, dtype=torch.bool)})
    figs = [F.plot_feature_flow(flow), F.plot_merge_origins({"layer 1": origins, "layer 2": live})]
    assert len(figs[0].axes) == 3 and len(figs[1].axes) == 1
    with pytest.raises(ValueError, match="nothing to plot"):
        F.plot_feature_flow(flow, method="nothing")


def test_task_correlations_find_the_quantity_a_feature_encodes():
    g = torch.Generator().manual_seed(0)
    b, n, d = 64, 6, 3
    xs, w = torch.randn(b, n, d, generator=g), torch.randn(b, d, generator=g)
    ys = torch.einsum("bnd,bd->bn", xs, w)
    preds = ys + torch.randn(b, n, generator=g)
    resid = (ys - preds).repeat_interleave(2, dim=1)
    parity = torch.tensor([0.0, 1.0]).repeat(n).expand(b, -1)
    feats = torch.stack([
        3.0 * parity + 1.0,                       # 0: the y-token indicator
        w[:, 1:2].expand(b, 2 * n).clone(),       # 1: w_1 at every token
        torch.relu(resid) * parity,               # 2: the positive residual, at y tokens only
        torch.full((b, 2 * n), 2.0),              # 3: constant
        torch.randn(b, 2 * n, generator=g),       # 4: noise
    ], dim=-1)
    df = F.task_correlations(feats, xs, ys, params={"w": w}, preds=preds)
    assert set(df["quantity"]) == {"is_y_token", "k", "y", "residual", "w_0", "w_1", "w_2"}
    assert set(df["tokens"]) == {"all", "x", "y"} and len(df) == 5 * 7 * 3
    c = df.set_index(["feature", "quantity", "tokens"])["corr"]
    assert c[(0, "is_y_token", "all")] == pytest.approx(1.0)
    assert math.isnan(c[(0, "is_y_token", "y")])  # constant within y tokens
    assert c[(1, "w_1", "all")] == pytest.approx(1.0) and abs(c[(1, "w_0", "all")]) < 0.3
    assert c[(2, "residual", "y")] > 0.75 and math.isnan(c[(2, "residual", "x")])  # silent at x tokens
    assert df[df["feature"] == 3]["corr"].isna().all()
    assert df[df["feature"] == 4]["corr"].abs().max() < 0.2
    strong = F.strong_correlations(df, 0.7).set_index(["quantity", "tokens"])
    assert strong.loc[("is_y_token", "all"), "top_feature"] == 0 and strong.loc[("w_1", "all"), "top_feature"] == 1
    assert strong.loc[("residual", "y"), "top_feature"] == 2 and strong.loc[("residual", "y"), "n_strong"] == 1
    # without params / preds: only the prompt's own quantities
    assert set(F.task_correlations(feats, xs, ys)["quantity"]) == {"is_y_token", "k", "y"}
    with pytest.raises(ValueError, match=r"features must be \(batch=64, n_tokens=12"):
        F.task_correlations(feats[:, :5], xs, ys)
    with pytest.raises(ValueError, match="preds must be"):
        F.task_correlations(feats, xs, ys, preds=preds[:, :2])
    with pytest.raises(ValueError, match=r"params\['w'\]"):
        F.task_correlations(feats, xs, ys, params={"w": w[:3]})
    with pytest.raises(ValueError, match="must have columns"):
        F.strong_correlations(pd.DataFrame({"a": [1]}))
