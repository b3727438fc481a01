"""HTML report of a run: `RUN/report/index.html` with figures (PNG + SVG) and tables.

Reads what the run already holds (config, metrics.jsonl, eval/summary.json + curves.csv,
analysis/*.csv and *.png) and writes nothing else; sections whose inputs are missing are omitted.
Every input is read from inside the run and never through a symlink (a symlinked figure or
table is an `UnsafePathError` naming it), and the report's files replace the old ones as a set
(`hookedicl.layout.output_set`): an error leaves the previous report as it was.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from .io import atomic_write_text, read_json_file
from .layout import ANALYSIS, CURVES, EVAL, REPORT, SUMMARY, output_set, resolve_inside


def _table(df: pd.DataFrame, max_rows: int = 40) -> str:
    more = f"<p class='note'>{len(df) - max_rows} more rows in the CSV.</p>" if len(df) > max_rows else ""
    return df.head(max_rows).to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, classes="t") + more


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
    from .viz import plot_error_curves, save_figure
    from .viz._backend import pyplot

    cfg = run.config
    if run.checkpoints:
        run.load_model()  # the checkpoint's own ModelSpec must be the model config.yaml describes
    plt = pyplot()
    parts: list[str] = [f"<h1>hookedicl run: {html.escape(cfg.name)}</h1>"]
    spec = cfg.build_spec()
    parts.append(
        f"<p>Architecture <b>{html.escape(cfg.model.arch)}</b> ({html.escape(spec.summary())}, d_model {spec.d_model}); "
        f"task <b>{html.escape(cfg.task.name)}</b>, d = {cfg.task.n_dims}, {cfg.task.n_points} points; "
        f"{cfg.steps} steps, batch {cfg.batch_size}.</p>"
    )
    summary_path = resolve_inside(run.path, f"{EVAL}/{SUMMARY}", "report input")
    if summary_path.exists():
        summary = read_json_file(summary_path)
        s = summary.get("icl_score")
        if s:
            parts.append(
                f"<h2>ICL regression score</h2><p class='big'>{s['value']:.3f} "
                f"<span class='note'>({int(round(100 * s.get('level', 0.95)))}% CI {s['ci_low']:.3f} – {s['ci_high']:.3f}, "
                f"vs {html.escape(s['baseline'])}, {summary['n_prompts']} prompts, step {summary.get('step')})</span></p>"
            )
            parts.append(_table(_score_rows(summary)))
        d = summary.get("n_dims", cfg.task.n_dims)
        ks = sorted({k for k in (d // 2, d, 2 * d) if 0 < k < summary["n_points"]})
        parts.append(f"<h2>Normalised squared error at k in-context examples</h2>{_table(_errors_at(summary, ks))}")
        curves = pd.read_csv(resolve_inside(run.path, f"{EVAL}/{CURVES}", "report input"))
        fig = plot_error_curves(curves, title=f"{cfg.name}: error vs context length")
        save_figure(fig, out / "error_curves")
        plt.close(fig)
        parts.append("<h2>Error curves</h2><img src='error_curves.png' alt='error curves'>")
    metrics = run.metrics(repair=repair_metrics)
    if len(metrics):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for col in [c for c in metrics.columns if c == "loss" or c.startswith("baseline/")]:
            ax.plot(metrics["step"], metrics[col], label=col.replace("baseline/", ""))
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("MSE on the training batch")
        ax.legend()
        ax.set_title("training loss")
        save_figure(fig, out / "training_loss")
        plt.close(fig)
        parts.append("<h2>Training</h2><img src='training_loss.png' alt='training loss'>")
    analysis = run.path / ANALYSIS
    if analysis.is_dir():
        figs = [resolve_inside(run.path, f"{ANALYSIS}/{f.name}", "report input") for f in sorted(analysis.glob("*.png"))]
        tables = [resolve_inside(run.path, f"{ANALYSIS}/{t.name}", "report input") for t in sorted(analysis.glob("*.csv"))]
        if figs or tables:
            parts.append("<h2>Analyses</h2>")
        for f in figs:
            if f.name in ("error_curves.png", "training_loss.png", "index.html"):
                continue  # would overwrite the report's own figures
            shutil.copyfile(f, out / f.name)
            parts.append(f"<h3>{html.escape(f.stem)}</h3><img src='{html.escape(f.name)}' alt='{html.escape(f.stem)}'>")
        for t in tables:
            parts.append(f"<h3>{html.escape(t.name)}</h3>{_table(pd.read_csv(t))}")
    parts.append(f"<h2>Config</h2><pre>{html.escape(cfg.to_yaml())}</pre>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
        "table.t{border-collapse:collapse;font-size:0.9em}table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd}"
        ".big{font-size:1.6em}.note{color:#666;font-size:0.6em}img{max-width:100%}pre{background:#f6f6f6;padding:1em}"
    )
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(cfg.name)}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    atomic_write_text(out / "index.html", page)
