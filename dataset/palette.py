"""Colour palettes for train-id label maps (visualisation only)."""

from __future__ import annotations

import numpy as np

from dataset.labels import CITYSCAPES_LABELS, DATASETS, IGNORE_LABEL


def _ade20k_colors(count: int = 150) -> np.ndarray:
    """A fixed, well-spread palette: bit-reversed class index spread over the RGB cube.

    Interleaving the index bits over the three channels (most significant first) keeps
    neighbouring class ids far apart in colour, and needs no stored table.
    """
    colors = np.zeros((count, 3), dtype=np.uint8)
    for index in range(count):
        value = index + 1
        rgb = [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((value >> (3 * bit + channel)) & 1) << (7 - bit)
        colors[index] = rgb
    return colors


def palette(dataset: str) -> np.ndarray:
    """uint8[256, 3] RGB colours indexed by train id; 255 (ignore) and unused ids are black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    if dataset == "cityscapes":
        for label in CITYSCAPES_LABELS:
            if label.train_id != IGNORE_LABEL:
                table[label.train_id] = label.color
    elif dataset == "ade20k":
        table[:150] = _ade20k_colors(150)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return table


def labelid_palette() -> np.ndarray:
    """uint8[256, 3] RGB colours indexed by Cityscapes label id (as in ``*_gtFine_color.png``)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        table[label.id] = label.color
    return table


def colorize(trainids, dataset: str = "cityscapes") -> np.ndarray:
    """HxW train ids (numpy or torch, any integer type) -> HxWx3 RGB uint8 image."""
    if hasattr(trainids, "detach"):
        trainids = trainids.detach().cpu().numpy()
    ids = np.asarray(trainids)
    if ids.min(initial=0) < 0 or ids.max(initial=0) > 255:
        raise ValueError("train ids must lie in 0..255")
    return palette(dataset)[ids.astype(np.uint8)]
