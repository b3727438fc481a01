"""`hookedicl` command line. Verbs mirror the Python API (see README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:
    from .sweep import SweepSpec

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Mechanistic analysis of in-context learning.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Commands import what they need (torch, TransformerLens, ...) inside their bodies, so that
# `hookedicl --help` and `--version` stay fast.


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"hookedicl {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the version and exit"
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="no progress bars (they are shown only when stderr is a terminal anyway)"
    ),
) -> None:
    """Mechanistic analysis of in-context learning."""
    if quiet:  # for this command and the processes it starts (sweep workers); restored after it
        from .progress import silence

        ctx.call_on_close(silence())


def _fail(msg: "str | BaseException") -> None:
    """Print one line `error: ...` (naming the file or field) and exit with code 2."""
    typer.secho(f"error: {_one_line(msg)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _one_line(e: "str | BaseException") -> str:
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        from .training.config import validation_message

        return validation_message(e)
    if isinstance(e, OSError) and not isinstance(e, (FileNotFoundError,)) and e.filename:
        return f"{e.filename}: {e.strerror or e}"
    return " ".join(str(e).split())


def _anticipated() -> tuple[type[BaseException], ...]:
    """The errors a command reports as one line with exit code 2: invalid input (ValueError,
    including YAML, validation and corrupted-file errors), a locked run, and OSError (disk
    full, permission denied)."""
    from .training.run import RunLockedError

    return (ValueError, RunLockedError, OSError)


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
    except _anticipated() as e:
        _fail(e)
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
    init_from: Optional[str] = typer.Option(
        None, "--init-from", help="fine-tune: start from RUN[:STEP]'s weights (sets the config's init_from)"
    ),
    restart: bool = typer.Option(
        False, "--restart", help="with --resume: train again from step 0 when no usable checkpoint is left (discards metrics)"
    ),
    repair_metrics: bool = typer.Option(
        False, "--repair-metrics", help="skip malformed metrics.jsonl lines (with a warning) instead of stopping"
    ),
) -> None:
    """Train a model; writes a run directory (config, checkpoints, activations, metrics)."""
    from .training import RunLockedError, TrainConfig
    from .training import train as _train

    try:
        cfg = TrainConfig.load(config)
        if init_from is not None:
            cfg = TrainConfig.model_validate({**cfg.model_dump(), "init_from": init_from})
        run = _train(cfg, out, resume=resume, restart=restart, repair_metrics=repair_metrics)
    except _anticipated() as e:
        _fail(e)
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
    except _anticipated() as e:
        _fail(e)
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
    _analyze_all(run, [w.strip() for w in what.split(",") if w.strip()], n_prompts=n_prompts, seed=seed)


def _analyze_all(run: Path, names: "list[str] | tuple[str, ...]", *, n_prompts: int, seed: int = 0) -> None:
    """Run the analyses `names` on `run` one after another, with a progress bar over them; one
    line per analysis names its table."""
    from .analysis import analyze_run
    from .progress import progress_bar

    with progress_bar(names, desc="analyze", unit="analysis") as bar:
        for name in bar:
            bar.set_postfix_str(name)
            try:
                df = analyze_run(run, name, n_prompts=n_prompts, seed=seed)
            except _anticipated() as e:
                _fail(e)
            with bar.external_write_mode():
                typer.echo(f"{name}: {len(df)} rows -> {Path(run) / 'analysis' / (name + '.csv')}")


@app.command()
def report(
    run: Path = typer.Argument(..., help="run directory"),
    repair_metrics: bool = typer.Option(
        False, "--repair-metrics", help="skip malformed metrics.jsonl lines (with a warning) instead of stopping"
    ),
) -> None:
    """Write RUN/report/index.html from what the run holds."""
    from .report import write_report

    try:
        path = write_report(run, repair_metrics=repair_metrics)
    except _anticipated() as e:
        _fail(e)
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

    from .evaluation.run_eval import evaluate_run
    from .report import write_report
    from .training import TrainConfig
    from .training import train as _train

    try:
        cfg = TrainConfig.from_yaml(files("hookedicl").joinpath("configs/demo.yaml").read_text())
        if steps is not None:
            cfg = TrainConfig.model_validate({**cfg.model_dump(), "steps": steps})
        if n_prompts is not None:
            cfg = TrainConfig.model_validate({**cfg.model_dump(), "eval": {**cfg.eval.model_dump(), "n_prompts": n_prompts}})
        run = _train(cfg, out, resume=(out / "config.yaml").exists())
        _, summary = evaluate_run(run)
        _print_summary(summary)
        _analyze_all(run.path, DEMO_ANALYSES, n_prompts=256)
        typer.echo(f"report: {write_report(run)}")
    except _anticipated() as e:
        _fail(e)


# --- pretrained commands ---
@app.command()
def pretrained(
    export: Optional[tuple[str, Path]] = typer.Option(
        None, "--export", metavar="NAME DIR", help="write checkpoint NAME as a run directory DIR (for eval/analyze/report)"
    ),
    card: Optional[str] = typer.Option(None, "--card", metavar="NAME", help="print the card of checkpoint NAME (JSON)"),
) -> None:
    """List the checkpoints shipped with the package (ICL score, size, training); export one as a run."""
    import json

    from .pretrained import export_pretrained, list_pretrained, pretrained_card

    if export is not None and card is not None:
        _fail("pass either --export or --card, not both")
    try:
        if export is not None:
            name, out = export
            run = export_pretrained(name, out)
            typer.echo(f"{name} exported to {run.path}; try `hookedicl analyze {run.path}` or `hookedicl report {run.path}`")
            return
        if card is not None:
            typer.echo(json.dumps(pretrained_card(card).to_dict(), indent=2))
            return
        names = list_pretrained()
        if not names:
            _fail("no pretrained checkpoints are installed (run scripts/train_pretrained.py)")
        rows, baseline = [], ""
        for n in names:
            c = pretrained_card(n)
            s = c.icl_score
            baseline = s["baseline"]
            rows.append((n, c.arch, f"{c.n_params:,}", f"{c.steps:,}", f"{c.train_seconds:.0f}",
                         f"{s['value']:.3f} ({s['ci_low']:.3f}-{s['ci_high']:.3f})"))
    except _anticipated() as e:
        _fail(e)
    header = ("name", "arch", "params", "steps", "train s", f"ICL score vs {baseline} (95% CI)")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())



# --- publish command ---


def _parse_publish_params(items: list[str]) -> dict:
    """`NAME=VALUE` pairs; VALUE is read as YAML (`64`, `0.5`, `null`, `[1, 2]`, `{a: 1}`, text)."""
    import yaml

    params: dict = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--param expects NAME=VALUE, got {item!r}")
        if name in params:
            raise ValueError(f"--param {name} given twice")
        try:
            params[name] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ValueError(f"--param {name}: value {value!r} is not valid YAML ({e})") from e
    return params


@app.command("publish")
def publish_cmd(
    analysis: str = typer.Argument(..., help="analysis name (see analyses/README.md) or path to an analysis notebook"),
    run: Path = typer.Option(..., "--run", help="run directory (a sweep directory for sweep analyses)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default RUN/publish/ANALYSIS)"),
    param: list[str] = typer.Option([], "--param", "-p", help="notebook parameter NAME=VALUE (YAML value); repeatable"),
    timeout: int = typer.Option(600, help="seconds allowed per notebook cell"),
    no_input: bool = typer.Option(False, "--no-input", help="hide the code cells in the HTML page"),
) -> None:
    """Execute an analysis notebook on RUN; writes figures (PNG + SVG), tables (CSV + Markdown),
    the executed notebook and a standalone HTML page into OUT (atomically)."""
    from .publish import NotebookExecutionError, publish

    try:
        path = publish(analysis, run, out, _parse_publish_params(param), timeout=timeout, no_input=no_input)
    except NotebookExecutionError as e:
        if e.traceback:
            typer.echo(e.traceback, err=True)
        _fail(str(e))
    except (*_anticipated(), ImportError) as e:
        _fail(e)
    name = Path(analysis).stem
    typer.echo(f"published {name} -> {path}")
    typer.echo(f"html: {path / (name + '.html')}")


# --- sweep commands ---


@app.command()
def sweep(
    spec: Path = typer.Argument(..., help="sweep YAML (see docs/sweeps.md)"),
    out: Optional[Path] = typer.Option(None, "--out", help="sweep directory (default runs/sweeps/<name>)"),
    executor: str = typer.Option("local", help="local (this machine) or ray"),
    workers: Optional[str] = typer.Option(
        None, help="local: worker processes, or 'auto' (cores / CPUs per point); default 1: in this process"
    ),
    address: Optional[str] = typer.Option(None, help="ray: address of a running cluster (default: a local Ray instance)"),
    ray_cpus: Optional[int] = typer.Option(None, "--ray-cpus", help="ray: CPUs of the local instance (default: all)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the points and their state; run and write nothing"),
    aggregate_only: bool = typer.Option(False, "--aggregate-only", help="rebuild results.csv/.md and figures only"),
    estimate: Optional[int] = typer.Option(
        None, "--estimate", help="time N training steps per distinct config and print the projected cost; run nothing"
    ),
) -> None:
    """Run a sweep: one run directory per point; finished points are skipped, unfinished ones resumed.

    Writes OUT/results.csv, OUT/results.md and OUT/figures/. Exits 1 when a point failed (its
    error is in OUT/status/<point>.json and the results); the other points still run."""
    from .sweep import SweepSpec, auto_workers, make_executor, plan, run_sweep, write_results
    from .sweep.runner import default_out
    from .training import RunLockedError

    try:
        s = SweepSpec.load(spec)
        o = out if out is not None else default_out(s)
        states = plan(s, o)
        if estimate is not None:
            _print_estimate(s, estimate)
            return
        if dry_run or aggregate_only:
            if dry_run:
                for p, state in states:
                    typer.echo(f"{state:9s} {p.id}")
                typer.echo(f"{len(states)} points, {sum(st != 'done' for _, st in states)} to run -> {o}")
            else:
                if not (o / "sweep.yaml").is_file():
                    _fail(f"{o} holds no sweep yet (no sweep.yaml); run the sweep first")
                write_results(s, o, [p for p, _ in states])
                typer.echo(f"results: {o / 'results.md'}")
            return
        if workers is not None and executor != "local":
            _fail("--workers only applies to the local executor (Ray schedules by each point's resources)")
        if workers == "auto":
            n = auto_workers([p for p, st in states if st != "done"])
        else:
            try:
                n = int(workers or 1)
            except ValueError:
                _fail(f"--workers must be a positive integer or 'auto', got {workers!r}")
        ex = make_executor(executor, workers=n, address=address, num_cpus=ray_cpus)
        result = run_sweep(s, o, executor=ex, echo=typer.echo)
    except _anticipated() as e:
        _fail(e)
    typer.echo(f"results: {result.out / 'results.md'}")
    if result.failed:
        typer.secho(f"{len(result.failed)} point(s) failed: {', '.join(result.failed)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


def _print_estimate(spec: "SweepSpec", n_steps: int) -> None:
    from .sweep.aggregate import markdown
    from .sweep.estimate import estimate as _estimate

    if n_steps < 1:
        _fail(f"--estimate must be a positive number of steps, got {n_steps}")
    df = _estimate(spec, n_steps=n_steps)
    cols = ["point", "steps", "s_per_step", "cpu_s_per_step", "train_s", "eval_s", "total_s", "total_cpu_s"]
    typer.echo(markdown(df[cols]))
    for what, col in (("wall", "total_s"), ("CPU", "total_cpu_s")):
        train, ev = df[col.replace("total", "train")].sum(), df[col.replace("total", "eval")].sum()
        typer.echo(f"total {what} time: {(train + ev) / 3600:.2f} h for {len(df)} points "
                   f"(training {train / 3600:.2f} h, evaluation {ev / 3600:.2f} h)")


# --- merge and SAE commands ---


@app.command()
def merge(
    run_a: str = typer.Argument(..., help="first run, RUN_DIR or RUN_DIR:STEP (t = 0 gives this model)"),
    run_b: str = typer.Argument(..., help="second run, RUN_DIR or RUN_DIR:STEP (t = 1 gives this model)"),
    out: Path = typer.Option(..., "--out", help="new run directory for the merged model"),
    method: str = typer.Option("slerp", help="slerp (per-tensor spherical, linear fallback) or linear"),
    t: float = typer.Option(0.5, "--t", help="interpolation weight in [0, 1] (0: RUN_A, 1: RUN_B)"),
) -> None:
    """Merge two runs of one architecture into a new run directory (eval/analyze accept it)."""
    from .analysis.merge import merge_runs

    try:
        run = merge_runs(run_a, run_b, out, method=method, t=t)
    except _anticipated() as e:
        _fail(e)
    report = run.path / "analysis" / "merge_tensors.csv"
    typer.echo(f"merged run written to {run.path} ({method}, t={t:g}); per-tensor report: {report}")


@app.command()
def sae(
    run: Path = typer.Argument(..., help="run directory"),
    hook: str = typer.Option(..., "--hook", help="hook name, e.g. blocks.1.hook_resid_post (see `hookedicl hooks ARCH`)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output directory (default RUN/sae/<hook>)"),
    kind: str = typer.Option("topk", help="topk or relu (L1)"),
    d_sae: int = typer.Option(256, help="number of features"),
    k: int = typer.Option(8, help="topk: active features per token"),
    l1_coeff: float = typer.Option(0.05, help="relu: L1 coefficient"),
    dead: str = typer.Option("auxk", help="dead features: auxk, resample or none"),
    steps: int = typer.Option(3000, help="training steps"),
    source: str = typer.Option("sample", help="sample (fresh prompts through the model) or capture (activations recorded in training)"),
    step: Optional[int] = typer.Option(None, help="checkpoint step (sample) or capture step (capture); default the newest"),
    n_prompts: int = typer.Option(2048, help="sample: prompts for the training activations"),
    eval_prompts: int = typer.Option(512, help="held-out prompts for the metrics and the splice"),
    seed: int = typer.Option(0),
    splice: bool = typer.Option(True, "--splice/--no-splice", help="measure the ICL score with the SAE spliced in"),
) -> None:
    """Train a sparse autoencoder on one hook of a run; writes the SAE, its metrics and history."""
    from .analysis.sae import SAEConfig
    from .analysis.sae_run import train_run_sae

    try:
        cfg = SAEConfig(kind=kind, d_sae=d_sae, k=k, l1_coeff=l1_coeff, dead=dead, steps=steps, seed=seed)
        m = train_run_sae(
            run, hook, out, cfg, source=source, step=step, n_prompts=n_prompts, eval_prompts=eval_prompts,
            seed=seed, splice=splice,
        )
    except _anticipated() as e:
        _fail(e)
    typer.echo(f"{hook}: FVU {m['fvu']:.4f}, L0 {m['l0']:.2f}, dead {m['dead_fraction']:.3f} ({m['n_tokens']} held-out tokens)")
    if "splice" in m:
        s = m["splice"]["score"]
        typer.echo(
            f"ICL score vs {m['splice']['baseline']}: clean {s['clean']['value']:.3f}, spliced {s['spliced']['value']:.3f}, "
            f"mean-ablated {s['ablated']['value']:.3f}"
        )
    typer.echo(f"written to {out if out is not None else Path(run) / 'sae' / hook}")


if __name__ == "__main__":  # pragma: no cover
    app()
