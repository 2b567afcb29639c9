"""The model a command line asks for: ``--network`` and ``--method`` through the one factory,
or what a checkpoint records about itself (``meta``), so that ``--ckpt FILE`` alone rebuilds it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from dataset import dataset_info
from engine.cli import UserError
from inplace_abn import NormLayer
from network import get_segmentation_model
from utils.checkpoint import load_checkpoint


def build_model(
    args: argparse.Namespace, num_classes: int, norm_layer: NormLayer | None = None
) -> nn.Module:
    """``{--network}_{--method}`` with random weights; callers load what they need."""
    name = f"{args.network}_{args.method}"
    return get_segmentation_model(name, num_classes=num_classes, norm_layer=norm_layer)


# What a checkpoint records about its model, so ``--ckpt FILE`` alone rebuilds it.
META_KEYS = ("network", "method", "num_classes", "dataset", "normalize")
# For checkpoints that record nothing (the original OCNet's): its dataset and normalisation.
FOREIGN_DEFAULTS = {"dataset": "cityscapes", "normalize": "caffe"}


class CheckpointDefault(str):
    """A flag default the checkpoint's meta replaces. It reads as the usual value for code that
    looks before ``resolve_model_args`` runs (``generate_submit.dataset_split``)."""


def model_meta(args: argparse.Namespace, num_classes: int) -> dict[str, Any]:
    """The model facts of a training run, as plain values for a weights_only checkpoint."""
    return {
        "network": args.network,
        "method": args.method,
        "num_classes": int(num_classes),
        "dataset": args.dataset,
        "normalize": args.normalize,
    }


def meta_from_checkpoint(checkpoint: Any) -> dict[str, Any] | None:
    """The ``META_KEYS`` a loaded checkpoint records, or None for a bare state_dict.

    Reads ``meta`` (train.py's checkpoints and final weights, exported safetensors, whose header
    holds strings) or else the ``args`` of an older project checkpoint. Keys it does not record
    are None.
    """
    if not isinstance(checkpoint, Mapping):
        return None
    for key in ("meta", "args"):
        record = checkpoint.get(key)
        if isinstance(record, Mapping) and record.get("network") and record.get("method"):
            meta = {name: record.get(name) for name in META_KEYS}
            if meta["num_classes"] is not None:
                meta["num_classes"] = int(meta["num_classes"])
            return meta
    return None


def read_model_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """``meta_from_checkpoint`` of the file at ``path``, reading as little of it as it can."""
    return meta_from_checkpoint(load_checkpoint(path, mmap=True))


def resolve_model_args(args: argparse.Namespace, path: str | os.PathLike) -> None:
    """Fill the model flags left unset (None) from the checkpoint's meta; given flags win.

    A file without meta (the original OCNet's, openseg's, a bare state_dict) needs
    ``--network`` and ``--method``; ``--dataset`` then defaults to cityscapes and
    ``--normalize`` to caffe, the original's.
    """
    meta = read_model_meta(path) or {}
    for key in META_KEYS:
        value = getattr(args, key, None)
        if value is None or isinstance(value, CheckpointDefault):
            setattr(args, key, meta[key] if meta.get(key) is not None else value)
        if isinstance(getattr(args, key), CheckpointDefault):
            setattr(args, key, str(getattr(args, key)))
    missing = [f"--{key}" for key in ("network", "method") if getattr(args, key, None) is None]
    if missing:
        raise UserError(
            f"checkpoint {os.fspath(path)} does not record its model (no 'meta'; e.g. an original "
            f"OCNet or openseg.pytorch file): give {' and '.join(missing)}"
        )
    for key, default in FOREIGN_DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, default)


def model_num_classes(args: argparse.Namespace) -> int:
    """``--num-classes`` (or the checkpoint's), else the dataset's; for tools without
    ``--data-dir``, where a custom dataset's class table cannot be read."""
    if args.num_classes is not None:
        return args.num_classes
    data_dir = getattr(args, "data_dir", None)
    if args.dataset == "custom" and data_dir is None:
        raise UserError("the checkpoint does not record its class count: give --num-classes")
    return dataset_info(args.dataset, data_dir).num_classes
