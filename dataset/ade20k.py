"""ADE20K scene parsing (ADEChallengeData2016 layout), 150 classes.

``images/{training,validation}/ADE_*.jpg`` with ``annotations/{...}/ADE_*.png`` beside; label 0
("other") is ignored and 1..150 become train ids 0..149. A list file of ``image label`` lines
(relative to the root) may replace the folder scan.
"""

from __future__ import annotations

import os

from dataset.base import DatasetError, Sample, SegmentationDataset, read_list
from dataset.catalog import DATASETS

ADE20K = DATASETS["ade20k"]

SPLITS = {"train": "training", "val": "validation"}


def scan_split(root: str, split: str) -> list[Sample]:
    """Pair every ``images/<split>/*.jpg`` with ``annotations/<split>/<same name>.png``."""
    image_dir = os.path.join(root, "images", split)
    if not os.path.isdir(image_dir):
        raise DatasetError(f"ADE20K image folder {image_dir} not found")
    names = sorted(f for f in os.listdir(image_dir) if f.lower().endswith(".jpg"))
    if not names:
        raise DatasetError(f"ADE20K image folder {image_dir} holds no .jpg images")
    samples = []
    for file_name in names:
        stem = os.path.splitext(file_name)[0]
        image = os.path.join(image_dir, file_name)
        label = os.path.join(root, "annotations", split, stem + ".png")
        samples.append(Sample(image=image, label=label, name=stem, where=image))
    return samples


class ADE20KDataset(SegmentationDataset):
    """ADE20K samples by folder scan (default) or list file; modes as SegmentationDataset."""

    def __init__(
        self,
        root: str,
        list_path: str | None = None,
        mode: str = "train",
        split: str | None = None,
        **kwargs,
    ) -> None:
        split = split or SPLITS["val" if mode == "val" else "train"]
        if list_path is None:
            samples = scan_split(root, split)
        else:
            samples = [
                Sample(
                    image=paths[0],
                    label=paths[1],
                    name=os.path.splitext(os.path.basename(paths[0]))[0],
                    where=f"{list_path} line {number}",
                )
                for number, paths in read_list(list_path, root, (2,))
            ]
        self.root = root
        self.list_path = list_path
        super().__init__(samples, ADE20K.label_lut, ADE20K.known_values, mode=mode, **kwargs)


def ade20k_train(root: str, list_path: str | None = None, **kwargs) -> ADE20KDataset:
    return ADE20KDataset(root, list_path, mode="train", **kwargs)


def ade20k_val(root: str, list_path: str | None = None, **kwargs) -> ADE20KDataset:
    return ADE20KDataset(root, list_path, mode="val", **kwargs)
