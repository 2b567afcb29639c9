"""Data pipeline throughput: our training transform and label table vs the original's code.

Both sides run in one process on the same synthetic 1024x2048 Cityscapes-layout scenes, one
thread (the cost of one DataLoader worker). The reference is the original OCNet
``CitySegmentationTrain.__getitem__`` restated: per-class loop for labelId -> trainId, resize,
normalise the whole scaled image, pad with copyMakeBorder, crop, flip.

    python -m bench.data_pipeline [--quick]
"""

from __future__ import annotations

import random
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

from bench.common import print_rows, row
from dataset import get_segmentation_dataset
from dataset.catalog import DATASETS
from dataset.labels import CITYSCAPES_LABELS
from dataset.synthetic import generate

# The original's table: every label id (and -1) to a train id or the ignore value.
ID_TO_TRAINID = {-1: 255} | {label.id: label.train_id for label in CITYSCAPES_LABELS}


def loop_mapping(label: np.ndarray) -> np.ndarray:
    """The original's id2trainId: one masked assignment per table entry."""
    label_copy = label.copy()
    for k, v in ID_TO_TRAINID.items():
        label_copy[label == k] = v
    return label_copy


def reference_item(image_path: str, label_path: str, crop=(769, 769)):
    """The original's training __getitem__ (caffe mean, scale, pad, crop, mirror)."""
    image = cv2.imread(image_path, cv2.IMREAD_COLOR)
    label = cv2.imread(label_path, cv2.IMREAD_GRAYSCALE)
    label = loop_mapping(label)
    f_scale = 0.5 + random.randint(0, 16) / 10.0
    image = cv2.resize(image, None, fx=f_scale, fy=f_scale, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, None, fx=f_scale, fy=f_scale, interpolation=cv2.INTER_NEAREST)
    image = np.asarray(image, np.float32)
    image = image[:, :, ::-1]
    image -= (102.9801, 115.9465, 122.7717)
    crop_h, crop_w = crop
    img_h, img_w = label.shape
    pad_h, pad_w = max(crop_h - img_h, 0), max(crop_w - img_w, 0)
    if pad_h > 0 or pad_w > 0:
        image = cv2.copyMakeBorder(
            image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0.0, 0.0, 0.0)
        )
        label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(255,))
    img_h, img_w = label.shape
    h_off = random.randint(0, img_h - crop_h)
    w_off = random.randint(0, img_w - crop_w)
    image = np.asarray(image[h_off : h_off + crop_h, w_off : w_off + crop_w], np.float32)
    label = np.asarray(label[h_off : h_off + crop_h, w_off : w_off + crop_w], np.float32)
    image = image.transpose((2, 0, 1))
    flip = np.random.choice(2) * 2 - 1
    image = image[:, :, ::flip]
    label = label[:, ::flip]
    return torch.from_numpy(image.copy()), torch.from_numpy(label.copy())


def run(quick: bool = False) -> list[dict]:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    scenes = 2 if quick else 4
    passes = 1 if quick else 3
    with tempfile.TemporaryDirectory() as root:
        generate(root, {"train": scenes}, height=1024, width=2048, seed=0)
        ds = get_segmentation_dataset(
            "cityscapes_train", root=root, list_path=f"{root}/train.lst", crop_size=(769, 769)
        )
        pairs = [(s.image, s.label) for s in ds.samples]
        random.seed(0)
        np.random.seed(0)
        ds[0], reference_item(*pairs[0])  # warm caches and lazy imports
        count = scenes * passes
        start = time.perf_counter()
        for index in range(count):
            ds.set_epoch(index // scenes)
            ds[index % scenes]
        ours = count / (time.perf_counter() - start)
        start = time.perf_counter()
        for index in range(count):
            reference_item(*pairs[index % scenes])
        reference = count / (time.perf_counter() - start)

        label = cv2.imread(pairs[0][1], cv2.IMREAD_GRAYSCALE)
        lut = DATASETS["cityscapes"].label_lut
        assert np.array_equal(cv2.LUT(label, lut), loop_mapping(label))
        repeats = 5 if quick else 20
        start = time.perf_counter()
        for _ in range(repeats):
            cv2.LUT(label, lut)
        lut_ms = (time.perf_counter() - start) / repeats * 1e3
        start = time.perf_counter()
        for _ in range(repeats):
            loop_mapping(label)
        loop_ms = (time.perf_counter() - start) / repeats * 1e3
    return [
        row(
            "train transform, 1024x2048 -> 769x769 crop, 1 thread",
            ours,
            reference,
            "img/s",
            "original __getitem__",
            "higher is better; decode + label map + scale/crop/flip + normalise",
        ),
        row(
            "labelId -> trainId, 1024x2048",
            lut_ms,
            loop_ms,
            "ms",
            "per-class loop",
            "256-entry table (cv2.LUT)",
        ),
    ]


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv[1:]))
