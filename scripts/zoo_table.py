"""The zoo table of docs/zoo.md: a zoo sweep's ICL scores beside Campbell et al. 2024, Table 3.

    python scripts/zoo_table.py runs/sweeps/zoo_cpu_short/results.csv > /tmp/zoo_table.md

Reads the sweep's results.csv (hookedicl.sweep.aggregate), averages the seeds of each
architecture and task, ranks the architectures per task (1 = highest score) and prints Markdown:
the side-by-side table, the rank correlation (Spearman) with the published column, and the
compute the sweep took.
"""

from __future__ import annotations

import sys

import pandas as pd

from hookedicl.models.presets import CAMPBELL_ZOO, describe

# Campbell et al. 2024, Table 3 (one run per cell, standard size, 500k steps): linear and sparse linear.
PUBLISHED = {
    "gpt2": (0.996, 0.932), "gpt2_rms": (0.997, 0.535), "gpt2_rope": (0.995, 0.927),
    "gpt2_swiglu": (0.997, 0.913), "gpt2_rms_swiglu": (0.997, 0.754), "gpt2_rms_rope": (0.996, 0.927),
    "gpt2_rope_swiglu": (0.996, 0.929), "llama": (0.997, 0.933), "llama_nope_mamba": (0.996, 0.928),
    "llama_mamba_ffn": (0.996, 0.927), "mambaformer": (0.996, 0.938), "mamba": (0.995, 0.925),
}
TASKS = (("linear", "linear_regression"), ("sparse", "sparse_linear_regression"))


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    done = results[results["status"] == "done"]
    rows = []
    for arch in CAMPBELL_ZOO:
        row = {"arch": arch, "title": describe(arch)}
        for i, (short, task) in enumerate(TASKS):
            r = done[(done["arch"] == arch) & (done["task"] == task)].sort_values("seed")
            row[f"{short}_mean"] = r["icl_score"].mean() if len(r) else float("nan")
            row[f"{short}_seeds"] = r["icl_score"].tolist()
            row[f"{short}_ci"] = list(zip(r["icl_score_ci_low"], r["icl_score_ci_high"]))
            row[f"{short}_published"] = PUBLISHED[arch][i]
        rows.append(row)
    t = pd.DataFrame(rows)
    for short, _ in TASKS:
        t[f"{short}_rank"] = t[f"{short}_mean"].rank(ascending=False, method="min")
        t[f"{short}_published_rank"] = t[f"{short}_published"].rank(ascending=False, method="min")
    return t


def markdown(t: pd.DataFrame, results: pd.DataFrame) -> str:
    out = ["| # | architecture | linear: ours, mean (seeds) | rank | published | rank | "
           "sparse: ours, mean (seeds) | rank | published | rank |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in t.iterrows():
        num, _, name = r["title"].partition(" ")
        cells = []
        for short, _ in TASKS:
            seeds = ", ".join(f"{s:.3f}" for s in r[f"{short}_seeds"])
            cells += [f"{r[f'{short}_mean']:.3f} ({seeds})", f"{r[f'{short}_rank']:.0f}",
                      f"{r[f'{short}_published']:.3f}", f"{r[f'{short}_published_rank']:.0f}"]
        out.append(f"| {num} | {name} (`{r['arch']}`) | " + " | ".join(cells) + " |")
    out.append("")
    for short, _ in TASKS:
        rho = t[f"{short}_mean"].corr(t[f"{short}_published"], method="spearman")
        out.append(f"Spearman rank correlation with the published column, {short}: {rho:.2f}")
    out.append("")
    widths = [b - a for a, b in t["linear_ci"].explode().dropna()] + [b - a for a, b in t["sparse_ci"].explode().dropna()]
    if widths:
        out.append(f"95% bootstrap CI width of one run's score (over the 1280 evaluation prompts): "
                   f"{min(widths):.3f}–{max(widths):.3f}.")
    done = results[results["status"] == "done"]
    out.append(f"Runs done: {len(done)} of {len(results)}; training time summed over runs: "
               f"{done['train_s'].sum() / 3600:.2f} h; sweep wall time summed over runs (training + "
               f"evaluation): {done['wall_s'].sum() / 3600:.2f} h.")
    return "\n".join(out)


def cost_table(results: pd.DataFrame) -> str:
    """Per architecture: parameters, training seconds per run and the errors at k = d and 2d."""
    done = results[results["status"] == "done"]
    ks = sorted(int(c[5:]) for c in done.columns if c.startswith("err_k") and c[5:].isdigit())
    head = "| architecture | params | " + " | ".join(
        f"{short}: train s/run | " + " | ".join(f"error k={k}" for k in ks) for short, _ in TASKS) + " |"
    out = [head, "|---|---|" + "---|" * (len(TASKS) * (1 + len(ks)))]
    for arch in CAMPBELL_ZOO:
        cells = []
        for short, task in TASKS:
            r = done[(done["arch"] == arch) & (done["task"] == task)]
            cells += [f"{r['train_s'].mean():.0f}"] + [f"{r[f'err_k{k}'].mean():.3f}" for k in ks]
        n = done.loc[done["arch"] == arch, "n_params"]
        out.append(f"| `{arch}` | {int(n.iloc[0]) if len(n) else '—':,} | " + " | ".join(cells) + " |")
    base = []
    for short, task in TASKS:
        r = done[done["task"] == task]
        if len(r):
            base.append(f"{short}: {r['score_baseline'].iloc[0]} " + ", ".join(
                f"{r[f'baseline_err_k{k}'].mean():.3f} at k={k}" for k in ks))
    out += ["", "Score baseline's error (same prompts): " + "; ".join(base) + "."]
    return "\n".join(out)


def main(path: str) -> None:
    results = pd.read_csv(path)
    print(markdown(summarise(results), results))
    print()
    print(cost_table(results))


if __name__ == "__main__":
    main(sys.argv[1])
