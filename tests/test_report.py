"""The run report and its figures, checked by structure (not pixels): the matching legend grouped
by family at a readable size, axis labels in words, the error-curve axis fitted to the model with
the clipped references marked, curriculum jumps on the training curve, compact tables without
empty columns, each linking to its full CSV. Screenshots of a report: docs/report.md."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import hookedicl as hi
from hookedicl.report import MAX_ROWS, write_report
from hookedicl.tasks.curriculum import Curriculum
from hookedicl.viz import plot_error_curves, plot_matching, plot_training_loss
from hookedicl.viz._backend import pyplot


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    pyplot().close("all")


# ------------------------------------------------------------------------------------- figures
def _match_table() -> pd.DataFrame:
    refs = [("least_squares", "least_squares"), ("ridge(alpha=0.01)", "ridge"), ("ridge(alpha=0.1)", "ridge"),
            ("ridge(alpha=1)", "ridge"), ("gd(steps=1, lr=0.3, task line search)", "gd"),
            ("gd(steps=2, lr=0.2, task line search)", "gd"), ("averaging", "averaging")]
    rows = [{"predictor": "model", "family": "model", "k": k, "metric": "r2", "mean": 0.9, "ci_low": 0.8, "ci_high": 1.0}
            for k in range(5)]
    rng = np.random.default_rng(0)
    for i, (ref, fam) in enumerate(refs):
        for metric in ("spd", "spd/d", "ilwd/d", "sensitivity_cos"):
            for k in range(5):
                m = float(rng.uniform(0.1, 1.0)) + i
                rows.append({"predictor": ref, "family": fam, "k": k, "metric": metric, "mean": m,
                             "ci_low": m - 0.05, "ci_high": m + 0.05})
    return pd.DataFrame(rows)


def test_matching_legend_grouped_by_family_and_readable():
    table = _match_table()
    fig = plot_matching(table)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 3  # spd/d, ilwd/d, sensitivity_cos; "spd" and the model's r2 are not drawn
    for ax in panels:
        assert len([ln for ln in ax.get_lines() if len(ln.get_xdata())]) == 7  # one line per reference
        label = ax.get_ylabel()
        assert label not in ("spd/d", "ilwd/d", "sensitivity_cos") and len(label.split()) >= 3  # words
        assert ax.get_xlabel() == "in-context examples (k)"
    assert "squared prediction difference" in panels[0].get_ylabel()
    (legend,) = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    texts = [t.get_text() for t in legend.get_texts()]
    # 7 references + a header for each family with several members (ridge, gd)
    assert len(texts) == 9
    assert texts[:5] == ["least_squares", "ridge", "  alpha=0.01", "  alpha=0.1", "  alpha=1"]
    bold = [t.get_text() for t in legend.get_texts() if t.get_fontweight() == "bold"]
    assert bold == ["ridge", "gd"]
    assert min(t.get_fontsize() for t in legend.get_texts()) >= 9
    assert fig.get_size_inches()[0] <= 9.5  # readable when a page scales it to ~1000 px
    # one colour per family, a line style per member
    ridge = [h for lab, h in zip(texts, legend.legend_handles) if lab.startswith("  alpha")]
    assert len({str(h.get_color()) for h in ridge}) == 1 and len({h.get_linestyle() for h in ridge}) == 3


def test_error_curves_axis_fits_the_model_and_marks_clipped_references():
    ks = np.arange(8)
    model = 1.0 / (1 + ks)
    avg = np.r_[1.0, 6.0, 3.0, 1.4, 1.0, 0.8, 0.7, 0.6]
    rows = []
    for name, m in (("model", model), ("averaging", avg), ("zero", np.ones(8))):
        rows += [{"predictor": name, "k": k, "mean": v, "ci_low": v * 0.9, "ci_high": v * 1.1} for k, v in zip(ks, m)]
    fig = plot_error_curves(pd.DataFrame(rows), focus="model")
    ax = fig.axes[0]
    top = ax.get_ylim()[1]
    assert top == pytest.approx(max(1.1, 1.3 * 1.1))  # headroom x the model's highest upper CI
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["model", "averaging (clipped)", "zero"]
    clipped = int((avg > top).sum())
    markers = [ln for ln in ax.get_lines() if ln.get_marker() == "^"]
    assert len(markers) == 1 and len(markers[0].get_xdata()) == clipped == 2  # k = 1, 2 (1.4 stays inside)
    whole = plot_error_curves(pd.DataFrame(rows)).axes[0]
    assert whole.get_ylim()[1] > avg.max()  # without focus every curve is whole
    with pytest.raises(ValueError, match="focus 'nope' is not among the predictors"):
        plot_error_curves(pd.DataFrame(rows), focus="nope")


def test_curriculum_changes_match_a_step_by_step_scan():
    c = Curriculum.model_validate({"dims": {"start": 2, "end": 5, "inc": 2, "interval": 300},
                                   "points": {"start": 5, "end": 11, "inc": 2, "interval": 500}})
    brute = [(s, *c.at(s)) for s in range(1, 4000) if c.at(s) != c.at(s - 1)]
    assert c.changes(4000) == brute == [(300, 4, 5), (500, 4, 7), (600, 5, 7), (1000, 5, 9), (1500, 5, 11)]
    assert c.changes(1000) == brute[:3]
    assert Curriculum.constant(3, 7).changes(1000) == []


def test_training_loss_marks_curriculum_jumps():
    metrics = pd.DataFrame({"step": [100, 200, 300, 400], "loss": [2.0, 1.5, 2.5, 1.0],
                            "baseline/least_squares": [0.5, 0.4, 0.6, 0.3]})
    fig = plot_training_loss(metrics, [(200, 3, 7), (300, 4, 9)])
    ax = fig.axes[0]
    vlines = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert sorted(ln.get_xdata()[0] for ln in vlines) == [200, 300]
    assert [t.get_text() for t in ax.texts] == ["d=3, n=7", "d=4, n=9"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["model", "least squares", "curriculum step"]
    assert ax.get_xlabel() == "training step" and "mean squared error" in ax.get_ylabel()


# -------------------------------------------------------------------------------------- report
class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.links: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self._cell = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")
            self._cell = True
        elif tag == "a":
            self.links.append(a.get("href") or "")
        elif tag == "img":
            self.images.append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = False

    def handle_data(self, data):
        if self._cell:
            self.tables[-1][-1][-1] += data.strip()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from hookedicl.analysis import analyze_run
    from hookedicl.evaluation.run_eval import evaluate_run

    torch.set_num_threads(1)
    run = hi.export_pretrained("gpt2-linreg-d5", tmp_path_factory.mktemp("report") / "run")
    evaluate_run(run, n_prompts=64, progress=False)
    analyze_run(run, "lens", n_prompts=32)
    analyze_run(run, "match", n_prompts=32, ilwd_prompts=4, n_queries=7)
    analyze_run(run, "probe", n_prompts=32, n_bootstrap=50)
    return write_report(run.path)


def test_report_tables_are_compact_and_link_their_csvs(report):
    page = _Page()
    page.feed(report.read_text())
    assert len(page.tables) == 5  # scores, errors at k, lens, match, probe
    match = pd.read_csv(report.parents[1] / "analysis" / "match.csv")
    n_refs = match.loc[match["predictor"] != "model", "predictor"].nunique()
    for table in page.tables:
        header, *rows = table
        assert len(rows) <= max(MAX_ROWS, n_refs)
        for j, name in enumerate(header):  # no empty column
            assert any(r[j] not in ("", "nan", "NaN") for r in rows), name
    lens_header = page.tables[2][0]
    assert "scale" not in lens_header and "offset" not in lens_header and lens_header[0] == "layer"
    lens = pd.read_csv(report.parents[1] / "analysis" / "lens.csv")
    assert len(page.tables[2]) - 1 == lens["layer"].nunique()  # one row per layer, not per (layer, k)
    assert len(page.tables[3]) - 1 == n_refs  # one row per reference
    csv_links = [link for link in page.links if link.endswith(".csv")]
    assert {Path(link).name for link in csv_links} >= {"curves.csv", "lens.csv", "match.csv", "probe.csv"}
    for link in page.links:
        assert (report.parent / link).resolve().is_file(), link


def test_report_figures_exist_with_alt_text(report):
    page = _Page()
    page.feed(report.read_text())
    srcs = [img["src"] for img in page.images]
    assert srcs[:2] == ["error_curves.png", "training_loss.png"]
    assert {"matching.png", "lens.png", "probe.png"} <= set(srcs) and "match.png" not in srcs
    for img in page.images:
        assert img.get("alt") and (report.parent / img["src"]).is_file()
