"""docs/sklearn.md: every python block runs, in order, in one namespace (its asserts included)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "sklearn.md"


def test_docs_sklearn_code_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 3
    ns: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC}:block{i}", "exec"), ns)
    assert ns["search"].best_params_["hidden"] in (8, 32) and ns["fresh"].get_params() == ns["search"].best_estimator_.get_params()
    assert 0.9 < ns["r2_folds"].mean() <= 1.0
    assert ns["best"].lr == ns["eta"] != 1.0
