"""Activation capture during training, and reading it back.

`ActivationRecorder.capture(model, batch, step)` is a context manager put around the training
forward on capture steps: it attaches forward hooks through the TransformerLens hook API
(`model.hooks(...)`, removed on exit even if the forward raises), keeps the first `n_prompts`
prompts at the chosen token positions in the chosen dtype, and on exit writes one safetensors
shard `activations/step_XXXXXXX.safetensors` with the activations (`act/<hook>`), the batch's
`xs`, `ys` and task parameters (`params/<name>`), and appends an entry to
`activations/index.json` (step, file, hooks, shapes, positions, sha256).

`ActivationStore(run_dir / "activations")` reads them: `.steps`, `.load(step)`, `.stack(hook)`.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_json, save_safetensors, sha256_file
from ..layout import INDEX, read_step_index, resolve_inside
from ..models.sites import hook_pos_dim, token_positions

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_hooks(hook_dict: Mapping[str, Any], patterns: list[str]) -> list[str]:
    """Hook names matching `patterns` (exact names or fnmatch globs), in forward order.

    Raises ValueError naming a pattern that matches no hook.
    """
    names = list(hook_dict)
    out: list[str] = []
    for pat in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise ValueError(f"capture.hooks: {pat!r} matches no hook of this model (see `hookedicl hooks ARCH`)")
        out += [h for h in hits if h not in out]
    order = {n: i for i, n in enumerate(names)}
    return sorted(out, key=order.__getitem__)


class ActivationRecorder:
    def __init__(
        self,
        out_dir: str | Path,
        hooks: list[str],
        *,
        every: int,
        n_prompts: int | None,
        positions: str | list[int] = "all",
        dtype: str = "float32",
    ) -> None:
        self.out_dir = Path(out_dir)
        self.hooks = hooks
        self.every = every
        self.n_prompts = n_prompts
        self.positions = positions
        self.dtype = _DTYPES[dtype]

    def due(self, step: int, last_step: int) -> bool:
        return bool(self.hooks) and (step % self.every == 0 or step == last_step)

    @contextlib.contextmanager
    def capture(self, model: Any, batch: Any, step: int) -> Iterator[None]:
        store: dict[str, torch.Tensor] = {}
        n_tokens = 2 * batch.xs.shape[1]
        idx = None if self.positions == "all" else torch.tensor(
            token_positions(self.positions, n_tokens, field_name="capture.positions"), dtype=torch.long)

        def save(act: torch.Tensor, hook: Any) -> None:
            a = act.detach()[: self.n_prompts]
            if idx is not None:
                a = a.index_select(hook_pos_dim(hook.name), idx.to(a.device))
            store[f"act/{hook.name}"] = a.to(self.dtype).cpu().clone()

        with model.hooks(fwd_hooks=[(name, save) for name in self.hooks]):
            yield
        self._write(step, store, batch, n_tokens, idx)

    def _write(self, step: int, store: dict[str, torch.Tensor], batch: Any, n_tokens: int, idx: torch.Tensor | None) -> None:
        k = self.n_prompts
        tensors = dict(store)
        tensors["xs"] = batch.xs[:k]
        tensors["ys"] = batch.ys[:k]
        for name, value in batch.params.items():
            if isinstance(value, torch.Tensor):
                tensors[f"params/{name}"] = value[:k]
        fname = f"step_{step:07d}.safetensors"
        digest = save_safetensors(self.out_dir / fname, tensors, metadata={"step": str(step)})
        entry = {
            "step": step,
            "file": fname,
            "sha256": digest,
            "hooks": sorted(store_key[4:] for store_key in store),
            "shapes": {key: list(t.shape) for key, t in tensors.items()},
            "n_prompts": int(batch.xs[:k].shape[0]),
            "n_points": int(batch.xs.shape[1]),
            "positions": idx.tolist() if idx is not None else "all",
            "n_tokens": n_tokens,
            "dtype": str(self.dtype).replace("torch.", ""),
        }
        index = read_index(self.out_dir)
        index = [e for e in index if e["step"] != step] + [entry]
        atomic_write_json(self.out_dir / INDEX, sorted(index, key=lambda e: e["step"]))

    def truncate_after(self, step: int) -> None:
        """Forget shards newer than `step` (used when resuming from a checkpoint at `step`)."""
        index = read_index(self.out_dir)
        keep = [e for e in index if e["step"] <= step]
        for e in index:
            if e["step"] > step:
                resolve_inside(self.out_dir, e["file"], f"{self.out_dir / INDEX} (file)").unlink(missing_ok=True)
        if len(keep) != len(index):
            atomic_write_json(self.out_dir / INDEX, keep)


def read_index(directory: str | Path) -> list[dict[str, Any]]:
    """The entries of `directory/index.json` (empty when there is none), each checked.

    ValueError names the file and entry for malformed JSON, a missing or mistyped field, a
    repeated step or a file name leading outside the directory (`UnsafePathError`)."""
    d = Path(directory)
    p, index = read_step_index(d, "activation index", ("file", "sha256", "hooks", "positions"))
    for i, e in enumerate(index):
        where = f"{p} entry {i}"
        resolve_inside(d, e["file"], f"{where} (file)")
        if not isinstance(e["sha256"], str) or not isinstance(e["hooks"], list):
            raise ValueError(f"{where}: sha256 must be a string and hooks a list")
    return index


class ActivationStore:
    """Read-only access to a run's captured activations (`RUN/activations`)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.index = {e["step"]: e for e in read_index(self.dir)}

    @property
    def steps(self) -> list[int]:
        return sorted(self.index)

    @property
    def hooks(self) -> list[str]:
        return sorted({h for e in self.index.values() for h in e["hooks"]})

    def __len__(self) -> int:
        return len(self.index)

    def load(self, step: int, *, verify: bool = True) -> dict[str, Any]:
        """`{"act": {hook: tensor}, "xs", "ys", "params": {...}, "positions", "step"}` for one shard."""
        from safetensors.torch import load_file

        if step not in self.index:
            raise ValueError(f"no activations captured at step {step}; captured steps: {self.steps}")
        e = self.index[step]
        path = resolve_inside(self.dir, e["file"], f"{self.dir / INDEX} (file)")
        if verify and sha256_file(path) != e["sha256"]:
            raise ValueError(f"activation shard {path} is corrupted (sha256 differs from {INDEX})")
        flat = load_file(str(path))
        out: dict[str, Any] = {"act": {}, "params": {}, "step": step, "positions": e["positions"]}
        for key, t in flat.items():
            if key.startswith("act/"):
                out["act"][key[4:]] = t
            elif key.startswith("params/"):
                out["params"][key[7:]] = t
            else:
                out[key] = t
        return out

    def stack(self, hook: str, steps: list[int] | None = None) -> tuple[list[int], torch.Tensor]:
        """One hook over training time: `(steps, tensor (n_steps, *shape))` (shapes must agree)."""
        steps = self.steps if steps is None else steps
        acts = [self.load(s)["act"][hook] for s in steps]
        shapes = {tuple(a.shape) for a in acts}
        if len(shapes) > 1:
            raise ValueError(f"{hook}: shapes differ across steps ({sorted(shapes)}); pass steps= with one shape")
        return steps, torch.stack(acts)


