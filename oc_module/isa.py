"""Interlaced sparse self-attention (ISA, arXiv 1907.12273), as openseg.pytorch's ``ISA_Module``.

Dense attention over N pixels is split into two sparse steps: a long-range step among pixels
spaced ``down_factor`` apart (one group per offset inside a block), then a short-range step inside
each ``down_factor`` block. Module names follow openseg.pytorch (``stages.0.long_range_sa.f_key``,
``conv_bn``, ...) so its checkpoints load below the head prefix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from inplace_abn import NormLayer, default_norm_layer

from .attention import attention_weights, softmax_attention
from .blocks import blocks_to_map


def conv_norm(in_ch: int, out_ch: int, norm_layer: NormLayer) -> list[nn.Module]:
    """1x1 conv without bias (the norm's shift replaces it) + norm, openseg's ``BNReLU`` pair."""
    return [nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False), norm_layer(out_ch)]


def key_projection(in_ch: int, key_ch: int, norm_layer: NormLayer) -> nn.Sequential:
    """ISA's query or key projection: two conv + norm pairs."""
    return nn.Sequential(
        *conv_norm(in_ch, key_ch, norm_layer), *conv_norm(key_ch, key_ch, norm_layer)
    )


class SelfAttentionBlock(nn.Module):
    """Self-attention among all positions of each map (openseg's ``SelfAttentionBlock2D``).

    Unlike OCNet's block, query and key are separate projections of two conv + norm pairs, and
    ``W`` is conv + norm (not zero-initialised), all convs without bias.
    """

    def __init__(
        self, in_ch: int, key_ch: int, value_ch: int, out_ch: int, norm_layer: NormLayer
    ) -> None:
        super().__init__()
        self.f_key = key_projection(in_ch, key_ch, norm_layer)
        self.f_query = key_projection(in_ch, key_ch, norm_layer)
        self.f_value = nn.Conv2d(in_ch, value_ch, kernel_size=1, bias=False)
        self.W = nn.Sequential(*conv_norm(value_ch, out_ch, norm_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        query, key = self.f_query(x).flatten(2), self.f_key(x).flatten(2)  # [B, C_k, h*w]
        context = softmax_attention(query, key, self.f_value(x).flatten(2))  # [B, C_v, h*w]
        return self.W(context.reshape(batch, -1, height, width))

    def weights(self, x: torch.Tensor, position: int) -> torch.Tensor:
        """Attention weights of the query at flat ``position`` of every map: ``[B, h*w]``."""
        query = self.f_query(x).flatten(2)[:, :, position : position + 1]  # [B, C_k, 1]
        return attention_weights(query, self.f_key(x).flatten(2))[:, 0]


def pad_to_multiple(x: torch.Tensor, dh: int, dw: int) -> tuple[torch.Tensor, int, int]:
    """Zero-pad ``x`` to multiples of ``(dh, dw)``, half on each side, the odd pixel at the
    bottom/right (openseg's split); returns the padded map and the top and left padding."""
    height, width = x.shape[2:]
    # -n % d, not ceil(n / d) * d - n: integer arithmetic on sizes stays in a traced graph.
    pad_h, pad_w = -height % dh, -width % dw
    top, left = pad_h // 2, pad_w // 2
    return F.pad(x, (left, pad_w - left, top, pad_h - top)), top, left


def interlace(x: torch.Tensor, dh: int, dw: int) -> torch.Tensor:
    """``[n, c, oh*dh, ow*dw] -> [n*dh*dw, c, oh, ow]``: map ``(a, b)`` holds the pixels at rows
    ``a, a+dh, ...`` and columns ``b, b+dw, ...``, the long-range step's groups."""
    n, c, height, width = x.shape
    x = x.view(n, c, height // dh, dh, width // dw, dw)  # [n, c, oh, dh, ow, dw]
    return x.permute(0, 3, 5, 1, 2, 4).reshape(n * dh * dw, c, height // dh, width // dw)


def interlaced_to_blocks(x: torch.Tensor, n: int, dh: int, dw: int) -> torch.Tensor:
    """``[n*dh*dw, c, oh, ow] -> [n*oh*ow, c, dh, dw]``: from the groups to the dh x dw blocks
    of neighbouring pixels, the short-range step's groups."""
    _, c, oh, ow = x.shape
    x = x.view(n, dh, dw, c, oh, ow)
    return x.permute(0, 4, 5, 3, 1, 2).reshape(n * oh * ow, c, dh, dw)


class ISABlock(nn.Module):
    """Long-range then short-range self-attention over one map (openseg's ``ISA_Block``).

    A map not divisible by ``down_factor`` is zero-padded once before the long-range step (the
    padded pixels take part in both steps, as in openseg) and cropped after the short-range
    step. Each step is one batched attention call over all groups of all images.
    """

    def __init__(
        self,
        in_ch: int,
        key_ch: int,
        value_ch: int,
        out_ch: int,
        down_factor: tuple[int, int] = (8, 8),
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or default_norm_layer()
        self.down_factor = tuple(down_factor)
        self.long_range_sa = SelfAttentionBlock(in_ch, key_ch, value_ch, out_ch, norm_layer)
        self.short_range_sa = SelfAttentionBlock(out_ch, key_ch, value_ch, out_ch, norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        dh, dw = self.down_factor
        padded, top, left = pad_to_multiple(x, dh, dw)
        oh, ow = padded.shape[2] // dh, padded.shape[3] // dw
        y = self.long_range_sa(interlace(padded, dh, dw))  # [n*dh*dw, C, oh, ow]
        y = self.short_range_sa(interlaced_to_blocks(y, n, dh, dw))  # [n*oh*ow, C, dh, dw]
        y = blocks_to_map(y, n, oh, ow)  # [n, C, oh*dh, ow*dw]
        return y[:, :, top : top + height, left : left + width]

    def attention_weights(
        self, x: torch.Tensor, row: int, col: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Where pixel ``(row, col)`` looks in each step: two ``[n, H, W]`` maps of its
        long-range weights (on its interlaced group) and short-range weights (on its block).

        Weights on padded pixels are cropped away with the padding, so near a padded border a
        map sums to less than one. Only the query's rows of the similarity are formed.
        """
        n, _, height, width = x.shape
        dh, dw = self.down_factor
        padded, top, left = pad_to_multiple(x, dh, dw)
        oh, ow = padded.shape[2] // dh, padded.shape[3] // dw
        (block_row, a), (block_col, b) = divmod(row + top, dh), divmod(col + left, dw)
        groups = interlace(padded, dh, dw)
        # Long range: the query sits at (block_row, block_col) of group (a, b).
        long_range = self.long_range_sa.weights(groups, block_row * ow + block_col)
        long_range = long_range.view(n, dh, dw, oh, ow)[:, a, b]  # [n, oh, ow]
        long_map = padded.new_zeros(n, oh, dh, ow, dw)
        long_map[:, :, a, :, b] = long_range
        # Short range: the query sits at (a, b) of block (block_row, block_col).
        blocks = interlaced_to_blocks(self.long_range_sa(groups), n, dh, dw)
        short_range = self.short_range_sa.weights(blocks, a * dw + b)
        short_range = short_range.view(n, oh, ow, dh, dw)[:, block_row, block_col]  # [n, dh, dw]
        short_map = padded.new_zeros(n, oh, dh, ow, dw)
        short_map[:, block_row, :, block_col, :] = short_range
        crop = (slice(None), slice(top, top + height), slice(left, left + width))
        return (
            long_map.view(n, oh * dh, ow * dw)[crop],
            short_map.view(n, oh * dh, ow * dw)[crop],
        )


class ISAModule(nn.Module):
    """openseg's ``ISA_Module``: ISA context fused with the input, ``conv_bn(cat(x, context))``.

    One stage per down factor; with several, the stage contexts are concatenated and the input
    is widened by ``up_conv`` to match first. Note the order (input first, then context), the
    reverse of OCNet's Base-OC; the fuse is named ``conv_bn`` there although it ends in dropout.
    """

    def __init__(
        self,
        in_ch: int,
        key_ch: int,
        value_ch: int,
        out_ch: int,
        down_factors: tuple[tuple[int, int], ...] = ((8, 8),),
        dropout: float = 0.05,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or default_norm_layer()
        self.stages = nn.ModuleList(
            ISABlock(in_ch, key_ch, value_ch, out_ch, factor, norm_layer) for factor in down_factors
        )
        concat_ch = in_ch + out_ch
        if len(down_factors) > 1:
            self.up_conv = nn.Sequential(*conv_norm(in_ch, len(down_factors) * out_ch, norm_layer))
            concat_ch = 2 * len(down_factors) * out_ch
        self.conv_bn = nn.Sequential(
            *conv_norm(concat_ch, out_ch, norm_layer), nn.Dropout2d(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = torch.cat([stage(x) for stage in self.stages], 1)
        if len(self.stages) > 1:
            x = self.up_conv(x)
        return self.conv_bn(torch.cat([x, context], 1))

    def attention_weights(
        self, x: torch.Tensor, row: int, col: int, stage: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`ISABlock.attention_weights` of one stage."""
        return self.stages[stage].attention_weights(x, row, col)
