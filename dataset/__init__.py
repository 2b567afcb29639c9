"""Datasets: Cityscapes, ADE20K and synthetic scenes; their tables, one factory, the sampler."""

from __future__ import annotations

from dataset.ade20k import ADE20KDataset, ade20k_train, ade20k_val
from dataset.base import DatasetError, SegmentationDataset
from dataset.catalog import DATASETS, DatasetInfo, dataset_info
from dataset.cityscapes import (
    CityscapesDataset,
    cityscapes_test,
    cityscapes_train,
    cityscapes_val,
)
from dataset.sampler import ResumableSampler, make_worker_init_fn, seed_worker

# Loader of each "{dataset}_{split}" name.
SPLIT_BUILDERS = {
    "cityscapes_train": cityscapes_train,
    "cityscapes_val": cityscapes_val,
    "cityscapes_test": cityscapes_test,
    "ade20k_train": ade20k_train,
    "ade20k_val": ade20k_val,
}

__all__ = [
    "ADE20KDataset",
    "CityscapesDataset",
    "DATASETS",
    "DatasetError",
    "DatasetInfo",
    "ResumableSampler",
    "SPLIT_BUILDERS",
    "SegmentationDataset",
    "dataset_info",
    "get_segmentation_dataset",
    "make_worker_init_fn",
    "seed_worker",
]


def get_segmentation_dataset(name: str, **kwargs) -> SegmentationDataset:
    """Build a dataset by name, e.g. ``get_segmentation_dataset("cityscapes_train", root=...,
    list_path=..., crop_size=(769, 769), normalize="caffe", max_iters=None, seed=0)``."""
    if name not in SPLIT_BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(SPLIT_BUILDERS)}")
    return SPLIT_BUILDERS[name](**kwargs)
