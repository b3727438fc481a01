"""scripts/zoo_table.py: the docs/zoo.md table from a sweep's results.csv."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

spec = importlib.util.spec_from_file_location("zoo_table", Path(__file__).parents[1] / "scripts" / "zoo_table.py")
zoo_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(zoo_table)


def _results(score) -> pd.DataFrame:
    rows = []
    for arch, published in zoo_table.PUBLISHED.items():
        for i, (_, task) in enumerate(zoo_table.TASKS):
            for seed in (0, 1):
                s = score(published[i], seed)
                rows.append({"status": "done", "arch": arch, "task": task, "seed": seed, "icl_score": s,
                             "icl_score_ci_low": s - 0.01, "icl_score_ci_high": s + 0.01, "n_params": 1000,
                             "train_s": 60.0, "wall_s": 70.0, "score_baseline": "least_squares",
                             "err_k5": 0.5, "baseline_err_k5": 0.0})
    return pd.DataFrame(rows)


def test_scores_equal_to_the_published_ones_rank_identically():
    r = _results(lambda p, seed: p + (0.001 if seed else -0.001))
    t = zoo_table.summarise(r)
    assert (t["sparse_rank"] == t["sparse_published_rank"]).all()
    assert abs(t.loc[t["arch"] == "gpt2_rms", "sparse_mean"].item() - 0.535) < 1e-9
    md = zoo_table.markdown(t, r)
    assert "sparse: 1.00" in md and "Runs done: 48 of 48" in md
    assert "| `mamba` | 1,000 | 60 | 0.500 |" in zoo_table.cost_table(r)


def test_reversed_scores_correlate_negatively_and_missing_runs_are_not_averaged():
    r = _results(lambda p, seed: 1.0 - p)
    r.loc[(r["arch"] == "gpt2") & (r["seed"] == 1), "status"] = "failed"
    t = zoo_table.summarise(r)
    assert len(t.loc[t["arch"] == "gpt2", "linear_seeds"].item()) == 1
    assert "sparse: -1.00" in zoo_table.markdown(t, r)
