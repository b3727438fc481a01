"""Where a run's starting weights came from: `RUN/lineage.json`.

A run trained from scratch has no lineage file. A fine-tune (`init_from`) records its parent run
and checkpoint; a merged run (hookedicl.analysis.merge) records both parents and the method.
Each parent entry carries the sha256 of the checkpoint it used and the parent's own lineage, so
the whole tree survives even if a parent directory is later deleted.

    {"how": "init_from", "parents": [{"run": "/abs/runs/base", "step": 6000,
      "sha256_model": "...", "config": {...}, "lineage": null}]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_json, read_json_file
from ..layout import CHECKPOINTS, CONFIG, LINEAGE, resolve_inside
from .checkpoints import load_weights, verified_entry


@dataclass
class InitSource:
    """Weights to start from and the lineage entry describing them."""

    weights: dict[str, torch.Tensor]
    parent: dict[str, Any]


def read_lineage(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's lineage record, or None for a run trained from scratch."""
    p = resolve_inside(run_dir, LINEAGE, f"run {run_dir}")
    if not p.exists():
        return None
    lineage = read_json_file(p)
    if not isinstance(lineage, dict) or not isinstance(lineage.get("parents"), list):
        raise ValueError(f"{p} must hold a JSON object with a 'parents' list")
    return lineage


def parent_entry(run_dir: str | Path, step: int | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(lineage entry, weights, spec dict) of checkpoint `step` (default: newest good) of a run.

    Raises ValueError naming the run when it is missing, has no usable checkpoint or lacks `step`.
    """
    from .config import TrainConfig
    from .run import Run

    d = Run(run_dir).path  # a run directory whose own entries are no symlinks
    ckpts = d / CHECKPOINTS
    entry = verified_entry(ckpts, step)
    weights, spec, got = load_weights(ckpts, entry["step"])
    parent = {
        "run": str(d.resolve()),
        "step": got,
        "sha256_model": entry["sha256_model"],
        "config": TrainConfig.load(d / CONFIG, stored=True).model_dump(mode="json"),
        "lineage": read_lineage(d),
    }
    return parent, weights, spec


def resolve_init(cfg: Any) -> InitSource | None:
    """Load `cfg.init_from` and check its architecture against `cfg` (ValueError names the field)."""
    from .config import parse_init_from

    if cfg.init_from is None:
        return None
    path, step = parse_init_from(cfg.init_from)
    try:
        parent, weights, spec = parent_entry(path, step)
    except ValueError as e:
        raise ValueError(f"init_from: {e}") from None
    ours = json.loads(json.dumps(cfg.build_spec().to_dict()))
    if spec != ours:
        diff = sorted(k for k in set(ours) | set(spec) if ours.get(k) != spec.get(k))
        raise ValueError(f"init_from: the architecture of {path} differs from this config's model in {diff}")
    return InitSource(weights=weights, parent=parent)


def write_lineage(run_dir: str | Path, how: str, parents: list[dict[str, Any]], **details: Any) -> None:
    """Write RUN/lineage.json (atomically)."""
    atomic_write_json(Path(run_dir) / LINEAGE, {"how": how, **details, "parents": parents})
