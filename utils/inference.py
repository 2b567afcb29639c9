"""Test-time prediction: whole image or sliding tiles, several scales, horizontal flip.

Follows the original OCNet ``evaluate.py``: tiles are placed with stride ``ceil(tile * (1 -
overlap))``, the last row/column is shifted back to end at the border, tiles smaller than the tile
size are zero-padded at the bottom/right, and every resize is bilinear with ``align_corners=True``
(the setting the released models were trained with). Unlike the original, tiles are run through the
network in batches, softmax probabilities (not raw logits) are summed and divided by the per-pixel
tile count, and every requested scale is used. The flags and files around it for evaluate.py and
generate_submit.py live in ``utils.predict_cli``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn


def final_logits(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The main prediction of a model: ``*_dsn`` models return ``[dsn_logits, logits]``."""
    if isinstance(output, (list, tuple)):
        return output[-1]
    return output


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _probabilities(
    model: nn.Module, images: torch.Tensor, out_size: tuple[int, int], amp: torch.dtype | None
) -> torch.Tensor:
    """Softmax probabilities of ``model`` on ``images``, upsampled to ``out_size`` (float32)."""
    context = torch.autocast(images.device.type, dtype=amp) if amp is not None else nullcontext()
    with context:
        logits = final_logits(model(images))
    logits = _resize(logits.float(), out_size)
    return logits.softmax(dim=1)


def predict_whole(
    model: nn.Module, images: torch.Tensor, amp: torch.dtype | None = None
) -> torch.Tensor:
    """``[B, C, H, W]`` probabilities from one forward pass over the whole images."""
    return _probabilities(model, images, tuple(images.shape[-2:]), amp)


def tile_windows(
    height: int, width: int, tile: tuple[int, int], overlap: float
) -> list[tuple[int, int, int, int]]:
    """``(y1, y2, x1, x2)`` windows covering the image, as in the original ``predict_sliding``.

    The number of rows is ``ceil((H - tile_h) / stride) + 1`` (the strided-convolution formula),
    at least one even when the image is smaller than a tile (the original produced none then).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    tile_h, tile_w = tile
    stride_h = math.ceil(tile_h * (1 - overlap))
    stride_w = math.ceil(tile_w * (1 - overlap))
    rows = max(math.ceil((height - tile_h) / stride_h), 0) + 1
    cols = max(math.ceil((width - tile_w) / stride_w), 0) + 1
    windows = []
    for row in range(rows):
        for col in range(cols):
            y2 = min(row * stride_h + tile_h, height)
            x2 = min(col * stride_w + tile_w, width)
            windows.append((max(y2 - tile_h, 0), y2, max(x2 - tile_w, 0), x2))
    return windows


def predict_sliding(
    model: nn.Module,
    images: torch.Tensor,
    num_classes: int,
    tile: tuple[int, int],
    overlap: float = 1 / 3,
    tile_batch: int | None = None,
    amp: torch.dtype | None = None,
) -> torch.Tensor:
    """``[B, C, H, W]`` probabilities averaged over overlapping tiles.

    All tiles of all images are stacked and run ``tile_batch`` at a time (default: all at once).
    Each tile's logits are upsampled to the tile size, softmaxed, cropped to the part inside the
    image and added; the sum is divided by how many tiles covered each pixel.
    """
    batch, _, height, width = images.shape
    tile_h, tile_w = tile
    windows = tile_windows(height, width, tile, overlap)
    crops = []
    for y1, y2, x1, x2 in windows:
        crop = images[:, :, y1:y2, x1:x2]
        crops.append(F.pad(crop, (0, tile_w - (x2 - x1), 0, tile_h - (y2 - y1))))
    stacked = torch.cat(crops)  # window-major: rows [k * B, (k + 1) * B) belong to window k
    chunk = tile_batch or stacked.shape[0]
    probs = torch.cat(
        [
            _probabilities(model, stacked[i : i + chunk], (tile_h, tile_w), amp)
            for i in range(0, stacked.shape[0], chunk)
        ]
    )
    if probs.shape[1] != num_classes:
        raise ValueError(f"model predicts {probs.shape[1]} classes, expected {num_classes}")
    total = images.new_zeros((batch, num_classes, height, width), dtype=torch.float32)
    count = images.new_zeros((1, 1, height, width), dtype=torch.float32)
    for k, (y1, y2, x1, x2) in enumerate(windows):
        total[:, :, y1:y2, x1:x2] += probs[k * batch : (k + 1) * batch, :, : y2 - y1, : x2 - x1]
        count[:, :, y1:y2, x1:x2] += 1
    return total / count


def scaled_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    """Rounded like ``scipy.ndimage.zoom``, which the original used to rescale images."""
    return max(1, int(round(size[0] * scale))), max(1, int(round(size[1] * scale)))


def predict(
    model: nn.Module,
    images: torch.Tensor,
    num_classes: int,
    mode: str = "whole",
    tile: tuple[int, int] = (769, 769),
    overlap: float = 1 / 3,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    tile_batch: int | None = None,
    amp: torch.dtype | None = None,
    flip_channels: Sequence[int] | None = None,
) -> torch.Tensor:
    """``[B, C, H, W]`` class probabilities at the input size, averaged over scales and flips.

    For each scale the images are resized (bilinear, ``align_corners=True``), predicted whole or
    in tiles, and the probabilities resized back; with ``flip`` the mirrored images are predicted
    too and their mirrored probabilities averaged in; ``flip_channels`` (class ``k`` of the
    mirrored prediction is class ``flip_channels[k]``) swaps left/right classes such as LIP's
    arms and legs. Call under ``torch.inference_mode()`` with
    the model in eval mode.
    """
    if mode not in ("whole", "sliding"):
        raise ValueError(f"mode must be 'whole' or 'sliding', got {mode!r}")
    if not scales:
        raise ValueError("at least one scale is needed")
    size = tuple(images.shape[-2:])
    total = None
    views = (False, True) if flip else (False,)
    for scale in scales:
        scaled = _resize(images, scaled_size(size, scale))
        for mirrored in views:
            view = scaled.flip(-1) if mirrored else scaled
            if mode == "whole":
                probs = predict_whole(model, view, amp)
            else:
                probs = predict_sliding(model, view, num_classes, tile, overlap, tile_batch, amp)
            if mirrored:
                probs = probs.flip(-1)
                if flip_channels is not None:
                    probs = probs[:, list(flip_channels)]
            probs = _resize(probs, size)
            total = probs if total is None else total + probs
    if total.shape[1] != num_classes:
        raise ValueError(f"model predicts {total.shape[1]} classes, expected {num_classes}")
    return total / (len(scales) * len(views))
