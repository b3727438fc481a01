"""Train, evaluate and package the checkpoints shipped in `hookedicl/pretrained/`.

    python scripts/train_pretrained.py                          # every config, one after another
    python scripts/train_pretrained.py --only gpt2-linreg-d5    # just one (repeatable)
    python scripts/train_pretrained.py --threads 2              # override the configs' threads: 1

For each `hookedicl/pretrained/configs/<name>.yaml` (an ordinary training config; its leading
comment paragraph becomes the card's description) this trains the run into `<work>/<name>`
(re-running continues an unfinished run and skips a finished one), evaluates it with
`evaluate_run` (the config's `eval` section: 1280 prompts, ICL score against least squares with a
95% bootstrap CI) and writes `hookedicl/pretrained/<name>/` (model.safetensors, metrics.jsonl,
card.json). Nothing in the package folder changes until a run has finished and been evaluated.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "hookedicl" / "pretrained" / "configs"


def description_of(path: Path) -> str:
    """The leading comment paragraph of a config, without the `Re-train ...` line."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.lower().startswith("re-train"):
            continue
        lines.append(text)
    desc = " ".join(lines).strip()
    if not desc:
        raise ValueError(f"{path} has no leading comment to use as the card's description")
    return desc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="config name (repeatable); default: all")
    parser.add_argument("--configs", type=Path, default=CONFIGS, help="folder of <name>.yaml configs (default: the shipped ones)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "pretrained", help="where the run directories go")
    parser.add_argument("--out", type=Path, default=None, help="package folder to write (default hookedicl/pretrained)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the config's)")
    args = parser.parse_args(argv)

    import torch

    from hookedicl.evaluation.run_eval import evaluate_run
    from hookedicl.pretrained import package_run, train_seconds_from_metrics
    from hookedicl.training import Run, TrainConfig, train
    from hookedicl.training.run import read_metrics

    paths = sorted(args.configs.glob("*.yaml"))
    if not paths:
        parser.error(f"no *.yaml configs in {args.configs}")
    names = {p.stem: p for p in paths}
    unknown = [n for n in args.only if n not in names]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; available: {sorted(names)}")
    chosen = [names[n] for n in args.only] if args.only else paths
    for path in chosen:
        cfg = TrainConfig.load(path)
        if cfg.name != path.stem:
            raise ValueError(f"{path}: name {cfg.name!r} must equal the file name {path.stem!r}")
        if args.threads is not None:
            cfg = TrainConfig.model_validate({**cfg.model_dump(), "threads": args.threads})
        out = args.work / cfg.name
        t0 = time.perf_counter()
        run = train(cfg, out, resume=(out / "config.yaml").exists())
        print(f"[{cfg.name}] trained ({time.perf_counter() - t0:.0f} s this invocation) -> {run.path}", flush=True)
        torch.set_num_threads(cfg.threads or torch.get_num_threads())
        _, summary = evaluate_run(Run(out))
        seconds = train_seconds_from_metrics(read_metrics(out / "metrics.jsonl"))
        card = package_run(run, description=description_of(path), eval_summary=summary, train_seconds=seconds, root=args.out)
        print(f"[{cfg.name}] {card.summary_line()}; training {card.train_seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
