"""Cityscapes over the original's list files.

A list line is ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png gtFine/.../<name>_gtFine_labelIds.png``
with paths relative to the data root (test lists may hold only the image). Labels are label ids
mapped to train ids by table, or already converted ``*_labelTrainIds.png`` used as they are.
"""

from __future__ import annotations

import os

import numpy as np

from dataset.base import DatasetError, Sample, SegmentationDataset, read_list
from dataset.catalog import DATASETS

CITYSCAPES = DATASETS["cityscapes"]

IMAGE_SUFFIX = "_leftImg8bit"


def sample_name(image_path: str) -> str:
    """``.../frankfurt_000000_000294_leftImg8bit.png`` -> ``frankfurt_000000_000294``."""
    stem = os.path.splitext(os.path.basename(image_path))[0]
    return stem[: -len(IMAGE_SUFFIX)] if stem.endswith(IMAGE_SUFFIX) else stem


def label_tables(label_format: str, label_path: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(lookup table, known ids) for ``label_format`` "labelIds", "trainIds" or "auto".

    "auto" picks train ids when the label file name ends in ``_labelTrainIds.png``.
    """
    if label_format == "auto":
        is_train = label_path is not None and label_path.endswith("_labelTrainIds.png")
        label_format = "trainIds" if is_train else "labelIds"
    if label_format == "labelIds":
        return CITYSCAPES.label_lut, CITYSCAPES.known_values
    if label_format == "trainIds":
        identity = np.arange(256, dtype=np.uint8)
        known = np.zeros(256, dtype=bool)
        known[: CITYSCAPES.num_classes] = True
        known[CITYSCAPES.ignore_label] = True
        return identity, known
    raise ValueError(f"label_format must be auto, labelIds or trainIds, got {label_format!r}")


class CityscapesDataset(SegmentationDataset):
    """Cityscapes samples from a list file; see :class:`SegmentationDataset` for the modes."""

    def __init__(
        self,
        root: str,
        list_path: str,
        mode: str = "train",
        label_format: str = "auto",
        **kwargs,
    ) -> None:
        fields = (1, 2) if mode == "test" else (2,)
        entries = read_list(list_path, root, fields)
        samples = [
            Sample(
                image=paths[0],
                label=paths[1] if len(paths) > 1 and mode != "test" else None,
                name=sample_name(paths[0]),
                where=f"{list_path} line {number}",
            )
            for number, paths in entries
        ]
        formats = {label_tables(label_format, s.label)[0].tobytes() for s in samples if s.label}
        if len(formats) > 1:
            raise DatasetError(
                f"{list_path} mixes *_labelIds.png and *_labelTrainIds.png labels; "
                "use one kind per list"
            )
        first_label = next((s.label for s in samples if s.label), None)
        lut, known = label_tables(label_format, first_label)
        self.root = root
        self.list_path = list_path
        super().__init__(samples, lut, known, mode=mode, **kwargs)


def cityscapes_train(root: str, list_path: str, **kwargs) -> CityscapesDataset:
    return CityscapesDataset(root, list_path, mode="train", **kwargs)


def cityscapes_val(root: str, list_path: str, **kwargs) -> CityscapesDataset:
    return CityscapesDataset(root, list_path, mode="val", **kwargs)


def cityscapes_test(root: str, list_path: str, **kwargs) -> CityscapesDataset:
    return CityscapesDataset(root, list_path, mode="test", **kwargs)
