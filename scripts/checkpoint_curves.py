"""Training curves of the shipped checkpoints (and any other runs) side by side.

    python scripts/checkpoint_curves.py RUN [RUN ...] --out docs/figures/checkpoint_curves.png

One line per run: the training loss (mean squared error on the training batch, averaged over the
log interval) against the step, smoothed over `--window` logged rows; the dotted line is least
squares on the same batches (logged as `baseline/least_squares`). The label carries the run's
ICL score from `RUN/eval/summary.json` when it has been evaluated.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--out", type=Path, required=True, help="figure path (.png; an .svg is written beside it)")
    parser.add_argument("--window", type=int, default=10, help="rolling mean over this many logged rows")
    args = parser.parse_args(argv)

    from hookedicl.training import Run
    from hookedicl.viz import save_figure
    from hookedicl.viz._backend import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    base = None
    for path in args.runs:
        run = Run(path)
        m = run.metrics()
        try:
            s = run.eval_summary()["icl_score"]
            label = f"{run.config.name} ({run.config.model.n_layers} blocks): {s['value']:.3f}"
        except ValueError:
            label = run.config.name
        ax.plot(m["step"], m["loss"].rolling(args.window, min_periods=1).mean(), lw=1.2, label=label)
        if base is None and "baseline/least_squares" in m.columns:
            base = m[["step", "baseline/least_squares"]]
    if base is not None:
        ax.plot(base["step"], base["baseline/least_squares"].rolling(args.window, min_periods=1).mean(), "k:", lw=1,
                label="least squares (same batches)")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean squared error on the training batch")
    ax.set_title("Training curves, with the ICL score vs least squares")
    ax.legend(fontsize="small", frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    save_figure(fig, args.out.with_suffix(""))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
