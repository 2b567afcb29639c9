"""Pyramid-OC (paper Sec. 3.3, Fig. 2b): object context within s x s regions for s in 1, 2, 3, 6."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from inplace_abn import NormLayer, default_norm_layer

from .attention import ObjectContext, object_attention


def region_bounds(length: int, parts: int) -> list[tuple[int, int]]:
    """The original's split of ``length`` into ``parts``: step ``length // parts``, the last
    region takes the remainder (so with ``length < parts`` all but the last are empty)."""
    step = length // parts
    bounds = [(i * step, (i + 1) * step) for i in range(parts - 1)]
    return bounds + [((parts - 1) * step, length)]


class RegionObjectContext(ObjectContext):
    """Object context where pixels attend only within their region of an s x s partition.

    The original's _PyramidSelfAttentionBlock (no pooling; its ``scale`` is the partition),
    which loops over the s*s regions. Here regions of one shape are stacked into one batch for
    a single attention call: at most four calls (inner regions, last row, last column, corner)
    however large s is, and one when the map divides evenly.
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
        height, width = key.shape[2:]
        if self.partitions == 1:
            return object_attention(key, value)
        by_shape: dict[tuple[int, int], list[tuple[slice, slice]]] = defaultdict(list)
        for top, bottom in region_bounds(height, self.partitions):
            for left, right in region_bounds(width, self.partitions):
                if bottom > top and right > left:  # a map smaller than s has empty regions
                    by_shape[bottom - top, right - left].append(
                        (slice(top, bottom), slice(left, right))
                    )
        context = value.new_empty(value.shape)
        batch = key.shape[0]
        for regions in by_shape.values():
            keys = torch.cat([key[:, :, rows, cols] for rows, cols in regions])
            values = torch.cat([value[:, :, rows, cols] for rows, cols in regions])
            attended = object_attention(keys, values).split(batch)
            for (rows, cols), region_context in zip(regions, attended):
                context[:, :, rows, cols] = region_context
        return context


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
