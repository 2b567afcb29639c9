"""Datasets and loaders as the command lines build them: one loader factory for every tool."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dataset import SPLIT_BUILDERS, SegmentationDataset, dataset_layout, get_segmentation_dataset
from dataset.sampler import make_worker_init_fn
from engine.cli import UserError, list_path
from utils.distributed import get_rank, get_world_size


class Indexed(Dataset):
    """A shard of a dataset whose metadata also carries each sample's index in the full list."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        image, label, meta = self.dataset[index]
        return image, label, {**meta, "index": index}


def collate_same_size(batch):
    """Stack a batch, refusing (by name) images of different sizes instead of torch's stack error."""
    images, labels, metas = zip(*batch)
    first = images[0].shape[-2:]
    for image, meta in zip(images[1:], metas[1:]):
        if image.shape[-2:] != first:
            raise UserError(
                f"images in one batch must have one size, but {metas[0]['image_path']} is "
                f"{first[0]}x{first[1]} and {meta['image_path']} is "
                f"{image.shape[-2]}x{image.shape[-1]}; use --batch-size 1 for mixed sizes"
            )
    return torch.stack(images), torch.stack(labels), list(metas)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    device: torch.device,
    sampler: Sampler[int] | None = None,
    seed: int = 0,
) -> DataLoader:
    """The one DataLoader factory of training, validation and prediction.

    Without ``sampler``, this rank's shard (every ``world``-th sample, no padding duplicates) in
    list order, each meta carrying its list ``index``. The loader has its own generator, so making
    an iterator leaves the global RNG (and with it the dropout masks) alone; each worker of each
    rank is seeded from (seed, rank, worker).
    """
    rank, world = get_rank(), get_world_size()
    if sampler is None:
        dataset = Indexed(dataset, range(rank, len(dataset), world))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
        # The rank takes the epoch slot so every worker of every process gets its own stream.
        worker_init_fn=make_worker_init_fn(seed, epoch=rank),
        collate_fn=collate_same_size,
    )


def eval_dataset(
    args: argparse.Namespace, split: str, data_list: str | None
) -> SegmentationDataset:
    """The ``{dataset}_{split}`` list as whole, unaugmented images.

    ``data_list`` is the flag's value (``--data-list``, ``--val-list``): None picks the
    dataset's shipped list of ``split``.
    """
    name = f"{args.dataset}_{split}"
    if name not in SPLIT_BUILDERS:
        raise UserError(f"dataset {args.dataset} has no {split} split")
    return get_segmentation_dataset(
        name,
        root=args.data_dir,
        list_path=list_path(
            args.data_list if data_list is None else data_list, args.dataset, split
        ),
        scale=False,
        mirror=False,
        ignore_label=getattr(args, "ignore_label", 255),
        normalize=args.normalize,
    )


def extra_sources(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """``(split, list file or None to scan)`` added to the training list by ``--use-val`` (the
    ``--val-list``, default the dataset's val list) and ``--use-extra`` (Cityscapes' coarse
    ``train_extra``: ``--extra-list``, default ``dataset/list/cityscapes/train_extra.lst``)."""
    sources = []
    wanted = [
        ("--use-val", "val", "--val-list", "val_list"),
        ("--use-extra", "train_extra", "--extra-list", "extra_list"),
    ]
    for flag, split, list_flag, attribute in wanted:
        if not getattr(args, flag[2:].replace("-", "_"), False):
            continue
        if split not in dataset_layout(args.dataset).splits:
            raise UserError(f"{flag}: dataset {args.dataset} has no {split} split")
        path = list_path(getattr(args, attribute, None), args.dataset, split)
        if path is not None and not os.path.isfile(path):
            raise UserError(
                f"{flag}: list file {path} not found; give {list_flag}, or write the lists "
                "with python -m dataset.make_lists --data-dir DIR"
            )
        sources.append((split, path))
    return sources


def train_dataset(args: argparse.Namespace) -> SegmentationDataset:
    """The augmented training list (plus ``--use-val`` / ``--use-extra`` data), repeated (like
    the original) to cover every step's samples."""
    return get_segmentation_dataset(
        f"{args.dataset}_train",
        root=args.data_dir,
        list_path=list_path(args.data_list, args.dataset, "train"),
        extra=extra_sources(args),
        crop_size=tuple(args.input_size),
        scale=args.random_scale,
        mirror=args.random_mirror,
        ignore_label=args.ignore_label,
        normalize=args.normalize,
        max_iters=args.num_steps * args.batch_size,
        seed=args.seed,
    )
