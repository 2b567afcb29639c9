"""Object-contextual representations (OCR, arXiv 1909.11065), as openseg.pytorch's modules.

Pixels attend to K object regions instead of to each other: :class:`SpatialGather` pools the
pixel features into one feature per region (weighted by a coarse segmentation), and
:class:`SpatialOCR` lets every pixel attend to those K region features. Module names follow
openseg.pytorch (``object_context_block.f_pixel``, ``conv_bn_dropout``, ...); HRNet-OCR's
official release has the same names below its heads, without conv biases (``bias=False``) and
with BN + ReLU (a norm layer with ReLU, nested one index deeper there, which a key mapping
handles).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from inplace_abn import NormLayer, default_norm_layer

from .attention import attention_weights, softmax_attention


class SpatialGather(nn.Module):
    """One feature per region: pixel features averaged with the softmax over positions of that
    region's logits (openseg's ``SpatialGather_Module``); no parameters.

    ``logit_scale`` multiplies the logits before the softmax (openseg's ``scale``, 1 in both
    OCRNet and HRNet-OCR).
    """

    def __init__(self, logit_scale: float = 1.0) -> None:
        super().__init__()
        self.logit_scale = logit_scale

    def forward(self, feats: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``feats`` ``[B, C, H, W]``, ``logits`` ``[B, K, H, W]`` -> ``[B, C, K, 1]``."""
        weights = torch.softmax(self.logit_scale * logits.flatten(2), dim=2)  # [B, K, H*W]
        regions = torch.matmul(weights, feats.flatten(2).transpose(1, 2))  # [B, K, C]
        return regions.transpose(1, 2).unsqueeze(3)


def conv_norm(in_ch: int, out_ch: int, bias: bool, norm_layer: NormLayer) -> list[nn.Module]:
    """1x1 conv + norm, openseg's conv + ``BNReLU`` pair."""
    return [nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=bias), norm_layer(out_ch)]


class ObjectAttention(nn.Module):
    """Pixel-to-region attention (openseg's ``ObjectAttentionBlock2D``).

    Query ``f_pixel(x)`` per pixel, key ``f_object`` and value ``f_down`` per region (all
    ``key_ch`` wide), context widened back by ``f_up``; scale ``key_ch ** -0.5``. ``scale > 1``
    max-pools the pixels first and upsamples the context (bilinear, align_corners=True).
    """

    def __init__(
        self,
        in_ch: int,
        key_ch: int,
        scale: int = 1,
        bias: bool = True,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or default_norm_layer()
        self.scale = scale
        self.f_pixel = nn.Sequential(
            *conv_norm(in_ch, key_ch, bias, norm_layer),
            *conv_norm(key_ch, key_ch, bias, norm_layer),
        )
        self.f_object = nn.Sequential(
            *conv_norm(in_ch, key_ch, bias, norm_layer),
            *conv_norm(key_ch, key_ch, bias, norm_layer),
        )
        self.f_down = nn.Sequential(*conv_norm(in_ch, key_ch, bias, norm_layer))
        self.f_up = nn.Sequential(*conv_norm(key_ch, in_ch, bias, norm_layer))

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The query pixels: ``x``, max-pooled by ``scale``."""
        return F.max_pool2d(x, kernel_size=self.scale) if self.scale > 1 else x

    def forward(self, x: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, C, H, W]``, ``regions`` ``[B, C, K, 1]`` -> ``[B, C, H, W]``."""
        height, width = x.shape[2:]
        pixels = self.pixels(x)
        query = self.f_pixel(pixels).flatten(2)  # [B, C_k, h*w]
        key = self.f_object(regions).flatten(2)  # [B, C_k, K]
        context = softmax_attention(query, key, self.f_down(regions).flatten(2))  # [B, C_k, h*w]
        context = self.f_up(context.reshape(*context.shape[:2], *pixels.shape[2:]))
        if self.scale > 1:
            context = F.interpolate(
                context, size=(height, width), mode="bilinear", align_corners=True
            )
        return context

    def region_weights(self, x: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """How much each pixel attends to each region: ``[B, K, h, w]``, summing to one over K
        (``h, w`` pooled when ``scale > 1``). Only N x K numbers, so all pixels at once."""
        pixels = self.pixels(x)
        query = self.f_pixel(pixels).flatten(2)  # [B, C_k, h*w]
        weights = attention_weights(query, self.f_object(regions).flatten(2))  # [B, h*w, K]
        return weights.transpose(1, 2).reshape(x.shape[0], -1, *pixels.shape[2:])


class SpatialOCR(nn.Module):
    """openseg's ``SpatialOCR_Module``: ``conv_bn_dropout(cat(object context, feats))``.

    ``bias=True`` and ``norm_layer`` with leaky ReLU reproduce openseg (inplace_abn); HRNet-OCR
    is ``bias=False`` with a BN + ReLU norm. Both networks use dropout 0.05.
    """

    def __init__(
        self,
        in_ch: int,
        key_ch: int,
        out_ch: int,
        scale: int = 1,
        dropout: float = 0.05,
        bias: bool = True,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or default_norm_layer()
        self.object_context_block = ObjectAttention(in_ch, key_ch, scale, bias, norm_layer)
        self.conv_bn_dropout = nn.Sequential(
            *conv_norm(2 * in_ch, out_ch, bias, norm_layer), nn.Dropout2d(dropout)
        )

    def forward(self, feats: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        context = self.object_context_block(feats, regions)
        return self.conv_bn_dropout(torch.cat([context, feats], 1))

    def region_weights(self, feats: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """:meth:`ObjectAttention.region_weights`."""
        return self.object_context_block.region_weights(feats, regions)
