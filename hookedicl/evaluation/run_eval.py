"""Evaluate a run directory: the trained model against its config's baselines on the same
prompts; writes `RUN/eval/summary.json` (contract: `icl_score`, `normalized_errors`, ...) and
`RUN/eval/curves.csv` (tidy per-position errors with CIs)."""

from __future__ import annotations

from typing import Any

from ..io import atomic_write_json, atomic_write_text
from ..layout import CURVES, EVAL, SUMMARY, output_set
from .evaluate import EvalResult, evaluate


def evaluate_run(
    run: Any,
    *,
    step: int | None = None,
    n_prompts: int | None = None,
    baselines: list[str] | None = None,
    write: bool = True,
    progress: bool | None = None,
) -> tuple[EvalResult, dict[str, Any]]:
    """Evaluate `run` (a `Run` or its path) at checkpoint `step` (default newest). `progress`: a
    progress bar over the prompts (`None`: when stderr is a terminal).

    Returns the `EvalResult` and the summary dict (also written to `RUN/eval/` when `write`).
    """
    from .. import baselines as B
    from ..training import Run

    run = Run.of(run)
    cfg = run.config
    ev = cfg.eval
    task = run.task()
    if step is None:  # the newest checkpoint that verifies (what load_model picks)
        from ..training.checkpoints import verified_entry

        step = verified_entry(run.checkpoint_dir)["step"]
    model = run.load_model(step)
    names = baselines if baselines is not None else ev.baselines
    if ev.score_baseline not in names:
        names = [ev.score_baseline, *names]
    predictors: dict[str, Any] = {"model": model}
    if task.y_dim == 1:
        predictors |= {n: B.get(n, **ev.baseline_kwargs.get(n, {})) for n in names}
    result = evaluate(
        predictors, task, n_prompts=n_prompts or ev.n_prompts, n_points=cfg.task.n_points,
        batch_size=ev.batch_size, seed=ev.seed, progress=progress,
    )
    summary = result.to_json_dict(model="model", baseline=ev.score_baseline if task.y_dim == 1 else "model")
    summary["step"] = step
    summary["n_dims"] = task.n_dims
    summary["baseline_kwargs"] = {n: ev.baseline_kwargs.get(n, {}) for n in names}
    if write:  # both files or neither (hookedicl.layout.output_set)
        with output_set(run.path, EVAL) as stage:
            atomic_write_text(stage / CURVES, result.curves().to_csv(index=False))
            atomic_write_json(stage / SUMMARY, summary)
    return result, summary
