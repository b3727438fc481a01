"""`hookedicl` command line. Verbs mirror the Python API (see README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Mechanistic analysis of in-context learning.")


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def archs(n_dims: int = typer.Option(20, help="input dimension used for the parameter count")) -> None:
    """List the architecture presets: name, parameters at the default (paper) size, blocks."""
    from .models import build_model, describe, list_architectures

    rows = []
    for name in list_architectures():
        m = build_model(name, n_dims=n_dims)
        rows.append((name, f"{m.n_params:,}", m.spec.summary(), describe(name)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(("name", "params", "blocks"), widths)) + "  description")
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3])


@app.command()
def hooks(
    arch: str = typer.Argument(..., help="preset name (see `hookedicl archs`)"),
    n_dims: int = typer.Option(5), d_model: int = typer.Option(32), n_layers: int = typer.Option(2),
    n_heads: int = typer.Option(2), n_points: int = typer.Option(4), batch_size: int = typer.Option(2),
) -> None:
    """Print every hook name of ARCH with the shape it sees on a small example input."""
    from .models import build_model

    try:
        model = build_model(arch, n_dims=n_dims, d_model=d_model, n_layers=n_layers, n_heads=n_heads)
    except ValueError as e:
        _fail(str(e))
    shapes = model.hook_shapes(n_points=n_points, batch_size=batch_size)
    width = max(map(len, shapes))
    typer.echo(f"# {arch}: batch={batch_size}, n_points={n_points} ({2 * n_points} tokens), d_model={d_model}")
    for name, shape in shapes.items():
        typer.echo(f"{name.ljust(width)}  {list(shape)}")


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML training config"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default runs/<name>)"),
    resume: bool = typer.Option(False, "--resume", help="continue an existing run from its newest good checkpoint"),
) -> None:
    """Train a model; writes a run directory (config, checkpoints, activations, metrics)."""
    from .training import RunLockedError, TrainConfig
    from .training import train as _train

    try:
        cfg = TrainConfig.load(config)
        run = _train(cfg, out, resume=resume)
    except (ValueError, RunLockedError) as e:
        _fail(str(e))
    typer.echo(f"run written to {run.path}")


@app.command("eval")
def eval_(
    run: Path = typer.Argument(..., help="run directory"),
    step: Optional[int] = typer.Option(None, help="checkpoint step (default: newest)"),
    n_prompts: Optional[int] = typer.Option(None, help="prompts (default: the config's eval.n_prompts)"),
) -> None:
    """Evaluate a run against its baselines; writes RUN/eval/summary.json and curves.csv."""
    from .evaluation.run_eval import evaluate_run

    try:
        _, summary = evaluate_run(run, step=step, n_prompts=n_prompts)
    except ValueError as e:
        _fail(str(e))
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    s = summary["icl_score"]
    if s:
        typer.echo(f"ICL score vs {s['baseline']}: {s['value']:.3f} (CI {s['ci_low']:.3f} – {s['ci_high']:.3f})")
    d = summary["n_dims"]
    for k in (d, 2 * d):
        if k < summary["n_points"]:
            errs = ", ".join(f"{n} {v[k]:.4f}" for n, v in summary["normalized_errors"].items())
            typer.echo(f"normalised error at k={k}: {errs}")


@app.command()
def analyze(
    run: Path = typer.Argument(..., help="run directory"),
    what: str = typer.Option("lens,match", help="comma-separated: lens, match, order, summaries, probe, ablate, patch"),
    n_prompts: int = typer.Option(256, help="prompts sampled from the run's task"),
    seed: int = typer.Option(0),
) -> None:
    """Run analyses on a trained run; writes RUN/analysis/<what>.csv and figures."""
    from .analysis import analyze_run

    for name in [w.strip() for w in what.split(",") if w.strip()]:
        try:
            df = analyze_run(run, name, n_prompts=n_prompts, seed=seed)
        except ValueError as e:
            _fail(str(e))
        typer.echo(f"{name}: {len(df)} rows -> {run / 'analysis' / (name + '.csv')}")


@app.command()
def report(run: Path = typer.Argument(..., help="run directory")) -> None:
    """Write RUN/report/index.html from what the run holds."""
    from .report import write_report

    try:
        path = write_report(run)
    except ValueError as e:
        _fail(str(e))
    typer.echo(f"report: {path}")


DEMO_ANALYSES = ("lens", "match", "probe")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="run directory"),
    steps: Optional[int] = typer.Option(None, help="override the number of training steps"),
    n_prompts: Optional[int] = typer.Option(None, help="override the number of evaluation prompts"),
) -> None:
    """The embedded default: train a small GPT-2 on linear regression, evaluate, analyse, report.

    Re-running continues an unfinished run and refreshes evaluation, analyses and the report."""
    from importlib.resources import files

    from .analysis import analyze_run
    from .evaluation.run_eval import evaluate_run
    from .report import write_report
    from .training import TrainConfig
    from .training import train as _train

    cfg = TrainConfig.from_yaml(files("hookedicl").joinpath("configs/demo.yaml").read_text())
    if steps is not None:
        cfg = TrainConfig.model_validate({**cfg.model_dump(), "steps": steps})
    if n_prompts is not None:
        cfg = TrainConfig.model_validate({**cfg.model_dump(), "eval": {**cfg.eval.model_dump(), "n_prompts": n_prompts}})
    try:
        run = _train(cfg, out, resume=(out / "config.yaml").exists())
    except ValueError as e:
        _fail(str(e))
    _, summary = evaluate_run(run)
    _print_summary(summary)
    for name in DEMO_ANALYSES:
        analyze_run(run, name, n_prompts=256)
        typer.echo(f"analysis: {run.path / 'analysis' / (name + '.csv')}")
    typer.echo(f"report: {write_report(run)}")


# --- pretrained commands ---


# --- publish command ---


# --- sweep commands ---


# --- merge and SAE commands ---


if __name__ == "__main__":  # pragma: no cover
    app()
