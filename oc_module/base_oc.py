"""Base-OC (paper Sec. 3.3, Fig. 2a): object context concatenated with the input, then fused."""

from __future__ import annotations

import torch
from torch import nn

from inplace_abn import NormLayer, default_norm_layer

from .attention import ObjectContext


def context_stages(
    in_ch: int,
    key_ch: int,
    value_ch: int,
    out_ch: int,
    sizes: tuple[int, ...],
    norm_layer: NormLayer,
) -> nn.ModuleList:
    """One object-context block per pooling scale in ``sizes`` (the original's ``stages``)."""
    return nn.ModuleList(
        ObjectContext(in_ch, key_ch, value_ch, out_ch, scale=size, norm_layer=norm_layer)
        for size in sizes
    )


class BaseOC(nn.Module):
    """The original's BaseOC_Module: ``conv_bn_dropout(cat(sum of stage contexts, input))``.

    ``sizes`` are the stages' pooling scales; OCNet uses one stage, ``sizes=(1,)``. Dropout 0.05
    is the original's Base-OC value.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        key_ch: int,
        value_ch: int,
        dropout: float = 0.05,
        sizes: tuple[int, ...] = (1,),
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or default_norm_layer()
        self.stages = context_stages(in_ch, key_ch, value_ch, out_ch, sizes, norm_layer)
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(2 * in_ch, out_ch, kernel_size=1),
            norm_layer(out_ch),
            nn.Dropout2d(dropout),
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        context = sum(stage(feats) for stage in self.stages)
        return self.conv_bn_dropout(torch.cat([context, feats], 1))


class BaseOCContext(nn.Module):
    """The original's BaseOC_Context_Module: only the object context, through 1x1 conv + ABN.

    Used as ASP-OC's context branch; no dropout there (the original builds it with dropout 0
    and never applies it).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        key_ch: int,
        value_ch: int,
        sizes: tuple[int, ...] = (1,),
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or default_norm_layer()
        self.stages = context_stages(in_ch, key_ch, value_ch, out_ch, sizes, norm_layer)
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_size=1), norm_layer(out_ch)
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.conv_bn_dropout(sum(stage(feats) for stage in self.stages))
