"""Activated batch normalisation: BatchNorm2d followed by an activation, as one module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("leaky_relu", "relu", "elu", "identity", "none")


def check_activation(activation: str) -> str:
    """Return the canonical activation name; ``none`` is the original's spelling of identity."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return "identity" if activation == "none" else activation


def apply_activation(x: torch.Tensor, activation: str, slope: float) -> torch.Tensor:
    if activation == "leaky_relu":
        return F.leaky_relu(x, slope)
    if activation == "relu":
        return F.relu(x)
    if activation == "elu":
        return F.elu(x)
    return x


class ABN(nn.BatchNorm2d):
    """BatchNorm2d + activation with the parameter and buffer names of ``nn.BatchNorm2d``.

    The original OCNet's ABN had no ``num_batches_tracked``; it is kept only when ``momentum`` is
    None (cumulative average needs the count), so original state_dicts load with ``strict=True``.
    """

    def __init__(
        self,
        num_features: int,
        activation: str = "leaky_relu",
        slope: float = 0.01,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)
        self.activation = check_activation(activation)
        self.slope = slope
        if momentum is not None:
            self.register_buffer("num_batches_tracked", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_activation(super().forward(x), self.activation, self.slope)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        if self.num_batches_tracked is None:
            state_dict.pop(prefix + "num_batches_tracked", None)
            # BatchNorm adds the key back for state_dicts without version metadata (version < 2),
            # such as the original's; version 2 means "already has the current layout".
            local_metadata = {**local_metadata, "version": 2}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}, slope={self.slope}"
