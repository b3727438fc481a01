"""Documentation pages whose code must run: every python block of a page runs, in order, in one
namespace (its asserts included)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def run_blocks(page: Path) -> dict:
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert blocks, f"{page} has no python block"
    ns: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page}:block{i}", "exec"), ns)
    return ns


def test_transformerlens_page_runs():
    ns = run_blocks(DOCS / "transformerlens.md")
    assert ns["labels"] == ["embed", "pos_embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]
    assert ns["M"].shape == (16, 64, 22, 22) and ns["M_ffn"].shape[-2:] == (22, 22)
    assert float((ns["ablated"] - ns["preds"]).detach().abs().max()) > 0


@pytest.mark.parametrize("page", ["sklearn.md"])
def test_other_pages_run(page):
    ns = run_blocks(DOCS / page)
    assert ns["search"].best_params_["hidden"] in (8, 32)
    assert 0.9 < ns["r2_folds"].mean() <= 1.0
    assert ns["best"].lr == ns["eta"] != 1.0


def test_analysis_page_runs():
    from hookedicl.analysis import ablate

    ns = run_blocks(DOCS / "analysis.md")
    model = ns["model"]
    n_heads = sum(b.attn.n_heads for b in model.blocks if hasattr(b, "attn"))
    assert list(ns["sweep"].columns) == ablate.SWEEP_COLUMNS and len(ns["sweep"]) == n_heads
    assert ns["preds"].shape == (32, 11)
