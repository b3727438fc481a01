"""Checkpoints: model weights as safetensors, optimiser/scheduler/RNG state as a tensors-only
torch file (loaded with `weights_only=True`), and `checkpoints/index.json` with sha256 sums.

Files of one checkpoint are written atomically and the index entry is appended last, so a crash
at any moment leaves the previous checkpoints intact; a corrupted file is detected by its checksum
and `latest()` falls back to the newest good checkpoint (and says so).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_bytes, atomic_write_json, save_safetensors, sha256_file
from ..layout import INDEX, read_step_index, resolve_inside

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def read_index(directory: str | Path) -> list[dict[str, Any]]:
    """The entries of `directory/index.json` (empty when there is none), each checked.

    ValueError names the file and the entry for malformed JSON, a missing or mistyped field, a
    file name leading outside the directory (`UnsafePathError`) or a repeated step."""
    d = Path(directory)
    p, index = read_step_index(d, "checkpoint index", ("model", "state", "sha256_model", "sha256_state"))
    for i, e in enumerate(index):
        where = f"{p} entry {i}"
        for key in ("model", "state"):
            resolve_inside(d, e[key], f"{where} ({key})")
            if not isinstance(e[f"sha256_{key}"], str) or not _SHA256.match(e[f"sha256_{key}"]):
                raise ValueError(f"{where}: sha256_{key} must be 64 hexadecimal digits, got {e[f'sha256_{key}']!r}")
    return index


_index = read_index


def save_checkpoint(directory: str | Path, step: int, model: torch.nn.Module, state: dict[str, Any], keep: int | None = None) -> None:
    """Write checkpoint `step` (model weights + training `state`) and prune to the newest `keep`."""
    d = Path(directory)
    stem = f"step_{step:07d}"
    spec_json = json.dumps(model.spec.to_dict()) if hasattr(model, "spec") else "{}"
    sha_model = save_safetensors(d / f"{stem}.safetensors", model.state_dict(), metadata={"step": str(step), "spec": spec_json})
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(d / f"{stem}.state.pt", buf.getvalue())
    entry = {
        "step": step,
        "model": f"{stem}.safetensors",
        "state": f"{stem}.state.pt",
        "sha256_model": sha_model,
        "sha256_state": hashlib.sha256(buf.getvalue()).hexdigest(),
    }
    index = [e for e in _index(d) if e["step"] != step] + [entry]
    index.sort(key=lambda e: e["step"])
    pruned: list[dict[str, Any]] = []
    if keep is not None and len(index) > keep:
        pruned, index = index[:-keep], index[-keep:]
    atomic_write_json(d / INDEX, index)  # the index first: it never names a deleted file
    for old in pruned:
        for key in ("model", "state"):
            resolve_inside(d, old[key], f"{d / INDEX} ({key})").unlink(missing_ok=True)


def list_checkpoints(directory: str | Path) -> list[int]:
    return [e["step"] for e in _index(Path(directory))]


def _verify(d: Path, e: dict[str, Any]) -> str | None:
    for key in ("model", "state"):
        p = resolve_inside(d, e[key], f"{d / INDEX} ({key})")
        if not p.exists():
            return f"{p} is missing"
        if sha256_file(p) != e[f"sha256_{key}"]:
            return f"{p} is corrupted (sha256 mismatch)"
    return None


def latest_good(directory: str | Path, at_most: int | None = None) -> dict[str, Any] | None:
    """Newest checkpoint entry whose files verify (warning about any skipped), or None."""
    d = Path(directory)
    for e in reversed(_index(d)):
        if at_most is not None and e["step"] > at_most:
            continue
        problem = _verify(d, e)
        if problem is None:
            return e
        warnings.warn(f"skipping checkpoint at step {e['step']}: {problem}; falling back to an earlier one", stacklevel=2)
    return None


def verified_entry(directory: str | Path, step: int | None = None) -> dict[str, Any]:
    """Index entry of checkpoint `step` (default: the newest good one), its files verified.

    Raises ValueError when there is no usable checkpoint, no checkpoint at `step`, or its files
    are missing or corrupted."""
    d = Path(directory)
    if step is None:
        e = latest_good(d)
        if e is None:
            raise ValueError(f"no usable checkpoint in {d}")
        return e
    matches = [e for e in _index(d) if e["step"] == step]
    if not matches:
        raise ValueError(f"no checkpoint at step {step} in {d}; available: {list_checkpoints(d)}")
    problem = _verify(d, matches[0])
    if problem:
        raise ValueError(problem)
    return matches[0]


def load_weights(directory: str | Path, step: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any], int]:
    """(state_dict, spec dict, step) of checkpoint `step` (default: the newest good one)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    d = Path(directory)
    e = verified_entry(d, step)
    path = resolve_inside(d, e["model"], f"{d / INDEX} (model)")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("step") not in (None, str(e["step"])):
        raise ValueError(f"{path} holds the weights of step {meta['step']}, but {d / INDEX} lists it as step {e['step']}")
    try:
        spec = json.loads(meta.get("spec", "{}"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: the model spec in its metadata is not valid JSON ({err})") from None
    return load_file(str(path)), spec, e["step"]


def load_state(directory: str | Path, entry: dict[str, Any]) -> dict[str, Any]:
    d = Path(directory)
    return torch.load(resolve_inside(d, entry["state"], f"{d / INDEX} (state)"), weights_only=True)
