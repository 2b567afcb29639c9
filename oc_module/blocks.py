"""A map as a grid of equal blocks, each block its own sample, and back.

Attention restricted to blocks (Pyramid-OC's regions, ISA's short-range step) becomes one batched
attention call over the blocks. Sizes are arithmetic on the map's shape, so traced graphs follow
the input size.
"""

from __future__ import annotations

import torch


def map_to_blocks(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``[B, C, rows*h, cols*w] -> [B*rows*cols, C, h, w]``, blocks in row-major order."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, channels, rows, height // rows, cols, width // cols)
    x = x.permute(0, 2, 4, 1, 3, 5)  # [B, rows, cols, C, h, w]
    return x.reshape(batch * rows * cols, channels, height // rows, width // cols)


def blocks_to_map(x: torch.Tensor, batch: int, rows: int, cols: int) -> torch.Tensor:
    """The inverse of :func:`map_to_blocks`: ``[B*rows*cols, C, h, w] -> [B, C, rows*h, cols*w]``."""
    _, channels, height, width = x.shape
    x = x.reshape(batch, rows, cols, channels, height, width).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(batch, channels, rows * height, cols * width)
