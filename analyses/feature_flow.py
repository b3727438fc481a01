"""The fine-tune / merge / SAE feature-flow study at CPU scale (results in docs/sae_merging.md).

    python -m analyses.feature_flow                       # the documented run
    python -m analyses.feature_flow --runs /tmp/ff --out /tmp/ff/study \\
        --base-steps 200 --ft-steps 100 --sae-steps 100 --n-prompts 96 --eval-prompts 64   # smoke run

1. Base: the GPT-2 of analyses/configs/feature_flow/base.yaml trained on noiseless linear
   regression (d = 5, 11 points), capturing every block's residual stream.
2. Two fine-tunes from the base (`init_from`): sparse linear regression (ft_sparse.yaml) and noisy
   linear regression (ft_noisy.yaml).
3. The fine-tunes merged per tensor by slerp at t (and, for comparison, linearly).
4. ICL scores of every model on every task against the task's baseline (the score_baseline of the
   config that defines the task), on the same prompts.
5. SAEs (TopK with two seeds a, b per model and hook; an L1-ReLU SAE on the base too) on residual
   hooks, trained on the same prompts for all models (an equal mixture of the three tasks); FVU,
   L0, dead fraction on held-out prompts; the ICL score with the reconstruction spliced in.
6. Feature flow: persisting / emerging / vanishing features (decoder cosine, one-to-one and
   best-match, threshold sweep) from the base to each model and from each fine-tune to the merge,
   between SAEs of different seeds (ref[a] -> other[b]); the seed control model[a] -> model[b]
   bounds what can persist; `shared init` (ref[a] -> other[a]) shows how much a shared SAE
   initialisation inflates the matches. Origins of the merged model's features; correlations of
   features with task quantities.

Writes to --out: tables (CSV + Markdown), figures (PNG + SVG), the SAEs and summary.json.
Runs that already exist in --runs are resumed (a finished run is reused as it is).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import hookedicl.baselines as B
from analyses.reproductions import markdown
from hookedicl.analysis import features as F
from hookedicl.analysis.merge import merge_runs
from hookedicl.analysis.sae import SAEConfig, save_sae, train_sae
from hookedicl.analysis.sae_eval import collect_activations, sae_metrics, splice_effect
from hookedicl.evaluation import evaluate
from hookedicl.io import atomic_write_json, atomic_write_text
from hookedicl.tasks import TaskBatch
from hookedicl.training import Run, TrainConfig, train
from hookedicl.viz import plot_error_curves, save_figure
from hookedicl.viz._backend import pyplot

CONFIGS = Path(__file__).parent / "configs" / "feature_flow"
TASK_OF = {"linear": "base", "sparse": "ft_sparse", "noisy": "ft_noisy"}  # task -> the config that defines it
MODELS = ("base", "ft_sparse", "ft_noisy", "merged")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_table(df: pd.DataFrame, out: Path, name: str, floatfmt: str = ".4g") -> None:
    atomic_write_text(out / f"{name}.csv", df.to_csv(index=False))
    atomic_write_text(out / f"{name}.md", markdown(df, floatfmt) + "\n")


def write_figure(fig: Any, out: Path, name: str) -> None:
    save_figure(fig, out / "figures" / name)
    pyplot().close(fig)


# ------------------------------------------------------------------------------ models
def config(name: str, steps: int | None, init_from: str | None = None) -> TrainConfig:
    d = TrainConfig.load(CONFIGS / f"{name}.yaml").model_dump()
    if steps is not None:
        d["steps"] = steps
    if "init_from" in d:
        d["init_from"] = init_from
    return TrainConfig.model_validate(d)


def train_models(args: argparse.Namespace) -> dict[str, Run]:
    runs: dict[str, Run] = {}
    base_dir = args.runs / "base"
    jobs = [("base", config("base", args.base_steps), base_dir)]
    jobs += [(n, config(n, args.ft_steps, init_from=str(base_dir)), args.runs / n) for n in ("ft_sparse", "ft_noisy")]
    for name, cfg, out in jobs:
        log(f"train {name} ({cfg.steps} steps) -> {out}")
        runs[name] = train(cfg, out, resume=(out / "config.yaml").exists())
    return runs


def merged_run(args: argparse.Namespace, runs: dict[str, Run], method: str) -> Run:
    out = args.runs / ("merged" if method == "slerp" else f"merged_{method}")
    if (out / "config.yaml").exists():
        lin = Run(out).lineage or {}
        parents = [p["sha256_model"] for p in lin.get("parents", [])]
        current = [_newest_sha(runs[n]) for n in ("ft_sparse", "ft_noisy")]
        if lin.get("how") == "merge" and lin.get("method") == method and lin.get("t") == args.t and parents == current:
            log(f"reuse {out}")
            return Run(out)
        raise SystemExit(f"{out} holds a different merge (parents, method or t changed); delete it to re-merge")
    log(f"merge ft_sparse + ft_noisy ({method}, t={args.t}) -> {out}")
    return merge_runs(runs["ft_sparse"], runs["ft_noisy"], out, method=method, t=args.t)


def _newest_sha(run: Run) -> str:
    from hookedicl.training.checkpoints import latest_good

    entry = latest_good(run.checkpoint_dir)
    return entry["sha256_model"] if entry else ""


# --------------------------------------------------------------------------- ICL scores
def tasks_and_baselines(runs: dict[str, Run]) -> dict[str, tuple[Any, str, Any]]:
    """task label -> (task, baseline name, baseline predictor), from the configs of the runs."""
    out = {}
    for label, owner in TASK_OF.items():
        cfg = runs[owner].config
        name = cfg.eval.score_baseline
        out[label] = (cfg.build_task(), name, B.get(name, **cfg.eval.baseline_kwargs.get(name, {})))
    return out


def icl_scores(models: dict[str, Any], tasks: dict[str, tuple[Any, str, Any]], n_points: int, args: argparse.Namespace) -> tuple[pd.DataFrame, Any]:
    rows, fig_curves = [], {}
    for label, (task, base_name, base) in tasks.items():
        log(f"evaluate {len(models)} models on {label} ({args.eval_n} prompts, baseline {base_name})")
        res = evaluate({**models, base_name: base}, task, n_prompts=args.eval_n, n_points=n_points, seed=args.seed + 7)
        d = task.n_dims
        for name in models:
            s = res.icl_score(name, base_name)
            err = res.normalized_errors(name).mean(0)
            rows.append({
                "task": label, "model": name, "baseline": base_name, "icl_score": s.value, "ci_low": s.ci_low, "ci_high": s.ci_high,
                f"err_k{d}": float(err[d]), f"err_k{2 * d}": float(err[2 * d]),
            })
        base_err = res.normalized_errors(base_name).mean(0)
        rows.append({"task": label, "model": f"({base_name})", "baseline": base_name, "icl_score": 1.0, "ci_low": 1.0, "ci_high": 1.0,
                     f"err_k{d}": float(base_err[d]), f"err_k{2 * d}": float(base_err[2 * d])})
        fig_curves[label] = res.curves(predictors=[*models, base_name], n_bootstrap=300)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(fig_curves), figsize=(4.6 * len(fig_curves), 3.6), squeeze=False, layout="constrained")
    for ax, (label, curves) in zip(axes[0], fig_curves.items()):
        plot_error_curves(curves, ax=ax, title=f"{label} regression")
    return pd.DataFrame(rows), fig


# -------------------------------------------------------------------------------- SAEs
def mixture(tasks: dict[str, tuple[Any, str, Any]], n_per_task: int, n_points: int, seed: int) -> tuple[TaskBatch, list[str]]:
    """An equal mixture of prompts of every task (params: w), with the task label of each prompt."""
    g = torch.Generator().manual_seed(seed)
    parts = [t.sample(batch_size=n_per_task, n_points=n_points, generator=g) for t, _, _ in tasks.values()]
    batch = TaskBatch(torch.cat([p.xs for p in parts]), torch.cat([p.ys for p in parts]), {"w": torch.cat([p.params["w"] for p in parts])})
    labels = [label for label in tasks for _ in range(n_per_task)]
    return batch, labels


def study_saes(models: dict[str, Any], tasks: dict[str, tuple[Any, str, Any]], n_points: int, args: argparse.Namespace, out: Path):
    """TopK SAEs on every model x hook x seed (an L1-ReLU SAE on the base too, first seed); metrics
    on held-out prompts for all, splice effect per task and task correlations for the first seed."""
    train_batch, _ = mixture(tasks, args.n_prompts, n_points, args.seed + 11)
    eval_batch, _ = mixture(tasks, args.eval_prompts, n_points, args.seed + 13)
    task_batches = {label: t.sample(batch_size=args.eval_prompts, n_points=n_points, generator=torch.Generator().manual_seed(args.seed + 17 + i))
                    for i, (label, (t, _, _)) in enumerate(tasks.items())}
    base_preds = {label: tasks[label][2].predict(b.xs, b.ys) for label, b in task_batches.items()}
    first = args.sae_seeds[0]
    topk = SAEConfig(d_sae=args.d_sae, kind="topk", k=args.k, steps=args.sae_steps)
    relu = SAEConfig(d_sae=args.d_sae, kind="relu", l1_coeff=args.l1_coeff, steps=args.sae_steps, seed=first)
    saes, alive, metric_rows, splice_rows, hist_rows, corr_rows = {}, {}, [], [], [], []
    for name, model in models.items():
        acts = collect_activations(model, train_batch, args.hooks)
        held = collect_activations(model, eval_batch, args.hooks)
        with torch.no_grad():
            preds = model.eval()(eval_batch.xs, eval_batch.ys)
        for hook in args.hooks:
            jobs = [("topk", topk.model_copy(update={"seed": seed})) for seed in args.sae_seeds]
            if args.relu and name == "base":
                jobs.append(("relu", relu))
            for variant, cfg in jobs:
                t0 = time.process_time()
                sae, hist = train_sae(acts[hook], cfg)
                log(f"SAE {variant} seed {cfg.seed} on {name} {hook}: {cfg.steps} steps, {time.process_time() - t0:.0f} s CPU")
                save_sae(sae, out / "saes" / name / f"{hook}.{variant}.seed{cfg.seed}.safetensors", metadata={"model": name, "hook": hook, "config": cfg.model_dump()})
                m = sae_metrics(sae, held[hook])
                tag = {"model": name, "hook": hook, "sae": variant, "seed": cfg.seed}
                metric_rows.append({**tag, **{k: m[k] for k in ("fvu", "l0", "dead_fraction", "cosine", "n_tokens")}})
                hist_rows.append(hist.assign(**tag))
                if variant == "topk":
                    saes[(name, hook, cfg.seed)] = sae
                    alive[(name, hook, cfg.seed)] = _alive(sae, held[hook])
                if cfg.seed != first:
                    continue
                if variant == "topk":
                    corr = F.task_correlations(sae.encode(held[hook]), eval_batch.xs, eval_batch.ys, params=eval_batch.params, preds=preds)
                    corr_rows.append(F.strong_correlations(corr, args.corr_threshold).assign(model=name, hook=hook))
                for label, b in task_batches.items():
                    cached = base_preds[label]
                    summary, _ = splice_effect(model, sae, hook, b, baseline=lambda xs, ys, c=cached: c, n_bootstrap=300, seed=args.seed)
                    sc = summary["score"]
                    splice_rows.append({
                        "model": name, "hook": hook, "sae": variant, "task": label, "baseline": tasks[label][1],
                        "score_clean": sc["clean"]["value"], "score_spliced": sc["spliced"]["value"], "score_ablated": sc["ablated"]["value"],
                        "score_recovered": summary["score_recovered"], "fvu": summary["fvu"],
                    })
    tables = {
        "sae_metrics": pd.DataFrame(metric_rows), "sae_splice": pd.DataFrame(splice_rows),
        "sae_history": pd.concat(hist_rows, ignore_index=True), "feature_task_correlations": pd.concat(corr_rows, ignore_index=True),
    }
    return saes, alive, tables


def _alive(sae: Any, acts: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (sae.encode(acts.reshape(-1, sae.d_in)) > 0).any(0)


# ------------------------------------------------------------------------ feature flow
CROSS = (("base", "ft_sparse"), ("base", "ft_noisy"), ("base", "merged"), ("ft_sparse", "merged"), ("ft_noisy", "merged"))


def _short(hook: str) -> str:
    """`blocks.1.hook_resid_post` -> `block 1 resid_post` (figure labels)."""
    parts = hook.split(".")
    return f"block {parts[1]} {parts[-1].removeprefix('hook_')}" if len(parts) == 3 and parts[0] == "blocks" else hook


def flow_tables(saes: dict, alive: dict, args: argparse.Namespace) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Feature flow between SAEs. With seeds a (first) and b (second):
    `seed control`: model[a] -> model[b] (how well two SAEs of one model agree: the ceiling);
    `independent init`: ref[a] -> other[b]; `shared init`: ref[a] -> other[a] (the SAEs start
    from the same random decoder). `persisting_rel` = persisting / persisting of ref's seed control.
    Origins of the merged model's features: merged[b] against the parents' [a] SAEs, with
    base[b] against the same parents as the control."""
    a, b = args.sae_seeds[0], args.sae_seeds[1]
    frames, origins = [], {}
    for hook in args.hooks:
        pairs = [("seed control", m, m, a, b) for m in MODELS]
        pairs += [("independent init", r, o, a, b) for r, o in CROSS] + [("shared init", r, o, a, a) for r, o in CROSS]
        for comparison, ref, other, sa, sb in pairs:
            for method in F.MATCH_METHODS:
                df = F.flow_counts(saes[(ref, hook, sa)].directions, saes[(other, hook, sb)].directions, args.thresholds, method=method,
                                   alive_ref=alive[(ref, hook, sa)], alive_other=alive[(other, hook, sb)])
                frames.append(df.assign(hook=hook, comparison=comparison, reference=f"{ref}[s{sa}]", model=f"{other}[s{sb}]", ref_model=ref))
        parents = {n: saes[(n, hook, a)].directions for n in ("base", "ft_sparse", "ft_noisy")}
        parent_alive = {n: alive[(n, hook, a)] for n in parents}
        for who, seed in (("merged", b), ("merged", a), ("base", b)):
            label = f"{_short(hook)}\n{who}[s{seed}]"
            origins[label] = F.merge_origins(saes[(who, hook, seed)].directions, parents, args.origin_threshold,
                                             alive_merged=alive[(who, hook, seed)], alive=parent_alive).assign(hook=hook, features_of=f"{who}[s{seed}]")
    flow = pd.concat(frames, ignore_index=True)
    control = flow[flow["comparison"] == "seed control"].set_index(["hook", "ref_model", "method", "threshold"])["persisting"]
    key = list(zip(flow["hook"], flow["ref_model"], flow["method"], flow["threshold"]))
    ceiling = control.loc[key].to_numpy().astype(float)
    flow["persisting_rel"] = np.divide(flow["persisting"].to_numpy(), ceiling, out=np.full(len(flow), np.nan), where=ceiling > 0)
    flow = flow.drop(columns="ref_model")
    return flow[["hook", "comparison", "reference", "model", *[c for c in flow.columns if c not in ("hook", "comparison", "reference", "model")]]], origins


def correlation_summary(corr: pd.DataFrame) -> pd.DataFrame:
    """One row per hook and model, one column per quantity [token type]: the number of features
    with |corr| ≥ the threshold and, in brackets, the largest |corr| (w_j pooled over j)."""
    c = corr.assign(q=corr["quantity"].where(~corr["quantity"].str.startswith("w_"), "w_j"))
    g = c.groupby(["hook", "model", "q", "tokens"], sort=False).agg(n=("n_strong", "sum"), top=("top_corr", lambda v: v.abs().max())).reset_index()
    g["cell"] = g["n"].astype(str) + " (" + g["top"].map(lambda v: f"{v:.2f}") + ")"
    t = g.pivot_table(index=["hook", "model"], columns=["q", "tokens"], values="cell", aggfunc="first", sort=False)
    t.columns = [f"{q} [{tok}]" for q, tok in t.columns]
    return t.reset_index()


# ------------------------------------------------------------------------------ sanity
def synthetic(n: int, dirs: torch.Tensor, active: float, seed: int) -> torch.Tensor:
    """Tokens `(n, d)`: x = Σ_i a_i f_i + 0.01·noise + 1 over the unit directions `dirs (m, d)`,
    each on with probability active/m, a_i ~ U(0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    m, d = dirs.shape
    on = torch.rand(n, m, generator=g) < active / m
    return (on * (torch.rand(n, m, generator=g) + 0.5)) @ dirs + 0.01 * torch.randn(n, d, generator=g) + 1.0


def sanity(args: argparse.Namespace) -> dict[str, pd.DataFrame]:
    """SAE recovery of known sparse directions, and merge sanity on the fine-tuned runs."""
    from hookedicl.analysis.merge import merge_state_dicts
    from hookedicl.analysis.sae import SparseAutoencoder
    from hookedicl.training.checkpoints import load_weights

    rows = []
    settings = [(6000, 12, 24, 3.0, 48, 600, 256), (20000, 16, 32, 3.0, 64, 1500, 512), (40000, 32, 128, 4.0, 256, 3000, 1024)]
    for n, d, m, active, d_sae, steps, bs in settings:
        dirs = torch.randn(m, d, generator=torch.Generator().manual_seed(args.seed))
        dirs /= dirs.norm(dim=1, keepdim=True)
        x, held = synthetic(n, dirs, active, args.seed + 1), synthetic(5000, dirs, active, args.seed + 2)
        for kind, kw in (("topk", {"k": int(active) + 1}), ("relu", {"l1_coeff": 0.05}), ("random", {})):
            if kind == "random":  # an untrained SAE (its own seed, not the one that drew the directions)
                torch.manual_seed(args.seed + 12345)
                sae = SparseAutoencoder(d, d_sae, "topk", int(active) + 1)
                met = {"fvu": float("nan"), "l0": float("nan"), "dead_fraction": float("nan")}
            else:
                sae, _ = train_sae(x, d_sae=d_sae, kind=kind, steps=steps, batch_size=bs, seed=args.seed, **kw)
                met = sae_metrics(sae, held)
            best = (dirs @ sae.directions.T).max(1).values
            rows.append({
                "tokens": n, "d_in": d, "true_features": m, "active_per_token": active, "d_sae": d_sae, "sae": kind,
                "k": kw.get("k", sae.k if kind == "random" else float("nan")), "l1_coeff": kw.get("l1_coeff", float("nan")), "steps": steps if kind != "random" else 0,
                "recovered_0.9": float((best >= 0.9).float().mean()), "median_max_cos": float(best.median()), "min_max_cos": float(best.min()),
                "fvu": met["fvu"], "l0": met["l0"], "dead_fraction": met["dead_fraction"],
            })
    out = {"sanity_sae": pd.DataFrame(rows)}
    a_dir, b_dir = args.runs / "ft_sparse", args.runs / "ft_noisy"
    if (a_dir / "config.yaml").exists() and (b_dir / "config.yaml").exists():
        wa, _, _ = load_weights(a_dir / "checkpoints")
        wb, _, _ = load_weights(b_dir / "checkpoints")
        mrows = []
        for method in ("slerp", "linear"):
            for t in (0.0, 0.25, 0.5, 0.75, 1.0):
                merged, report = merge_state_dicts(wa, wb, t, method)
                ref = wa if t == 0.0 else wb if t == 1.0 else None
                same, _ = merge_state_dicts(wa, {k: v.clone() for k, v in wa.items()}, t, method)
                slerped = report[report["how"] == "slerp"]
                target = (1 - t) * slerped["norm_a"] + t * slerped["norm_b"]
                mrows.append({
                    "method": method, "t": t,
                    "max_abs_diff_to_endpoint": max(float((merged[k] - ref[k]).abs().max()) for k in ref) if ref is not None else float("nan"),
                    "max_abs_diff_self_merge": max(float((same[k] - wa[k]).abs().max()) for k in wa),
                    "n_slerp": len(slerped), "n_linear_fallback": int(report["how"].str.startswith("linear (").sum()),
                    "max_rel_norm_error_slerp": float(((slerped["norm_merged"] - target).abs() / target).max()) if len(slerped) else float("nan"),
                    "min_norm_ratio_merged_over_interp": float((report["norm_merged"] / ((1 - t) * report["norm_a"] + t * report["norm_b"])).min()),
                    "min_cos_between_endpoints": float(report["cos"].min()) if report["cos"].notna().any() else float("nan"),
                })
        out["sanity_merge"] = pd.DataFrame(mrows)
    else:
        log(f"no fine-tuned runs in {args.runs}: merge sanity skipped")
    return out


def stability(args: argparse.Namespace) -> dict[str, pd.DataFrame]:
    """How well two TopK SAEs (seeds a, b) of the base model agree, across dictionary sizes and k."""
    runs = {n: Run(args.runs / n) for n in ("base", "ft_sparse", "ft_noisy")}
    tasks = tasks_and_baselines(runs)
    model, n_points = runs["base"].load_model(), runs["base"].config.task.n_points
    train_batch, _ = mixture(tasks, args.n_prompts, n_points, args.seed + 11)
    eval_batch, _ = mixture(tasks, args.eval_prompts, n_points, args.seed + 13)
    acts = collect_activations(model, train_batch, args.hooks)
    held = collect_activations(model, eval_batch, args.hooks)
    rows = []
    for hook in args.hooks:
        for size in args.stability_sizes.split(","):
            d_sae, k = (int(v) for v in size.split(":"))
            pair = []
            for seed in args.sae_seeds:
                sae, _ = train_sae(acts[hook], d_sae=d_sae, k=k, steps=args.sae_steps, seed=seed)
                pair.append((sae, _alive(sae, held[hook]), sae_metrics(sae, held[hook])))
            log(f"stability {hook} d_sae={d_sae} k={k}")
            flow = F.flow_counts(pair[0][0].directions, pair[1][0].directions, args.thresholds, alive_ref=pair[0][1], alive_other=pair[1][1])
            for r in flow.itertuples():
                rows.append({"hook": hook, "d_sae": d_sae, "k": k, "fvu": pair[0][2]["fvu"], "alive": int(pair[0][1].sum()),
                             "threshold": r.threshold, "persisting": r.persisting, "persisting_frac": r.persisting / r.n_ref})
    return {"stability": pd.DataFrame(rows)}


# --------------------------------------------------------------------------------- main
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=Path("runs/feature_flow"), help="directory of the four runs")
    p.add_argument("--out", type=Path, default=None, help="tables, figures, SAEs (default RUNS/study)")
    p.add_argument("--base-steps", type=int, default=None, help="override base.yaml's steps")
    p.add_argument("--ft-steps", type=int, default=None, help="override the fine-tune configs' steps")
    p.add_argument("--t", type=float, default=0.5, help="merge weight (0: ft_sparse, 1: ft_noisy)")
    p.add_argument("--hooks", default="blocks.1.hook_resid_post,blocks.3.hook_resid_post", help="comma-separated hooks for the SAEs")
    p.add_argument("--d-sae", type=int, default=256)
    p.add_argument("--k", type=int, default=8, help="TopK: active features per token")
    p.add_argument("--relu", action=argparse.BooleanOptionalAction, default=True, help="also an L1-ReLU SAE on the base model")
    p.add_argument("--l1-coeff", type=float, default=0.02)
    p.add_argument("--sae-steps", type=int, default=3000)
    p.add_argument("--n-prompts", type=int, default=1024, help="SAE training prompts per task (x 22 tokens)")
    p.add_argument("--eval-prompts", type=int, default=512, help="held-out prompts per task for SAE metrics and splicing")
    p.add_argument("--eval-n", type=int, default=1280, help="prompts per task for the ICL scores")
    p.add_argument("--thresholds", default="0.5,0.6,0.7,0.8,0.9,0.95")
    p.add_argument("--origin-threshold", type=float, default=0.7)
    p.add_argument("--corr-threshold", type=float, default=0.5)
    p.add_argument("--sae-seeds", default="0,1", help="two SAE seeds per model and hook (the second gives the seed control)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompts")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--sanity", action="store_true", help="only the sanity checks (synthetic SAE recovery, merge endpoints/norms)")
    p.add_argument("--stability", action="store_true", help="only the SAE seed-stability sweep on the base model (needs the runs)")
    p.add_argument("--stability-sizes", default="64:8,128:8,256:8,128:4", help="d_sae:k pairs for --stability")
    args = p.parse_args(argv)
    args.hooks = [h.strip() for h in args.hooks.split(",") if h.strip()]
    args.thresholds = [float(t) for t in args.thresholds.split(",")]
    args.sae_seeds = [int(x) for x in args.sae_seeds.split(",")]
    if len(args.sae_seeds) != 2 or args.sae_seeds[0] == args.sae_seeds[1]:
        p.error(f"--sae-seeds must be two different seeds, got {args.sae_seeds}")
    args.out = args.out if args.out is not None else args.runs / "study"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    out = args.out
    start = time.time()
    if args.sanity or args.stability:
        for name, df in (sanity(args) if args.sanity else stability(args)).items():
            write_table(df, out, name)
            print(markdown(df), flush=True)
        return {}
    runs = train_models(args)
    runs["merged"] = merged_run(args, runs, "slerp")
    runs["merged_linear"] = merged_run(args, runs, "linear")
    models = {name: run.load_model() for name, run in runs.items()}
    n_points = runs["base"].config.task.n_points
    tasks = tasks_and_baselines(runs)

    scores, fig = icl_scores(models, tasks, n_points, args)
    write_table(scores, out, "icl_scores")
    write_figure(fig, out, "error_curves")

    saes, alive, tables = study_saes({n: models[n] for n in MODELS}, tasks, n_points, args, out)
    for name, df in tables.items():
        if name == "sae_history":
            atomic_write_text(out / f"{name}.csv", df.to_csv(index=False))
        else:
            write_table(df, out, name)
    write_table(correlation_summary(tables["feature_task_correlations"]), out, "feature_task_summary")
    flow, origins = flow_tables(saes, alive, args)
    write_table(flow, out, "feature_flow")
    origin_counts = pd.DataFrame({k.replace("\n", " "): o["origin"].value_counts() for k, o in origins.items()}).fillna(0).astype(int)
    write_table(origin_counts.rename_axis("origin").reset_index(), out, "merge_origins")
    per_feature = pd.concat(list(origins.values()), ignore_index=True)
    atomic_write_text(out / "merge_origins_features.csv", per_feature.to_csv(index=False))
    main_flow = flow[flow["comparison"] != "shared init"]
    for hook in args.hooks:
        for method in F.MATCH_METHODS:
            suffix = "" if method == "assignment" else "_best"
            write_figure(F.plot_feature_flow(main_flow[main_flow["hook"] == hook], method), out, f"feature_flow{suffix}_{hook}")
    write_figure(F.plot_merge_origins(origins), out, "merge_origins")

    summary = {
        "command": "python -m analyses.feature_flow " + " ".join(sys.argv[1:] if argv is None else argv),
        "runs": {n: str(r.path) for n, r in runs.items()},
        "steps": {n: r.checkpoints[-1] for n, r in runs.items()},
        "wall_s": round(time.time() - start, 1),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    atomic_write_json(out / "summary.json", summary)
    log(f"done in {summary['wall_s']:.0f} s; tables and figures in {out}")
    return summary


if __name__ == "__main__":
    main()
