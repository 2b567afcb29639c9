"""Colour palettes for label maps (visualisation only); colours come from ``dataset.catalog``."""

from __future__ import annotations

import os

import numpy as np

from dataset.catalog import DatasetInfo, dataset_info
from dataset.labels import CITYSCAPES_LABELS


def palette(dataset: str | DatasetInfo, data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """uint8[256, 3] RGB colours indexed by train id; 255 (ignore) and unused ids are black.

    ``dataset`` is a name (``data_dir`` needed for ``custom``) or a table from ``dataset_info``.
    """
    info = dataset if isinstance(dataset, DatasetInfo) else dataset_info(dataset, data_dir)
    return info.palette()


def labelid_palette() -> np.ndarray:
    """uint8[256, 3] RGB colours indexed by Cityscapes label id (as in ``*_gtFine_color.png``)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        table[label.id] = label.color
    return table


def colorize(
    trainids, dataset: str | DatasetInfo = "cityscapes", data_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """HxW train ids (numpy or torch, any integer type) -> HxWx3 RGB uint8 image."""
    if hasattr(trainids, "detach"):
        trainids = trainids.detach().cpu().numpy()
    ids = np.asarray(trainids)
    if ids.min(initial=0) < 0 or ids.max(initial=0) > 255:
        raise ValueError("train ids must lie in 0..255")
    return palette(dataset, data_dir)[ids.astype(np.uint8)]
