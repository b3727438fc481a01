"""Where in a model: token positions and intervention sites.

One positions selector, used by everything that picks tokens (activation capture during training,
probing, ablation, patching, SAE splicing, the nnsight adapter):

    "all"            every token
    "x" / "y"        the x tokens (0, 2, 4, ...) / the y tokens (1, 3, 5, ...)
    "last"           the last x token (the query: token 2 (n_points - 1))
    7 or [0, 2, 5]   token indices of the interleaved sequence (x_i at 2i, y_i at 2i + 1)

An index outside `0 .. n_tokens - 1`, a repeated index, a non-integer or an empty selection is a
`ValueError` that names the offending value and the valid range. Nothing is dropped silently.

A `Site` is data: a hook name, the positions, and a unit (`head`, `slot`, `state`, `direction`,
`resid` or the whole `hook`). `Site.head(1, 0)`, `Site.slot(0, "ffn")`, `Site.state(2)`,
`Site.write(2)`, `Site.resid(3)` and `Site.direction(3, u)` build the common ones;
`site.resolve(model)` checks a site against a model (and maps a slot to the block's actual hook,
e.g. `blocks.0.hook_mixer_out` -> `blocks.0.hook_attn_out` for an attention mixer).
`hookedicl.analysis.interventions` pairs a site with a kind (zero, mean, resample, patch,
project-out, SAE-replace, add).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Union

import numpy as np
import torch

PositionSpec = Union[str, int, Sequence[int]]
POSITION_NAMES: tuple[str, ...] = ("all", "x", "y", "last")
Unit = Literal["head", "slot", "state", "direction", "resid", "hook"]

_HEAD_AT_2 = ("hook_q", "hook_k", "hook_v", "hook_rot_q", "hook_rot_k", "hook_z")
_HEAD_AT_1 = ("hook_attn_scores", "hook_pattern")
_SLOT = re.compile(r"^blocks\.(\d+)\.hook_(attn|mlp|mixer|ffn)_out$")
_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|mid|post)$")
_STATE = ("hook_ssm_state", "hook_ssm_write")


# ------------------------------------------------------------------------------ positions
def token_positions(spec: PositionSpec, n_tokens: int, *, field_name: str = "positions") -> list[int]:
    """The token indices `spec` selects in a sequence of `n_tokens` tokens (sorted as given for a
    list; ascending for the names). Raises ValueError naming `field_name` on a bad selection."""
    if not isinstance(n_tokens, (int, np.integer)) or n_tokens < 1:
        raise ValueError(f"{field_name}: the prompts have no tokens (n_tokens={n_tokens!r}); need n_points >= 1")
    if isinstance(spec, str):
        if spec == "all":
            return list(range(n_tokens))
        if spec == "x":
            return list(range(0, n_tokens, 2))
        if spec == "y":
            return list(range(1, n_tokens, 2))
        if spec == "last":
            return [n_tokens - 2 if n_tokens % 2 == 0 else n_tokens - 1]
        raise ValueError(f"{field_name} must be one of {POSITION_NAMES} or token indices, got {spec!r}")
    if isinstance(spec, (bool, np.bool_)):
        raise ValueError(f"{field_name} must be one of {POSITION_NAMES} or token indices, got {spec!r}")
    if isinstance(spec, (int, np.integer)):
        spec = [spec]
    try:
        idx = list(spec)
    except TypeError:
        raise ValueError(f"{field_name} must be one of {POSITION_NAMES} or token indices, got {spec!r}") from None
    if not idx:
        raise ValueError(f"{field_name} selects no token position (empty list)")
    bad = [p for p in idx if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer))]
    if bad:
        raise ValueError(f"{field_name}: token indices must be integers, got {bad}")
    out = [p for p in idx if not 0 <= p < n_tokens]
    if out:
        raise ValueError(f"{field_name}: position(s) {[int(p) for p in out]} out of range: the prompts have token "
                         f"positions 0..{n_tokens - 1}")
    if len(set(idx)) != len(idx):
        raise ValueError(f"{field_name}: repeated token position(s) in {[int(p) for p in idx]}")
    return [int(p) for p in idx]


def check_position_spec(spec: PositionSpec, *, field_name: str = "positions") -> None:
    """Validate `spec` before the sequence length is known: a name, or distinct integers >= 0
    (the range is checked by `token_positions` once the length is known)."""
    if isinstance(spec, str) or isinstance(spec, (bool, np.bool_)):
        token_positions(spec, 2, field_name=field_name)
        return
    idx = [spec] if isinstance(spec, (int, np.integer)) else spec
    try:
        idx = list(idx)
    except TypeError:
        raise ValueError(f"{field_name} must be one of {POSITION_NAMES} or token indices, got {spec!r}") from None
    ints = [p for p in idx if isinstance(p, (int, np.integer)) and not isinstance(p, (bool, np.bool_))]
    token_positions(idx, max([int(p) for p in ints if p >= 0], default=0) + 1, field_name=field_name)


def hook_pos_dim(name: str) -> int:
    """Dimension of hook `name` that indexes token positions (the query axis for patterns)."""
    return 2 if name.endswith(_HEAD_AT_1) else 1


def hook_head_dim(name: str) -> int | None:
    """Dimension of hook `name` that indexes attention heads, or None if it has none."""
    if name.endswith(_HEAD_AT_2):
        return 2
    if name.endswith(_HEAD_AT_1):
        return 1
    return None


def resid_hook(layer: int) -> str:
    """Hook name of residual-stream layer `layer`: 0 is the embedding (`blocks.0.hook_resid_pre`),
    l >= 1 the output of block l - 1 (`blocks.{l-1}.hook_resid_post`)."""
    return "blocks.0.hook_resid_pre" if layer == 0 else f"blocks.{layer - 1}.hook_resid_post"


def hook_layer(name: str) -> int:
    """The `layer` reported for hook `name`: the residual layer for `blocks.{l}.hook_resid_pre`
    (l) and `blocks.{l}.hook_resid_post` (l + 1); otherwise the block index l of `blocks.{l}.*`;
    0 for `hook_embed` / `hook_pos_embed`; -1 for any other name (e.g. `hook_readout`)."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == "blocks" and parts[1].isdigit():
        l = int(parts[1])
        return l + 1 if name.endswith("hook_resid_post") else l
    return 0 if name in ("hook_embed", "hook_pos_embed") else -1


# ---------------------------------------------------------------------------------- sites
@dataclass(frozen=True, eq=False)
class Site:
    """A place in the model: hook `hook`, token `positions`, and optionally one attention `head`
    (for hooks with a head axis) or a residual `direction` `(d_model,)` (the component along it).

    Frozen data; compare sites by `key`. `label` names it in tables (default: `L{l}H{h}`,
    `L{l}.mixer`, `L{l}.mixer.state`, `resid{l}.{name}` or the hook name).
    """

    hook: str
    positions: PositionSpec = "all"
    head: int | None = None
    direction: torch.Tensor | None = field(default=None, repr=False)
    name: str = ""

    # ---------------------------------------------------------------- constructors
    @classmethod
    def head_of(cls, layer: int, head: int, positions: PositionSpec = "all") -> "Site":
        """Attention head `head` of block `layer`: `blocks.{layer}.attn.hook_z[:, :, head]`."""
        return cls(f"blocks.{layer}.attn.hook_z", positions, head=head)

    @classmethod
    def slot(cls, layer: int, slot: Literal["mixer", "ffn"] = "mixer", positions: PositionSpec = "all") -> "Site":
        """The output of block `layer`'s mixer or ffn residual branch."""
        if slot not in ("mixer", "ffn"):
            raise ValueError(f"slot must be 'mixer' or 'ffn', got {slot!r}")
        return cls(f"blocks.{layer}.hook_{slot}_out", positions)

    @classmethod
    def state(cls, layer: int, slot: Literal["mixer", "ffn"] = "mixer", positions: PositionSpec = "all") -> "Site":
        """The Mamba state h_t (`hook_ssm_state`) of the Mamba in `slot` of block `layer`. An edit
        changes that layer's y_t at the edited positions only (the scan has already run)."""
        return cls(f"blocks.{layer}.{slot}.hook_ssm_state", positions)

    @classmethod
    def write(cls, layer: int, slot: Literal["mixer", "ffn"] = "mixer", positions: PositionSpec = "all") -> "Site":
        """The Mamba per-step state write Δ_t·(u_t ⊗ B_t) (`hook_ssm_write`); an edit at t carries
        forward through the recurrence to every later state."""
        return cls(f"blocks.{layer}.{slot}.hook_ssm_write", positions)

    @classmethod
    def resid(cls, layer: int, positions: PositionSpec = "all") -> "Site":
        """Residual-stream layer `layer` (0 = embedding; see `resid_hook`)."""
        return cls(resid_hook(layer), positions)

    @classmethod
    def along(cls, layer: int, direction: torch.Tensor, name: str = "direction", positions: PositionSpec = "all") -> "Site":
        """The component of residual layer `layer` along `direction` `(d_model,)`."""
        return cls(resid_hook(layer), positions, direction=direction, name=name)

    # ------------------------------------------------------------------ properties
    @property
    def unit(self) -> Unit:
        if self.head is not None:
            return "head"
        if self.direction is not None:
            return "direction"
        if self.hook.endswith(_STATE):
            return "state"
        if _SLOT.match(self.hook):
            return "slot"
        if _RESID.match(self.hook):
            return "resid"
        return "hook"

    @property
    def layer(self) -> int:
        return hook_layer(self.hook)

    @property
    def label(self) -> str:
        l = self.layer
        unit = self.unit
        if unit == "head":
            base = f"L{l}H{self.head}"
        elif unit == "direction":
            base = f"resid{l}.{self.name or 'direction'}"
        elif unit == "slot":
            m = _SLOT.match(self.hook)
            base = f"L{l}." + ("mixer" if m.group(2) in ("attn", "mixer") else "ffn")  # type: ignore[union-attr]
        elif unit == "state":
            parts = self.hook.split(".")
            base = f"L{l}.{parts[2]}." + ("state" if self.hook.endswith("hook_ssm_state") else "write")
        else:
            base = self.hook
        return base if self.positions == "all" else f"{base}@{_pos_label(self.positions)}"

    @property
    def key(self) -> tuple[Any, ...]:
        """Hashable identity: hook, positions, head, direction values."""
        pos = self.positions if isinstance(self.positions, (str, int)) else tuple(self.positions)
        d = None if self.direction is None else tuple(self.direction.detach().cpu().flatten().tolist())
        return (self.hook, pos, self.head, d)

    def at(self, positions: PositionSpec) -> "Site":
        """The same site at other positions."""
        return replace(self, positions=positions)

    # -------------------------------------------------------------------- checks
    def resolve(self, model: Any) -> "Site":
        """This site checked against `model`: the hook exists (a slot name maps to the block's hook,
        e.g. `hook_mixer_out` -> `hook_attn_out`), the head is in range and the direction has
        shape `(d_model,)`, is finite and non-zero; the positions are a valid selector. Raises
        ValueError naming the problem."""
        hook = self.hook
        m = _SLOT.match(hook)
        if m is not None:
            l, which = int(m.group(1)), m.group(2)
            _check_block(model, l)
            block = model.blocks[l]
            if which in ("mixer", "attn"):
                hook = f"blocks.{l}.hook_{block.mixer_name}_out"
            else:
                if block.ffn_name is None:
                    raise ValueError(f"block {l} has no ffn slot (architecture {model.spec.name})")
                hook = f"blocks.{l}.hook_{block.ffn_name}_out"
        if hook.endswith(_STATE) and hook not in model.hook_dict:
            parts = hook.split(".")
            if len(parts) == 4 and parts[0] == "blocks" and parts[1].isdigit():
                l = int(parts[1])
                _check_block(model, l)
                block = model.blocks[l]
                module = block.mixer_name if parts[2] == "mixer" else block.ffn_name
                raise ValueError(f"block {l}'s {parts[2]} ({module}) is not a Mamba module: no {hook}")
        if hook not in model.hook_dict:
            if _RESID.match(hook):
                raise ValueError(f"residual layer={self.layer} out of range: this model's residual layers are "
                                 f"0..{len(model.blocks)} (hook {hook})")
            if self.unit == "head" and hook.endswith("attn.hook_z"):
                l = hook_layer(hook)
                _check_block(model, l)
                raise ValueError(f"block {l} has no attention (its mixer is {model.blocks[l].mixer_name})")
            raise ValueError(f"unknown hook {hook!r} for this model; see `hookedicl hooks {model.spec.name}`")
        if self.head is not None:
            hd = hook_head_dim(hook)
            if hd is None:
                raise ValueError(f"head={self.head!r} given but hook {hook} has no head axis")
            n_heads = model.get_submodule(".".join(hook.split(".")[:3])).n_heads
            if isinstance(self.head, bool) or not isinstance(self.head, (int, np.integer)) or not 0 <= self.head < n_heads:
                raise ValueError(f"head={self.head!r} out of range: {hook} has heads 0..{n_heads - 1}")
        if self.direction is not None:
            d = self.direction
            if not isinstance(d, torch.Tensor) or d.shape != (model.spec.d_model,):
                shape = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
                raise ValueError(f"direction must be a tensor of shape ({model.spec.d_model},), got {shape}")
            if not torch.isfinite(d).all() or float(d.norm()) == 0.0:
                raise ValueError("direction must be finite and non-zero")
            if hook_pos_dim(hook) != 1 or hook_head_dim(hook) is not None:
                raise ValueError(f"a direction site needs a [batch, pos, d] hook, got {hook}")
        check_position_spec(self.positions)
        return self if hook == self.hook else replace(self, hook=hook)

    # ----------------------------------------------------------- reading / writing
    def mask(self, act: torch.Tensor) -> torch.Tensor:
        """Boolean mask broadcastable to `act` (this hook's activation `[batch, ...]`): True at the
        site's positions (and head). Raises ValueError for positions out of range."""
        pos_dim = hook_pos_dim(self.hook)
        n_tokens = act.shape[pos_dim]
        shape = [1] * act.ndim
        shape[pos_dim] = n_tokens
        m = torch.zeros(n_tokens, dtype=torch.bool, device=act.device)
        m[token_positions(self.positions, n_tokens, field_name=f"positions of site {self.label}")] = True
        m = m.view(shape)
        if self.head is not None:
            hd = hook_head_dim(self.hook)
            hshape = [1] * act.ndim
            hshape[hd] = act.shape[hd]  # type: ignore[index]
            h = torch.zeros(act.shape[hd], dtype=torch.bool, device=act.device)  # type: ignore[index]
            h[self.head] = True
            m = m & h.view(hshape)
        return m

    def unit_direction(self, act: torch.Tensor) -> torch.Tensor:
        """The direction normalised to length 1, on `act`'s device and dtype."""
        assert self.direction is not None
        return (self.direction / self.direction.norm()).to(act.device, act.dtype)

    def replace_in(self, act: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """`act` with the site's values taken from `new` (same shape, or broadcastable). For a
        direction site only the component along the direction is replaced."""
        m = self.mask(act)
        if self.direction is None:
            return torch.where(m, new.expand_as(act).to(act.dtype), act)
        u = self.unit_direction(act)
        delta = ((new.to(act.dtype) - act) @ u)[..., None] * u
        return act + m * delta

    def add_to(self, act: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        """`act` plus `vector` (broadcast to the site's feature shape) at the site."""
        return act + self.mask(act) * vector.to(act.device, act.dtype)


def _pos_label(p: PositionSpec) -> str:
    if isinstance(p, str):
        return p
    if isinstance(p, (int, np.integer)):
        return str(int(p))
    return ",".join(str(int(t)) for t in p)


def _check_block(model: Any, layer: int) -> None:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < len(model.blocks):
        raise ValueError(f"layer={layer!r} out of range: this model has blocks 0..{len(model.blocks) - 1}")
