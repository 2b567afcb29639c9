"""One table per dataset: every fact about a dataset that loaders, tools and metrics need.

Class count, class names, colours, the ignore value, the label-value -> train-id table, which raw
values may appear in a label file, what a submitted PNG holds, image suffixes and the shipped list
files live here and nowhere else; ``DATASETS[name]`` is read by the loaders, the command lines,
the palettes, the submission writer and the evaluation tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataset.labels import ADE20K_CLASSES, CITYSCAPES_CLASSES, CITYSCAPES_LABELS, IGNORE_LABEL


@dataclass(frozen=True, eq=False)
class DatasetInfo:
    """Facts of one dataset. Tables are uint8/bool arrays indexed by a pixel value (0..255)."""

    name: str
    class_names: tuple[str, ...]
    colors: np.ndarray  # uint8[num_classes, 3] RGB per train id
    label_lut: np.ndarray  # uint8[256]: value in a label file -> train id (ignore: 255)
    known_values: np.ndarray  # bool[256]: values a label file may hold
    submission_lut: np.ndarray  # uint8[256]: train id -> value written in a submitted PNG
    image_suffixes: tuple[str, ...]
    default_list: str | None = None  # "{split}" template of shipped lists; None: scan folders
    ignore_label: int = IGNORE_LABEL

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def palette(self) -> np.ndarray:
        """uint8[256, 3] RGB colours indexed by train id; ignore and unused ids are black."""
        table = np.zeros((256, 3), dtype=np.uint8)
        table[: self.num_classes] = self.colors
        return table


def _cityscapes() -> DatasetInfo:
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    known = np.zeros(256, dtype=bool)
    submission = np.zeros(256, dtype=np.uint8)  # ignore and unused train ids -> 0, unlabeled
    colors = np.zeros((len(CITYSCAPES_CLASSES), 3), dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        lut[label.id] = label.train_id
        known[label.id] = True
        if label.train_id != IGNORE_LABEL:
            submission[label.train_id] = label.id
            colors[label.train_id] = label.color
    return DatasetInfo(
        name="cityscapes",
        class_names=CITYSCAPES_CLASSES,
        colors=colors,
        label_lut=lut,
        known_values=known,
        # The Cityscapes server expects label ids in submissions.
        submission_lut=submission,
        image_suffixes=(".png",),
        default_list="./dataset/list/cityscapes/{split}.lst",
    )


def spread_colors(count: int) -> np.ndarray:
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


def _ade20k() -> DatasetInfo:
    # Pixel value k (1..150) is class k - 1; 0 is "other" and ignored.
    count = len(ADE20K_CLASSES)
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    lut[1 : count + 1] = np.arange(count, dtype=np.uint8)
    known = np.zeros(256, dtype=bool)
    known[: count + 1] = True
    submission = np.zeros(256, dtype=np.uint8)
    submission[:count] = np.arange(1, count + 1, dtype=np.uint8)
    return DatasetInfo(
        name="ade20k",
        class_names=ADE20K_CLASSES,
        colors=spread_colors(count),
        label_lut=lut,
        known_values=known,
        submission_lut=submission,
        image_suffixes=(".jpg",),
    )


DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (_cityscapes(), _ade20k())}


def dataset_info(name: str) -> DatasetInfo:
    """The table of dataset ``name``, or a ValueError listing the known ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]
