"""ASP-OC (paper Sec. 3.3, Fig. 2c): ASPP with its image-pooling branch replaced by object context."""

from __future__ import annotations

import torch
from torch import nn

from inplace_abn import NormLayer, default_norm_layer

from .base_oc import BaseOCContext


class ASPOC(nn.Module):
    """The original's ASP_OC_Module as released in 2018 (the 88.4 M-parameter ResNet-101 model).

    Five branches on the backbone output, each ``width`` wide: object context (3x3 conv + ABN,
    then Base-OC context on a 2x max-pooled map with key ``width // 2`` and value ``width``), a
    1x1 conv, and 3x3 convs dilated 12, 24, 36 (DeepLabv3's rates for output stride 8). They
    are concatenated and fused by 1x1 conv + ABN + dropout 0.1.
    """

    def __init__(
        self,
        in_ch: int,
        width: int = 512,
        dilations: tuple[int, int, int] = (12, 24, 36),
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or default_norm_layer()
        self.context = nn.Sequential(
            nn.Conv2d(in_ch, width, kernel_size=3, padding=1),
            norm_layer(width),
            BaseOCContext(width, width, width // 2, width, sizes=(2,), norm_layer=norm_layer),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(in_ch, width, kernel_size=1, bias=False), norm_layer(width)
        )
        self.conv3, self.conv4, self.conv5 = (
            nn.Sequential(
                nn.Conv2d(in_ch, width, 3, padding=rate, dilation=rate, bias=False),
                norm_layer(width),
            )
            for rate in dilations
        )
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(width * 5, width, kernel_size=1, bias=False),
            norm_layer(width),
            nn.Dropout2d(0.1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.context, self.conv2, self.conv3, self.conv4, self.conv5]
        return self.conv_bn_dropout(torch.cat([branch(x) for branch in branches], 1))
