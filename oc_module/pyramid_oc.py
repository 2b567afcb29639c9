"""Pyramid-OC (paper Sec. 3.3, Fig. 2b): object context within s x s regions for s in 1, 2, 3, 6."""

from __future__ import annotations

import torch
from torch import nn

from .attention import NormLayer, ObjectContext, default_norm_layer, object_attention


def region_bounds(length: int, parts: int) -> list[tuple[int, int]]:
    """The original's split of ``length`` into ``parts``: step ``length // parts``, the last
    region takes the remainder (so with ``length < parts`` all but the last are empty)."""
    step = length // parts
    bounds = [(i * step, (i + 1) * step) for i in range(parts - 1)]
    return bounds + [((parts - 1) * step, length)]


class RegionObjectContext(ObjectContext):
    """Object context where pixels attend only within their region of an s x s partition.

    The original's _PyramidSelfAttentionBlock (no pooling; its ``scale`` is the partition).
    When every region has the same shape the regions become one batch for a single attention
    call; otherwise (map side not divisible by s) each region is computed on its own.
    """

    def __init__(
        self,
        in_ch: int,
        key_ch: int,
        value_ch: int,
        out_ch: int | None = None,
        partitions: int = 1,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__(in_ch, key_ch, value_ch, out_ch, scale=1, norm_layer=norm_layer)
        self.partitions = partitions

    def attend(self, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        s = self.partitions
        batch, _, height, width = key.shape
        if s == 1:
            return object_attention(key, value)
        if height % s == 0 and width % s == 0:
            return _merge_regions(
                object_attention(_split_regions(key, s), _split_regions(value, s)), batch, s
            )
        context = value.new_empty(value.shape)
        for top, bottom in region_bounds(height, s):
            for left, right in region_bounds(width, s):
                if top == bottom or left == right:
                    continue
                context[:, :, top:bottom, left:right] = object_attention(
                    key[:, :, top:bottom, left:right], value[:, :, top:bottom, left:right]
                )
        return context


def _split_regions(x: torch.Tensor, s: int) -> torch.Tensor:
    """``[B, C, s*h, s*w] -> [B*s*s, C, h, w]``, regions in row-major order."""
    b, c, height, width = x.shape
    x = x.reshape(b, c, s, height // s, s, width // s)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b * s * s, c, height // s, width // s)


def _merge_regions(x: torch.Tensor, batch: int, s: int) -> torch.Tensor:
    """Inverse of :func:`_split_regions`."""
    _, c, h, w = x.shape
    x = x.reshape(batch, s, s, c, h, w).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(batch, c, s * h, s * w)


class PyramidOC(nn.Module):
    """The original's Pyramid_OC_Module.

    Stages use key ``in_ch // 2`` and value ``in_ch`` (as the original); their contexts are
    concatenated with ``up_dr(x)``, a 1x1 conv widening the input to ``in_ch * len(sizes)``,
    then fused by 1x1 conv + ABN + dropout (0.05 in OCNet).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        dropout: float = 0.05,
        sizes: tuple[int, ...] = (1, 2, 3, 6),
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or default_norm_layer()
        groups = len(sizes)
        self.stages = nn.ModuleList(
            RegionObjectContext(in_ch, in_ch // 2, in_ch, out_ch, size, norm_layer)
            for size in sizes
        )
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(in_ch * groups + out_ch * groups, out_ch, kernel_size=1),
            norm_layer(out_ch),
            nn.Dropout2d(dropout),
        )
        self.up_dr = nn.Sequential(
            nn.Conv2d(in_ch, in_ch * groups, kernel_size=1), norm_layer(in_ch * groups)
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        context = [self.up_dr(feats)] + [stage(feats) for stage in self.stages]
        return self.conv_bn_dropout(torch.cat(context, 1))
