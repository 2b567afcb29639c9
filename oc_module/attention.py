"""The object-context attention primitive (paper Sec. 3.2; the original's _SelfAttentionBlock).

Every OC head computes attention through :func:`object_attention`; the heads differ only in which
pixels attend to which (whole map, pooled map, pyramid regions) and in the convs around it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from inplace_abn import NormLayer, default_norm_layer


def object_attention(key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Softmax(K^T K / sqrt(C_k)) V over all pixels of each map, query = key as in OCNet.

    ``key`` is ``[B, C_k, H, W]``, ``value`` ``[B, C_v, H, W]``; returns ``[B, C_v, H, W]``.

    Layout matters on CPU: ``scaled_dot_product_attention`` takes its flash kernel (memory linear
    in the number of pixels instead of the N x N map) only for contiguous q, k, v of one head
    width. So q/k/v are made contiguous, and a value wider than the key is split into key-wide
    heads with q and k repeated per head. Each value channel only ever mixes with its own
    column of the same softmax map, so the result is identical; the default SDPA scale
    ``C_k ** -0.5`` is the original's.
    """
    batch, key_channels, height, width = key.shape
    value_channels = value.shape[1]
    pixels = height * width
    query_key = key.flatten(2).transpose(1, 2)
    value = value.flatten(2).transpose(1, 2)
    if value_channels % key_channels == 0:
        heads = value_channels // key_channels
        value = value.reshape(batch, pixels, heads, key_channels).transpose(1, 2).contiguous()
        query_key = query_key.unsqueeze(1).repeat(1, heads, 1, 1)
    else:
        heads = 1
        value = value.unsqueeze(1).contiguous()
        query_key = query_key.unsqueeze(1).contiguous()
    context = F.scaled_dot_product_attention(query_key, query_key, value)
    context = context.transpose(1, 2).reshape(batch, pixels, value_channels)
    return context.transpose(1, 2).reshape(batch, value_channels, height, width)


class ObjectContext(nn.Module):
    """Object context of every pixel: attention-weighted values of all pixels, projected by ``W``.

    Parameter names follow the original (``f_key``, ``f_query``, ``f_value``, ``W``) so its
    checkpoints load. ``scale > 1`` max-pools the map first and upsamples the context back
    (bilinear, align_corners=True), the original's memory saving used by ASP-OC (scale 2).
    ``W`` starts at zero, so a fresh block adds no context until trained (as the original).
    """

    def __init__(
        self,
        in_ch: int,
        key_ch: int,
        value_ch: int,
        out_ch: int | None = None,
        scale: int = 1,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or default_norm_layer()
        out_ch = in_ch if out_ch is None else out_ch
        self.scale = scale
        self.key_channels = key_ch
        self.value_channels = value_ch
        self.f_key = nn.Sequential(nn.Conv2d(in_ch, key_ch, kernel_size=1), norm_layer(key_ch))
        # The original shares one module between key and query, saved under both names.
        self.f_query = self.f_key
        self.f_value = nn.Conv2d(in_ch, value_ch, kernel_size=1)
        self.W = nn.Conv2d(value_ch, out_ch, kernel_size=1)
        nn.init.zeros_(self.W.weight)
        nn.init.zeros_(self.W.bias)

    def attend(self, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Which pixels attend to which: here, all pixels of the map."""
        return object_attention(key, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        if self.scale > 1:
            x = F.max_pool2d(x, kernel_size=self.scale)
        # The original calls f_query and f_key separately (same module, so the same outputs, but
        # its BN statistics update twice per step); here the projection runs once per forward.
        key = self.f_key(x)
        context = self.W(self.attend(key, self.f_value(x)))
        if self.scale > 1:
            context = F.interpolate(
                context, size=(height, width), mode="bilinear", align_corners=True
            )
        return context
