"""HTML report of a run: `RUN/report/index.html` with figures (PNG + SVG) and compact tables.

Reads what the run already holds (config, metrics.jsonl, eval/summary.json + curves.csv,
analysis/*.csv and *.png) and writes only into `RUN/report/`; sections whose inputs are missing
are omitted. Every input is read from inside the run and never through a symlink (a symlinked
figure or table is an `UnsafePathError` naming it), and the report's files replace the old ones
as a set (`hookedicl.layout.output_set`): an error leaves the previous report as it was. Tables are summaries (at most `MAX_ROWS` rows, no empty columns), each linking to
the full CSV in the run directory; figures come from `hookedicl.viz`:

* the error curves with the y axis fitted to the model (references that leave it are marked
  "(clipped)", with a triangle on the top edge);
* the training loss with the curriculum's jumps marked;
* the predictor matching redrawn from `analysis/match.csv`: one colour per reference family,
  the legend outside the panels, grouped by family, axis labels in words;
* the other analyses' own figures.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .io import atomic_write_text, read_json_file
from .layout import ANALYSIS, CURVES, EVAL, REPORT, SUMMARY, output_set, resolve_inside

MAX_ROWS = 12


def _table(df: pd.DataFrame, csv_link: str | None = None, max_rows: int = MAX_ROWS) -> str:
    """`df` as a compact HTML table: columns with no value dropped, at most `max_rows` rows, and a
    link to the full CSV (`csv_link`, relative to the report) below it."""
    df = df.dropna(axis=1, how="all")
    shown = df.head(max_rows).to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, classes="t", na_rep="")
    notes = []
    if len(df) > max_rows:
        notes.append(f"first {max_rows} of {len(df)} rows")
    if csv_link is not None:
        name = html.escape(Path(csv_link).name)
        notes.append(f"full table: <a href='{html.escape(csv_link)}'>{name}</a>")
    return shown + (f"<p class='note'>{'; '.join(notes)}</p>" if notes else "")


def _score_rows(summary: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for name, s in summary.get("icl_scores", {}).items():
        rows.append({"predictor": name, "ICL score": s["value"], "CI low": s["ci_low"], "CI high": s["ci_high"], "vs": s["baseline"]})
    return pd.DataFrame(rows)


def _errors_at(summary: dict[str, Any], ks: list[int]) -> pd.DataFrame:
    errs = summary["normalized_errors"]
    lo, hi = summary["ci"]["low"], summary["ci"]["high"]
    rows = []
    for name, curve in errs.items():
        row: dict[str, Any] = {"predictor": name}
        for k in ks:
            if k < len(curve):
                row[f"k={k}"] = f"{curve[k]:.4f} [{lo[name][k]:.4f}, {hi[name][k]:.4f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def _layer_ks(d: int, n: int, available: Any) -> list[int]:
    """d/2, d and the last context length, those the table has."""
    have = set(int(k) for k in available)
    return [k for k in sorted({d // 2, d, n - 1}) if k in have]


def lens_summary(lens: pd.DataFrame, ks: list[int]) -> pd.DataFrame:
    """Readout-lens error per layer (rows) at the context lengths `ks`, raw and calibrated
    (columns), from the lens table (`analysis/lens.csv`)."""
    out = pd.DataFrame({"layer": sorted(lens["layer"].unique())})
    for cal in (False, True):
        for k in ks:
            g = lens[(lens["k"] == k) & (lens["calibrated"] == cal)].set_index("layer")["mean"]
            if not g.empty:
                out[f"{'calibrated' if cal else 'raw'}, k={k}"] = out["layer"].map(g)
    return out


def match_summary(match: pd.DataFrame, d: int, model: str = "model") -> pd.DataFrame:
    """One row per reference: SPD/d, ILWD/d and the sensitivity cosine averaged over k >= d
    (over every k when none is), sorted by SPD/d; from the match table (`analysis/match.csv`)."""
    t = match[match["predictor"] != model]
    ks = sorted(t["k"].unique())
    long = [k for k in ks if k >= d] or ks
    t = t[t["k"].isin(long)]
    names = {"spd/d": "SPD/d", "ilwd/d": "ILWD/d", "sensitivity_cos": "sensitivity cos"}
    cols = [m for m in names if m in set(t["metric"])]
    out = (t[t["metric"].isin(cols)].pivot_table(index=["family", "predictor"], columns="metric", values="mean", aggfunc="mean", sort=False)
           .reindex(columns=cols).rename(columns=names).reset_index())
    out.columns.name = None
    if "SPD/d" in out.columns:
        out = out.sort_values("SPD/d", kind="stable")
    return out.reset_index(drop=True)


def probe_summary(probe: pd.DataFrame) -> pd.DataFrame:
    """Held-out R² per layer (rows) and probe target x control (columns) at the largest k probed,
    from the probe table (`analysis/probe.csv`)."""
    k = int(probe["k"].max())
    t = probe[probe["k"] == k]
    out = pd.DataFrame({"layer": sorted(t["layer"].unique())})
    for target in dict.fromkeys(t["target"]):
        for control in dict.fromkeys(t["control"]):
            g = t[(t["target"] == target) & (t["control"] == control)].groupby("layer")["mean"].mean()
            if not g.empty:
                label = f"{target} R²" if control == "none" else f"{target} R² ({control})"
                out[label] = out["layer"].map(g)
    return out


def _figure(name: str, alt: str) -> str:
    return f"<img src='{html.escape(name)}' alt='{html.escape(alt)}'>"


def write_report(run_path: str | Path, *, repair_metrics: bool = False) -> Path:
    """Write `RUN/report/index.html` (and its figures); returns its path.

    `repair_metrics=True` skips malformed metrics.jsonl lines with a warning (default: they are
    an error naming the file and line)."""
    from .training import Run

    run = Run(run_path)
    with output_set(run.path, REPORT) as stage:
        _write_report(run, stage, repair_metrics)
    return run.path / REPORT / "index.html"


def _write_report(run: Any, out: Path, repair_metrics: bool) -> None:
    from .viz import plot_error_curves, plot_matching, plot_training_loss, save_figure
    from .viz._backend import pyplot

    cfg = run.config
    if run.checkpoints:
        run.load_model()  # the checkpoint's own ModelSpec must be the model config.yaml describes
    plt = pyplot()

    def figure(fig: Any, name: str) -> None:
        save_figure(fig, out / name)
        plt.close(fig)

    parts: list[str] = [f"<h1>hookedicl run: {html.escape(cfg.name)}</h1>"]
    spec = cfg.build_spec()
    parts.append(
        f"<p>Architecture <b>{html.escape(cfg.model.arch)}</b> ({html.escape(spec.summary())}, d_model {spec.d_model}); "
        f"task <b>{html.escape(cfg.task.name)}</b>, d = {cfg.task.n_dims}, {cfg.task.n_points} points; "
        f"{cfg.steps} steps, batch {cfg.batch_size}.</p>"
    )
    d, n = cfg.task.n_dims, cfg.task.n_points
    summary_path = resolve_inside(run.path, f"{EVAL}/{SUMMARY}", "report input")
    if summary_path.exists():
        summary = read_json_file(summary_path)
        d = summary.get("n_dims", d)
        s = summary.get("icl_score")
        if s:
            parts.append(
                f"<h2>ICL regression score</h2><p class='big'>{s['value']:.3f} "
                f"<span class='note'>({int(round(100 * s.get('level', 0.95)))}% CI {s['ci_low']:.3f} – {s['ci_high']:.3f}, "
                f"vs {html.escape(s['baseline'])}, {summary['n_prompts']} prompts, step {summary.get('step')})</span></p>"
            )
            parts.append(_table(_score_rows(summary), "../eval/summary.json"))
        ks = sorted({k for k in (d // 2, d, 2 * d) if 0 < k < summary["n_points"]})
        parts.append("<h2>Normalised squared error after k in-context examples</h2>"
                     + _table(_errors_at(summary, ks), "../eval/curves.csv"))
        curves_path = resolve_inside(run.path, f"{EVAL}/{CURVES}", "report input")
        if curves_path.is_file():
            curves = pd.read_csv(curves_path)
            focus = "model" if "predictor" in curves.columns and "model" in set(curves["predictor"]) else None
            figure(plot_error_curves(curves, title=f"{cfg.name}: error vs context length", focus=focus), "error_curves")
            parts.append("<h2>Error curves</h2>" + _figure("error_curves.png", "error curves"))
            if focus is not None:
                parts.append("<p class='note'>The y axis is fitted to the model; a predictor marked "
                             "“(clipped)” leaves it where the triangles sit (its full curve is in curves.csv).</p>")
    metrics = run.metrics(repair=repair_metrics)
    if len(metrics) and "loss" in metrics.columns:
        changes = cfg.curriculum.changes(cfg.steps) if cfg.curriculum is not None else []
        figure(plot_training_loss(metrics, changes, title=f"{cfg.name}: training loss"), "training_loss")
        parts.append("<h2>Training</h2>" + _figure("training_loss.png", "training loss"))
        if changes:
            parts.append("<p class='note'>Dotted lines: the curriculum raises the active dimensions d and the "
                         "prompt length n (the loss jumps there).</p>")
    parts += _analysis_sections(run.path, out, d, n, figure, plot_matching)
    parts.append(f"<h2>Config</h2><details><summary>config.yaml</summary><pre>{html.escape(cfg.to_yaml())}</pre></details>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222;line-height:1.4}"
        "table.t{border-collapse:collapse;font-size:0.9em;margin:0.5em 0}"
        "table.t td,table.t th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right}"
        "table.t td:first-child,table.t th:first-child{text-align:left}"
        ".big{font-size:1.6em}.note{color:#666;font-size:0.85em}.big .note{font-size:0.5em}"
        "img{max-width:100%}pre{background:#f6f6f6;padding:1em}h3{margin-top:1.6em}"
    )
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(cfg.name)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    atomic_write_text(out / "index.html", page)


def _analysis_sections(run_dir: Path, out: Path, d: int, n: int, figure: Any, plot_matching: Any) -> list[str]:
    """The Analyses section: per analysis, its figure and a summary table linking the CSV. Every
    input is resolved inside the run (a symlink out of it is an `UnsafePathError`); a figure whose
    name is one of the report's own is not copied over it."""
    analysis = run_dir / ANALYSIS
    if not analysis.is_dir():
        return []

    def inside(p: Path) -> Path:
        return resolve_inside(run_dir, f"{ANALYSIS}/{p.name}", "report input")

    tables = {p.stem: inside(p) for p in sorted(analysis.glob("*.csv"))}
    figs = {p.stem: inside(p) for p in sorted(analysis.glob("*.png"))
            if p.name not in ("error_curves.png", "training_loss.png", "matching.png")}
    names = list(dict.fromkeys([*tables, *figs]))
    if not names:
        return []
    parts = ["<h2>Analyses</h2>"]
    for name in names:
        parts.append(f"<h3>{html.escape(name)}</h3>")
        df = pd.read_csv(tables[name]) if name in tables else None
        link = f"../analysis/{tables[name].name}" if name in tables else None
        if name == "match" and df is not None and {"family", "metric"} <= set(df.columns):
            figure(plot_matching(df, title="Predictor matching: model vs each reference"), "matching")
            parts.append(_figure("matching.png", "predictor matching"))
            parts.append("<p class='note'>Averaged over k ≥ d, sorted by SPD/d (lower: closer to the model).</p>")
            ms = match_summary(df, d)
            parts.append(_table(ms, link, max_rows=max(MAX_ROWS, len(ms))))  # every reference
            continue
        if name in figs:
            shutil.copyfile(figs[name], out / figs[name].name)
            parts.append(_figure(figs[name].name, name))
        if df is None:
            continue
        if name == "lens" and {"layer", "k", "calibrated", "mean"} <= set(df.columns):
            ks = _layer_ks(d, n, df["k"].unique())
            parts.append("<p class='note'>Normalised squared error of the lens read-out per layer.</p>")
            parts.append(_table(lens_summary(df, ks), link))
        elif name == "probe" and {"layer", "k", "target", "control", "mean"} <= set(df.columns):
            parts.append(f"<p class='note'>Held-out R² of the probes after k = {int(df['k'].max())} examples.</p>")
            parts.append(_table(probe_summary(df), link))
        else:
            parts.append(_table(df.replace([np.inf, -np.inf], np.nan), link))
    return parts
