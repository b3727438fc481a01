"""The training loop: plain PyTorch, readable in one screen (`train` below).

Per step: sample a prompt batch (curriculum), forward (with activation capture on capture steps),
MSE loss, backward, clip, optimiser and LR-schedule step. Every `log.every` steps one line goes
to metrics.jsonl (loss, chosen baseline losses on the same batch, lr, steps/s); every
`checkpoint.every` steps a checkpoint with optimiser, scheduler and RNG state, so `resume=True`
continues exactly where a killed run stopped.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch

from ..models import HookedICLModel
from ..progress import progress_bar
from .checkpoints import load_state, load_weights, save_checkpoint
from .config import TrainConfig
from .recorder import ActivationRecorder, resolve_hooks
from .lineage import InitSource, resolve_init, write_lineage
from ..layout import ACTIVATIONS, CHECKPOINTS, CONFIG, INDEX, METRICS, remove_stale_temporaries
from .run import MetricsLog, Run, preflight, prepare_run_dir, run_lock
from .threads import auto_threads


class TrainingDiverged(RuntimeError):
    """Raised when the loss becomes NaN/inf; the last good checkpoint is kept."""


def icl_loss(preds: torch.Tensor, ys: torch.Tensor, positions: str = "all") -> torch.Tensor:
    """Mean squared error over all positions (or only the last: vector MQAR)."""
    if positions == "last":
        preds, ys = preds[:, -1], ys[:, -1]
    return (preds - ys).pow(2).mean()


def _optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


def train(
    config: TrainConfig | str | Path,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    restart: bool = False,
    repair_metrics: bool = False,
) -> Run:
    """Train a model as configured; returns the `Run` (run directory) it wrote.

    `out_dir` defaults to `runs/<config.name>`. With `resume=True` an existing run continues from
    its newest good checkpoint (the config must match, except `steps`, which may be raised). A
    run that has logged metrics or written checkpoints never starts over on its own: when no
    usable checkpoint is left, resuming raises unless `restart=True`, which trains it again from
    step 0. `repair_metrics=True` drops malformed metrics.jsonl lines (with a warning) instead
    of raising. Every check (`preflight`: device and memory; `prepare_run_dir`: the directory,
    under its lock) runs before anything is written; on a failure nothing is left behind.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.load(config)
    out = Path(out_dir) if out_dir is not None else Path("runs") / cfg.name
    preflight(cfg)
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        parent = next((p for p in out.parents if p.exists()), out)
        raise ValueError(f"output location {parent} is not writable ({e.strerror})") from None
    threads = torch.get_num_threads()
    started = False
    try:
        with run_lock(out):
            entry = prepare_run_dir(out, cfg, resume, restart=restart)
            init = resolve_init(cfg) if entry is None and not (out / CONFIG).exists() else None
            remove_stale_temporaries(out)
            started = True
            try:
                _train(cfg, out, entry, init, repair_metrics=repair_metrics, restart=restart)
            finally:
                torch.set_num_threads(threads)  # the config's thread count applies to training only
    finally:
        if not started:
            for d in created:  # only the (empty) directories this call made
                try:
                    d.rmdir()
                except OSError:
                    break
    return Run(out)


def _grad_norm(model: torch.nn.Module, clip: float | None) -> torch.Tensor:
    """Total gradient norm (clipping to `clip` when given), as a tensor: no host sync here."""
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())


def _train(
    cfg: TrainConfig, out: Path, entry: dict | None, init: InitSource | None = None, *,
    repair_metrics: bool = False, restart: bool = False,
) -> None:
    from .. import baselines as B
    from ..io import atomic_write_text

    torch.set_num_threads(cfg.threads or auto_threads(cfg.model.d_model))
    device = torch.device(cfg.device)
    task, spec = cfg.build_task(), cfg.build_spec()
    torch.manual_seed(cfg.seed)
    model = HookedICLModel(spec).to(device)
    opt = _optimizer(cfg, model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cfg.optim.lr_factor(s, cfg.steps))
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # prompts; independent of the init seed
    metrics = MetricsLog(out / METRICS, repair=repair_metrics)
    recorder = ActivationRecorder(
        out / ACTIVATIONS, resolve_hooks(model.hook_dict, cfg.capture.hooks) if cfg.capture.hooks else [],
        every=cfg.capture.every, n_prompts=cfg.capture.n_prompts, positions=cfg.capture.positions,
        dtype=cfg.capture.dtype,
    )
    start, skipped = 0, 0
    if init is not None:
        model.load_state_dict(init.weights)
    if entry is not None:  # resume
        weights, _, start = load_weights(out / CHECKPOINTS, entry["step"])
        model.load_state_dict(weights)
        state = load_state(out / CHECKPOINTS, entry)
        if "optimizer" not in state:
            raise ValueError(
                f"{out} holds no optimiser state at step {start} (e.g. a run exported from a shipped "
                f"checkpoint); it can be evaluated and analysed, not resumed; fine-tune it with init_from instead"
            )
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["rng_data"])
        torch.set_rng_state(state["rng_torch"])
        skipped = int(state.get("skipped", 0))
        metrics.truncate_after(start)
        recorder.truncate_after(start)
    else:
        if init is not None:
            write_lineage(out, "init_from", [init.parent])
        if restart:  # asked for: forget every checkpoint and shard of the earlier attempt
            for sub in (CHECKPOINTS, ACTIVATIONS):
                if (out / sub / INDEX).exists():
                    atomic_write_text(out / sub / INDEX, "[]\n")
            metrics.repair = True
        atomic_write_text(out / CONFIG, cfg.to_yaml())
        metrics.truncate_after(-1)
    log_baselines = {n: B.get(n) for n in cfg.log.baselines} if task.y_dim == 1 else {}
    last = cfg.steps - 1
    model.train()
    # Compiled forward for the steps without capture; capture steps call the eager module, whose
    # HookPoints fire (hooks added to a compiled module after tracing would be ignored).
    fast = torch.compile(model, dynamic=False) if cfg.compile else model
    bar = progress_bar(total=cfg.steps, initial=start, desc=cfg.name, enabled=cfg.log.progress)
    loss_sum, n_sum, t0, step0 = torch.zeros((), device=device), 0, time.perf_counter(), start
    for step in range(start, cfg.steps):
        n_dims, n_points = cfg.curriculum.at(step) if cfg.curriculum else (task.n_dims, cfg.task.n_points)
        batch = task.sample(cfg.batch_size, n_points, generator=gen, n_dims_active=n_dims).to(device)
        due = recorder.due(step, last)
        capture = recorder.capture(model, batch, step) if due else contextlib.nullcontext()
        with capture:
            preds = (model if due else fast)(batch.xs, batch.ys)
        loss = icl_loss(preds, batch.ys, task.loss_positions)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = _grad_norm(model, cfg.optim.grad_clip)
        if not bool(torch.isfinite(loss) & torch.isfinite(gnorm)):  # the one host sync per step
            what = f"loss became {loss.item()}" if not torch.isfinite(loss) else f"gradient norm became {gnorm.item()}"
            if cfg.optim.on_nonfinite == "stop" or skipped >= cfg.optim.max_skipped:
                stop = cfg.optim.on_nonfinite == "stop"
                why = "" if stop else f" after {skipped} skipped batches (optim.max_skipped)"
                fix = "optim.on_nonfinite: skip" if stop else "a higher optim.max_skipped"
                raise TrainingDiverged(
                    f"{what} at step {step}{why}; the newest good checkpoint is kept, resume after "
                    f"changing the config (e.g. lower optim.lr, set optim.grad_clip or {fix})"
                )
            skipped += 1
            bar.write(f"step {step}: {what}; batch skipped ({skipped}/{cfg.optim.max_skipped})")
            opt.zero_grad(set_to_none=True)
        else:
            opt.step()
            loss_sum += loss.detach()
            n_sum += 1
        sched.step()
        done = step + 1
        if done % cfg.log.every == 0 or step == last:
            elapsed = time.perf_counter() - t0
            row = {
                "step": done, "loss": loss_sum.item() / n_sum if n_sum else None, "lr": sched.get_last_lr()[0],
                "n_points": n_points, "n_dims": n_dims, "steps_per_s": (done - step0) / elapsed,
            }
            if cfg.optim.on_nonfinite == "skip":
                row["skipped"] = skipped
            with torch.no_grad():
                for name, b in log_baselines.items():
                    row[f"baseline/{name}"] = icl_loss(b.predict(batch.xs, batch.ys), batch.ys).item()
            metrics.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", it_s=f"{row['steps_per_s']:.1f}")
            loss_sum.zero_()
            n_sum, t0, step0 = 0, time.perf_counter(), done
        if done % cfg.checkpoint.every == 0 or step == last:
            state = {
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng_data": gen.get_state(), "rng_torch": torch.get_rng_state(), "step": done, "skipped": skipped,
            }
            save_checkpoint(out / CHECKPOINTS, done, model, state, keep=cfg.checkpoint.keep)
        bar.update(1)
    bar.close()
