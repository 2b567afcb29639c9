"""Where one pixel looks: the attention weights of its object context, and pictures of them.

One forward pass runs with hooks on the model's own attention modules; they keep the inputs
those modules see (the key map of an OCNet block, the input of an ISA block, the features and
soft regions of OCR). The weights of the one query pixel are then computed from those inputs
with the modules' own projections (``oc_module``'s per-query helpers): one row of the softmax,
never the N x N map.

- Base-OC, ASP-OC (its context on a 2x pooled map), Pyramid-OC (one map per region partition,
  zero outside the query's region): the query's row of ``softmax(K^T K / sqrt(C_k))``.
- ISA: long-range then short-range attention; the combined weight of pixel ``q`` for the query
  ``p`` is ``sum_r short[p, r] * long[r, q]`` over the pixels ``r`` of ``p``'s block.
- OCR: the query's weights over the K object regions, drawn as the weighted sum of the
  regions' soft maps (the softmax over positions that pools each region's feature).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oc_module import (
    ISABlock,
    ObjectContext,
    RegionObjectContext,
    SpatialGather,
    SpatialOCR,
    attention_weights,
    region_bounds,
)
from oc_module.isa import interlace, interlaced_to_blocks, pad_to_multiple


@dataclass
class AttentionMap:
    """The weights of one attention module for the query, on that module's map ``[h, w]``."""

    name: str  # the module's name in the model
    title: str  # what the picture says above the map
    weights: torch.Tensor  # [h, w], float32, on the CPU
    query: tuple[int, int]  # the query's (row, col) on that map


def map_position(point: tuple[int, int], image_size: tuple[int, int], map_size: tuple[int, int]):
    """``(row, col)`` on an ``h x w`` map of the image pixel ``point = (x, y)``.

    Maps are upsampled to the image with ``align_corners=True``, so map pixel ``i`` sits at image
    row ``i * (H - 1) / (h - 1)``; the query is the map pixel nearest to the point.
    """
    x, y = point
    height, width = image_size
    h, w = map_size
    row = round(y * (h - 1) / (height - 1)) if height > 1 else 0
    col = round(x * (w - 1) / (width - 1)) if width > 1 else 0
    return min(max(row, 0), h - 1), min(max(col, 0), w - 1)


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The attention modules of ``model`` that pictures exist for, in forward order."""
    kinds = (ObjectContext, ISABlock, SpatialGather, SpatialOCR)
    return [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]


class _Recorder:
    """Hooks that keep what each attention module sees during one forward pass."""

    def __init__(self, modules: list[tuple[str, nn.Module]]) -> None:
        self.seen: dict[str, tuple[torch.Tensor, ...]] = {}
        self.handles = []
        for name, module in modules:
            if isinstance(module, ObjectContext):
                # The key map after any pooling: the f_key projection's output.
                self.handles.append(module.f_key.register_forward_hook(self._output(name)))
            else:
                self.handles.append(module.register_forward_pre_hook(self._inputs(name)))

    def _output(self, name: str):
        def hook(module, inputs, output):
            self.seen[name] = (output.detach(),)

        return hook

    def _inputs(self, name: str):
        def hook(module, inputs):
            self.seen[name] = tuple(t.detach() for t in inputs)

        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _object_context(key: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """``[h, w]`` softmax row of the query at (row, col); query = key, as OCNet."""
    keys = key[:1].flatten(2)  # [1, C_k, h*w]
    query = keys[:, :, row * key.shape[3] + col].unsqueeze(2)
    return attention_weights(query, keys)[0, 0].view(key.shape[2:])


def _region(length: int, parts: int, index: int) -> tuple[int, int]:
    """The ``region_bounds`` part holding ``index`` (empty parts hold nothing)."""
    return next((a, b) for a, b in region_bounds(length, parts) if a <= index < b)


def _region_context(key: torch.Tensor, partitions: int, row: int, col: int) -> torch.Tensor:
    """Pyramid-OC: attention within the query's region of the ``partitions``-split map."""
    height, width = key.shape[2:]
    top, bottom = _region(height, partitions, row)
    left, right = _region(width, partitions, col)
    weights = key.new_zeros(height, width)
    region = key[:1, :, top:bottom, left:right]
    weights[top:bottom, left:right] = _object_context(region, row - top, col - left)
    return weights


def _isa(block: ISABlock, x: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """ISA: combined weights ``sum_r short[p, r] * long[r, q]`` of the query ``p``.

    The short-range step mixes the long-range outputs of the pixels ``r`` of ``p``'s block;
    each ``r`` sits at the same place of its own interlaced group, so one call of the
    long-range block's per-query ``weights`` gives every ``long[r, :]`` at once.
    """
    x = x[:1]
    height, width = x.shape[2:]
    dh, dw = block.down_factor
    padded, top, left = pad_to_multiple(x, dh, dw)
    oh, ow = padded.shape[2] // dh, padded.shape[3] // dw
    (block_row, a), (block_col, b) = divmod(row + top, dh), divmod(col + left, dw)
    groups = interlace(padded, dh, dw)  # [dh*dw, C, oh, ow]
    long_range = block.long_range_sa.weights(groups, block_row * ow + block_col)
    long_range = long_range.view(dh, dw, oh, ow)  # long[r = (a', b'), q on group (a', b')]
    blocks = interlaced_to_blocks(block.long_range_sa(groups), 1, dh, dw)  # [oh*ow, C, dh, dw]
    short_range = block.short_range_sa.weights(blocks, a * dw + b)  # [oh*ow, dh*dw]
    short_range = short_range.view(oh, ow, dh, dw)[block_row, block_col]  # short[p, r]
    combined = short_range[:, :, None, None] * long_range  # [dh, dw, oh, ow]
    combined = combined.permute(2, 0, 3, 1).reshape(oh * dh, ow * dw)
    return combined[top : top + height, left : left + width]


def _ocr(
    ocr: SpatialOCR, gather: SpatialGather, seen_ocr, seen_gather, point, image_size
) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor]:
    """OCR: ``sum_k w_k * M_k`` with ``w`` the query's region weights and ``M_k`` the soft map
    of region ``k``; also returns ``w``."""
    feats, regions = seen_ocr[0][:1], seen_ocr[1][:1]
    region_weights = ocr.region_weights(feats, regions)[0]  # [K, h', w'] (pooled if scale > 1)
    row, col = map_position(point, image_size, tuple(region_weights.shape[1:]))
    weights = region_weights[:, row, col]  # [K]
    gather_feats, logits = seen_gather[0][:1], seen_gather[1][:1]
    soft_maps = torch.softmax(gather.logit_scale * logits.flatten(2), dim=2)[0]  # [K, h*w]
    combined = (weights[:, None] * soft_maps).sum(0).view(gather_feats.shape[2:])
    query = map_position(point, image_size, tuple(combined.shape))
    return combined, query, weights


@torch.inference_mode()
def attention_maps(
    model: nn.Module,
    image: torch.Tensor,
    point: tuple[int, int],
    class_names: list[str] | None = None,
) -> list[AttentionMap]:
    """The attention maps of pixel ``point = (x, y)`` of ``image`` (``[1, 3, H, W]``, normalised).

    One whole-image forward pass of ``model`` (in eval mode) records the attention modules'
    inputs; each module's weights for the query follow from them. Empty if the model has no
    attention (the baseline).
    """
    modules = attention_modules(model)
    recorder = _Recorder(modules)
    try:
        model(image[:1])
    finally:
        recorder.close()
    image_size = tuple(image.shape[2:])
    by_name = dict(modules)
    maps = []
    gather_name = None  # OCR's SpatialOCR reads the regions of the SpatialGather before it
    for name, module in modules:
        seen = recorder.seen.get(name)
        if isinstance(module, SpatialGather):
            gather_name = name
        if seen is None or isinstance(module, SpatialGather):
            continue
        if isinstance(module, ObjectContext):
            key = seen[0]
            row, col = map_position(point, image_size, tuple(key.shape[2:]))
            if isinstance(module, RegionObjectContext):
                parts = module.partitions
                weights = _region_context(key, parts, row, col)
                title = f"Pyramid-OC {parts}x{parts}" if parts > 1 else "Pyramid-OC 1x1"
            else:
                weights = _object_context(key, row, col)
                title = "object context" + (
                    f" (pooled {module.scale}x)" if module.scale > 1 else ""
                )
        elif isinstance(module, ISABlock):
            row, col = map_position(point, image_size, tuple(seen[0].shape[2:]))
            weights = _isa(module, seen[0], row, col)
            title = "ISA long x short range"
        else:  # SpatialOCR
            weights, (row, col), region_weights = _ocr(
                module,
                by_name[gather_name],
                seen,
                recorder.seen[gather_name],
                point,
                image_size,
            )
            top = torch.topk(region_weights, min(3, region_weights.numel()))
            names = class_names or [f"class_{k}" for k in range(region_weights.numel())]
            title = "OCR " + ", ".join(
                f"{names[int(k)]} {float(v):.2f}" for v, k in zip(top.values, top.indices)
            )
        maps.append(AttentionMap(name, title, weights.float().cpu(), (row, col)))
    return maps


# --- pictures ------------------------------------------------------------------------------------

TITLE_HEIGHT = 22


def heat_overlay(rgb: np.ndarray, weights: torch.Tensor) -> np.ndarray:
    """The image with ``weights`` (any map size) upsampled over it as a heat map (RGB uint8).

    Colours are scaled to the map's maximum; low weights leave the image mostly visible.
    """
    height, width = rgb.shape[:2]
    up = F.interpolate(
        weights[None, None].float(), size=(height, width), mode="bilinear", align_corners=True
    )[0, 0]
    peak = float(up.max())
    level = (up / peak).clamp(0, 1).numpy() if peak > 0 else np.zeros((height, width))
    heat = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    alpha = (0.15 + 0.7 * level)[:, :, None]
    return (rgb * (1 - alpha) + heat * alpha).round().astype(np.uint8)


def _mark(image: np.ndarray, point: tuple[int, int]) -> None:
    radius = max(3, min(image.shape[:2]) // 60)
    cv2.circle(image, point, radius + 2, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.circle(image, point, radius, (255, 255, 255), 2, cv2.LINE_AA)


def _titled(panel: np.ndarray, title: str) -> np.ndarray:
    bar = np.full((TITLE_HEIGHT, panel.shape[1], 3), 32, dtype=np.uint8)
    cv2.putText(
        bar, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA
    )
    return np.concatenate([bar, panel], axis=0)


def attention_picture(
    rgb: np.ndarray, maps: list[AttentionMap], point: tuple[int, int]
) -> np.ndarray:
    """One panel per map, side by side: the image under the heat map, the query circled."""
    panels = []
    for item in maps:
        panel = heat_overlay(rgb, item.weights)
        _mark(panel, point)
        panels.append(_titled(panel, item.title))
    gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
    row = [panels[0]]
    for panel in panels[1:]:
        row += [gap, panel]
    return np.concatenate(row, axis=1)
