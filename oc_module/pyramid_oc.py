"""Pyramid-OC (paper Sec. 3.3, Fig. 2b): object context within s x s regions for s in 1, 2, 3, 6."""

from __future__ import annotations

import torch
from torch import nn

from inplace_abn import NormLayer, default_norm_layer

from .attention import ObjectContext, attention_weights, exporting, object_attention
from .blocks import blocks_to_map, map_to_blocks


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
    a single attention call: four calls (inner regions, last column, last row, corner) however
    large s is.
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
        """Pixels attend within their region; regions of one shape in one attention call."""
        parts = self.partitions
        if parts == 1:
            return object_attention(key, value)
        if exporting():
            return self.attend_masked(key, value)
        batch, _, height, width = key.shape
        # region_bounds' split as four blocks: the (s-1) x (s-1) grid of equal regions, the
        # last column, the last row and the corner; no Python list of regions.
        inner_h, inner_w = height // parts * (parts - 1), width // parts * (parts - 1)
        bands = []
        for rows, row_count in ((slice(0, inner_h), parts - 1), (slice(inner_h, None), 1)):
            blocks = []
            for cols, col_count in ((slice(0, inner_w), parts - 1), (slice(inner_w, None), 1)):
                grid = (row_count, col_count)
                context = object_attention(
                    map_to_blocks(key[:, :, rows, cols], *grid),
                    map_to_blocks(value[:, :, rows, cols], *grid),
                )
                blocks.append(blocks_to_map(context, batch, *grid))
            bands.append(torch.cat(blocks, dim=3))
        return torch.cat(bands, dim=2)

    def attend_masked(self, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """The same context as one attention over the whole map, each pixel allowed only the
        pixels of its region: for exported graphs, which hold the N x N map anyway (the s = 1
        stage) and must fit every input size, including maps smaller than s x s."""
        batch, _, height, width = key.shape
        rows = region_index(height, self.partitions, key.device)  # [H]
        cols = region_index(width, self.partitions, key.device)  # [W]
        region = (rows[:, None] * self.partitions + cols[None, :]).flatten()  # [H*W]
        allowed = region[:, None] == region[None, :]  # [N, N]
        weights = attention_weights(key.flatten(2), key.flatten(2), allowed)  # [B, N, N]
        context = torch.matmul(value.flatten(2), weights.transpose(1, 2))  # [B, C_v, N]
        return context.reshape(batch, value.shape[1], height, width)


def region_index(length: int, parts: int, device: torch.device) -> torch.Tensor:
    """The ``region_bounds`` part of each position ``0..length-1`` as a tensor: the number of
    part starts ``j * (length // parts)``, ``j = 1..parts-1``, at or before it. Arithmetic on
    the length only, so a traced graph follows the input size."""
    positions = torch.arange(length, device=device)
    starts = torch.arange(1, parts, device=device) * (length // parts)
    return (positions[:, None] >= starts[None, :]).sum(dim=1)


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
