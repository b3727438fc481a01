"""Train an SAE on one hook of a run and write it with its metrics (`hookedicl sae RUN --hook ...`).

    <out>/sae.safetensors     the SAE (`load_sae`), with the run, hook and config in its metadata
    <out>/metrics.json        FVU, L0, dead fraction on held-out prompts; splice effect on the ICL score
    <out>/history.csv         training history (loss, FVU, L0, dead fraction per `log_every` steps)
    <out>/splice_curves.csv   normalised error per position: clean, spliced, mean-ablated, baseline

`out` defaults to `RUN/sae/<hook>`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .sae import SAEConfig, save_sae, train_sae
from .sae_eval import _check_site, collect_activations, run_activations, sae_metrics, splice_effect

__all__ = ["train_run_sae"]


def train_run_sae(
    run: Any,
    hook: str,
    out: str | os.PathLike[str] | None = None,
    config: SAEConfig | None = None,
    *,
    source: str = "sample",
    step: int | None = None,
    n_prompts: int = 2048,
    eval_prompts: int = 512,
    seed: int = 0,
    splice: bool = True,
) -> dict[str, Any]:
    """Train an SAE on `hook` of `run` (a `Run` or path) and write it to `out`; returns the metrics.

    Training activations: `source="sample"` (the checkpoint `step`, default newest, on
    `n_prompts` fresh prompts of the run's task, seed `seed`) or `"capture"` (the activations
    captured during training at capture step `step`, default the last). Metrics are measured on
    `eval_prompts` other fresh prompts (seed `seed + 1000`); with `splice`, the ICL score against
    the run's `eval.score_baseline` with the hook replaced by the SAE reconstruction.
    """
    from ..io import atomic_write_json, atomic_write_text
    from ..training import Run

    run = Run.of(run)
    cfg = config if config is not None else SAEConfig(seed=seed)
    model = run.load_model(step if source == "sample" else None)
    _check_site(model, hook)
    train_acts = run_activations(run, hook, source=source, step=step, n_prompts=n_prompts, seed=seed)
    sae, history = train_sae(train_acts, cfg)
    held_out = run.prompts(eval_prompts, seed + 1000)
    acts = collect_activations(model, held_out, hook)[hook]
    metrics: dict[str, Any] = {
        "run": str(run.path), "hook": hook, "source": source, "step": step, "n_train_tokens": int(train_acts.shape[0]),
        "config": cfg.model_dump(), **sae_metrics(sae, acts.reshape(-1, sae.d_in)),
    }
    curves = None
    if splice and held_out.ys.ndim == 2:
        summary, curves = splice_effect(model, sae, hook, held_out, baseline=run.score_baseline(), seed=seed)
        metrics["splice"] = {**summary, "baseline": run.config.eval.score_baseline}
    target = Path(out) if out is not None else run.path / "sae" / hook
    save_sae(sae, target / "sae.safetensors", metadata={"run": str(run.path), "hook": hook, "config": cfg.model_dump()})
    atomic_write_text(target / "history.csv", history.to_csv(index=False))
    if curves is not None:
        atomic_write_text(target / "splice_curves.csv", curves.to_csv(index=False))
    atomic_write_json(target / "metrics.json", metrics)
    return metrics
