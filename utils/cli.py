"""Flags shared by train.py, evaluate.py and generate_submit.py, defined once.

Flag names follow the original OCNet scripts so its run scripts carry over.
"""

from __future__ import annotations

import argparse

import torch

from network import METHODS, NETWORKS

DATASETS = ("cityscapes", "ade20k")
NUM_CLASSES = {"cityscapes": 19, "ade20k": 150}


def str2bool(value: str) -> bool:
    """argparse type for the original's ``--flag True/False`` style."""
    lowered = str(value).lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def image_size(value: str) -> tuple[int, int]:
    """argparse type for ``H,W`` (or a single ``S`` for a square)."""
    parts = value.split(",")
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        sizes = ()
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a size as H,W with positive integers, got {value!r}"
        )
    return sizes


def float_list(value: str) -> list[float]:
    """argparse type for comma-separated floats such as ``0.75,1.0,1.25``."""
    try:
        values = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive numbers, got {value!r}"
        )
    return values


def add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--network", default="resnet101", choices=NETWORKS, help="backbone")
    group.add_argument("--method", default="asp_oc_dsn", choices=METHODS, help="context head")
    group.add_argument(
        "--num-classes", type=int, default=None, help="classes (default: 19 cityscapes, 150 ade20k)"
    )


def add_data_args(
    parser: argparse.ArgumentParser, data_list: str, input_size: str = "769,769"
) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="cityscapes", choices=DATASETS)
    group.add_argument("--data-dir", default="./data/cityscapes", help="dataset root folder")
    group.add_argument("--data-list", default=data_list, help="list file, one sample per line")
    group.add_argument(
        "--input-size", type=image_size, default=image_size(input_size), help="crop / tile H,W"
    )
    group.add_argument(
        "--normalize",
        default="caffe",
        choices=("caffe", "imagenet"),
        help="caffe: the original's BGR-mean subtraction (original checkpoints need it)",
    )
    group.add_argument("--workers", type=int, default=4, help="DataLoader workers per process")
    group.add_argument(
        "--batch-size", type=int, default=1, help="images per step, all GPUs together"
    )


def add_device_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("device")
    group.add_argument(
        "--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N, mps"
    )
    group.add_argument(
        "--gpu",
        default=None,
        help="comma-separated GPU ids; more than one spawns one DDP process each",
    )
    group.add_argument("--amp", default="none", choices=("none", "fp16", "bf16"), help="autocast")
    group.add_argument(
        "--seed", type=int, default=12345, help="seeds python, numpy, torch, workers"
    )


def resolve_num_classes(args: argparse.Namespace) -> int:
    return args.num_classes if args.num_classes is not None else NUM_CLASSES[args.dataset]


def gpu_ids(args: argparse.Namespace) -> list[int]:
    """Parse ``--gpu 0,1,2``; an empty list means the device comes from ``--device``."""
    if not args.gpu:
        return []
    try:
        return [int(g) for g in str(args.gpu).split(",") if g.strip()]
    except ValueError:
        raise SystemExit(
            f"error: --gpu expects comma-separated integers, got {args.gpu!r}"
        ) from None


def resolve_device(args: argparse.Namespace, local_rank: int = 0) -> torch.device:
    """Device of this process: ``--gpu`` wins, then ``--device`` (``auto`` prefers CUDA)."""
    ids = gpu_ids(args)
    if ids:
        if not torch.cuda.is_available():
            raise SystemExit(f"error: --gpu {args.gpu} given but no CUDA device is visible")
        return torch.device("cuda", ids[local_rank % len(ids)])
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise SystemExit(f"error: --device {args.device!r} is not a device name") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device} given but no CUDA device is visible")
    return device


def autocast_dtype(amp: str) -> torch.dtype | None:
    return {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]
