"""What evaluate.py and generate_submit.py share (one copy): prediction flags and their checks,
model loading, the sharded loader, predicted batches and atomic PNG writes.

The prediction itself is ``utils.inference.predict``; processes are started by
``utils.distributed.launch`` and user errors (``utils.cli.UserError``) reported by it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dataset import DATASETS, get_segmentation_dataset
from inplace_abn import ABN
from network import get_segmentation_model
from network.weights import check_weights, load_weights
from utils import cli
from utils.cli import UserError
from utils.distributed import get_rank, get_world_size, is_main_process
from utils.fileio import atomic_write
from utils.inference import predict


def add_prediction_args(parser: argparse.ArgumentParser, split: str) -> None:
    """Model/data/device flags (``utils.cli``) plus checkpoint and test-time prediction flags."""
    cli.add_model_args(parser)
    cli.add_data_args(parser, split=split, input_size="769,769")
    cli.add_device_args(parser)
    group = parser.add_argument_group("prediction")
    group.add_argument(
        "--ckpt",
        "--restore-from",
        dest="ckpt",
        required=True,
        help="weights: a checkpoint of this project, or a plain / module.-prefixed state_dict",
    )
    group.add_argument(
        "--predict-choice",
        default="whole",
        choices=("whole", "sliding"),
        help="whole: one pass per image; sliding: --input-size tiles overlapping by --overlap",
    )
    group.add_argument(
        "--overlap", type=float, default=1 / 3, help="fraction of a tile shared with the next"
    )
    group.add_argument(
        "--tile-batch", type=int, default=4, help="sliding tiles per forward pass (memory)"
    )
    group.add_argument(
        "--whole-scale", type=float, default=1.0, help="scale of the single pass without --use-ms"
    )
    cli.add_flag(group, "--use-ms", "multi-scale: average the probabilities over --scales")
    group.add_argument(
        "--scales",
        type=cli.float_list,
        default=[0.75, 1.0, 1.25, 1.5, 1.75, 2.0],
        help="scales for --use-ms (the paper's multi-scale test uses 0.75 .. 2.0)",
    )
    cli.add_flag(group, "--use-flip", "also predict the mirrored image and average")
    group.add_argument("--output-path", default="./outputs", help="folder for the results")


def prediction_scales(args: argparse.Namespace) -> list[float]:
    return list(args.scales) if args.use_ms else [args.whole_scale]


def check_prediction_args(args: argparse.Namespace) -> None:
    """Flag values argparse cannot check on its own, reported before any work starts."""
    if not 0 <= args.overlap < 1:
        raise UserError(f"--overlap must be in [0, 1), got {args.overlap}")
    if args.whole_scale <= 0:
        raise UserError(f"--whole-scale must be positive, got {args.whole_scale}")
    if args.tile_batch < 1:
        raise UserError(f"--tile-batch must be at least 1, got {args.tile_batch}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {args.workers}")


def prepare_output_dir(path: str) -> str:
    """Create ``path`` (and parents) or fail with one clear message before any prediction."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--output-path {path} exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"--output-path {path} cannot be created: {error.strerror or error}"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"--output-path {path} is not writable")
    return path


def segmentation_model(args: argparse.Namespace, num_classes: int) -> nn.Module:
    """``{network}_{method}`` for prediction, with plain ``ABN`` for normalisation.

    At test time the synchronised/in-place variants compute the same thing and their state_dicts
    are identical, so the simplest one is used.
    """
    name = f"{args.network}_{args.method}"
    return get_segmentation_model(name, num_classes=num_classes, norm_layer=ABN)


def build_model(args: argparse.Namespace, num_classes: int, device: torch.device) -> nn.Module:
    """The model with the weights of ``--ckpt`` (strict), in eval mode on ``device``."""
    model = segmentation_model(args, num_classes)
    load_weights(model, args.ckpt)
    return model.to(device).eval()


class _Indexed(Dataset):
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


def make_dataset(args: argparse.Namespace, split: str) -> Dataset:
    """The ``{dataset}_{split}`` list as whole, unaugmented images."""
    name = f"{args.dataset}_{split}"
    if name not in DATASETS:
        raise UserError(f"dataset {args.dataset} has no {split} split")
    return get_segmentation_dataset(
        name,
        root=args.data_dir,
        list_path=cli.list_path(args.data_list, args.dataset, split),
        scale=False,
        mirror=False,
        normalize=args.normalize,
    )


def make_loader(args: argparse.Namespace, dataset: Dataset, device: torch.device) -> DataLoader:
    """This rank's shard (every ``world``-th sample, no padding duplicates) in list order."""
    rank, world = get_rank(), get_world_size()
    shard = _Indexed(dataset, range(rank, len(dataset), world))
    return DataLoader(
        shard,
        batch_size=max(1, args.batch_size // world),
        shuffle=False,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        collate_fn=collate_same_size,
    )


def predicted_batches(
    args: argparse.Namespace,
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[dict]]]:
    """Yield ``(train-id prediction [B, H, W], label [B, H, W], metas)`` on ``device``."""
    scales = prediction_scales(args)
    amp = cli.autocast_dtype(args.amp)
    progress = tqdm(loader, desc="predict", unit="batch", disable=not is_main_process())
    with torch.inference_mode():
        for images, labels, metas in progress:
            images = images.to(device, non_blocking=True)
            probs = predict(
                model,
                images,
                num_classes,
                mode=args.predict_choice,
                tile=tuple(args.input_size),
                overlap=args.overlap,
                scales=scales,
                flip=args.use_flip,
                tile_batch=args.tile_batch,
                amp=amp,
            )
            yield probs.argmax(1), labels.to(device, non_blocking=True), metas


def write_png(path: str, image: np.ndarray) -> None:
    """Encode ``image`` (HxW uint8, or HxWx3 RGB) as PNG and write it atomically."""
    if image.ndim == 3:
        image = np.ascontiguousarray(image[:, :, ::-1])  # cv2 expects BGR
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise UserError(f"could not encode {path} as PNG")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, encoded.tobytes())


def check_inputs(args: argparse.Namespace, split: str) -> None:
    """Everything a user can get wrong that is cheap to find before any process starts."""
    check_prediction_args(args)
    prepare_output_dir(args.output_path)
    make_dataset(args, split)
    # On the meta device: shapes are all the check needs, so no weights are allocated or copied
    # here; the worker loads them once.
    with torch.device("meta"):
        model = segmentation_model(args, cli.resolve_num_classes(args))
    check_weights(model, args.ckpt)
