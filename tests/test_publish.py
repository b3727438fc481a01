"""Publishing analyses: every shipped analysis notebook (hookedicl/publish/analyses/) executed on a tiny run with tiny parameters
(no cell may raise; figures must be image outputs; PNG + SVG + CSV + Markdown + standalone HTML
written), the notebook-execution helper, the CLI, and the error paths (unknown analysis, missing
run, failing cell named by its index, OUT left as it was)."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from hookedicl.cli import app
from hookedicl.publish import (
    INJECTED_TAG,
    MANIFEST,
    NotebookExecutionError,
    count_image_outputs,
    execute_notebook,
    inject_parameters,
    list_analyses,
    markdown_table,
    publish,
    resolve_analysis,
)

runner = CliRunner()
KERNEL_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Tiny parameters per analysis: every shipped analysis notebook must appear here.
TINY: dict[str, dict] = {
    "run_summary": {"threads": 1},
    "mechanisms": {
        "threads": 1, "n_prompts": 24, "ilwd_prompts": 4, "n_queries": 5, "match_ks": [0, 3, 6],
        "references": ["least_squares", "ridge", "gd"], "ridge_alphas": [0.1], "n_bootstrap": 50,
        "probe_targets": ["ols"],
    },
    "sweep_summary": {"x": "model.n_layers", "metric": "icl_score", "hue": "arch", "n_bootstrap": 100},
}
# Figures each analysis must publish (PNG + SVG) and show.
FIGURES = {
    "run_summary": {"training_curves", "error_curves", "icl_scores"},
    "mechanisms": {"lens_by_layer", "lens_curves", "matching", "probe_by_layer"},
    "sweep_summary": {"icl_score_by_model.n_layers"},
}


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """2 layers, d_model 16, 30 steps, evaluated on 64 prompts."""
    from hookedicl.evaluation.run_eval import evaluate_run
    from hookedicl.training import TrainConfig, train

    cfg = TrainConfig.model_validate({
        "name": "tiny", "steps": 30, "batch_size": 16, "threads": 1,
        "model": {"arch": "gpt2", "d_model": 16, "n_layers": 2, "n_heads": 2},
        "task": {"name": "linear_regression", "n_dims": 3, "n_points": 7},
        "log": {"every": 5, "progress": False}, "checkpoint": {"every": 15},
        "eval": {"n_prompts": 64, "batch_size": 64},
    })
    run = train(cfg, tmp_path_factory.mktemp("run") / "tiny")
    evaluate_run(run)
    return run.path


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A results.csv as a sweep writes it: 2 archs x 2 depths x 2 seeds, one failed point."""
    d = tmp_path_factory.mktemp("sweep")
    rows = []
    for arch in ("gpt2", "llama"):
        for n_layers in (1, 2):
            for seed in (0, 1):
                score = 0.3 * n_layers + 0.05 * seed + (0.1 if arch == "llama" else 0.0)
                rows.append({"point": f"{arch}-{n_layers}-{seed}", "status": "done", "arch": arch,
                             "model.n_layers": n_layers, "seed": seed, "icl_score": score,
                             "icl_score_ci_low": score - 0.05, "icl_score_ci_high": score + 0.05})
    rows.append({"point": "llama-2-2", "status": "failed", "arch": "llama", "model.n_layers": 2, "seed": 2,
                 "icl_score": math.nan, "icl_score_ci_low": math.nan, "icl_score_ci_high": math.nan})
    pd.DataFrame(rows).to_csv(d / "results.csv", index=False)
    return d


@pytest.fixture(scope="module")
def published(tiny_run, sweep_dir, tmp_path_factory) -> dict[str, Path]:
    """Every analysis published once: run_summary through the CLI with --no-input, the others
    through the API (code cells shown)."""
    root = tmp_path_factory.mktemp("published")
    out: dict[str, Path] = {}
    for name in list_analyses():
        target = root / name
        if name == "run_summary":
            args = ["publish", name, "--run", str(tiny_run), "--out", str(target), "--no-input"]
            for k, v in TINY[name].items():
                args += ["-p", f"{k}={json.dumps(v)}"]
            res = runner.invoke(app, args)
            assert res.exit_code == 0, res.output
            assert f"published {name} -> {target}" in res.output
            out[name] = target
        else:
            source = sweep_dir if name == "sweep_summary" else tiny_run
            out[name] = publish(name, source, target, TINY[name], env=KERNEL_ENV)
    return out


def _notebook(path: Path, cells: list[tuple[str, str]]) -> Path:
    """Write a small notebook; cells are (kind, source), kind in {'md', 'code', 'params'}."""
    nb = nbformat.v4.new_notebook()
    for kind, src in cells:
        cell = nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        if kind == "params":
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nbformat.write(nb, str(path))
    return path


FAILING = [
    ("md", "# fails in cell 3"),
    ("params", "run_dir = None\nout_dir = None"),
    ("code", "from pathlib import Path\nPath(out_dir, 'partial.csv').write_text('a\\n1\\n')"),
    ("code", "raise RuntimeError('boom in the analysis')"),
    ("code", "print('never')"),
]
GOOD = [
    ("params", "run_dir = None\nout_dir = None"),
    ("code", "from pathlib import Path\nPath(out_dir, 'table.csv').write_text('a\\n1\\n')"),
]


class _Resources(HTMLParser):
    """Collects every resource a page would load: src/href of img, script, link, iframe, ..."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[tuple[str, str]] = []
        self.images: list[str] = []
        self.inline_svg = 0
        self.code_editors = 0  # the source of a code cell
        self.missing_alt = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
            self.missing_alt += not a.get("alt")
        if tag == "svg":
            self.inline_svg += 1
        if "jp-InputArea-editor" in (a.get("class") or "").split():
            self.code_editors += 1
        for key in ("src", "data"):
            if a.get(key) and tag in ("img", "script", "iframe", "embed", "object", "source", "audio", "video"):
                self.loads.append((tag, a[key]))
        if tag == "link" and a.get("href"):
            self.loads.append((tag, a["href"]))


# ------------------------------------------------------------------------------- every analysis
def test_every_analysis_has_tiny_parameters_and_a_readme_entry():
    names = list_analyses()
    assert {"run_summary", "mechanisms", "sweep_summary"} <= set(names)
    readme = (Path(__file__).resolve().parents[1] / "analyses" / "README.md").read_text()
    for name in names:
        assert name in TINY and name in FIGURES, f"add tiny parameters for analysis {name!r}"
        assert f"`{name}`" in readme
        nb = nbformat.read(str(resolve_analysis(name)), as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1
        assert all(c.get("outputs", []) == [] and c.get("execution_count") is None
                   for c in nb.cells if c.cell_type == "code"), f"{name} is committed with outputs"


@pytest.mark.parametrize("name", sorted(TINY))
def test_analysis_publishes_figures_tables_and_html(published, name):
    out = published[name]
    nb = nbformat.read(str(out / f"{name}.ipynb"), as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    # no warnings, progress bars or other stderr text in the outputs
    stderr = [o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "stream" and o.name == "stderr"]
    assert stderr == []
    texts = [o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for c in nb.cells if c.cell_type == "code"
             for o in c.outputs]
    assert not [t for t in texts if "Warning" in t or "%|" in t]
    assert all(c.execution_count is not None for c in nb.cells if c.cell_type == "code" and c.source.strip())
    injected = [i for i, c in enumerate(nb.cells) if INJECTED_TAG in c.metadata.get("tags", [])]
    params = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert injected == [params[0] + 1]
    # the executed notebook names the final folder, not the temporary one it was written to
    assert f"out_dir = {str(out)!r}" in nb.cells[injected[0]].source

    pngs = {p.stem for p in out.glob("*.png")}
    svgs = {p.stem for p in out.glob("*.svg")}
    assert FIGURES[name] <= pngs and pngs == svgs
    assert count_image_outputs(nb) >= len(pngs) > 0
    for stem in pngs:
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (out / f"{stem}.svg").read_text()[:2000]
    csvs = {p.stem for p in out.glob("*.csv")}
    assert csvs and csvs == {p.stem for p in out.glob("*.md")}
    for stem in csvs:
        df = pd.read_csv(out / f"{stem}.csv")
        md = (out / f"{stem}.md").read_text().splitlines()
        assert len(md) == len(df) + 2 and md[0].count("|") == len(df.columns) + 1

    page = (out / f"{name}.html").read_text()
    res = _Resources()
    res.feed(page)
    assert res.loads and all(src.startswith("data:") for _, src in res.loads), res.loads
    pngs_in_page = [s for s in res.images if s.startswith("data:image/png;base64,")]
    assert len(pngs_in_page) + res.inline_svg >= count_image_outputs(nb)
    no_input = name == "run_summary"  # published with --no-input
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert res.code_editors == (0 if no_input else len(code_cells))
    assert ("publish_figure" in page) is not no_input  # (highlighted: no literal "publish_figure(")
    assert "Warning" not in page
    assert res.missing_alt == 0

    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["analysis"] == name and manifest["image_outputs"] == count_image_outputs(nb)
    assert manifest["no_input"] is no_input
    assert set(manifest["files"]) == {p.name for p in out.iterdir()} - {MANIFEST}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{name}.")]


def test_run_summary_tables_hold_the_evaluation(published, tiny_run):
    out = published["run_summary"]
    summary = json.loads((tiny_run / "eval" / "summary.json").read_text())
    scores = pd.read_csv(out / "icl_scores.csv").set_index("predictor")
    assert scores.loc["model", "icl_score"] == pytest.approx(summary["icl_score"]["value"])
    assert (scores["ci_low"] <= scores["icl_score"]).all() and (scores["icl_score"] <= scores["ci_high"]).all()
    errs = pd.read_csv(out / "errors_at_k.csv")
    assert sorted(errs["k"].unique()) == [1, 3, 6] and {"model", "least_squares", "zero"} <= set(errs["predictor"])
    assert len(pd.read_csv(out / "training_metrics.csv")) == 6


def test_mechanisms_tables_cover_layers_and_references(published):
    out = published["mechanisms"]
    lens = pd.read_csv(out / "lens_by_layer.csv")
    assert set(lens["layer"]) == {0, 1, 2} and set(lens["calibrated"]) == {True, False}
    assert set(lens["k"]) == {1, 3, 6}
    summary = pd.read_csv(out / "matching_summary.csv")
    refs = set(summary["predictor"])
    assert "least_squares" in refs and any(r.startswith("ridge") for r in refs) and any(r.startswith("gd") for r in refs)
    matching = pd.read_csv(out / "matching.csv")
    assert {"spd/d", "ilwd/d"} <= set(matching["metric"]) and set(matching["k"]) == {0, 3, 6}
    probe = pd.read_csv(out / "probe_by_layer.csv")
    assert set(probe["layer"]) == {0, 1, 2} and set(probe["control"]) == {"none", "untrained"}
    assert probe[["r2", "ci_low", "ci_high"]].notna().all().all()


def test_sweep_summary_aggregates_over_seeds(published):
    t = pd.read_csv(published["sweep_summary"] / "icl_score_by_model.n_layers.csv")
    assert len(t) == 4 and (t["n_runs"] == 2).all()  # the failed point is left out
    row = t[(t["arch"] == "llama") & (t["model.n_layers"] == 2)].iloc[0]
    assert row["mean"] == pytest.approx(0.725) and row["ci_low"] <= row["mean"] <= row["ci_high"]


# ------------------------------------------------------------------------ execute_notebook itself
def test_execute_notebook_injects_parameters_and_counts_images(tmp_path):
    nb_path = _notebook(tmp_path / "plot.ipynb", [
        ("md", "# plot"),
        ("params", "n = 1\nlabel: str = 'a'"),
        ("code", "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot(range(n))\nprint(label, n)"),
    ])
    nb = execute_notebook(nb_path, {"n": 3, "label": "b"}, tmp_path / "out" / "plot.ipynb", timeout=60, env=KERNEL_ENV)
    assert nb.cells[2].metadata["tags"] == [INJECTED_TAG] and "n = 3" in nb.cells[2].source
    stream = "".join(o.get("text", "") for o in nb.cells[3].outputs if o.output_type == "stream")
    assert stream == "b 3\n"
    assert count_image_outputs(nb) == 1  # the inline backend turned the figure into image/png
    assert nbformat.read(str(tmp_path / "out" / "plot.ipynb"), as_version=4).cells[3].outputs
    assert nbformat.read(str(nb_path), as_version=4).cells[2].outputs == []  # the input is untouched


def test_execute_notebook_names_the_failing_cell(tmp_path):
    nb_path = _notebook(tmp_path / "fail.ipynb", FAILING)
    (tmp_path / "o").mkdir()
    with pytest.raises(NotebookExecutionError) as info:
        execute_notebook(nb_path, {"out_dir": str(tmp_path / "o")}, tmp_path / "fail_out.ipynb", timeout=60, env=KERNEL_ENV)
    e = info.value
    assert e.cell_index == 3 and e.executed_index == 4  # the injected cell shifts the executed notebook
    assert e.ename == "RuntimeError" and e.evalue == "boom in the analysis"
    assert "cell 3" in str(e) and "RuntimeError: boom in the analysis" in str(e) and "boom" in e.traceback
    executed = nbformat.read(str(tmp_path / "fail_out.ipynb"), as_version=4)  # kept for inspection
    assert executed.cells[4].outputs[0].output_type == "error" and executed.cells[5].outputs == []


def test_count_image_outputs_counts_png_and_svg_once_per_output():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"image/png": "iVBO", "text/plain": "<Figure>"}),
        nbformat.v4.new_output("display_data", data={"image/svg+xml": "<svg/>", "image/png": "iVBO"}),
        nbformat.v4.new_output("execute_result", data={"text/plain": "1"}, execution_count=1),
        nbformat.v4.new_output("stream", name="stdout", text="image/png"),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("![x](data:image/png;base64,AA==)"), cell]
    assert count_image_outputs(nb) == 2
    nb.cells[1].outputs = []
    assert count_image_outputs(nb) == 0


def test_parameter_errors_are_raised_before_any_kernel_starts(tmp_path):
    nb_path = _notebook(tmp_path / "p.ipynb", GOOD)
    nb = nbformat.read(str(nb_path), as_version=4)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['n_promts'\].*\['run_dir', 'out_dir'\]"):
        execute_notebook(nb_path, {"n_promts": 3}, tmp_path / "o.ipynb")
    with pytest.raises(ValueError, match="parameter 'run_dir': unsupported type object"):
        inject_parameters(nb, {"run_dir": object()})
    with pytest.raises(ValueError, match="no code cell tagged 'parameters'"):
        execute_notebook(_notebook(tmp_path / "np.ipynb", [("code", "x = 1")]), {"x": 2}, tmp_path / "o.ipynb")
    with pytest.raises(ValueError, match="does not exist"):
        execute_notebook(tmp_path / "missing.ipynb", {}, tmp_path / "o.ipynb")
    with pytest.raises(ValueError, match="timeout"):
        execute_notebook(nb_path, {}, tmp_path / "o.ipynb", timeout=0)
    assert not (tmp_path / "o.ipynb").exists()
    src = inject_parameters(nb, {"run_dir": [1.5, float("nan"), None, True, {"a": (1,)}]}).cells[1].source
    assert "run_dir = [1.5, float('nan'), None, True, {'a': (1,)}]" in src


def test_markdown_table_escapes_and_formats():
    df = pd.DataFrame({"a|b": ["x|y", "z"], "v": [0.123456, math.nan]})
    assert markdown_table(df) == "| a\\|b | v |\n|---|---|\n| x\\|y | 0.1235 |\n| z |  |\n"


# ------------------------------------------------------------------------------ publish errors
def test_unknown_analysis_and_missing_run_are_clear_errors(tiny_run, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="unknown analysis 'run_sumary'; available: .*run_summary"):
        publish("run_sumary", tiny_run, out)
    with pytest.raises(ValueError, match="does not exist"):
        publish("run_summary", tmp_path / "no_such_run", out)
    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(ValueError, match="not a run directory"):
        publish("run_summary", tmp_path / "not_a_run", out)
    with pytest.raises(ValueError, match="no results.csv"):
        publish("sweep_summary", tmp_path / "not_a_run", out)
    with pytest.raises(ValueError, match="set by publish"):
        publish("run_summary", tiny_run, out, {"out_dir": "elsewhere"})
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['n_promts'\]"):
        publish("run_summary", tiny_run, out, {"n_promts": 5})
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "not_a_run"]

    res = runner.invoke(app, ["publish", "nope", "--run", str(tiny_run), "--out", str(out)])
    assert res.exit_code == 2 and "unknown analysis 'nope'" in res.output
    res = runner.invoke(app, ["publish", "run_summary", "--run", str(tiny_run), "-p", "threads"])
    assert res.exit_code == 2 and "NAME=VALUE" in res.output


def test_failing_cell_leaves_out_as_it_was(tiny_run, tmp_path):
    good, failing = _notebook(tmp_path / "good.ipynb", GOOD), _notebook(tmp_path / "failing.ipynb", FAILING)
    pub = tmp_path / "pub"
    pub.mkdir()
    out = pub / "result"
    with pytest.raises(NotebookExecutionError, match=r"cell 3 .*RuntimeError: boom in the analysis") as info:
        publish(failing, tiny_run, out, env=KERNEL_ENV)
    assert info.value.cell_index == 3
    assert list(pub.iterdir()) == []  # no OUT, no temporary folder

    publish(good, tiny_run, out, env=KERNEL_ENV)  # an earlier publish output in OUT ...
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"good.ipynb", "good.html", "table.csv", MANIFEST} <= set(before)
    res = runner.invoke(app, ["publish", str(failing), "--run", str(tiny_run), "--out", str(out)])
    assert res.exit_code == 2
    assert "cell 3" in res.output and "RuntimeError: boom in the analysis" in res.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # ... survives a failed one
    assert [p.name for p in pub.iterdir()] == ["result"]


def test_out_is_replaced_only_when_it_is_a_publish_output(tiny_run, tmp_path):
    good = _notebook(tmp_path / "good.ipynb", GOOD)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an earlier publish output"):
        publish(good, tiny_run, out)
    assert (out / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="would replace"):
        publish(good, tiny_run, tiny_run)
    default = publish(good, tiny_run, None, env=KERNEL_ENV)
    assert default == tiny_run / "publish" / "good" and (default / "table.csv").is_file()
    (default / "table.csv").unlink()
    (default / "stale.txt").write_text("from an earlier publish")
    publish(good, tiny_run, None, env=KERNEL_ENV)  # republishing replaces the whole folder
    assert (default / "table.csv").is_file() and not (default / "stale.txt").exists()
    assert yaml.safe_load((tiny_run / "config.yaml").read_text())["name"] == "tiny"
