"""hookedicl models vs the Garg/Campbell HF-backbone wrapper: training and inference speed, memory.

    python -m benchmarks.bench_models [--quick] [--out results.json] [--threads N]
                                      [--sections 1,2,3,4,5,6,7]

The peer is the in-context-learning model of Garg et al. / Campbell et al., built here from
`transformers`: `read_in = nn.Linear(n_dims, d_model)`, an HF `GPT2Model` / `LlamaModel` /
`MambaModel` backbone called with `inputs_embeds`, `read_out = nn.Linear(d_model, 1)`, predictions
`read_out(h)[:, ::2, 0]` over the interleaved tokens x_i, [y_i, 0, ..., 0]. HF configs have dropout
0 and `use_cache=False`; the token table (unused by the wrapper) has one row, so neither side
carries an unused vocabulary. The hookedicl model is `hookedicl.models.convert.from_hf` of the
same wrapper, so both compute the same function from the same weights (the largest prediction
difference is reported). Mamba uses d_state 16, expand 4 (Campbell et al.'s setting; HF's default
is 2), d_conv 4 on both sides; on CPU, HF's Mamba runs its pure-PyTorch slow path (a Python loop
over positions).

Sections:
1. Training step (Adam, MSE, zero_grad + forward + backward + step) for gpt2, llama, mamba and
   the hybrid `mambaformer` (hookedicl only: no HF peer exists) at the small size (4 layers,
   d_model 64, 2 heads, d = 5, 11 points, batch 64) and the standard size (12 layers, d_model 256,
   8 heads, d = 20, 41 points, batch 64; Mamba at batch 8 on both sides, because HF's slow path
   takes minutes per step at batch 64, and mambaformer at batch 8 too). Throughput = batch / median step time. Peak memory: each
   side runs a few training steps in a fresh child process that reports its own
   peak resident set size over the training steps (VmHWM, reset just before the first step) and its
   rise over the RSS before them (`ru_maxrss` would inherit the parent's peak; see `child_main`).
2. Inference: `run_with_cache` with every hook vs a plain forward (gpt2, small size), with the
   HF wrapper's forward (and with `output_hidden_states=True`) beside it.
3. Cost of hooks during training (gpt2 and mamba, small size): the model with idle hook points
   vs a copy whose `HookPoint` modules are all replaced by `nn.Identity`, and the cost of
   capturing every layer's residual stream (`blocks.*.hook_resid_post`) with
   `hookedicl.training.recorder.ActivationRecorder` (as the trainer does with
   `capture.hooks=["blocks.*.hook_resid_post"]`), amortised over `capture.every = 100` steps.
4. The Mamba selective scan: `hookedicl.models.scan` chunked (the CPU default) and parallel vs its sequential reference vs HF's
   `mamba_selective_scan` (recurrent loop), and the whole mixer (hookedicl `MambaMixer` with
   each scan vs HF `MambaMixer`, same weights); forward (no grad) and forward + backward.
5. Intra-op threads: the gpt2 training step at 1 vs 2 threads (small and standard size), the
   measurement behind `hookedicl.training.threads.auto_threads`.
6. Standard-size gpt2 training: achieved FLOP/s against the measured fp32 matmul peak.
   FLOPs per training step = 3 x batch x (2 P T + 4 L T^2 d): P = weights of every Linear layer
   (read-in, QKV, W_O, MLP in and out, read-out; no biases, norms or positions), T = 2 n_points
   tokens, L layers, d = d_model; attention counts QK^T and AV over the full T x T (no causal
   saving); backward = 2 x forward. Peak: median time of `torch.mm` of two 2048 x 2048 fp32
   matrices (2 x 2048^3 FLOPs) at the same thread count.
7. `torch.compile` (inductor, dynamic=False): the small-size training step of the archs in
   `--compile-archs` (default gpt2), eager vs compiled, for hookedicl and the HF wrapper; the
   first compiled step (compilation) is reported apart from the steady steps.

Method: all variants of a measurement live in one process and are run interleaved (A, B, A, B,
..., the order alternating between rounds) after warm-up steps; each step is timed on its own
(wall and process CPU time: on a shared machine CPU time is less disturbed by other processes;
with 2 threads it is up to 2x the wall time). The number of rounds fits a time budget per case
(measured from the warm-up), between a minimum and a maximum. Every variant samples the same
pre-drawn batches (linear regression, x ~ N(0, I), w ~ N(0, I), y = w.x).

Threads: this script sets torch's intra-op thread count itself (the library leaves it alone; the
trainer uses `auto_threads(d_model)`): by default each case uses `auto_threads(d_model)` (every core
since the section-5 measurement; the results in BENCHMARKS.md were taken when it gave 1 thread for
d_model <= 128), the same for both sides; `--threads N` fixes it for every
section except 5. `--quick` runs tiny sizes with 1 warm-up and 2 timed steps per variant, to
check the script end to end; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import gc
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch
from torch import nn

import hookedicl as hi
from hookedicl.models import scan as hscan
from hookedicl.models.convert import from_hf
from hookedicl.models.hooks import HookPoint
from hookedicl.models.mamba import MambaMixer
from hookedicl.training.recorder import ActivationRecorder, resolve_hooks
from hookedicl.training.threads import auto_threads

from ._machine import cpu_model, n_cpus

ROOT = Path(__file__).resolve().parents[1]
MAMBA = dict(d_state=16, expand=4, d_conv=4)
CAPTURE_EVERY = 100
CAPTURE_HOOKS = ["blocks.*.hook_resid_post"]
MEM_STEPS = 2  # training steps in a memory child: step 1 allocates Adam's state, step 2 runs with it


# ------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class Size:
    n_layers: int
    d_model: int
    n_heads: int
    n_dims: int
    n_points: int
    batch: int
    mamba_batch: int  # batch of the models with Mamba blocks (mamba, mambaformer) and of section 4


@dataclass(frozen=True)
class Plan:
    """Warm-up rounds, then timed rounds: budget_s / (one warm-up round), clamped to
    [min_rounds, max_rounds]; a case whose warm-up round alone exceeds the budget gets
    `slow_rounds` (HF's Mamba slow path at the standard size)."""

    warmup: int
    budget_s: float
    min_rounds: int
    max_rounds: int
    slow_rounds: int | None = None


SIZES = {
    "small": Size(n_layers=4, d_model=64, n_heads=2, n_dims=5, n_points=11, batch=64, mamba_batch=64),
    "standard": Size(n_layers=12, d_model=256, n_heads=8, n_dims=20, n_points=41, batch=64, mamba_batch=8),
}
QUICK_SIZES = {
    "small": Size(n_layers=2, d_model=32, n_heads=2, n_dims=5, n_points=11, batch=8, mamba_batch=8),
    "standard": Size(n_layers=2, d_model=64, n_heads=4, n_dims=8, n_points=17, batch=8, mamba_batch=4),
}
PLANS = {
    "small": Plan(warmup=5, budget_s=8.0, min_rounds=10, max_rounds=80),
    "standard": Plan(warmup=1, budget_s=25.0, min_rounds=3, max_rounds=20, slow_rounds=2),
    "micro": Plan(warmup=3, budget_s=4.0, min_rounds=5, max_rounds=100),  # sections 2-4 (small ops)
    "micro_standard": Plan(warmup=1, budget_s=4.0, min_rounds=3, max_rounds=100),  # section 4, standard size
}
QUICK_PLAN = Plan(warmup=1, budget_s=0.0, min_rounds=2, max_rounds=2)

#: Rough guesses of the seconds not covered by the time budgets on a quiet 2-core machine
#: (warm-up, model building, memory child processes: ~5 s of imports each plus MEM_STEPS
#: steps), used only for the run-time estimate printed at the start. HF's Mamba slow path at the
#: standard size dominates: its backward zero-fills a full (batch, d_inner, L, d_state) gradient
#: per position (O(L^2) memory traffic), tens of seconds per step even at batch 8.
_ALLOWANCE_S = {
    "small_case": 20.0, "standard_case": 45.0, "mamba_standard": 250.0, "mambaformer_standard": 30.0,
    "inference": 10.0, "hooks": 15.0, "scan": 70.0, "threads_standard": 25.0, "flops": 5.0,
    "compile": 180.0,
}


def estimate_seconds(sections: set[int]) -> float:
    """A rough wall-time estimate of the full (non-quick) run of `sections`."""
    a, p = _ALLOWANCE_S, PLANS
    s = 0.0
    if 1 in sections:
        s += 4 * (p["small"].budget_s + a["small_case"])
        s += 2 * (p["standard"].budget_s + a["standard_case"]) + a["mamba_standard"]
        s += p["standard"].budget_s + a["mambaformer_standard"]
    if 2 in sections:
        s += p["micro"].budget_s + a["inference"]
    if 3 in sections:
        s += 2 * (p["small"].budget_s + a["hooks"])
    if 4 in sections:
        s += 4 * p["micro"].budget_s + 4 * p["micro_standard"].budget_s + a["scan"]
    if 5 in sections:
        s += p["small"].budget_s + p["standard"].budget_s + a["threads_standard"]
    if 6 in sections:
        s += a["flops"]
    if 7 in sections:
        s += p["small"].budget_s + a["compile"]
    return s


def case_threads(args: argparse.Namespace, d_model: int) -> int:
    return args.threads or auto_threads(d_model)


# ------------------------------------------------------------------------------------ machine
def machine() -> dict:
    import transformers

    return {
        "nproc": n_cpus(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "mem_total_gib": _mem_total_gib(),
        "loadavg_start": os.getloadavg(),
    }


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------- timing
def bench(variants: dict[str, Callable[[], Any]], plan: Plan, setup: dict[str, Callable[[], None]] | None = None) -> dict:
    """Run the variants interleaved; returns {name: stats} (seconds per call).

    `setup[name]`, if given, runs (untimed) before each call of variant `name`.
    """
    setup = setup or {}
    names = list(variants)
    last: dict[str, float] = {}
    for _ in range(plan.warmup):
        for n in names:
            if n in setup:
                setup[n]()
            t0 = time.perf_counter()
            variants[n]()
            last[n] = time.perf_counter() - t0
    per_round = sum(last.values()) if last else 0.0
    rounds = plan.min_rounds if per_round <= 0 else int(plan.budget_s / per_round)
    rounds = max(plan.min_rounds, min(plan.max_rounds, rounds))
    if plan.slow_rounds is not None and per_round > plan.budget_s:
        rounds = plan.slow_rounds
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        order = names[k:] + names[:k]  # A B C, B C A, C A B, ...: each variant in each slot
        for n in order:
            if n in setup:
                setup[n]()
            c0, t0 = time.process_time(), time.perf_counter()
            variants[n]()
            wall[n].append(time.perf_counter() - t0)
            cpu[n].append(time.process_time() - c0)
    return {
        n: {
            "median_s": statistics.median(wall[n]), "min_s": min(wall[n]), "cpu_median_s": statistics.median(cpu[n]),
            "n": len(wall[n]),
        }
        for n in names
    }


# ------------------------------------------------------------------------------------ models
class GargWrapper(nn.Module):
    """The Garg/Campbell ICL model around an HF backbone (key names as in their checkpoints)."""

    def __init__(self, backbone: nn.Module, n_dims: int) -> None:
        super().__init__()
        d = backbone.config.hidden_size
        self._read_in = nn.Linear(n_dims, d)
        self._backbone = backbone
        self._read_out = nn.Linear(d, 1)

    @staticmethod
    def combine(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        b, n, d = xs.shape
        y_wide = torch.cat([ys.view(b, n, 1), torch.zeros(b, n, d - 1, dtype=xs.dtype)], dim=2)
        return torch.stack([xs, y_wide], dim=2).view(b, 2 * n, d)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor, output_hidden_states: bool = False):
        out = self._backbone(
            inputs_embeds=self._read_in(self.combine(xs, ys)), use_cache=False,
            output_hidden_states=output_hidden_states,
        )
        preds = self._read_out(out.last_hidden_state)[:, ::2, 0]
        return (preds, out.hidden_states) if output_hidden_states else preds


def hf_config(arch: str, s: Size):
    import transformers

    common = dict(vocab_size=1, bos_token_id=0, eos_token_id=0, use_cache=False)
    if arch == "gpt2":
        return transformers.GPT2Config(
            n_embd=s.d_model, n_layer=s.n_layers, n_head=s.n_heads, n_positions=2 * s.n_points,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common,
        )
    if arch == "llama":
        return transformers.LlamaConfig(
            hidden_size=s.d_model, intermediate_size=4 * s.d_model, num_hidden_layers=s.n_layers,
            num_attention_heads=s.n_heads, num_key_value_heads=s.n_heads, max_position_embeddings=2 * s.n_points,
            attention_dropout=0.0, **common,
        )
    if arch == "mamba":
        return transformers.MambaConfig(
            hidden_size=s.d_model, num_hidden_layers=s.n_layers, state_size=MAMBA["d_state"],
            expand=MAMBA["expand"], conv_kernel=MAMBA["d_conv"], pad_token_id=0, **common,
        )
    raise ValueError(f"no HF backbone for {arch!r}")


def build_hf(arch: str, s: Size, seed: int) -> GargWrapper:
    import transformers

    cls = {"gpt2": transformers.GPT2Model, "llama": transformers.LlamaModel, "mamba": transformers.MambaModel}[arch]
    torch.manual_seed(seed)
    return GargWrapper(cls(hf_config(arch, s)), s.n_dims)


def convert(w: GargWrapper) -> hi.HookedICLModel:
    return from_hf(w._backbone, w._read_in, w._read_out)


def build_hybrid(s: Size, seed: int) -> hi.HookedICLModel:
    torch.manual_seed(seed)
    return hi.build_model(
        "mambaformer", n_dims=s.n_dims, d_model=s.d_model, n_layers=s.n_layers, n_heads=s.n_heads,
        n_ctx=2 * s.n_points, **MAMBA,
    )


def build_side(arch: str, side: str, s: Size, seed: int) -> nn.Module:
    """One side of a comparison: the HF wrapper, or hookedicl converted from the same wrapper."""
    if arch == "mambaformer":
        return build_hybrid(s, seed)
    w = build_hf(arch, s, seed)
    return w if side == "hf" else convert(w)


def make_batches(s: Size, batch: int, seed: int, n: int = 4) -> list[SimpleNamespace]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        xs = torch.randn(batch, s.n_points, s.n_dims, generator=g)
        w = torch.randn(batch, s.n_dims, generator=g)
        out.append(SimpleNamespace(xs=xs, ys=(xs * w[:, None]).sum(-1), params={"w": w}))
    return out


def train_step(model: nn.Module, batches: list[SimpleNamespace], capture: ActivationRecorder | None = None) -> Callable[[], None]:
    """A closure running one training step (Adam, lr 1e-4, MSE over all positions) per call."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    it = itertools.cycle(batches)
    counter = itertools.count()
    model.train()

    def step() -> None:
        b = next(it)
        opt.zero_grad(set_to_none=True)
        if capture is None:
            preds = model(b.xs, b.ys)
        else:  # a capture step of the trainer (ActivationRecorder.due is true)
            with capture.capture(model, b, next(counter) * capture.every):
                preds = model(b.xs, b.ys)
        loss = (preds - b.ys).pow(2).mean()
        loss.backward()
        opt.step()

    return step


def max_pred_diff(a: nn.Module, b: nn.Module, batch: SimpleNamespace) -> float:
    with torch.no_grad():
        return (a(batch.xs, batch.ys) - b(batch.xs, batch.ys)).abs().max().item()


def without_hookpoints(model: nn.Module) -> tuple[nn.Module, int]:
    """A deep copy with every HookPoint module replaced by nn.Identity (and how many there were)."""
    m = copy.deepcopy(model)
    names = [n for n, mod in m.named_modules() if isinstance(mod, HookPoint)]
    for name in names:
        parent, _, attr = name.rpartition(".")
        setattr(m.get_submodule(parent) if parent else m, attr, nn.Identity())
    return m, len(names)


# ------------------------------------------------------------------------------ memory child
def _status_kib(field: str) -> int | None:
    """A `VmHWM` / `VmRSS` value (KiB) of this process from /proc/self/status (None if unavailable)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (VmHWM) to its current RSS (Linux `clear_refs` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def child_main(spec: dict) -> dict:
    """Run in a fresh process: build one side, run `steps` training steps, report RSS marks (KiB).

    `getrusage(RUSAGE_SELF or RUSAGE_CHILDREN).ru_maxrss` is not used for the figures: on Linux a
    child's ru_maxrss starts from the parent's peak RSS at exec time (this benchmark's parent grows
    to GBs), so it over-reports. VmHWM of /proc/self/status belongs to the child's own address space.
    """
    torch.set_num_threads(spec["threads"])
    s = Size(**spec["size"])
    model = build_side(spec["arch"], spec["side"], s, spec["seed"])
    gc.collect()
    batches = make_batches(s, spec["batch"], spec["seed"] + 1)
    step = train_step(model, batches)
    hwm_setup = _status_kib("VmHWM")  # imports + building (+ the HF source model for hookedicl)
    reset = _reset_peak_rss()
    rss_before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    for _ in range(spec["steps"]):
        step()
    wall = time.perf_counter() - t0
    hwm_train = _status_kib("VmHWM")
    return {
        "vmhwm_setup_kib": hwm_setup, "peak_reset": reset, "vmrss_before_steps_kib": rss_before,
        "vmhwm_steps_kib": hwm_train, "ru_maxrss_kib_unreliable": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "steps": spec["steps"], "steps_wall_s": wall,
    }


def peak_memory(arch: str, side: str, s: Size, batch: int, threads: int, seed: int, steps: int) -> dict:
    spec = {"arch": arch, "side": side, "size": asdict(s), "batch": batch, "threads": threads, "seed": seed, "steps": steps}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_models", "--child", json.dumps(spec)],
        cwd=ROOT, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child for {arch}/{side} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out["vmhwm_steps_kib"] is None:
        raise RuntimeError("/proc/self/status has no VmHWM: peak memory cannot be measured on this system")
    out["peak_mib"] = max(out["vmhwm_setup_kib"], out["vmhwm_steps_kib"]) / 1024
    out["train_peak_mib"] = out["vmhwm_steps_kib"] / 1024
    out["rise_mib"] = (out["vmhwm_steps_kib"] - out["vmrss_before_steps_kib"]) / 1024
    return out


# ---------------------------------------------------------------------------- 1. training
def section_training(args, sizes, plans, report) -> dict:
    rows = []
    for size_name, arch in itertools.product(("small", "standard"), ("gpt2", "llama", "mamba", "mambaformer")):
        if arch not in args.archs.split(",") or size_name not in args.sizes.split(","):
            continue
        s = sizes[size_name]
        batch = s.mamba_batch if arch in ("mamba", "mambaformer") else s.batch
        threads = case_threads(args, s.d_model)
        torch.set_num_threads(threads)
        log(f"[1] training {arch} {size_name} (batch {batch}, {threads} thread(s)) ...")
        batches = make_batches(s, batch, args.seed + 1)
        models: dict[str, nn.Module] = {}
        parity = None
        if arch == "mambaformer":
            models["hookedicl"] = build_hybrid(s, args.seed)
        else:
            w = build_hf(arch, s, args.seed)
            models["hookedicl"] = convert(w)
            models["hf"] = w
            parity = max_pred_diff(models["hookedicl"], w, batches[0])
        n_params = sum(p.numel() for p in models["hookedicl"].parameters())
        steps = {k: train_step(m, batches) for k, m in models.items()}
        stats = bench(steps, plans[size_name])
        row: dict[str, Any] = {
            "arch": arch, "size": size_name, "batch": batch, "threads": threads, "n_params": n_params,
            "max_pred_diff": parity, "time": stats,
        }
        if arch == "gpt2" and size_name == "standard":
            m = models["hookedicl"]
            row["matmul_params"] = sum(mod.weight.numel() for mod in m.modules() if isinstance(mod, nn.Linear))
            row["n_layers"], row["d_model"], row["tokens"] = len(m.blocks), m.spec.d_model, 2 * s.n_points
        if arch != "mambaformer":
            if arch in ("gpt2", "llama"):
                row["hf_attn_impl"] = getattr(models["hf"]._backbone.config, "_attn_implementation", None)
            del w
        del models, steps
        gc.collect()
        row["memory"] = {
            side: peak_memory(arch, side, s, batch, threads, args.seed, args.mem_steps) for side in stats
        }
        rows.append(row)
        log(f"    " + ", ".join(f"{k} {v['median_s'] * 1e3:.1f} ms/step (n={v['n']})" for k, v in stats.items()))

    report("## 1. Training step (Adam, fp32, interleaved)\n")
    report(
        "| model | size | batch | threads | steps timed per side | hookedicl ms/step (CPU) | HF ms/step (CPU) | hookedicl prompts/s "
        "| HF prompts/s | throughput hookedicl/HF | peak RSS in training hookedicl / HF (MiB) | rise over "
        "the steps hookedicl / HF (MiB) | memory hookedicl/HF (peak; rise) | max pred. diff |"
    )
    report("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        h, f = r["time"]["hookedicl"], r["time"].get("hf")
        mh, mf = r["memory"]["hookedicl"], r["memory"].get("hf")
        tp_h = r["batch"] / h["median_s"]
        mem_ratio = "—"
        if mf:
            rise = f"{mh['rise_mib'] / mf['rise_mib']:.2f}" if mf["rise_mib"] > 0 else "—"
            mem_ratio = f"{mh['train_peak_mib'] / mf['train_peak_mib']:.2f}; {rise}"
        cells = [
            r["arch"], r["size"], str(r["batch"]), str(r["threads"]), str(h["n"]),
            f"{h['median_s'] * 1e3:.1f} ({h['cpu_median_s'] * 1e3:.0f})",
            f"{f['median_s'] * 1e3:.1f} ({f['cpu_median_s'] * 1e3:.0f})" if f else "— (no HF peer)",
            f"{tp_h:.0f}",
            f"{r['batch'] / f['median_s']:.0f}" if f else "—",
            f"{f['median_s'] / h['median_s']:.2f}×" if f else "—",
            f"{mh['train_peak_mib']:.0f} / {mf['train_peak_mib']:.0f}" if mf else f"{mh['train_peak_mib']:.0f} / —",
            f"{mh['rise_mib']:.0f} / {mf['rise_mib']:.0f}" if mf else f"{mh['rise_mib']:.0f} / —",
            mem_ratio,
            f"{r['max_pred_diff']:.1e}" if r["max_pred_diff"] is not None else "—",
        ]
        report("| " + " | ".join(cells) + " |")
    ss, sd = sizes["small"], sizes["standard"]
    report(
        f"\nSmall: {ss.n_layers} layers, d_model {ss.d_model}, {ss.n_heads} heads, d = {ss.n_dims}, "
        f"{ss.n_points} points. Standard: {sd.n_layers} layers, d_model {sd.d_model}, {sd.n_heads} heads, "
        f"d = {sd.n_dims}, {sd.n_points} points. Mamba: d_state {MAMBA['d_state']}, expand {MAMBA['expand']}, "
        f"d_conv {MAMBA['d_conv']} on both sides; at the standard size Mamba is measured at batch "
        f"{sd.mamba_batch} on both sides (HF's slow path takes minutes per step at batch {sd.batch}), and "
        f"mambaformer (one leading Mamba block + {sd.n_layers} blocks of attention and a Mamba ffn; "
        f"hookedicl only) at the same batch, so every Mamba-containing row shares one batch and the run "
        f"stays short. Step time: median of interleaved steps (n per side in the JSON); CPU = process "
        f"CPU time. Memory: a fresh child process per side builds the model and runs {args.mem_steps} training "
        f"steps; its peak-RSS mark (VmHWM) is reset just before the first step, so \"peak RSS in training\" is "
        f"the largest resident set during the steps (process baseline of imported torch/transformers and "
        f"the model included) and \"rise\" is that peak minus the RSS just before the first step (activations, "
        f"gradients, Adam state). `ru_maxrss` is not used: a child's value starts from the parent's peak. "
        f"Max pred. diff: largest |hookedicl − HF| prediction on one batch before "
        f"training. HF attention implementation: "
        f"{', '.join(sorted({str(r['hf_attn_impl']) for r in rows if 'hf_attn_impl' in r})) or '—'}."
    )
    if any(not m["peak_reset"] for r in rows for m in r["memory"].values()):
        report("\n**Note:** the peak-RSS mark could not be reset on this system: peaks include imports and "
               "model building.")
    return {"rows": rows}


# ---------------------------------------------------------------------------- 2. inference
def section_inference(args, sizes, plans, report) -> dict:
    s = sizes["small"]
    threads = case_threads(args, s.d_model)
    torch.set_num_threads(threads)
    log(f"[2] inference gpt2 small (batch {s.batch}, {threads} thread(s)) ...")
    w = build_hf("gpt2", s, args.seed).eval()
    m = convert(w).eval()
    b = make_batches(s, s.batch, args.seed + 1, n=1)[0]
    n_hooks = len(m.hook_dict)
    with torch.no_grad():
        _, full = m.run_with_cache(b.xs, b.ys)
        cached_mib = sum(t.numel() * t.element_size() for t in full.values()) / 2**20
        n_cached = len(full)
    del full

    def nograd(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    variants = {
        "hookedicl forward, no hooks": nograd(lambda: m(b.xs, b.ys)),
        "hookedicl run_with_cache, every hook": nograd(lambda: m.run_with_cache(b.xs, b.ys)),
        "hookedicl run_with_cache, blocks.*.hook_resid_post": nograd(
            lambda: m.run_with_cache(b.xs, b.ys, names_filter=lambda n: n.endswith("hook_resid_post"))
        ),
        "HF wrapper forward": nograd(lambda: w(b.xs, b.ys)),
        "HF wrapper forward, output_hidden_states": nograd(lambda: w(b.xs, b.ys, output_hidden_states=True)),
    }
    stats = bench(variants, plans["micro"])
    base = stats["hookedicl forward, no hooks"]["median_s"]
    report("## 2. Inference with the activation cache (gpt2, small size, no grad)\n")
    report("| variant | ms/batch (CPU) | prompts/s | time vs hookedicl plain forward |")
    report("|---|---|---|---|")
    for name, st in stats.items():
        report(f"| {name} | {st['median_s'] * 1e3:.2f} ({st['cpu_median_s'] * 1e3:.2f}) | "
               f"{s.batch / st['median_s']:.0f} | {st['median_s'] / base:.2f}× |")
    report(f"\nBatch {s.batch}, {threads} thread(s). Every hook: {n_cached} of {n_hooks} hook points cached "
           f"({cached_mib:.1f} MiB per batch); hooking `hook_pattern`/`hook_attn_scores` also switches attention "
           f"from SDPA to the explicit pattern. HF's `output_hidden_states` returns the residual stream "
           f"between blocks (its nearest counterpart of caching `hook_resid_post`).")
    del w, m, variants
    gc.collect()
    return {"batch": s.batch, "threads": threads, "n_hook_points": n_hooks, "n_cached": n_cached,
            "cached_mib": cached_mib, "time": stats}


# ---------------------------------------------------------------------------- 3. hook cost
def section_hooks(args, sizes, plans, report) -> dict:
    s = sizes["small"]
    threads = case_threads(args, s.d_model)
    torch.set_num_threads(threads)
    rows = []
    for arch in ("gpt2", "mamba"):
        batch = s.mamba_batch if arch == "mamba" else s.batch
        log(f"[3] hook cost {arch} small (batch {batch}, {threads} thread(s)) ...")
        batches = make_batches(s, batch, args.seed + 1)
        m = convert(build_hf(arch, s, args.seed))
        ident, n_hp = without_hookpoints(m)
        capt = copy.deepcopy(m)
        with tempfile.TemporaryDirectory() as tmp:
            recorder = ActivationRecorder(
                Path(tmp) / "activations", resolve_hooks(capt.hook_dict, CAPTURE_HOOKS),
                every=CAPTURE_EVERY, n_prompts=None, positions="all", dtype="float32",
            )
            variants = {
                "idle hook points": train_step(m, batches),
                "HookPoints -> nn.Identity": train_step(ident, batches),
                "capture step": train_step(capt, batches, capture=recorder),
            }
            stats = bench(variants, plans["small"])
        plain = stats["idle hook points"]["median_s"]
        bare = stats["HookPoints -> nn.Identity"]["median_s"]
        cap = stats["capture step"]["median_s"]
        rows.append({
            "arch": arch, "batch": batch, "n_hook_points": n_hp, "n_captured": len(recorder.hooks), "time": stats,
            "idle_overhead_pct": 100 * (plain - bare) / bare,
            "capture_extra_s": cap - plain,
            "capture_amortised_pct": 100 * (cap - plain) / (CAPTURE_EVERY * plain),
        })
        del m, ident, capt, variants
        gc.collect()

    report("## 3. Cost of hook points during training (small size)\n")
    report("| model | batch | hook points | Identity copy ms/step | idle hook points ms/step | idle cost | "
           "capture-step ms | capture extra per capture | capture cost every "
           f"{CAPTURE_EVERY} steps |")
    report("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["time"]
        report(
            f"| {r['arch']} | {r['batch']} | {r['n_hook_points']} | {t['HookPoints -> nn.Identity']['median_s'] * 1e3:.2f} "
            f"| {t['idle hook points']['median_s'] * 1e3:.2f} | {r['idle_overhead_pct']:+.1f}% "
            f"| {t['capture step']['median_s'] * 1e3:.2f} | {r['capture_extra_s'] * 1e3:+.2f} ms "
            f"| {r['capture_amortised_pct']:+.3f}% of training time |"
        )
    report(f"\n{threads} thread(s). (a) \"idle hook points\" is the plain training step (nothing hooked). "
           f"(b) idle cost = (idle − Identity) / Identity, the Identity copy being the same weights with every "
           f"`HookPoint` replaced by `nn.Identity`. (c) a capture step records `{CAPTURE_HOOKS[0]}` for the whole "
           f"batch in float32 via `ActivationRecorder` (hooks + copy + safetensors shard + index), as the "
           f"trainer does with `capture.every={CAPTURE_EVERY}`; its cost share = extra / ({CAPTURE_EVERY} × "
           f"plain step). Differences within a few % are inside the noise of a shared machine.")
    return {"threads": threads, "rows": rows}


# ------------------------------------------------------------------------------- 4. scans
def section_scan(args, sizes, plans, report) -> dict:
    from transformers.models.mamba.modeling_mamba import MambaMixer as HFMambaMixer
    from transformers.models.mamba.modeling_mamba import mamba_selective_scan as hf_scan

    rows = []
    for size_name in ("small", "standard"):
        s = sizes[size_name]
        batch, L, d = s.mamba_batch, 2 * s.n_points, s.d_model
        d_inner, n = MAMBA["expand"] * d, MAMBA["d_state"]
        threads = case_threads(args, d)
        torch.set_num_threads(threads)
        log(f"[4] scan {size_name} (batch {batch}, L {L}, d_inner {d_inner}, {threads} thread(s)) ...")
        g = torch.Generator().manual_seed(args.seed)
        u = torch.randn(batch, L, d_inner, generator=g)
        dt = nn.functional.softplus(torch.randn(batch, L, d_inner, generator=g) - 3)
        A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d_inner, 1)
        B, C = torch.randn(batch, L, n, generator=g), torch.randn(batch, L, n, generator=g)
        D = torch.ones(d_inner)
        scan_fns = {
            "hookedicl chunked": lambda u, dt, A, B, C, D: hscan.selective_scan(u, dt, A, B, C, D, method="chunked"),
            "hookedicl parallel": lambda u, dt, A, B, C, D: hscan.selective_scan(u, dt, A, B, C, D, method="parallel"),
            "hookedicl sequential": lambda u, dt, A, B, C, D: hscan.selective_scan(u, dt, A, B, C, D, method="sequential"),
            "HF mamba_selective_scan": lambda u, dt, A, B, C, D: hf_scan(
                u.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D=D
            ).transpose(1, 2),
        }
        with torch.no_grad():
            ref = scan_fns["hookedicl sequential"](u, dt, A, B, C, D)
            scan_diff = {k: (f(u, dt, A, B, C, D) - ref).abs().max().item() for k, f in scan_fns.items()}
        leaves = [t.clone().requires_grad_(True) for t in (u, dt, A, B, C, D)]
        cot = torch.randn(batch, L, d_inner, generator=g)

        def fwd(f, *a):
            def run():
                with torch.no_grad():
                    f(*a)
            return run

        def fwd_bwd(f, a, params, cotangent):
            def run():
                (f(*a) * cotangent).sum().backward()
                for p in params:
                    p.grad = None
            return run

        plan = plans["micro" if size_name == "small" else "micro_standard"]
        stats_scan_f = bench({k: fwd(f, u, dt, A, B, C, D) for k, f in scan_fns.items()}, plan)
        stats_scan_b = bench({k: fwd_bwd(f, leaves, leaves, cot) for k, f in scan_fns.items()}, plan)

        # whole mixer, same weights
        torch.manual_seed(args.seed)
        hf_mixer = HFMambaMixer(hf_config("mamba", s), layer_idx=0)
        ours = {meth: MambaMixer(d, **MAMBA) for meth in ("chunked", "parallel", "sequential")}
        for meth, mod in ours.items():
            mod.load_state_dict(hf_mixer.state_dict(), strict=True)
            mod.scan_method = meth
        x = torch.randn(batch, L, d, generator=g)
        xg = x.clone().requires_grad_(True)
        mix_cot = torch.randn(batch, L, d, generator=g)
        mixers = {**{f"hookedicl MambaMixer {m}": mod for m, mod in ours.items()}, "HF MambaMixer": hf_mixer}
        with torch.no_grad():
            mix_ref = hf_mixer(x)
            mix_diff = {k: (mod(x) - mix_ref).abs().max().item() for k, mod in mixers.items()}
        stats_mix_f = bench({k: fwd(mod, x) for k, mod in mixers.items()}, plan)
        stats_mix_b = bench(
            {k: fwd_bwd(mod, (xg,), [xg, *mod.parameters()], mix_cot) for k, mod in mixers.items()}, plan
        )
        rows.append({
            "size": size_name, "batch": batch, "L": L, "d_model": d, "d_inner": d_inner, "d_state": n, "threads": threads,
            "scan": {"forward": stats_scan_f, "forward_backward": stats_scan_b, "max_diff": scan_diff},
            "mixer": {"forward": stats_mix_f, "forward_backward": stats_mix_b, "max_diff": mix_diff},
        })
        del hf_mixer, ours, mixers, leaves
        gc.collect()

    report("## 4. Mamba selective scan and mixer\n")
    report("| size (batch × L × d_inner × d_state) | level | implementation | forward ms (CPU) | forward+backward ms (CPU) "
           "| fwd vs HF | fwd+bwd vs HF | max diff |")
    report("|---|---|---|---|---|---|---|---|")
    for r in rows:
        shape = f"{r['size']} ({r['batch']}×{r['L']}×{r['d_inner']}×{r['d_state']})"
        for level, hf_name in (("scan", "HF mamba_selective_scan"), ("mixer", "HF MambaMixer")):
            sec = r[level]
            for k in sec["forward"]:
                f, b = sec["forward"][k], sec["forward_backward"][k]
                hf_f, hf_b = sec["forward"][hf_name]["median_s"], sec["forward_backward"][hf_name]["median_s"]
                report(f"| {shape} | {level} | {k} | {f['median_s'] * 1e3:.2f} ({f['cpu_median_s'] * 1e3:.1f}) "
                       f"| {b['median_s'] * 1e3:.2f} ({b['cpu_median_s'] * 1e3:.1f}) | {hf_f / f['median_s']:.2f}× "
                       f"| {hf_b / b['median_s']:.2f}× | {sec['max_diff'][k]:.1e} |")
    report("\n\"vs HF\" = HF time / this time (> 1: faster than HF). Scan level: y from (u, Δ, A, B, C, D), "
           "gradients for all six. Mixer level: in_proj, conv, projections, scan, gate, out_proj; HF's mixer "
           "on CPU runs its slow path (the recurrent loop). Max diff: scan vs the sequential reference, mixer vs "
           "HF's mixer, on the same inputs. The standard size uses the Mamba batch of section 1.")
    return {"rows": rows}


# ------------------------------------------------------------------------------ 5. threads
def section_threads(args, sizes, plans, report) -> dict:
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    counts = sorted({c for c in (1, 2, nproc) if c <= nproc})
    rows = []
    if len(counts) < 2:
        report("## 5. Intra-op threads\n\nOnly one core available: nothing to compare.")
        return {"rows": rows}
    for size_name in ("small", "standard"):
        s = sizes[size_name]
        log(f"[5] threads gpt2 {size_name}: {counts} ...")
        m = convert(build_hf("gpt2", s, args.seed))
        step = train_step(m, make_batches(s, s.batch, args.seed + 1))
        names = {c: f"{c} thread{'s' if c > 1 else ''}" for c in counts}
        stats = bench({names[c]: step for c in counts}, plans[size_name],
                      setup={names[c]: (lambda c=c: torch.set_num_threads(c)) for c in counts})
        rows.append({"size": size_name, "d_model": s.d_model, "batch": s.batch,
                     "auto_threads": auto_threads(s.d_model), "time": {str(c): stats[names[c]] for c in counts}})
        del m, step
        gc.collect()
    report("## 5. Intra-op threads (gpt2 training step)\n")
    report("| size | d_model | batch | " + " | ".join(f"{c} thr. ms/step (CPU)" for c in counts)
           + " | speed-up " + f"{counts[-1]} vs 1 thr. | auto_threads |")
    report("|---|---|---|" + "---|" * len(counts) + "---|---|")
    for r in rows:
        t = r["time"]
        report(f"| {r['size']} | {r['d_model']} | {r['batch']} | "
               + " | ".join(f"{t[str(c)]['median_s'] * 1e3:.1f} ({t[str(c)]['cpu_median_s'] * 1e3:.0f})" for c in counts)
               + f" | {t['1']['median_s'] / t[str(counts[-1])]['median_s']:.2f}× | {r['auto_threads']} |")
    report("\nThe same model and batches; `torch.set_num_threads` is switched (untimed) before each step, "
           "the thread counts interleaved.")
    return {"counts": counts, "rows": rows}


# ---------------------------------------------------------------------------------- 6. FLOPs
def matmul_gflops(threads: int, n: int = 2048, reps: int = 10) -> dict:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"threads": threads, "n": n, "median_s": med, "gflops": 2 * n**3 / med / 1e9,
            "best_gflops": 2 * n**3 / min(times) / 1e9}


def section_flops(args, sizes, report, training: dict | None) -> dict:
    s = sizes["standard"]
    threads = case_threads(args, s.d_model)
    reps = 2 if args.quick else 10
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    counts = sorted({1, threads, min(2, nproc)})
    log(f"[6] fp32 matmul peak at {counts} thread(s) ...")
    peaks = {t: matmul_gflops(t, reps=reps) for t in counts}
    out: dict[str, Any] = {"peak": {str(k): v for k, v in peaks.items()}}
    report("## 6. Standard-size gpt2 training: achieved FLOP/s\n")
    peak_line = "; ".join(f"{t} thread(s): {p['gflops']:.0f} GFLOP/s (best {p['best_gflops']:.0f})" for t, p in peaks.items())
    report(f"Measured fp32 matmul peak (`torch.mm`, 2048 × 2048, median of {reps}): {peak_line}.\n")
    row = next((r for r in (training or {}).get("rows", []) if r["arch"] == "gpt2" and r["size"] == "standard"), None)
    if row is None:
        report("(Section 1 was not run: no training step time to compare.)")
        return out
    P, T, L, d, batch = row["matmul_params"], row["tokens"], row["n_layers"], row["d_model"], row["batch"]
    fwd = batch * (2 * P * T + 4 * L * T * T * d)
    train = 3 * fwd
    peak = peaks[row["threads"]]["gflops"]
    out.update({"matmul_params": P, "tokens": T, "flops_forward": fwd, "flops_train_step": train, "sides": {}})
    report("| side | ms/step | GFLOP/step | achieved GFLOP/s | % of matmul peak |")
    report("|---|---|---|---|---|")
    for side, st in row["time"].items():
        achieved = train / st["median_s"] / 1e9
        out["sides"][side] = {"gflops": achieved, "pct_peak": 100 * achieved / peak}
        report(f"| {side} | {st['median_s'] * 1e3:.0f} | {train / 1e9:.1f} | {achieved:.1f} | {100 * achieved / peak:.0f}% |")
    report(f"\nFLOPs per step = 3 × batch × (2·P·T + 4·L·T²·d) with P = {P:,} Linear weights, T = {T} tokens, "
           f"L = {L}, d = {d}, batch {batch} (= {train / 1e9:.1f} GFLOP; backward = 2 × forward, attention "
           f"over the full T × T); step times from section 1 at {row['threads']} thread(s).")
    return out


# ------------------------------------------------------------------------------ 7. compile
def section_compile(args, sizes, plans, report) -> dict:
    """Training step, eager vs `torch.compile` (dynamic=False), hookedicl and the HF wrapper."""
    s = sizes["small"]
    rows = []
    for arch in [a for a in args.compile_archs.split(",") if a]:
        threads = case_threads(args, s.d_model)
        torch.set_num_threads(threads)
        batches = make_batches(s, s.batch, args.seed + 1)
        variants, compile_s = {}, {}
        for side in ("hookedicl", "hf"):
            for compiled in (False, True):
                model = build_side(arch, side, s, args.seed)
                name = f"{side} {'compiled' if compiled else 'eager'}"
                step = train_step(torch.compile(model, dynamic=False) if compiled else model, batches)
                log(f"[7] {arch} {name}: first step ...")
                t0 = time.perf_counter()
                step()  # compiles the forward and backward graphs when compiled
                compile_s[name] = time.perf_counter() - t0
                variants[name] = step
        stats = bench(variants, plans["small"])
        rows.append({"arch": arch, "threads": threads, "batch": s.batch, "first_step_s": compile_s, "time": stats})
        del variants
        gc.collect()
    report("## 7. torch.compile (training step, small size)\n")
    report("| model | side | first step s (compiles) | eager ms/step (CPU) | compiled ms/step (CPU) | compiled speed-up |")
    report("|---|---|---|---|---|---|")
    for r in rows:
        for side in ("hookedicl", "hf"):
            e, c = r["time"][f"{side} eager"], r["time"][f"{side} compiled"]
            report(f"| {r['arch']} | {side} | {r['first_step_s'][side + ' compiled']:.1f} | "
                   f"{e['median_s'] * 1e3:.1f} ({e['cpu_median_s'] * 1e3:.0f}) | "
                   f"{c['median_s'] * 1e3:.1f} ({c['cpu_median_s'] * 1e3:.0f}) | {e['median_s'] / c['median_s']:.2f}× |")
    if rows:
        r = rows[0]
        report(f"\nBatch {r['batch']}, {r['threads']} thread(s); the four variants interleaved. "
               "`torch.compile(model, dynamic=False)`, inductor's default mode.")
    return {"rows": rows}


# ------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 warm-up + 2 timed steps: a smoke run")
    ap.add_argument("--out", type=str, default=None, help="also write the results as JSON here")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads for every case (default: auto_threads(d_model))")
    ap.add_argument("--sections", type=str, default="1,2,3,4,5,6", help="comma-separated sections to run")
    ap.add_argument("--archs", type=str, default="gpt2,llama,mamba,mambaformer", help="section 1: architectures to time")
    ap.add_argument("--sizes", type=str, default="small,standard", help="section 1: sizes to time")
    ap.add_argument("--compile-archs", type=str, default="gpt2", help="section 7: architectures to compile")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mem-steps", type=int, default=MEM_STEPS, help="training steps per memory child process")
    ap.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    import transformers

    transformers.logging.set_verbosity_error()
    if args.child:
        print(json.dumps(child_main(json.loads(args.child))), flush=True)
        return {}

    sections = {int(x) for x in args.sections.split(",") if x.strip()}
    sizes = QUICK_SIZES if args.quick else SIZES
    plans = {k: QUICK_PLAN for k in PLANS} if args.quick else PLANS
    threads_before = torch.get_num_threads()
    info = machine()
    t_start = time.perf_counter()
    command = "python -m benchmarks.bench_models" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    lines: list[str] = []

    def report(line: str = "") -> None:
        lines.append(line)
        print(line, flush=True)

    report("# hookedicl vs HF-backbone ICL models\n")
    report(f"Command: `{command}`" + ("  (QUICK smoke run: tiny sizes, 2 timed steps; numbers are meaningless)" if args.quick else ""))
    report(f"Machine: {info['cpu_model']}, nproc = {info['nproc']}, "
           f"{info['mem_total_gib']:.1f} GiB RAM; Python {info['python']}, torch {info['torch']} "
           f"(default intra-op threads {info['torch_threads_default']}), transformers {info['transformers']}; "
           f"load average at start {info['loadavg_start'][0]:.2f}.")
    report(f"Estimated wall time of the full (non-quick) run of these sections: about "
           f"{estimate_seconds(sections) / 60:.0f} min (rough, for a quiet 2-core machine).")
    report("")
    result: dict[str, Any] = {"config": {**vars(args), "sizes": {k: asdict(v) for k, v in sizes.items()},
                                         "plans": {k: asdict(v) for k, v in plans.items()}},
                              "machine": info, "sections": {}}
    steps = [
        (1, "training", lambda: section_training(args, sizes, plans, report)),
        (2, "inference", lambda: section_inference(args, sizes, plans, report)),
        (3, "hooks", lambda: section_hooks(args, sizes, plans, report)),
        (4, "scan", lambda: section_scan(args, sizes, plans, report)),
        (5, "threads", lambda: section_threads(args, sizes, plans, report)),
        (6, "flops", lambda: section_flops(args, sizes, report, result["sections"].get("training"))),
        (7, "compile", lambda: section_compile(args, sizes, plans, report)),
    ]
    try:
        for number, name, fn in steps:
            if number in sections:
                t0 = time.perf_counter()
                result["sections"][name] = fn()
                result["sections"][name]["wall_s"] = time.perf_counter() - t0
                report("")
                log(f"    section {number} done in {time.perf_counter() - t0:.0f} s "
                    f"(total {time.perf_counter() - t_start:.0f} s)")
    finally:
        torch.set_num_threads(threads_before)
    info["loadavg_end"] = os.getloadavg()
    total = time.perf_counter() - t_start
    result["total_wall_s"] = total
    report(f"Load average {info['loadavg_start'][0]:.2f} -> {info['loadavg_end'][0]:.2f}; "
           f"total wall time {total:.0f} s.")
    result["report_markdown"] = "\n".join(lines)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
