"""Typed architecture specs: a model is a `ModelSpec`, i.e. a list of `BlockSpec`s.

Presets (`hookedicl.models.presets`) are functions returning a `ModelSpec`; there are no
per-architecture classes. A spec round-trips through JSON/YAML (`to_dict` / `from_dict`), so a
checkpoint carries its exact architecture.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator


MAX_INPUT_MAGNITUDE = 1e6
"""Largest |x| or |y| a model accepts (`HookedICLModel.check_inputs`): beyond it float32
activations overflow in some architectures (squared in a norm, summed over d_model) and the
predictions would be NaN."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttentionSpec(_Spec):
    """Causal multi-head self-attention (softmax; or linear, i.e. no softmax, as in von Oswald et al.)."""

    kind: Literal["attention"] = "attention"
    n_heads: PositiveInt = 8
    rope: bool = False
    rope_theta: PositiveFloat = 10000.0
    bias: bool = True
    softmax: bool = True


class MLPSpec(_Spec):
    """Two-layer MLP. `act="gelu_tanh"` is HF GPT-2's `gelu_new` (what `convert.from_hf` sets for
    GPT-2 checkpoints); the default is the exact (erf) GELU, whose CPU kernel measured ~3x faster
    than the tanh approximation's in torch 2.13 here (they differ by < 1e-3)."""

    kind: Literal["mlp"] = "mlp"
    d_mlp: PositiveInt | None = None  # default 4 * d_model
    act: Literal["gelu", "gelu_tanh", "relu", "silu"] = "gelu"
    bias: bool = True


class SwiGLUSpec(_Spec):
    """LLaMA MLP: down(silu(gate(x)) * up(x))."""

    kind: Literal["swiglu"] = "swiglu"
    d_mlp: PositiveInt | None = None  # default 4 * d_model
    bias: bool = False


class MambaSpec(_Spec):
    """Mamba (S6) mixer, HF `MambaMixer` numerics. At init Δ = softplus(dt_proj.bias) is sampled per
    channel log-uniformly in [dt_min, dt_max] and clamped below at dt_init_floor (Mamba's init)."""

    kind: Literal["mamba"] = "mamba"
    d_state: PositiveInt = 16
    expand: PositiveInt = 4
    d_conv: PositiveInt = 4
    dt_rank: PositiveInt | Literal["auto"] = "auto"  # auto = ceil(d_model / 16)
    bias: bool = False
    conv_bias: bool = True
    dt_min: PositiveFloat = 0.001
    dt_max: PositiveFloat = 0.1
    dt_init_floor: PositiveFloat = 1e-4

    @model_validator(mode="after")
    def _check_dt(self) -> "MambaSpec":
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min={self.dt_min} must be <= dt_max={self.dt_max}")
        return self


class NoneSpec(_Spec):
    """An empty slot (e.g. Mamba blocks have no ffn)."""

    kind: Literal["none"] = "none"


MixerSpec = Annotated[Union[AttentionSpec, MambaSpec], Field(discriminator="kind")]
FFNSpec = Annotated[Union[MLPSpec, SwiGLUSpec, MambaSpec, NoneSpec], Field(discriminator="kind")]


class BlockSpec(_Spec):
    """One block: two pre-norm residual slots, `x += mixer(norm1(x)); x += ffn(norm2(x))`."""

    mixer: MixerSpec
    ffn: FFNSpec = NoneSpec()


class ModelSpec(_Spec):
    """A whole model: read-in over the interleaved (x, y) sequence, blocks, final norm, read-out.

    Token layout (`layout`):
      * ``"garg"`` (default): x token = ``[x, 0?]`` padded to `n_dims`, y token = ``[y, 0, ..., 0]``
        (y in coordinate 0), read-in ``Linear(n_dims -> d_model)``.
      * ``"akyurek"``: one extra coordinate; x token = ``[0, x]``, y token = ``[y, 0_d]``,
        read-in ``Linear(n_dims + y_dim -> d_model)``.
      * ``"paired"``: x token = ``[x, 0]``, y token = ``[x, y]`` (von Oswald et al.'s
        (x, y) tokens): a single linear self-attention layer can then compute one GD step.

    `norm="none"` drops the norms (identity; no ln hooks), as in von Oswald et al.'s
    linear self-attention models.
    """

    n_dims: PositiveInt = 20
    y_dim: PositiveInt = 1
    d_model: PositiveInt = 256
    n_ctx: PositiveInt = 256  # max tokens (= 2 * n_points) for learned positions
    pos_embed: Literal["learned", "none"] = "learned"
    norm: Literal["layernorm", "rmsnorm", "none"] = "layernorm"
    norm_eps: PositiveFloat = 1e-5
    layout: Literal["garg", "akyurek", "paired"] = "garg"
    init_std: PositiveFloat = 0.02
    blocks: list[BlockSpec] = Field(min_length=1)
    name: str = "custom"

    @model_validator(mode="after")
    def _check(self) -> "ModelSpec":
        for i, b in enumerate(self.blocks):
            for slot in ("mixer", "ffn"):
                s = getattr(b, slot)
                if isinstance(s, AttentionSpec):
                    if self.d_model % s.n_heads:
                        raise ValueError(
                            f"blocks[{i}].{slot}.n_heads={s.n_heads} must divide d_model={self.d_model}"
                        )
                    if s.rope and (self.d_model // s.n_heads) % 2:
                        raise ValueError(
                            f"blocks[{i}].{slot}: RoPE needs an even d_head, got {self.d_model // s.n_heads}"
                        )
        if self.layout == "garg" and self.y_dim > self.n_dims:
            raise ValueError(
                f"layout='garg' puts y in the first y_dim coordinates of an x-sized token: "
                f"y_dim={self.y_dim} > n_dims={self.n_dims}; use layout='akyurek'"
            )
        return self

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def n_params(self) -> int:
        """Parameter count of the model this spec builds, computed from the spec alone (no
        module is built: cheap for any size; equal to `HookedICLModel(spec).n_params`)."""
        d = self.d_model
        norm = {"layernorm": 2 * d, "rmsnorm": d, "none": 0}[self.norm]
        total = self.d_in * d + d + (self.n_ctx * d if self.pos_embed == "learned" else 0) + norm + d * self.y_dim + self.y_dim
        for b in self.blocks:
            total += norm + _slot_params(b.mixer, d)
            if b.ffn.kind != "none":
                total += norm + _slot_params(b.ffn, d)
        return total

    @property
    def d_in(self) -> int:
        """Width of one token fed to the read-in."""
        return self.n_dims + (0 if self.layout == "garg" else self.y_dim)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        return cls.model_validate(d)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "ModelSpec":
        import yaml

        return cls.from_dict(yaml.safe_load(text))

    def summary(self) -> str:
        """One line per run of identical blocks, e.g. ``"11 x [attention(rope) | swiglu]"``."""

        def slot(s: Any) -> str:
            if isinstance(s, AttentionSpec):
                extra = [x for x, on in (("rope", s.rope), ("linear", not s.softmax)) if on]
                return "attention" + (f"({','.join(extra)})" if extra else "")
            return s.kind

        lines: list[str] = []
        prev, count = None, 0
        for b in self.blocks:
            cur = f"[{slot(b.mixer)} | {slot(b.ffn)}]"
            if cur == prev:
                count += 1
            else:
                if prev is not None:
                    lines.append(f"{count} x {prev}")
                prev, count = cur, 1
        lines.append(f"{count} x {prev}")
        return " + ".join(lines)


def module_name(component: Any, slot: str) -> str:
    """The submodule name of a slot's component in a `Block`: `attn` / `mlp`, or the slot name
    (`mixer` / `ffn`) for a Mamba."""
    if isinstance(component, AttentionSpec):
        return "attn"
    if isinstance(component, (MLPSpec, SwiGLUSpec)):
        return "mlp"
    return slot


def mamba_dt_rank(spec: MambaSpec, d_model: int) -> int:
    return math.ceil(d_model / 16) if spec.dt_rank == "auto" else int(spec.dt_rank)


def _slot_params(s: Any, d: int) -> int:
    """Parameters of one block slot (see the component modules)."""
    if isinstance(s, AttentionSpec):
        return 4 * d * d + (4 * d if s.bias else 0)
    if isinstance(s, MLPSpec):
        m = s.d_mlp or 4 * d
        return 2 * d * m + (m + d if s.bias else 0)
    if isinstance(s, SwiGLUSpec):
        m = s.d_mlp or 4 * d
        return 3 * d * m + (2 * m + d if s.bias else 0)
    if isinstance(s, MambaSpec):
        di, r, n = s.expand * d, mamba_dt_rank(s, d), s.d_state
        return (d * 2 * di + (2 * di if s.bias else 0) + di * s.d_conv + (di if s.conv_bias else 0)
                + di * (r + 2 * n) + r * di + di + di * n + di + di * d + (d if s.bias else 0))
    return 0
