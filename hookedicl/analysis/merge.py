"""Model merging: per-tensor spherical linear interpolation (slerp) or linear interpolation of two
models of the same architecture, and merged *run directories* that `hookedicl eval` / `analyze`
accept like any trained run.

Per tensor (flattened to a vector), with `t` in [0, 1]:

  * ``linear``: ``lerp(a, b, t) = a + t (b − a)`` (``torch.lerp``: exact at t = 0 and t = 1, and
    exactly `a` when a = b).
  * ``slerp``: the direction moves along the great circle from â = a/‖a‖ to b̂ = b/‖b‖ and the
    norm is interpolated linearly,

        merged = ((1 − t)‖a‖ + t‖b‖) · (sin((1 − t)ω) â + sin(tω) b̂) / sin ω,   cos ω = â·b̂,

    so ‖merged‖ = (1 − t)‖a‖ + t‖b‖ exactly (for ‖a‖ = ‖b‖ this is the classic slerp of the raw
    vectors). Tensors whose directions are (anti-)parallel, |cos ω| > ``dot_threshold`` (default
    0.9995, where sin ω → 0 makes the formula unstable), or where either norm is ~0, fall back to
    ``lerp``. t = 0 and t = 1 return copies of the endpoints bit for bit.

The arithmetic runs in float64 and is cast back to each tensor's dtype. Non-floating tensors
(none in the current presets) must agree between the models and are copied.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..progress import progress_bar

__all__ = [
    "DOT_THRESHOLD", "MERGE_METHODS", "merge_models", "merge_runs", "merge_state_dicts", "lerp_tensors",
    "slerp_tensors",
]

MERGE_METHODS: tuple[str, ...] = ("slerp", "linear")
DOT_THRESHOLD = 0.9995
_TINY_NORM = 1e-12


def _check_t(t: Any) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0.0 <= t <= 1.0:
        raise ValueError(f"t must be a number in [0, 1], got {t!r}")
    return float(t)


def _check_pair(a: Any, b: Any, name: str = "tensor") -> None:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise ValueError(f"{name}: both endpoints must be torch tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise ValueError(f"{name}: dtypes differ: {a.dtype} vs {b.dtype}")
    if a.is_floating_point() and not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError(f"{name}: contains NaN or inf")


def lerp_tensors(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Linear interpolation `a + t (b − a)` of two same-shape floating tensors (any shape)."""
    t = _check_t(t)
    _check_pair(a, b)
    if not a.is_floating_point():
        raise ValueError(f"lerp needs floating-point tensors, got {a.dtype}")
    return torch.lerp(a, b, t)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float, dot_threshold: float) -> tuple[torch.Tensor, str, float]:
    """(merged tensor, how it was merged, cos ω) for validated inputs."""
    if t == 0.0:
        return a.clone(), "endpoint", float("nan")
    if t == 1.0:
        return b.clone(), "endpoint", float("nan")
    a64, b64 = a.detach().double().reshape(-1), b.detach().double().reshape(-1)
    na, nb = a64.norm(), b64.norm()
    if na <= _TINY_NORM or nb <= _TINY_NORM:
        return torch.lerp(a, b, t), "linear (zero norm)", float("nan")
    cos = float((a64 @ b64) / (na * nb))
    cos = min(1.0, max(-1.0, cos))
    if abs(cos) > dot_threshold:
        return torch.lerp(a, b, t), "linear (parallel)", cos
    omega = math.acos(cos)
    s = math.sin(omega)
    direction = (math.sin((1.0 - t) * omega) / s) * (a64 / na) + (math.sin(t * omega) / s) * (b64 / nb)
    norm = (1.0 - t) * na + t * nb
    out = (norm * direction / direction.norm()).reshape(a.shape).to(a.dtype)
    return out, "slerp", cos


def slerp_tensors(a: torch.Tensor, b: torch.Tensor, t: float, *, dot_threshold: float = DOT_THRESHOLD) -> torch.Tensor:
    """Spherical linear interpolation of two same-shape floating tensors (any shape), treating
    each as one flattened vector; the norm is interpolated linearly (see the module docstring).

    Falls back to `lerp` when |cos ω| > `dot_threshold` or a norm is ~0.
    """
    t = _check_t(t)
    _check_pair(a, b)
    if not a.is_floating_point():
        raise ValueError(f"slerp needs floating-point tensors, got {a.dtype}")
    if not 0.0 < dot_threshold <= 1.0:
        raise ValueError(f"dot_threshold must be in (0, 1], got {dot_threshold!r}")
    return _slerp(a, b, t, dot_threshold)[0]


def merge_state_dicts(
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    t: float = 0.5,
    method: str = "slerp",
    *,
    dot_threshold: float = DOT_THRESHOLD,
) -> tuple[dict[str, torch.Tensor], pd.DataFrame]:
    """Merge two state dicts tensor by tensor; returns `(merged, report)`.

    `report` has one row per tensor: `name, numel, how` (``slerp``, ``linear``,
    ``linear (parallel)``, ``linear (zero norm)``, ``endpoint``, ``copy``), `cos` (cos ω between
    the two tensors, NaN where not computed), `norm_a, norm_b, norm_merged`.
    Raises ValueError naming the first key that is missing on one side or differs in shape/dtype.
    """
    t = _check_t(t)
    if method not in MERGE_METHODS:
        raise ValueError(f"unknown merge method {method!r}; valid: {', '.join(MERGE_METHODS)}")
    if not 0.0 < dot_threshold <= 1.0:
        raise ValueError(f"dot_threshold must be in (0, 1], got {dot_threshold!r}")
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        raise ValueError(f"the models hold different tensors: only in A {only_a}, only in B {only_b}")
    merged: dict[str, torch.Tensor] = {}
    rows = []
    for name in progress_bar(a, total=len(a), desc=f"merge ({method})", unit="tensor"):
        ta, tb = a[name], b[name]
        _check_pair(ta, tb, name)
        if not ta.is_floating_point():
            if not torch.equal(ta, tb):
                raise ValueError(f"{name}: non-floating tensors ({ta.dtype}) differ between the models and cannot be interpolated")
            out, how, cos = ta.clone(), "copy", float("nan")
        elif method == "slerp":
            out, how, cos = _slerp(ta, tb, t, dot_threshold)
        elif t in (0.0, 1.0):
            out, how, cos = (ta if t == 0.0 else tb).clone(), "endpoint", float("nan")
        else:
            out, how, cos = torch.lerp(ta, tb, t), "linear", float("nan")
        merged[name] = out
        rows.append({
            "name": name, "numel": ta.numel(), "how": how, "cos": cos,
            "norm_a": float(ta.double().norm()), "norm_b": float(tb.double().norm()), "norm_merged": float(out.double().norm()),
        })
    return merged, pd.DataFrame(rows)


def _spec_diff(sa: dict[str, Any], sb: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k))


def merge_models(model_a: Any, model_b: Any, t: float = 0.5, method: str = "slerp", *, dot_threshold: float = DOT_THRESHOLD) -> Any:
    """A new `HookedICLModel` (eval mode, on model A's device) interpolating two models of the same
    `ModelSpec`; `t = 0` gives model A, `t = 1` model B."""
    from ..models import HookedICLModel
    from .common import require_model

    require_model(model_a, "merge_models (model_a)")
    require_model(model_b, "merge_models (model_b)")
    diff = _spec_diff(model_a.spec.to_dict(), model_b.spec.to_dict())
    if diff:
        raise ValueError(f"the models' architectures differ in {diff}; only models of one ModelSpec can be merged")
    device = next(model_a.parameters()).device
    sb = {k: v.to(device) for k, v in model_b.state_dict().items()}
    merged, _ = merge_state_dicts(model_a.state_dict(), sb, t, method, dot_threshold=dot_threshold)
    out = HookedICLModel(model_a.spec).to(device)
    out.load_state_dict(merged)
    return out.eval()


def _parse_run(run: Any, step: int | None) -> tuple[Path, int | None]:
    from ..training.config import parse_init_from

    if isinstance(run, str) and step is None:
        return parse_init_from(run)
    return Path(getattr(run, "path", run)), step


def merge_runs(
    run_a: Any,
    run_b: Any,
    out: str | os.PathLike[str],
    *,
    method: str = "slerp",
    t: float = 0.5,
    step_a: int | None = None,
    step_b: int | None = None,
    dot_threshold: float = DOT_THRESHOLD,
) -> Any:
    """Merge two runs' checkpoints into a new run directory `out`; returns its `Run`.

    `run_a` / `run_b`: a `Run`, a path, or ``"RUN_DIR:STEP"``; the checkpoint is `step_a` /
    `step_b` (default: the newest good one). The new directory holds `config.yaml` (run A's
    config with `name` = the directory name and no `init_from`), one checkpoint at step 0 written
    by `save_checkpoint` (weights + spec, sha256 index), `lineage.json` (``how: "merge"``, method,
    t, both parents with their checkpoint sha256 and lineage) and `analysis/merge_tensors.csv`
    (the per-tensor report of `merge_state_dicts`). It is assembled in a temporary sibling
    directory and renamed into place, so `out` is either complete or absent.

    Raises ValueError if `out` exists and is not empty, a run or step is missing, or the
    architectures differ.
    """
    from ..io import atomic_write_text
    from ..models import HookedICLModel, ModelSpec
    from ..training import Run, TrainConfig
    from ..training.checkpoints import save_checkpoint
    from ..training.lineage import parent_entry, write_lineage

    t = _check_t(t)
    if method not in MERGE_METHODS:
        raise ValueError(f"unknown merge method {method!r}; valid: {', '.join(MERGE_METHODS)}")
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"{target} exists and is not an empty directory; choose another output")
    path_a, step_a = _parse_run(run_a, step_a)
    path_b, step_b = _parse_run(run_b, step_b)
    parent_a, weights_a, spec_a = parent_entry(path_a, step_a)
    parent_b, weights_b, spec_b = parent_entry(path_b, step_b)
    diff = _spec_diff(spec_a, spec_b)
    if diff:
        raise ValueError(f"cannot merge {path_a} and {path_b}: their architectures differ in {diff}")
    merged, report = merge_state_dicts(weights_a, weights_b, t, method, dot_threshold=dot_threshold)
    model = HookedICLModel(ModelSpec.from_dict(spec_a))
    model.load_state_dict(merged)
    cfg = TrainConfig.load(path_a / "config.yaml").model_dump(mode="json")
    cfg["name"] = target.name
    if "init_from" in cfg:
        cfg["init_from"] = None
    cfg_text = TrainConfig.model_validate(cfg).to_yaml()

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".merge.tmp", dir=target.parent))
    try:
        save_checkpoint(tmp / "checkpoints", 0, model, {"step": 0})
        write_lineage(tmp, "merge", [parent_a, parent_b], method=method, t=t, dot_threshold=dot_threshold)
        atomic_write_text(tmp / "analysis" / "merge_tensors.csv", report.to_csv(index=False))
        atomic_write_text(tmp / "config.yaml", cfg_text)
        os.chmod(tmp, 0o777 & ~_umask())
        os.rename(tmp, target)  # replaces an empty `target` directory, atomically
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Run(target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
