"""Shipped checkpoints: cards, loading with checksum verification, export as a run, packaging.

The folders live beside this module (see the package docstring for their layout).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import tempfile
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text, save_safetensors, sha256_file

WEIGHTS = "model.safetensors"
CARD = "card.json"
METRICS = "metrics.jsonl"
CARD_VERSION = 1

if TYPE_CHECKING:
    from ..models import HookedICLModel
    from ..training import Run, TrainConfig

_ROOT = Path(__file__).resolve().parent


class PretrainedIntegrityError(ValueError):
    """A shipped checkpoint's weights do not match the sha256 recorded in its card."""


@dataclass(frozen=True)
class PretrainedCard:
    """What a shipped checkpoint is and how well it does (everything measured when it was trained).

    `icl_score` is the ICL regression score (Campbell et al. 2024, eq. 1) against its `baseline`
    (least squares) on `n_prompts` fresh prompts: `{"value", "ci_low", "ci_high", "baseline",
    "n_prompts", "level", "method", ...}`, the CI a 95% percentile bootstrap over prompts. `eval_summary` is the full
    `RUN/eval/summary.json` it came from (per-position normalised errors of the model and every
    baseline). `train_seconds` is the wall time of the training steps as logged (the sum of the
    logged step intervals), on the machine named in `environment`.
    """

    name: str
    description: str
    arch: str
    config: dict[str, Any]
    n_params: int
    steps: int
    train_seconds: float
    icl_score: dict[str, Any]
    eval_summary: dict[str, Any]
    sha256: str
    environment: dict[str, str] = field(default_factory=dict)
    card_version: int = CARD_VERSION

    @property
    def train_config(self) -> "TrainConfig":
        """The training config as a validated `TrainConfig`."""
        from ..training import TrainConfig

        return TrainConfig.model_validate(self.config)

    @property
    def n_dims(self) -> int:
        return int(self.config["task"]["n_dims"])

    @property
    def n_points(self) -> int:
        return int(self.config["task"]["n_points"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PretrainedCard":
        if not isinstance(d, dict):
            raise ValueError(f"a pretrained card must be a JSON object, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        required = [k for k, f in cls.__dataclass_fields__.items() if f.default is MISSING and f.default_factory is MISSING]
        missing = sorted(k for k in required if k not in d)
        if missing:
            raise ValueError(f"pretrained card is missing field(s) {missing}")
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"pretrained card has unknown field(s) {unknown}")
        return cls(**d)

    def __repr__(self) -> str:
        return f"PretrainedCard({self.summary_line()})"

    def _repr_html_(self) -> str:
        from .._html import html_table

        s = self.icl_score
        rows = [
            ("name", self.name), ("description", self.description), ("architecture", self.arch),
            ("parameters", self.n_params), ("training steps", self.steps), ("training seconds", self.train_seconds),
            ("task", f"{self.config['task']['name']}, n_dims {self.n_dims}, n_points {self.n_points}"),
            (f"ICL score vs {s['baseline']}", f"{s['value']:.3f} (95% CI {s['ci_low']:.3f}-{s['ci_high']:.3f})"),
        ]
        return html_table(["field", "value"], rows)

    def summary_line(self) -> str:
        s = self.icl_score
        return (
            f"{self.name}: {self.arch}, {self.n_params:,} parameters, {self.steps:,} steps; "
            f"ICL score vs {s['baseline']} {s['value']:.3f} (95% CI {s['ci_low']:.3f}-{s['ci_high']:.3f})"
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _root(root: str | Path | None) -> Path:
    return _ROOT if root is None else Path(root)


def list_pretrained(root: str | Path | None = None) -> list[str]:
    """Names of the shipped checkpoints (sorted). `root` overrides the package folder."""
    r = _root(root)
    if not r.is_dir():
        return []
    return sorted(p.name for p in r.iterdir() if p.is_dir() and (p / CARD).is_file())


def _folder(name: str, root: str | Path | None) -> Path:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    available = list_pretrained(root)
    if name not in available:
        raise ValueError(f"unknown pretrained checkpoint {name!r}; available: {', '.join(available) or '(none)'}")
    return _root(root) / name


def pretrained_card(name: str, root: str | Path | None = None) -> PretrainedCard:
    """The card of checkpoint `name` (training config, ICL score with CI, parameters, steps, seconds)."""
    path = _folder(name, root) / CARD
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    return PretrainedCard.from_dict(data)


def _verified_weights(name: str, root: str | Path | None) -> tuple[dict[str, torch.Tensor], dict[str, Any], PretrainedCard]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = _folder(name, root)
    card = pretrained_card(name, root)
    path = folder / WEIGHTS
    if not path.is_file():
        raise PretrainedIntegrityError(f"{path} is missing")
    digest = sha256_file(path)
    if digest != card.sha256:
        raise PretrainedIntegrityError(
            f"{path} is corrupted: sha256 {digest} does not match {card.sha256} recorded in {folder / CARD}"
        )
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if "spec" not in meta:
        raise PretrainedIntegrityError(f"{path} carries no model spec in its metadata")
    return load_file(str(path)), json.loads(meta["spec"]), card


def load_pretrained(name: str, device: str | torch.device = "cpu", *, root: str | Path | None = None) -> "HookedICLModel":
    """Load shipped checkpoint `name` as a `HookedICLModel` in eval mode.

    The weights' sha256 is checked against the card first (`PretrainedIntegrityError`, a
    `ValueError`, on mismatch). The model maps `xs (batch, n_points, n_dims)` and `ys (batch,
    n_points)` to predictions `(batch, n_points)`; see `pretrained_card(name)` for its task.
    """
    from ..models import HookedICLModel, ModelSpec

    state, spec, _ = _verified_weights(name, root)
    model = HookedICLModel(ModelSpec.from_dict(spec))
    model.load_state_dict(state)
    return model.to(device).eval()


def export_pretrained(name: str, out_dir: str | Path, *, root: str | Path | None = None) -> "Run":
    """Materialise checkpoint `name` as an ordinary run directory at `out_dir`; returns the `Run`.

    Writes `config.yaml` (the training config), `checkpoints/step_<steps>.safetensors` with its
    index (sha256), `metrics.jsonl` (the training log) and `eval/summary.json` (the evaluation
    recorded in the card), so `hookedicl eval/analyze/report` and the publishing analyses accept
    it. The optimiser state is not shipped: the exported run is for evaluation and analysis, not
    for resuming training. `out_dir` must not exist or be empty.
    """
    from ..training import Run
    from ..training.checkpoints import INDEX

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"out_dir {out} exists and is not an empty directory")
    state, spec, card = _verified_weights(name, root)
    cfg = card.train_config
    out.parent.mkdir(parents=True, exist_ok=True)
    # everything goes to a temporary directory beside `out`, renamed into place when complete
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        stem = f"step_{card.steps:07d}"
        ckpt = tmp / "checkpoints"
        sha_model = save_safetensors(ckpt / f"{stem}.safetensors", state, metadata={"step": str(card.steps), "spec": json.dumps(spec)})
        # A marker instead of optimiser state: resuming needs the optimiser, which is not shipped.
        buf = io.BytesIO()
        torch.save({"step": card.steps, "exported_from": name}, buf)
        atomic_write_bytes(ckpt / f"{stem}.state.pt", buf.getvalue())
        atomic_write_json(ckpt / INDEX, [{
            "step": card.steps, "model": f"{stem}.safetensors", "state": f"{stem}.state.pt",
            "sha256_model": sha_model, "sha256_state": hashlib.sha256(buf.getvalue()).hexdigest(),
        }])
        metrics = _folder(name, root) / METRICS
        if metrics.is_file():
            atomic_write_text(tmp / "metrics.jsonl", metrics.read_text())
        atomic_write_json(tmp / "eval" / "summary.json", card.eval_summary)
        atomic_write_text(tmp / "config.yaml", cfg.to_yaml())
        os.chmod(tmp, 0o777 & ~_umask())
        os.replace(tmp, out)  # atomic; `out` is absent or an empty directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Run(out)


def package_run(
    run: "Run | str | Path",
    *,
    description: str,
    eval_summary: dict[str, Any],
    train_seconds: float,
    name: str | None = None,
    root: str | Path | None = None,
) -> PretrainedCard:
    """Write the newest checkpoint of `run` as shipped checkpoint `name` (default: the config's
    name) under `root` (default: this package folder): model.safetensors, metrics.jsonl and
    card.json (written last). `eval_summary` is the run's `eval/summary.json` content (from
    `evaluate_run`); its ICL score must be present. Used by `scripts/train_pretrained.py`."""
    from .. import __version__
    from ..training import Run
    from ..training.checkpoints import load_weights

    run = Run.of(run)
    cfg = run.config
    name = name or cfg.name
    if not name or "/" in name or name.startswith(".") or name == "configs":
        raise ValueError(f"name must be a plain folder name other than 'configs', got {name!r}")
    if not isinstance(description, str) or not description.strip():
        raise ValueError("description must be a non-empty string")
    if train_seconds < 0:
        raise ValueError(f"train_seconds must be >= 0, got {train_seconds}")
    score = eval_summary.get("icl_score")
    if not score:
        raise ValueError("eval_summary has no icl_score (was the run evaluated on a scalar regression task?)")
    state, spec, step = load_weights(run.checkpoint_dir)
    if step != cfg.steps:
        raise ValueError(f"{run.path} has not finished training: newest checkpoint is step {step} of {cfg.steps}")
    if eval_summary.get("step") not in (None, step):
        raise ValueError(f"eval_summary is of step {eval_summary.get('step')}, the newest checkpoint is step {step}")
    # through the model, so the shipped tensors carry today's parameter names (a checkpoint written
    # before a rename loads through the model's state-dict hooks)
    from ..models import HookedICLModel, ModelSpec

    model = HookedICLModel(ModelSpec.from_dict(spec) if isinstance(spec, dict) else spec)
    model.load_state_dict(state)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    folder = _root(root) / name
    sha = save_safetensors(folder / WEIGHTS, state, metadata={"spec": json.dumps(spec), "name": name, "step": str(step)})
    metrics = run.path / "metrics.jsonl"
    if metrics.is_file():
        atomic_write_text(folder / METRICS, metrics.read_text())
    card = PretrainedCard(
        name=name,
        description=" ".join(description.split()),
        arch=cfg.model.arch,
        config=cfg.model_dump(mode="json"),
        n_params=int(sum(t.numel() for t in state.values())),
        steps=step,
        train_seconds=round(float(train_seconds), 1),
        icl_score={**score, "n_prompts": int(eval_summary.get("n_prompts", cfg.eval.n_prompts))},
        eval_summary=eval_summary,
        sha256=sha,
        environment={
            "hookedicl": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "threads": str(cfg.threads or torch.get_num_threads()),
        },
    )
    atomic_write_json(folder / CARD, card.to_dict())
    return card


def train_seconds_from_metrics(rows: list[dict[str, Any]]) -> float:
    """Wall time of the training steps from a metrics log: the sum over log lines of
    (steps since the previous line) / steps_per_s. Survives resumes (each line times its own
    interval); excludes checkpoint writes and evaluation."""
    total, prev = 0.0, 0
    for r in rows:
        sps = r.get("steps_per_s")
        if not sps or sps <= 0:
            raise ValueError(f"metrics line at step {r.get('step')} has no positive steps_per_s")
        total += (r["step"] - prev) / sps
        prev = r["step"]
    return total

