"""Aggregate a sweep directory: results.csv, results.md and figures/.

results.csv has one row per point: `point`, `status` (done, failed, pending, partial, trained,
conflict), one column per sweep axis (dotted path, `variant`), `arch`, `task`, `seed`, `n_dims`,
`n_points`, `steps`, `n_params`, the evaluated checkpoint `step`, `score_baseline`, `icl_score`
with `icl_score_ci_low` / `icl_score_ci_high` (95% bootstrap CI over prompts), for every chosen
k the model's normalised error `err_k{k}` with its 90% CI and the score baseline's
`baseline_err_k{k}`, `final_loss` (last logged training loss), `train_s` (training time from
metrics.jsonl, summed over resumes), `wall_s` (sweep wall time over all attempts, training and
evaluation), `attempts` and `error`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import atomic_write_text
from ..training import Run, TrainConfig
from ..viz import save_figure
from ..layout import EVAL, FIGURES, METRICS, RESULTS_CSV, RESULTS_MD, SUMMARY, read_status, resolve_inside, sweep_run_dir
from .spec import SweepPoint, SweepSpec, format_value
from .worker import point_state


def n_params(cfg: TrainConfig) -> int:
    """Parameter count of the config's model (built on the meta device: no memory, no RNG use)."""
    import torch

    from ..models import HookedICLModel

    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return HookedICLModel(cfg.build_spec()).n_params


def train_seconds(metrics: pd.DataFrame) -> float:
    """Training time from metrics.jsonl: steps between log lines / steps_per_s, summed."""
    if metrics.empty or "steps_per_s" not in metrics:
        return 0.0
    steps = metrics["step"].diff().fillna(metrics["step"].iloc[0])
    return float((steps / metrics["steps_per_s"]).sum())


def error_ks(spec: SweepSpec, cfg: TrainConfig) -> list[int]:
    """The k of the error columns: `results.error_at_k`, else d and 2d where inside the prompt."""
    if spec.results.error_at_k is not None:
        return list(spec.results.error_at_k)
    d = cfg.task.n_dims
    return [k for k in (d, 2 * d) if k < cfg.task.n_points]


def _row(spec: SweepSpec, out: Path, p: SweepPoint) -> dict[str, Any]:
    cfg, d = p.config, sweep_run_dir(out, p.id)
    state = point_state(d, cfg, spec.evaluate)
    rec = read_status(out, p.id) or {}
    status = "failed" if state != "done" and rec.get("status") == "failed" else state
    row: dict[str, Any] = {"point": p.id, "status": status}
    for axis in spec.axes():
        v = p.labels.get(axis)
        row[axis] = v if v is None or isinstance(v, (str, int, float, bool)) else format_value(v)
    for key, value in (("arch", cfg.model.arch), ("task", cfg.task.name), ("seed", cfg.seed), ("n_dims", cfg.task.n_dims),
                       ("n_points", cfg.task.n_points), ("steps", cfg.steps), ("n_params", n_params(cfg))):
        row.setdefault(key, value)
    summary = _summary(d) if state == "done" and spec.evaluate else None
    score = (summary or {}).get("icl_score") or {}
    base = score.get("baseline", cfg.eval.score_baseline)
    row |= {"step": (summary or {}).get("step"), "score_baseline": base, "icl_score": score.get("value"),
            "icl_score_ci_low": score.get("ci_low"), "icl_score_ci_high": score.get("ci_high")}
    for k in error_ks(spec, cfg):
        errs = (summary or {}).get("normalized_errors", {})
        ci = (summary or {}).get("ci", {})
        row[f"err_k{k}"] = _at(errs.get("model"), k)
        row[f"err_k{k}_ci_low"] = _at(ci.get("low", {}).get("model"), k)
        row[f"err_k{k}_ci_high"] = _at(ci.get("high", {}).get("model"), k)
        row[f"baseline_err_k{k}"] = _at(errs.get(base), k)
    metrics = Run(d).metrics() if (d / "config.yaml").is_file() else pd.DataFrame()
    losses = pd.to_numeric(metrics["loss"], errors="coerce").dropna() if "loss" in metrics else pd.Series(dtype=float)
    row["final_loss"] = float(losses.iloc[-1]) if len(losses) else None
    row["train_s"] = train_seconds(metrics)
    row["wall_s"] = rec.get("wall_s")
    row["attempts"] = rec.get("attempts", 0)
    row["error"] = rec.get("error") if status == "failed" else None
    return row


def _summary(d: Path) -> dict[str, Any] | None:
    from ..training import Run

    return Run(d).eval_summary() if resolve_inside(d, f"{EVAL}/{SUMMARY}", f"run {d}").is_file() else None


def _at(values: list[float] | None, k: int) -> float | None:
    return None if values is None or k >= len(values) else values[k]


def collect(spec: SweepSpec, out: str | Path, points: list[SweepPoint] | None = None) -> pd.DataFrame:
    """One row per point (see the module docstring for the columns)."""
    o = Path(out)
    pts = points if points is not None else spec.expand()
    return pd.DataFrame([_row(spec, o, p) for p in pts])


def summary_table(df: pd.DataFrame, rows: list[str], columns: list[str]) -> pd.DataFrame:
    """ICL score per (rows x columns) cell over finished runs: 'mean ± sd (n)' (one run: its CI).

    One output row per combination of the `rows` axes (in sweep order), one column per
    combination of the `columns` axes (joined with ' / '; a single 'ICL score' column without)."""
    d = df[df["icl_score"].notna()] if "icl_score" in df else df.iloc[0:0]

    def cell(g: pd.DataFrame) -> str:
        s = g["icl_score"].astype(float)
        if len(s) == 1:
            return f"{s.iloc[0]:.3f} [{g['icl_score_ci_low'].iloc[0]:.3f}, {g['icl_score_ci_high'].iloc[0]:.3f}]"
        return f"{s.mean():.3f} ± {s.std(ddof=1):.3f} ({len(s)})"

    def key(r: pd.Series, names: list[str]) -> tuple[str, ...]:
        return tuple(str(r[n]) for n in names)

    row_keys = list(dict.fromkeys(key(r, rows) for _, r in d.iterrows()))
    col_keys = list(dict.fromkeys(key(r, columns) for _, r in d.iterrows()))
    out = []
    for rk in row_keys:
        line = dict(zip(rows, rk)) if rows else {"": "all"}
        for ck in col_keys:
            g = d[[key(r, rows) == rk and key(r, columns) == ck for _, r in d.iterrows()]]
            line[" / ".join(ck) if columns else "ICL score"] = cell(g) if len(g) else "–"
        out.append(line)
    return pd.DataFrame(out)


def markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A DataFrame as a GitHub Markdown table."""
    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        if isinstance(v, (float, np.floating)):
            return format(float(v), floatfmt)
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def run_table(df: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """The per-run table of results.md: axes, score [CI], errors at k [CI], size and time."""
    def ci(v: Any, lo: Any, hi: Any) -> str:
        return "–" if pd.isna(v) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"

    ks = sorted({int(c[5:]) for c in df.columns if c.startswith("err_k") and c[5:].isdigit()})
    out = pd.DataFrame({"point": df["point"], "status": df["status"]})
    for a in spec.axes():
        out[a] = df[a]
    out["ICL score [95% CI]"] = [ci(*t) for t in zip(df["icl_score"], df["icl_score_ci_low"], df["icl_score_ci_high"])]
    out["baseline"] = df["score_baseline"]
    for k in ks:
        out[f"error k={k} [90% CI]"] = [ci(*t) for t in zip(df[f"err_k{k}"], df[f"err_k{k}_ci_low"], df[f"err_k{k}_ci_high"])]
        out[f"baseline error k={k}"] = [("–" if pd.isna(v) else f"{v:.4f}") for v in df[f"baseline_err_k{k}"]]
    out["params"] = df["n_params"]
    out["final loss"] = df["final_loss"]
    out["train s"] = df["train_s"].round(1)
    out["wall s"] = df["wall_s"].astype(float).round(1)
    return out


def write_results(spec: SweepSpec, out: str | Path, points: list[SweepPoint] | None = None) -> pd.DataFrame:
    """Write OUT/results.csv, OUT/results.md and OUT/figures/{scores,training_curves}.{png,svg}.

    Returns the results DataFrame. Figures are drawn only from what exists (finished runs for
    the scores, any run with logged metrics for the curves).
    """
    o = Path(out)
    pts = points if points is not None else spec.expand()
    df = collect(spec, o, pts)
    atomic_write_text(o / RESULTS_CSV, df.to_csv(index=False))
    rows, cols = spec.table_axes()
    figures = _figures(spec, o, pts, df, rows, cols)
    counts = df["status"].value_counts()
    done = df[df["status"] == "done"]
    lines = [
        f"# Sweep `{spec.name}`", "",
        f"{len(df)} points: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".",
        f"Training time (metrics.jsonl, all points): {df['train_s'].sum():.0f} s "
        f"({df['train_s'].sum() / 3600:.2f} h); sweep wall time over all attempts: {df['wall_s'].fillna(0).sum():.0f} s.",
        "",
    ]
    if not done.empty and spec.evaluate:
        baselines = ", ".join(sorted(set(done["score_baseline"].astype(str))))
        lines += [f"## ICL score (against {baselines})", "",
                  "Cells: mean ± sd over runs (n); a single run shows its 95% bootstrap CI.", "",
                  markdown(summary_table(df, rows, cols)), ""]
    lines += ["## Runs", "", markdown(run_table(df, spec)), ""]
    failed = df[df["status"] == "failed"]
    if not failed.empty:
        lines += ["## Failed points", "", *[f"- `{r.point}`: {r.error}" for r in failed.itertuples()], ""]
    if figures:
        lines += ["## Figures", "", *[f"![{f}](figures/{f}.png)" for f in figures], ""]
    atomic_write_text(o / RESULTS_MD, "\n".join(lines))
    return df


def _figures(spec: SweepSpec, out: Path, points: list[SweepPoint], df: pd.DataFrame, rows: list[str], cols: list[str]) -> list[str]:
    from ..viz._backend import pyplot
    from .figures import plot_scores, plot_training_curves

    plt = pyplot()
    written = []
    if spec.evaluate and df["icl_score"].notna().any():
        fig = plot_scores(df, rows, cols)
        save_figure(fig, out / FIGURES / "scores")
        plt.close(fig)
        written.append("scores")
    curves, panel, colour = {}, {}, {}
    labels = df.set_index("point")
    for p in points:
        d = sweep_run_dir(out, p.id)
        if not (d / METRICS).is_file():
            continue
        m = Run(d).metrics()
        if m.empty:
            continue
        curves[p.id] = m
        panel[p.id] = " / ".join(str(labels.at[p.id, c]) for c in cols) or "all"
        colour[p.id] = " / ".join(str(labels.at[p.id, r]) for r in rows) or p.id
    if curves:
        fig = plot_training_curves(curves, panel, colour)
        save_figure(fig, out / FIGURES / "training_curves")
        plt.close(fig)
        written.append("training_curves")
    return written
