"""Datasets: Cityscapes, ADE20K, LIP, PASCAL-Context, COCO-Stuff, your own, synthetic scenes;
their tables, one dataset class over their layouts, one factory, the sampler."""

from __future__ import annotations

from functools import partial

from dataset.base import DatasetError, SegmentationDataset
from dataset.catalog import (
    CUSTOM,
    DATASET_NAMES,
    DATASETS,
    ORIGINAL_NAMES,
    DatasetInfo,
    canonical_name,
    dataset_info,
)
from dataset.layouts import LAYOUTS, Layout, dataset_layout
from dataset.loader import LayoutDataset
from dataset.sampler import ResumableSampler, make_worker_init_fn, seed_worker

# Loader of each "{dataset}_{split}" name: the one dataset class with the split's mode. Splits
# that only add training data (Cityscapes' coarse "train_extra") have no loader of their own.
SPLIT_BUILDERS = {
    f"{name}_{split}": partial(LayoutDataset, name, mode=split)
    for name in DATASET_NAMES
    for split in LAYOUTS[name].splits
    if split in ("train", "val", "test")
}
# The original's "cityscapes_train_w_path" also returned file paths; every meta here does.
SPLIT_BUILDERS["cityscapes_train_w_path"] = SPLIT_BUILDERS["cityscapes_train"]

__all__ = [
    "CUSTOM",
    "DATASETS",
    "DATASET_NAMES",
    "DatasetError",
    "DatasetInfo",
    "LAYOUTS",
    "Layout",
    "LayoutDataset",
    "ORIGINAL_NAMES",
    "ResumableSampler",
    "SPLIT_BUILDERS",
    "SegmentationDataset",
    "canonical_name",
    "dataset_info",
    "dataset_layout",
    "get_segmentation_dataset",
    "make_worker_init_fn",
    "seed_worker",
]


def get_segmentation_dataset(name: str, **kwargs) -> SegmentationDataset:
    """Build a dataset by name, e.g. ``get_segmentation_dataset("cityscapes_train", root=...,
    list_path=..., crop_size=(769, 769), normalize="caffe", max_iters=None, seed=0)``.

    ``list_path`` None scans the dataset's folders; ``extra=[("val", None)]`` adds sources.
    """
    if name not in SPLIT_BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(SPLIT_BUILDERS)}")
    return SPLIT_BUILDERS[name](**kwargs)
