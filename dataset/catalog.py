"""One table per dataset: every fact about a dataset that loaders, tools and metrics need.

Class count, class names, colours, the ignore value, the label-value -> train-id table, which raw
values may appear in a label file, what a submitted PNG holds, which classes swap under a flip,
image suffixes and where the files lie (``dataset.layouts``) live here and nowhere else.
``dataset_info(name, data_dir)`` is read by the loaders, the command lines, the palettes, the
submission writer and the evaluation tables. The fixed datasets are in ``DATASETS``; the table of
``custom`` is built at run time from ``<data_dir>/classes.csv``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from dataset.custom import CLASSES_FILE, read_classes
from dataset.labels import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABELS,
    COCO_STUFF_CLASSES,
    COCO_STUFF_IDS,
    IGNORE_LABEL,
    LIP_CLASSES,
    LIP_COLORS,
    LIP_FLIP_PAIRS,
    PASCAL_CONTEXT_CLASSES,
)
from dataset.layouts import IMAGE_EXTENSIONS, LAYOUTS, Layout, dataset_layout

CUSTOM = "custom"

# The original OCNet's dataset-factory names: the split followed the list file then, and the tool
# (train, eval, submit) decides it here, so each is Cityscapes read through ``--data-list``.
ORIGINAL_NAMES = {
    "cityscapes_train": "cityscapes",
    "cityscapes_test": "cityscapes",
    "cityscapes_train_w_path": "cityscapes",
}


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
    layout: Layout  # folders and file names (dataset.layouts)
    flip_pairs: tuple[tuple[int, int], ...] = ()  # train ids that swap under a horizontal flip
    ignore_label: int = IGNORE_LABEL

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def default_list(self) -> str | None:
        """``{split}`` template of the shipped lists; None: the loader scans the folders."""
        return self.layout.default_list

    @property
    def flip_lut(self) -> np.ndarray:
        """uint8[256]: train id -> train id of the mirrored image (identity but for flip_pairs)."""
        table = np.arange(256, dtype=np.uint8)
        for left, right in self.flip_pairs:
            table[left], table[right] = right, left
        return table

    @property
    def flip_channels(self) -> list[int]:
        """Class channel order of a mirrored prediction: ``probs.flip(-1)[:, flip_channels]``
        puts the probability of "left arm" back where the unmirrored image has it."""
        return [int(k) for k in self.flip_lut[: self.num_classes]]

    def palette(self) -> np.ndarray:
        """uint8[256, 3] RGB colours indexed by train id; ignore and unused ids are black."""
        table = np.zeros((256, 3), dtype=np.uint8)
        table[: self.num_classes] = self.colors
        return table


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


def table_from_values(
    name: str,
    class_names: tuple[str, ...],
    values: list[int],
    colors: np.ndarray,
    image_suffixes: tuple[str, ...],
    known: list[int] | None = None,
    flip_pairs: tuple[tuple[int, int], ...] = (),
) -> DatasetInfo:
    """The table of a dataset whose class ``k`` is marked by pixel value ``values[k]``.

    ``known``: the values a label file may hold (default: every value, the unlisted ignored).
    Submissions write each class's own value back.
    """
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    submission = np.zeros(256, dtype=np.uint8)
    for train_id, value in enumerate(values):
        lut[value] = train_id
        submission[train_id] = value
    known_values = np.ones(256, dtype=bool)
    if known is not None:
        known_values[:] = False
        known_values[known] = True
    return DatasetInfo(
        name=name,
        class_names=tuple(class_names),
        colors=np.asarray(colors, dtype=np.uint8).reshape(len(class_names), 3),
        label_lut=lut,
        known_values=known_values,
        submission_lut=submission,
        image_suffixes=image_suffixes,
        layout=LAYOUTS[name],
        flip_pairs=flip_pairs,
    )


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
        layout=LAYOUTS["cityscapes"],
    )


def _ade20k() -> DatasetInfo:
    # Pixel value k (1..150) is class k - 1; 0 is "other" and ignored.
    count = len(ADE20K_CLASSES)
    return table_from_values(
        "ade20k",
        ADE20K_CLASSES,
        list(range(1, count + 1)),
        spread_colors(count),
        (".jpg",),
        known=list(range(count + 1)),
    )


def _lip() -> DatasetInfo:
    # Values 0..19 are the classes (background included); 255 may mark unlabelled pixels.
    count = len(LIP_CLASSES)
    return table_from_values(
        "lip",
        LIP_CLASSES,
        list(range(count)),
        np.array(LIP_COLORS),
        (".jpg",),
        known=[*range(count), IGNORE_LABEL],
        flip_pairs=LIP_FLIP_PAIRS,
    )


def _pascal_context() -> DatasetInfo:
    # Value 0 is background (ignored: the 59-class benchmark), k = 1..59 is class k - 1.
    count = len(PASCAL_CONTEXT_CLASSES)
    return table_from_values(
        "pascal_context",
        PASCAL_CONTEXT_CLASSES,
        list(range(1, count + 1)),
        spread_colors(count),
        (".jpg",),
        known=[*range(count + 1), IGNORE_LABEL],
    )


def _coco_stuff() -> DatasetInfo:
    # Raw ids 1..182 (0 unlabeled); the 11 ids COCO never uses are ignored like 0.
    return table_from_values(
        "coco_stuff",
        COCO_STUFF_CLASSES,
        list(COCO_STUFF_IDS),
        spread_colors(len(COCO_STUFF_CLASSES)),
        (".jpg",),
        known=[*range(183), IGNORE_LABEL],
    )


DATASETS: dict[str, DatasetInfo] = {
    info.name: info for info in (_cityscapes(), _ade20k(), _lip(), _pascal_context(), _coco_stuff())
}
# Every --dataset value: the fixed tables, then the one built from a data folder.
DATASET_NAMES: tuple[str, ...] = (*DATASETS, CUSTOM)

_custom_cache: dict[tuple[str, int, int], DatasetInfo] = {}


def custom_info(data_dir: str | os.PathLike) -> DatasetInfo:
    """The table of ``<data_dir>/classes.csv``; read once per file version (path, mtime, size)."""
    path = os.path.abspath(os.path.join(os.fspath(data_dir), CLASSES_FILE))
    try:
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
    except OSError:
        key = None
    if key is not None and key in _custom_cache:
        return _custom_cache[key]
    rows = read_classes(path)
    info = table_from_values(
        CUSTOM,
        tuple(row.name for row in rows),
        [row.value for row in rows],
        np.array([row.color for row in rows]),
        IMAGE_EXTENSIONS,
    )
    _custom_cache[key] = info
    return info


def canonical_name(name: str) -> str:
    """``name`` with the original OCNet's factory names (``cityscapes_train``...) mapped."""
    return ORIGINAL_NAMES.get(name, name)


def dataset_info(name: str, data_dir: str | os.PathLike | None = None) -> DatasetInfo:
    """The table of dataset ``name``, or a ValueError listing the known ones.

    ``custom`` is built from ``<data_dir>/classes.csv`` (cached; a DatasetError names a bad row);
    the other datasets ignore ``data_dir``.
    """
    name = canonical_name(name)
    if name == CUSTOM:
        if data_dir is None:
            raise ValueError("the custom dataset's classes come from its data dir: give data_dir")
        return custom_info(data_dir)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return DATASETS[name]


__all__ = [
    "CUSTOM",
    "DATASETS",
    "DATASET_NAMES",
    "DatasetInfo",
    "ORIGINAL_NAMES",
    "canonical_name",
    "custom_info",
    "dataset_info",
    "dataset_layout",
    "spread_colors",
    "table_from_values",
]
