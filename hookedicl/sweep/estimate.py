"""What a sweep would cost: time a few training steps (and a few evaluation prompts) per distinct
model/task configuration and project them onto the sweep's step and prompt counts.

The projection is `steps x seconds/step + n_prompts x seconds/prompt` per point, in wall and in
CPU seconds. Steps are timed at the final prompt length and dimension (a curriculum starts
shorter, so training is an upper estimate); the machine's load enters the wall times, so time on
a quiet machine where it matters. Nothing is written.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pandas as pd
import torch

from ..training import TrainConfig
from .spec import SweepSpec


def seconds_per_step(cfg: TrainConfig, n_steps: int = 30, warmup: int = 3) -> tuple[float, float]:
    """(wall, CPU) seconds of one training step (sample, forward, MSE, backward, clip, optimiser
    step) of `cfg`'s model at batch `cfg.batch_size` and the final prompt size, on `cfg.device`
    with the current torch thread count, averaged over `n_steps` steps after `warmup` untimed ones.

    CPU seconds are this process's CPU time (all its threads): on a busy machine with one
    thread they are closer to what the step costs on a quiet one than the wall time is. On a GPU
    only the wall time means anything."""
    from ..models import HookedICLModel
    from ..training import icl_loss

    if n_steps < 1 or warmup < 0:
        raise ValueError(f"n_steps must be >= 1 and warmup >= 0, got n_steps={n_steps}, warmup={warmup}")
    device = torch.device(cfg.device)
    task = cfg.build_task()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = HookedICLModel(cfg.build_spec()).to(device).train()
        o = cfg.optim
        opt = (torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam)(
            model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay
        )
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        t0 = c0 = 0.0
        for i in range(warmup + n_steps):
            if i == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0, c0 = time.perf_counter(), time.process_time()
            batch = task.sample(cfg.batch_size, cfg.task.n_points, generator=gen).to(device)
            loss = icl_loss(model(batch.xs, batch.ys), batch.ys, task.loss_positions)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if o.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / n_steps, (time.process_time() - c0) / n_steps


def seconds_per_eval_prompt(cfg: TrainConfig, n_prompts: int = 64) -> tuple[float, float]:
    """(wall, CPU) seconds per prompt of evaluating an (untrained) model of `cfg` and its `eval`
    baselines on `n_prompts` prompts (the model on CPU, as `evaluate_run` does), after an untimed
    2-prompt run that pays for imports and first-call setup."""
    from .. import baselines as B
    from ..evaluation import evaluate
    from ..models import HookedICLModel

    ev = cfg.eval
    task = cfg.build_task()
    names = ev.baselines if ev.score_baseline in ev.baselines else [ev.score_baseline, *ev.baselines]
    with torch.random.fork_rng(devices=[]):
        model = HookedICLModel(cfg.build_spec()).eval()
        predictors: dict[str, Any] = {"model": model}
        if task.y_dim == 1:
            predictors |= {n: B.get(n, **ev.baseline_kwargs.get(n, {})) for n in names}
        evaluate(predictors, task, n_prompts=2, n_points=cfg.task.n_points, batch_size=2, seed=ev.seed)
        t0, c0 = time.perf_counter(), time.process_time()
        evaluate(predictors, task, n_prompts=n_prompts, n_points=cfg.task.n_points,
                 batch_size=min(ev.batch_size, n_prompts), seed=ev.seed)
    return (time.perf_counter() - t0) / n_prompts, (time.process_time() - c0) / n_prompts


def _train_key(cfg: TrainConfig) -> str:
    """Configs with equal keys cost the same per training step (seeds and task values aside)."""
    parts = {"model": cfg.model.model_dump(mode="json"), "batch": cfg.batch_size, "n_dims": cfg.task.n_dims,
             "n_points": cfg.task.n_points, "y_dim": cfg.build_task().y_dim, "optim": cfg.optim.model_dump(mode="json"),
             "device": cfg.device, "threads": cfg.threads}
    return json.dumps(parts, sort_keys=True)


def _eval_key(cfg: TrainConfig) -> str:
    parts = {"model": cfg.model.model_dump(mode="json"), "task": cfg.task.model_dump(mode="json"),
             "eval": cfg.eval.model_copy(update={"seed": 0, "n_prompts": 1}).model_dump(mode="json"), "threads": cfg.threads}
    return json.dumps(parts, sort_keys=True)


def estimate(spec: SweepSpec, *, n_steps: int = 30, eval_prompts: int = 64) -> pd.DataFrame:
    """One row per point: `point`, its axes, `steps`, wall and CPU seconds per training step
    (`s_per_step`, `cpu_s_per_step`) and per evaluation prompt, and the projections `train_s`,
    `train_cpu_s` (steps x per-step), `eval_s`, `eval_cpu_s` (eval.n_prompts x per-prompt; 0
    when the sweep does not evaluate), `total_s`, `total_cpu_s`.

    Training is timed once per distinct model / batch / prompt size / optimiser / device, and
    evaluation once per distinct model / task / eval config, each with the config's `threads`
    (the torch thread count is restored afterwards)."""
    points = spec.expand()
    steps_cache: dict[str, tuple[float, float]] = {}
    eval_cache: dict[str, tuple[float, float]] = {}
    threads = torch.get_num_threads()
    rows = []
    try:
        for p in points:
            cfg = p.config
            torch.set_num_threads(cfg.threads or threads)
            tk, ek = _train_key(cfg), _eval_key(cfg)
            if tk not in steps_cache:
                steps_cache[tk] = seconds_per_step(cfg, n_steps)
            if spec.evaluate and ek not in eval_cache:
                eval_cache[ek] = seconds_per_eval_prompt(cfg, eval_prompts)
            (step_s, step_cpu), (prompt_s, prompt_cpu) = steps_cache[tk], eval_cache.get(ek, (0.0, 0.0))
            n = cfg.eval.n_prompts if spec.evaluate else 0
            row = {"point": p.id, **p.labels, "steps": cfg.steps, "s_per_step": step_s, "cpu_s_per_step": step_cpu,
                   "s_per_eval_prompt": prompt_s, "cpu_s_per_eval_prompt": prompt_cpu,
                   "train_s": step_s * cfg.steps, "train_cpu_s": step_cpu * cfg.steps,
                   "eval_s": prompt_s * n, "eval_cpu_s": prompt_cpu * n}
            row["total_s"], row["total_cpu_s"] = row["train_s"] + row["eval_s"], row["train_cpu_s"] + row["eval_cpu_s"]
            rows.append(row)
    finally:
        torch.set_num_threads(threads)
    return pd.DataFrame(rows)
