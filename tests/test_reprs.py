"""Short reprs and HTML tables of the result objects a notebook shows: one line each, never a
dump of arrays or configs; the HTML tables hold the numbers computed here from the raw errors."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

import hookedicl as hi
from hookedicl.sweep.runner import SweepResult


class _Table(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.caption = ""
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th", "caption"):
            self._in = tag
            if tag != "caption":
                self.rows[-1].append("")

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "caption":
            self.caption += data
        elif self._in:
            self.rows[-1][-1] += data


def _table(html: str) -> _Table:
    t = _Table()
    t.feed(html)
    return t


@pytest.fixture(scope="module")
def result():
    task = hi.make_task("linear_regression", n_dims=3)
    preds = {"least_squares": hi.baselines.get("least_squares"), "averaging": hi.baselines.get("averaging")}
    return hi.evaluate(preds, task, n_prompts=500, n_points=9, batch_size=250)


def test_eval_result_repr_and_table(result):
    r = repr(result)
    assert len(r) < 200 and "\n" not in r and "array" not in r
    assert "n_prompts=500" in r and "n_points=9" in r and "'least_squares', 'averaging'" in r
    t = _table(result._repr_html_())
    header, *rows = t.rows
    ks = [int(h.split("=")[1]) for h in header[1:]]
    assert header[0] == "predictor" and ks == [0, 2, 3, 5, 6, 8] and len(ks) <= 6
    assert [row[0] for row in rows] == ["least_squares", "averaging", "zero"]
    y2 = result.y_second_moment
    for row in rows:
        expected = result.errors[row[0]][:, ks].mean(axis=0) / y2  # straight from the raw errors
        np.testing.assert_allclose([float(v) for v in row[1:]], expected, rtol=1e-3)
    assert "500 prompts x 9 points" in t.caption


def test_icl_score_repr_and_table(result):
    s = result.icl_score("averaging", "least_squares", n_bootstrap=200)
    r = repr(s)
    assert r.startswith(f"ICLScore({s.value:.4g}, 95% CI [{s.ci_low:.4g}, {s.ci_high:.4g}]") and "n_prompts=500" in r
    header, row = _table(s._repr_html_()).rows
    assert header == ["ICL score", "95% CI low", "CI high", "method", "prompts"]
    assert float(row[0]) == pytest.approx(s.value, rel=1e-3) and row[3] == "same_prompts" and row[4] == "500"


def test_pretrained_card_repr_and_table():
    card = hi.pretrained_card("gpt2-linreg-d5")
    r = repr(card)
    assert len(r) < 250 and "eval_summary" not in r and "gpt2-linreg-d5" in r
    assert f"{card.icl_score['value']:.3f}" in r
    rows = _table(card._repr_html_()).rows
    assert rows[0] == ["field", "value"] and len(rows) == 9
    fields = dict(rows[1:])
    assert fields["parameters"] == f"{card.n_params:,}" and fields["architecture"] == card.arch


def test_task_batch_repr_shows_shapes_not_values():
    batch = hi.make_task("linear_regression", n_dims=4).sample(batch_size=32, n_points=7,
                                                               generator=torch.Generator().manual_seed(0))
    r = repr(batch)
    assert r == "TaskBatch(xs (32, 7, 4), ys (32, 7), params: w (32, 4); torch.float32, cpu)"


def test_sweep_result_repr():
    r = SweepResult(Path("runs/sweeps/x"), points=[1, 2, 3], states={"a": "done", "b": "new", "c": "new"},  # type: ignore[list-item]
                    records={"b": {"status": "done"}, "c": {"status": "failed"}})
    assert repr(r) == "SweepResult('runs/sweeps/x': 3 points, 2 run now, 1 already done, 1 failed)"
