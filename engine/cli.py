"""Flags and error reporting shared by every command line, defined once.

Flag names follow the original OCNet scripts so its run scripts carry over. The pieces below every
package (one-line errors, the two kinds of boolean flag, the flag types) live in ``utils.cli`` so
that the dataset tools can use them too; they are re-exported here, so that the tools import all
their flags from one place.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

import torch

from dataset import (
    DATASET_NAMES,
    DATASETS,
    ORIGINAL_NAMES,
    DatasetError,
    canonical_name,
    dataset_info,
    dataset_layout,
)
from dataset.transforms import NORMALIZATIONS
from network import METHOD_SPECS, NETWORKS
from utils.checkpoint import CheckpointError
from utils.cli import (  # noqa: F401
    BOOLEAN_WORDS,
    RUN_STATUS,
    USAGE_STATUS,
    ArgumentParser,
    BooleanWordAction,
    FlagValueError,
    add_flag,
    add_switch,
    existing_folder,
    fail,
    float_list,
    folder_problem,
    image_size,
    int_at_least,
    non_negative_float,
    non_negative_int,
    number_in,
    output_file,
    output_folder,
    paths_unchecked,
    positive_float,
    positive_int,
    str2bool,
)


class UserError(Exception):
    """A problem the user can fix (a flag, file, list line, output folder); one line, no traceback."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types reported as one line; anything else is a bug and keeps its traceback."""
    return (UserError, DatasetError, CheckpointError, OSError)


def one_line(error: BaseException) -> str:
    """The user-facing part of an error message on one line.

    Errors raised inside DataLoader workers come back wrapped with the worker's traceback; the
    original message is its last line, after the exception's qualified name.
    """
    text = str(error)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def report(prog: str, error: BaseException, rank: int, status: int) -> NoReturn:
    """``fail`` with ``error``'s message; ranks other than 0 say who they are."""
    message = one_line(error)
    fail(prog, message if rank == 0 else f"(rank {rank}) {message}", status)


def add_model_args(parser: argparse.ArgumentParser, from_checkpoint: bool = False) -> None:
    """``--network``, ``--method``, ``--num-classes``.

    ``from_checkpoint``: the tools reading a ``--ckpt`` leave them None by default, to be filled
    from the checkpoint's ``meta`` (``engine.models.resolve_model_args``); train.py keeps the
    original's defaults.
    """
    group = parser.add_argument_group("model")
    recorded = " (default: recorded in --ckpt)" if from_checkpoint else ""
    group.add_argument(
        "--network",
        default=None if from_checkpoint else "resnet101",
        choices=NETWORKS,
        help="backbone" + recorded,
    )
    group.add_argument(
        "--method",
        default=None if from_checkpoint else "asp_oc_dsn",
        choices=tuple(METHOD_SPECS),
        help="context head"
        + recorded
        + ": "
        + "; ".join(f"{s.name}: {s.description}" for s in METHOD_SPECS.values()),
    )
    group.add_argument(
        "--num-classes",
        type=int_at_least(2),
        default=None,
        help="classes (default: "
        + ("recorded in --ckpt, else " if from_checkpoint else "")
        + "the dataset's, "
        + ", ".join(f"{d.num_classes} {d.name}" for d in DATASETS.values())
        + ")",
    )


def add_recorded_data_args(
    group: argparse._ActionsContainer, dataset_help: str, normalize_help: str
) -> None:
    """``--dataset`` and ``--normalize`` of the tools reading a ``--ckpt``: None by default, to
    be filled from the checkpoint's ``meta`` (``engine.models.resolve_model_args``)."""
    group.add_argument(
        "--dataset",
        default=None,
        type=dataset_name,
        choices=DATASET_NAMES,
        help=f"{dataset_help} (default: recorded in --ckpt, else cityscapes)",
    )
    group.add_argument(
        "--normalize",
        default=None,
        choices=NORMALIZATIONS,
        help=f"{normalize_help} (default: recorded in --ckpt, else caffe, the original's)",
    )


def list_path(value: str | None, dataset: str, split: str) -> str | None:
    """The list file to read: ``value``, else the dataset's shipped list of ``split``.

    ``None`` (``--data-list none``, or a dataset without shipped lists and no ``--data-list``)
    means scan the dataset's folders (``dataset.layouts``).
    """
    dataset = canonical_name(dataset)
    template = dataset_layout(dataset).default_list
    if value is None:
        return template.format(split=split) if template else None
    if value.lower() != "none":
        return value
    if template:
        raise UserError(
            f"--data-list none: {dataset} is read through list files "
            "(python -m dataset.make_lists --data-dir DIR writes them)"
        )
    return None


def dataset_name(value: str) -> str:
    """argparse type of ``--dataset``: the original's ``cityscapes_train``, ``cityscapes_test``
    and ``cityscapes_train_w_path`` name Cityscapes (the tool and the list decide the split)."""
    return canonical_name(value)


def add_data_args(parser: argparse.ArgumentParser, split: str, input_size: str = "769,769") -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        default="cityscapes",
        type=dataset_name,
        choices=DATASET_NAMES,
        help="custom: your own data under --data-dir (images/, labels/, classes.csv); "
        f"the original's names {', '.join(ORIGINAL_NAMES)} mean cityscapes",
    )
    group.add_argument("--data-dir", default="./dataset/cityscapes", help="dataset root folder")
    group.add_argument(
        "--data-list",
        default=None,
        help=f"list file, one sample per line (default: dataset/list/cityscapes/{split}.lst; "
        "'none', or a dataset other than Cityscapes without a list: scan the data folders)",
    )
    if split == "train":
        add_flag(group, "--use-val", "train on the val split too (its list: --val-list)")
        add_flag(
            group,
            "--use-extra",
            "add Cityscapes' coarse train_extra images with their gtCoarse labels "
            "(the paper's 81.2 used fine data only)",
        )
        group.add_argument(
            "--extra-list",
            default=None,
            help="list of the train_extra split for --use-extra "
            "(default: dataset/list/cityscapes/train_extra.lst; python -m dataset.make_lists writes it)",
        )
    group.add_argument(
        "--input-size", type=image_size, default=image_size(input_size), help="crop / tile H,W"
    )
    group.add_argument(
        "--normalize",
        default="caffe",
        choices=NORMALIZATIONS,
        help="caffe: the original's BGR-mean subtraction after an RGB flip (original OCNet "
        "checkpoints); openseg: BGR minus the same mean (openseg.pytorch ISA/OCR checkpoints); "
        "imagenet: RGB in [0, 1] with ImageNet statistics (official HRNet-OCR checkpoints)",
    )
    group.add_argument(
        "--workers", type=non_negative_int, default=4, help="DataLoader workers per process"
    )
    group.add_argument(
        "--batch-size", type=positive_int, default=1, help="images per step, all GPUs together"
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
    group.add_argument(
        "--nproc",
        type=positive_int,
        default=1,
        help="CPU processes to spawn (gloo) with --device cpu",
    )
    group.add_argument("--amp", default="none", choices=("none", "fp16", "bf16"), help="autocast")
    group.add_argument(
        "--seed", type=non_negative_int, default=12345, help="seeds python, numpy, torch, workers"
    )
    group.add_argument(
        "--dist-timeout",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="how long a collective waits for a dead or hung rank before the job ends "
        "(default: torch's, 10 min for NCCL, 30 min for gloo)",
    )


def resolve_num_classes(args: argparse.Namespace) -> int:
    """``--num-classes``, else the dataset's (custom: the rows of ``<data-dir>/classes.csv``)."""
    if args.num_classes is not None:
        return args.num_classes
    return dataset_info(args.dataset, args.data_dir).num_classes


def gpu_ids(args: argparse.Namespace) -> list[int]:
    """Parse ``--gpu 0,1,2``; an empty list means the device comes from ``--device``."""
    if not args.gpu:
        return []
    try:
        return [int(g) for g in str(args.gpu).split(",") if g.strip()]
    except ValueError:
        raise UserError(f"--gpu expects comma-separated integers, got {args.gpu!r}") from None


def resolve_device(args: argparse.Namespace, local_rank: int = 0) -> torch.device:
    """Device of this process: ``--gpu`` wins, then ``--device`` (``auto`` prefers CUDA)."""
    ids = gpu_ids(args)
    if ids:
        if not torch.cuda.is_available():
            raise UserError(f"--gpu {args.gpu} given but no CUDA device is visible")
        return torch.device("cuda", ids[local_rank % len(ids)])
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UserError(f"--device {args.device!r} is not a device name") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {args.device} given but no CUDA device is visible")
    return device


def autocast_dtype(amp: str) -> torch.dtype | None:
    return {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]
