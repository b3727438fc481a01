"""`TaskBatch`: one batch of in-context prompts and the ground truth that generated them."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TaskBatch:
    """A batch of prompts ``(x_1, y_1, ..., x_n, y_n)``.

    Attributes:
        xs: ``(batch, n_points, n_dims)`` inputs.
        ys: ``(batch, n_points)`` scalar targets, or ``(batch, n_points, y_dim)`` vector targets.
        params: ground truth of each prompt's function, every tensor with the batch as its
            leading dimension (e.g. ``{"w": (batch, n_dims)}`` for linear regression).

    The constructor checks the shapes; it does not convert dtypes or devices.
    """

    xs: torch.Tensor
    ys: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    def __repr__(self) -> str:
        params = ", ".join(f"{k} {tuple(v.shape)}" for k, v in self.params.items()) or "none"
        return f"TaskBatch(xs {tuple(self.xs.shape)}, ys {tuple(self.ys.shape)}, params: {params}; {self.xs.dtype}, {self.xs.device})"

    def __post_init__(self) -> None:
        if not isinstance(self.xs, torch.Tensor) or not isinstance(self.ys, torch.Tensor):
            raise ValueError("xs and ys must be torch.Tensors")
        if self.xs.ndim != 3:
            raise ValueError(f"xs must have shape (batch, n_points, n_dims), got {tuple(self.xs.shape)}")
        if not self.xs.is_floating_point():
            raise ValueError(f"xs must be a floating-point tensor, got dtype {self.xs.dtype}")
        if not self.ys.is_floating_point():
            raise ValueError(f"ys must be a floating-point tensor, got dtype {self.ys.dtype}")
        if self.ys.ndim not in (2, 3) or tuple(self.ys.shape[:2]) != tuple(self.xs.shape[:2]):
            raise ValueError(
                f"ys must have shape (batch, n_points) or (batch, n_points, y_dim) matching "
                f"xs {tuple(self.xs.shape)}, got {tuple(self.ys.shape)}"
            )
        if not isinstance(self.params, dict):
            raise ValueError(f"params must be a dict of tensors, got {type(self.params).__name__}")
        for key, value in self.params.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"params[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
            if value.ndim == 0 or value.shape[0] != self.batch_size:
                raise ValueError(
                    f"params[{key!r}] must have the batch ({self.batch_size}) as leading "
                    f"dimension, got shape {tuple(value.shape)}"
                )

    @property
    def batch_size(self) -> int:
        return self.xs.shape[0]

    @property
    def n_points(self) -> int:
        return self.xs.shape[1]

    @property
    def n_dims(self) -> int:
        return self.xs.shape[2]

    @property
    def y_dim(self) -> int:
        """1 for scalar targets, else the size of the target vectors."""
        return 1 if self.ys.ndim == 2 else self.ys.shape[2]

    @property
    def device(self) -> torch.device:
        return self.xs.device

    def to(self, device: torch.device | str) -> TaskBatch:
        """A copy with every tensor (xs, ys, params) on ``device``."""
        return TaskBatch(
            xs=self.xs.to(device),
            ys=self.ys.to(device),
            params={k: v.to(device) for k, v in self.params.items()},
        )

    def select(self, index: torch.Tensor | slice | list[int]) -> TaskBatch:
        """The prompts at ``index`` along the batch dimension (xs, ys and params together)."""
        return TaskBatch(
            xs=self.xs[index],
            ys=self.ys[index],
            params={k: v[index] for k, v in self.params.items()},
        )
