"""The one dataset class: any dataset of the catalog, from list files or from its layout.

``LayoutDataset("cityscapes", root, list_path=...)`` reads the original's list files;
``LayoutDataset("ade20k", root)`` scans the dataset's folders (``dataset.layouts``). Labels are
mapped to train ids by the dataset's table (``dataset.catalog``); a label file named
``*_labelTrainIds.png`` already holds train ids and is used as it is. Several sources (the train
list plus val, plus Cityscapes' coarse ``train_extra``) make one dataset.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from dataset.base import DatasetError, Sample, SegmentationDataset, read_list
from dataset.catalog import DatasetInfo, dataset_info
from dataset.layouts import scan_split

# Label files with this ending hold train ids already (Cityscapes' createTrainIdLabelImgs.py,
# mmsegmentation's COCO-Stuff conversion).
TRAIN_ID_SUFFIX = "_labelTrainIds.png"
LABEL_FORMATS = ("auto", "labelIds", "trainIds")

# (split, list file or None to scan the layout)
Source = tuple[str, str | None]


def sample_name(info: DatasetInfo, image_path: str) -> str:
    """The image's file name without the layout's ending: ``aachen_000000_000019`` for
    ``.../aachen_000000_000019_leftImg8bit.png``, ``ADE_val_00000001`` for ``...jpg``."""
    base = os.path.basename(image_path)
    for tail in info.layout.image_tails:
        if base.lower().endswith(tail.lower()) and len(base) > len(tail):
            return base[: -len(tail)]
    return os.path.splitext(base)[0]


def label_tables(
    info: DatasetInfo, label_format: str, label_path: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """(lookup table, known values) for ``label_format`` "labelIds", "trainIds" or "auto".

    "auto" picks train ids when the label file name ends in ``_labelTrainIds.png``; "labelIds"
    means the dataset's own label values, whatever the dataset calls them.
    """
    if label_format == "auto":
        is_train = label_path is not None and label_path.endswith(TRAIN_ID_SUFFIX)
        label_format = "trainIds" if is_train else "labelIds"
    if label_format == "labelIds":
        return info.label_lut, info.known_values
    if label_format == "trainIds":
        identity = np.arange(256, dtype=np.uint8)
        known = np.zeros(256, dtype=bool)
        known[: info.num_classes] = True
        known[info.ignore_label] = True
        return identity, known
    raise ValueError(
        f"label_format must be one of {', '.join(LABEL_FORMATS)}, got {label_format!r}"
    )


def list_samples(info: DatasetInfo, root: str, list_path: str, mode: str) -> list[Sample]:
    """Samples of a list file of ``image [label]`` lines (test lists may hold images only)."""
    fields = (1, 2) if mode == "test" else (2,)
    return [
        Sample(
            image=paths[0],
            label=paths[1] if len(paths) > 1 and mode != "test" else None,
            name=sample_name(info, paths[0]),
            where=f"{list_path} line {number}",
        )
        for number, paths in read_list(list_path, root, fields)
    ]


def _check_no_duplicates(samples: list[Sample]) -> None:
    first: dict[str, str] = {}
    for sample in samples:
        key = os.path.normpath(sample.image)
        if key in first:
            raise DatasetError(
                f"{sample.where}: image {sample.image} is already in the training data "
                f"({first[key]}); each image may be listed once (e.g. --use-val with a "
                "trainval list)"
            )
        first[key] = sample.where


class LayoutDataset(SegmentationDataset):
    """Samples of dataset ``dataset`` (a catalog name) under ``root``; modes as
    :class:`SegmentationDataset`.

    ``list_path`` None scans ``split`` (default: ``mode``) through the dataset's layout; ``extra``
    adds ``(split, list_path or None)`` sources, e.g. ``[("val", None)]`` for train + val.
    """

    def __init__(
        self,
        dataset: str,
        root: str,
        list_path: str | None = None,
        mode: str = "train",
        split: str | None = None,
        extra: Sequence[Source] = (),
        label_format: str = "auto",
        **kwargs,
    ) -> None:
        info = dataset_info(dataset, root)
        sources: list[Source] = [(split or mode, list_path), *extra]
        samples: list[Sample] = []
        for source_split, path in sources:
            if path is None:
                found = scan_split(info.layout, root, source_split)
                if mode == "test":
                    found = [Sample(s.image, None, s.name, s.where, s.folder) for s in found]
                samples += found
            else:
                samples += list_samples(info, root, path, mode)
        if len(sources) > 1:
            _check_no_duplicates(samples)
        tables = {
            label_tables(info, label_format, s.label)[0].tobytes() for s in samples if s.label
        }
        if len(tables) > 1:
            named = next((p for _, p in sources if p is not None), root)
            raise DatasetError(
                f"{named} mixes {info.layout.raw_label_glob} and *{TRAIN_ID_SUFFIX} labels; "
                "use one kind per list"
            )
        first_label = next((s.label for s in samples if s.label), None)
        lut, known = label_tables(info, label_format, first_label)
        self.info = info
        self.root = root
        self.list_path = list_path
        flip_lut = info.flip_lut if info.flip_pairs else None
        super().__init__(samples, lut, known, mode=mode, flip_lut=flip_lut, **kwargs)
