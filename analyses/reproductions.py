"""CPU-scale reproductions of published mechanistic findings (results in docs/reproductions.md).

    python -m analyses.reproductions --what lsa            # (b) 1-layer linear self-attention ~ one GD step
    python -m analyses.reproductions --what demo --run runs/demo   # (a) + (c) on the trained demo GPT-2
    python -m analyses.reproductions --what arch --arch mamba      # (d) the same analyses on another architecture

Each part trains what it needs (unless given a run), runs the analyses and prints Markdown tables;
`--out DIR` also writes the tables as CSV.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

import hookedicl as hi
import hookedicl.baselines as B
from hookedicl.analysis.match import Reference, line_search_lr, match
from hookedicl.analysis.probe import probe
from hookedicl.training import TrainConfig, train

D, N_POINTS = 5, 11


def markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A DataFrame as a GitHub Markdown table."""
    cols = [str(c) for c in df.columns]
    rows = [[format(v, floatfmt) if isinstance(v, float) else str(v) for v in r] for r in df.itertuples(index=False)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _prompts(task, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    b = task.sample(batch_size=n, n_points=N_POINTS, generator=torch.Generator().manual_seed(seed))
    return b.xs, b.ys


def _config(name: str, arch: str, steps: int, **model) -> TrainConfig:
    demo = TrainConfig.load(Path(hi.__file__).parent / "configs" / "demo.yaml").model_dump()
    demo.update(name=name, steps=steps)
    demo["model"] = {**demo["model"], "arch": arch, **model}
    demo["capture"] = {"hooks": []}
    demo["log"] = {**demo["log"], "progress": False}
    return TrainConfig.model_validate(demo)


def _train_or_load(cfg: TrainConfig, out: Path) -> hi.Run:
    return train(cfg, out, resume=(out / "config.yaml").exists())


def lsa(out: Path, steps: int = 3000) -> pd.DataFrame:
    """(b) von Oswald et al.: one layer of linear self-attention on (x, y) tokens vs one GD step.

    The layer is trilinear in its weights, so at the usual 0.02 init its gradients vanish and it
    does not leave the zero predictor in thousands of steps; it is initialised with std 0.1, with
    4 heads of width 8 (a single 1-head layer of width 6 stayed at loss ≈ 4.6 of 5 for 3000 steps).
    """
    cfg = _config("lsa", "linear_attention", steps, d_model=32, n_layers=1, n_heads=4, init_std=0.1)
    cfg = TrainConfig.model_validate({**cfg.model_dump(), "curriculum": None,
                                      "optim": {"name": "adam", "lr": 1e-3, "grad_clip": 1.0}})
    run = _train_or_load(cfg, out / "lsa")
    model = run.load_model()
    xs, ys = _prompts(run.task(), 512, seed=11)
    sum_gd = B.get("gd", steps=1, loss="sum")  # ŵ = η Xᵀy at every k
    eta_task = line_search_lr(sum_gd, xs, ys, bounds=(1e-4, 1.0))
    eta_model = line_search_lr(sum_gd, xs, ys, target=model, bounds=(1e-4, 1.0))
    refs = [
        Reference(f"gd(1 step, sum loss, η={eta_task:.4f}: task line search)", "gd",
                  B.get("gd", steps=1, loss="sum", lr=eta_task)),
        Reference(f"gd(1 step, sum loss, η={eta_model:.4f}: fit to model)", "gd",
                  B.get("gd", steps=1, loss="sum", lr=eta_model)),
        "least_squares", "averaging",
    ]
    table = match(model, xs, ys, references=refs, metrics=("pred_diff", "sensitivity", "spd"), lr_search=None)
    return table


def arch_analyses(run: hi.Run, label: str) -> dict[str, pd.DataFrame]:
    """(a)/(c)/(d): predictor matching and probing on a trained run, plus an untrained control."""
    model = run.load_model()
    task = run.task()
    xs, ys = _prompts(task, 512, seed=7)
    m = match(model, xs, ys, references=["least_squares", "gd", "averaging", "ridge"], gd_steps=(1,),
              ridge_alphas=(0.1,), metrics=("spd", "ilwd"), ilwd_prompts=64, lr_search="task")
    torch.manual_seed(123)
    control = hi.HookedICLModel(model.spec)
    p_trained = probe(model, xs, ys, targets=("ols",), positions="x")
    p_control = probe(control, xs, ys, targets=("ols",), positions="x")
    p = pd.concat([p_trained.assign(model=label), p_control.assign(model=f"{label} untrained")])
    return {"match": m.assign(model=label), "probe": p}


def summarize_match(m: pd.DataFrame, d: int = D) -> pd.DataFrame:
    """Normalised SPD / ILWD averaged over k >= d, one row per reference."""
    sel = m[(m["k"] >= d) & m["metric"].isin(["spd/d", "ilwd/d"])]
    return sel.pivot_table(index="predictor", columns="metric", values="mean", aggfunc="mean").reset_index()


def summarize_probe(p: pd.DataFrame) -> pd.DataFrame:
    """Held-out R² of the w_OLS probe per layer at the last query (k = n_points - 1 examples seen)."""
    last = p[p["k"] == p["k"].max() - 1] if "k" in p else p
    return last.pivot_table(index="layer", columns="model", values="mean", aggfunc="mean").reset_index()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", choices=["lsa", "demo", "arch"], required=True)
    ap.add_argument("--run", type=Path, help="an existing run directory (demo / arch)")
    ap.add_argument("--arch", default="mamba")
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--out", type=Path, default=Path("runs/reproductions"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    pd.set_option("display.width", 200)
    if args.what == "lsa":
        t = lsa(args.out)
        gd = t[t["predictor"].str.startswith("gd")]
        print(markdown(gd.pivot_table(index=["predictor", "k"], columns="metric", values="mean").reset_index()))
        print(markdown(t.pivot_table(index="predictor", columns="metric", values="mean", aggfunc="mean").reset_index()))
        return
    if args.what == "demo":
        run = hi.Run(args.run or "runs/demo")
        label = "gpt2 (demo)"
    else:
        kw = {"expand": 2} if "mamba" in args.arch else {}
        run = args.run and hi.Run(args.run) or _train_or_load(_config(args.arch, args.arch, args.steps, **kw), args.out / args.arch)
        label = args.arch
    res = arch_analyses(run, label)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, df in res.items():
        df.to_csv(args.out / f"{label.split()[0]}_{name}.csv", index=False)
    print(markdown(summarize_match(res["match"])))
    print(markdown(summarize_probe(res["probe"])))


if __name__ == "__main__":
    main()
