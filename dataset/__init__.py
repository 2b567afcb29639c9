"""Datasets: Cityscapes, ADE20K and synthetic scenes; one factory and DataLoader seeding."""

from __future__ import annotations

import functools
import random

import numpy as np
import torch

from dataset.ade20k import ADE20KDataset, ade20k_train, ade20k_val
from dataset.base import DatasetError, SegmentationDataset
from dataset.cityscapes import (
    CityscapesDataset,
    cityscapes_test,
    cityscapes_train,
    cityscapes_val,
)

DATASETS = {
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
    "SegmentationDataset",
    "get_segmentation_dataset",
    "make_worker_init_fn",
    "seed_worker",
]


def get_segmentation_dataset(name: str, **kwargs) -> SegmentationDataset:
    """Build a dataset by name, e.g. ``get_segmentation_dataset("cityscapes_train", root=...,
    list_path=..., crop_size=(769, 769), normalize="caffe", max_iters=None, seed=0)``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name](**kwargs)


def seed_worker(worker_id: int, seed: int = 0, epoch: int = 0) -> None:
    """Seed Python, numpy and torch in a DataLoader worker from (seed, epoch, worker id).

    Augmentation itself draws from per-sample generators; this covers any other randomness a
    worker might use, so two runs with one seed behave identically.
    """
    state = np.random.SeedSequence([seed, epoch, worker_id])
    words = state.generate_state(2, dtype=np.uint32)
    random.seed(int(words[0]))
    np.random.seed(int(words[0]))
    torch.manual_seed(int(words[0]) << 32 | int(words[1]))


def make_worker_init_fn(seed: int, epoch: int = 0):
    """``worker_init_fn`` for a DataLoader of the given run seed and epoch (picklable)."""
    return functools.partial(seed_worker, seed=seed, epoch=epoch)
