"""Test-time prediction: whole image or sliding tiles, several scales, horizontal flip.

Follows the original OCNet ``evaluate.py``: tiles are placed with stride ``ceil(tile * (1 -
overlap))``, the last row/column is shifted back to end at the border, tiles smaller than the tile
size are zero-padded at the bottom/right, and every resize is bilinear with ``align_corners=True``
(the setting the released models were trained with). Unlike the original, tiles are run through the
network in batches, softmax probabilities (not raw logits) are summed and divided by the per-pixel
tile count, and every requested scale is used.

The second half holds what evaluate.py and generate_submit.py share (one copy): prediction flags,
model loading, the sharded loader, atomic PNG writes, process launching and one-line errors.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext

import cv2
import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from utils import cli
from utils.distributed import (
    destroy_process_group,
    free_port,
    get_rank,
    get_world_size,
    init_process_group,
    is_main_process,
    torchrun_env,
)
from utils.fileio import atomic_write


def final_logits(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The main prediction of a model: ``*_dsn`` models return ``[dsn_logits, logits]``."""
    if isinstance(output, (list, tuple)):
        return output[-1]
    return output


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _probabilities(
    model: nn.Module, images: torch.Tensor, out_size: tuple[int, int], amp: torch.dtype | None
) -> torch.Tensor:
    """Softmax probabilities of ``model`` on ``images``, upsampled to ``out_size`` (float32)."""
    context = torch.autocast(images.device.type, dtype=amp) if amp is not None else nullcontext()
    with context:
        logits = final_logits(model(images))
    logits = _resize(logits.float(), out_size)
    return logits.softmax(dim=1)


def predict_whole(
    model: nn.Module, images: torch.Tensor, amp: torch.dtype | None = None
) -> torch.Tensor:
    """``[B, C, H, W]`` probabilities from one forward pass over the whole images."""
    return _probabilities(model, images, tuple(images.shape[-2:]), amp)


def tile_windows(
    height: int, width: int, tile: tuple[int, int], overlap: float
) -> list[tuple[int, int, int, int]]:
    """``(y1, y2, x1, x2)`` windows covering the image, as in the original ``predict_sliding``.

    The number of rows is ``ceil((H - tile_h) / stride) + 1`` (the strided-convolution formula),
    at least one even when the image is smaller than a tile (the original produced none then).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    tile_h, tile_w = tile
    stride_h = math.ceil(tile_h * (1 - overlap))
    stride_w = math.ceil(tile_w * (1 - overlap))
    rows = max(math.ceil((height - tile_h) / stride_h), 0) + 1
    cols = max(math.ceil((width - tile_w) / stride_w), 0) + 1
    windows = []
    for row in range(rows):
        for col in range(cols):
            y2 = min(row * stride_h + tile_h, height)
            x2 = min(col * stride_w + tile_w, width)
            windows.append((max(y2 - tile_h, 0), y2, max(x2 - tile_w, 0), x2))
    return windows


def predict_sliding(
    model: nn.Module,
    images: torch.Tensor,
    num_classes: int,
    tile: tuple[int, int],
    overlap: float = 1 / 3,
    tile_batch: int | None = None,
    amp: torch.dtype | None = None,
) -> torch.Tensor:
    """``[B, C, H, W]`` probabilities averaged over overlapping tiles.

    All tiles of all images are stacked and run ``tile_batch`` at a time (default: all at once).
    Each tile's logits are upsampled to the tile size, softmaxed, cropped to the part inside the
    image and added; the sum is divided by how many tiles covered each pixel.
    """
    batch, _, height, width = images.shape
    tile_h, tile_w = tile
    windows = tile_windows(height, width, tile, overlap)
    crops = []
    for y1, y2, x1, x2 in windows:
        crop = images[:, :, y1:y2, x1:x2]
        crops.append(F.pad(crop, (0, tile_w - (x2 - x1), 0, tile_h - (y2 - y1))))
    stacked = torch.cat(crops)  # window-major: rows [k * B, (k + 1) * B) belong to window k
    chunk = tile_batch or stacked.shape[0]
    probs = torch.cat(
        [
            _probabilities(model, stacked[i : i + chunk], (tile_h, tile_w), amp)
            for i in range(0, stacked.shape[0], chunk)
        ]
    )
    if probs.shape[1] != num_classes:
        raise ValueError(f"model predicts {probs.shape[1]} classes, expected {num_classes}")
    total = images.new_zeros((batch, num_classes, height, width), dtype=torch.float32)
    count = images.new_zeros((1, 1, height, width), dtype=torch.float32)
    for k, (y1, y2, x1, x2) in enumerate(windows):
        total[:, :, y1:y2, x1:x2] += probs[k * batch : (k + 1) * batch, :, : y2 - y1, : x2 - x1]
        count[:, :, y1:y2, x1:x2] += 1
    return total / count


def scaled_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    """Rounded like ``scipy.ndimage.zoom``, which the original used to rescale images."""
    return max(1, int(round(size[0] * scale))), max(1, int(round(size[1] * scale)))


def predict(
    model: nn.Module,
    images: torch.Tensor,
    num_classes: int,
    mode: str = "whole",
    tile: tuple[int, int] = (769, 769),
    overlap: float = 1 / 3,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    tile_batch: int | None = None,
    amp: torch.dtype | None = None,
) -> torch.Tensor:
    """``[B, C, H, W]`` class probabilities at the input size, averaged over scales and flips.

    For each scale the images are resized (bilinear, ``align_corners=True``), predicted whole or
    in tiles, and the probabilities resized back; with ``flip`` the mirrored images are predicted
    too and their mirrored probabilities averaged in. Call under ``torch.inference_mode()`` with
    the model in eval mode.
    """
    if mode not in ("whole", "sliding"):
        raise ValueError(f"mode must be 'whole' or 'sliding', got {mode!r}")
    if not scales:
        raise ValueError("at least one scale is needed")
    size = tuple(images.shape[-2:])
    total = None
    views = (False, True) if flip else (False,)
    for scale in scales:
        scaled = _resize(images, scaled_size(size, scale))
        for mirrored in views:
            view = scaled.flip(-1) if mirrored else scaled
            if mode == "whole":
                probs = predict_whole(model, view, amp)
            else:
                probs = predict_sliding(model, view, num_classes, tile, overlap, tile_batch, amp)
            if mirrored:
                probs = probs.flip(-1)
            probs = _resize(probs, size)
            total = probs if total is None else total + probs
    if total.shape[1] != num_classes:
        raise ValueError(f"model predicts {total.shape[1]} classes, expected {num_classes}")
    return total / (len(scales) * len(views))


# ---------------------------------------------------------------------------------------------
# Shared by evaluate.py and generate_submit.py: flags, model loading, data, writing, launching.
# ---------------------------------------------------------------------------------------------


class InputError(ValueError):
    """A problem the user can fix (flags, data, output folder); reported as one line."""


def add_prediction_args(parser: argparse.ArgumentParser, data_list: str) -> None:
    """Model/data/device flags (``utils.cli``) plus checkpoint and test-time prediction flags."""
    cli.add_model_args(parser)
    cli.add_data_args(parser, data_list=data_list, input_size="769,769")
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
    group.add_argument(
        "--use-ms",
        type=cli.str2bool,
        nargs="?",
        const=True,
        default=False,
        help="multi-scale: average the probabilities over --scales",
    )
    group.add_argument(
        "--scales",
        type=cli.float_list,
        default=[0.75, 1.0, 1.25, 1.5, 1.75, 2.0],
        help="scales for --use-ms (the paper's multi-scale test uses 0.75 .. 2.0)",
    )
    group.add_argument(
        "--use-flip",
        type=cli.str2bool,
        nargs="?",
        const=True,
        default=False,
        help="also predict the mirrored image and average",
    )
    group.add_argument("--output-path", default="./outputs", help="folder for the results")
    parser.add_argument(
        "--nproc", type=int, default=1, help="CPU processes to spawn (gloo) with --device cpu"
    )


def prediction_scales(args: argparse.Namespace) -> list[float]:
    return list(args.scales) if args.use_ms else [args.whole_scale]


def check_prediction_args(args: argparse.Namespace) -> None:
    """Flag values argparse cannot check on its own, reported before any work starts."""
    if not 0 <= args.overlap < 1:
        raise InputError(f"--overlap must be in [0, 1), got {args.overlap}")
    if args.whole_scale <= 0:
        raise InputError(f"--whole-scale must be positive, got {args.whole_scale}")
    if args.tile_batch < 1:
        raise InputError(f"--tile-batch must be at least 1, got {args.tile_batch}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers < 0:
        raise InputError(f"--workers must be 0 or more, got {args.workers}")


def prepare_output_dir(path: str) -> str:
    """Create ``path`` (and parents) or fail with one clear message before any prediction."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"--output-path {path} exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise InputError(
            f"--output-path {path} cannot be created: {error.strerror or error}"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"--output-path {path} is not writable")
    return path


def build_model(args: argparse.Namespace, num_classes: int, device: torch.device) -> nn.Module:
    """``{network}_{method}`` with the weights of ``--ckpt`` (strict), in eval mode on ``device``.

    Plain ``ABN`` is used for normalisation: at test time the synchronised/in-place variants
    compute the same thing and their state_dicts are identical.
    """
    from inplace_abn import ABN
    from network import get_segmentation_model
    from network.weights import load_weights

    model = get_segmentation_model(
        f"{args.network}_{args.method}", num_classes=num_classes, norm_layer=ABN
    )
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
            raise InputError(
                f"images in one batch must have one size, but {metas[0]['image_path']} is "
                f"{first[0]}x{first[1]} and {meta['image_path']} is "
                f"{image.shape[-2]}x{image.shape[-1]}; use --batch-size 1 for mixed sizes"
            )
    return torch.stack(images), torch.stack(labels), list(metas)


def make_dataset(args: argparse.Namespace, split: str) -> Dataset:
    """The ``{dataset}_{split}`` list as whole, unaugmented images."""
    from dataset import DATASETS, get_segmentation_dataset

    name = f"{args.dataset}_{split}"
    if name not in DATASETS:
        raise InputError(f"dataset {args.dataset} has no {split} split")
    return get_segmentation_dataset(
        name,
        root=args.data_dir,
        list_path=args.data_list,
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
        raise InputError(f"could not encode {path} as PNG")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, encoded.tobytes())


# --------------------------------- launching and error reporting ---------------------------------


def _one_line(error: BaseException) -> str:
    """The user-facing part of an error message on one line.

    Errors raised inside DataLoader workers come back wrapped with the worker's traceback; the
    original message is its last line, after the exception's qualified name.
    """
    text = str(error)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines)


def _user_errors() -> tuple[type[BaseException], ...]:
    from dataset import DatasetError
    from utils.checkpoint import CheckpointError

    return (InputError, DatasetError, CheckpointError, OSError)


def fail(message: str) -> None:
    """Stop with one ``error: ...`` line on stderr and exit status 1."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def _run_reporting(worker: Callable[[argparse.Namespace, int], object], args, local_rank) -> None:
    try:
        worker(args, local_rank)
    except _user_errors() as error:
        rank = get_rank()
        fail(_one_line(error) if rank == 0 else f"(rank {rank}) {_one_line(error)}")


def check_inputs(args: argparse.Namespace, split: str) -> None:
    """Everything a user can get wrong that is cheap to find before spawning processes."""
    check_prediction_args(args)
    prepare_output_dir(args.output_path)
    make_dataset(args, split)
    build_model(args, cli.resolve_num_classes(args), torch.device("cpu"))


def _process(local_rank: int, worker, args, world_size: int, port: int | None) -> None:
    """One process: join the group when there are several, run, report user errors, leave."""
    env = torchrun_env()
    rank, world_size, local_rank = env if env is not None else (local_rank, world_size, local_rank)
    try:
        if world_size > 1:
            device = cli.resolve_device(args, local_rank)
            if device.type == "cuda":
                torch.cuda.set_device(device)
            backend = "nccl" if device.type == "cuda" else "gloo"
            init_process_group(backend, rank, world_size, port)
        _run_reporting(worker, args, local_rank)
    finally:
        destroy_process_group()


def launch(
    worker: Callable[[argparse.Namespace, int], object],
    args: argparse.Namespace,
    check: Callable[[argparse.Namespace], object] | None = None,
) -> None:
    """Run ``worker(args, local_rank)``: once, per torchrun rank, or spawned per process.

    Like train.py: ``--gpu 0,1`` spawns one process per GPU (NCCL), ``--nproc N --device cpu``
    N CPU processes (gloo), torchrun's RANK / WORLD_SIZE are honoured. User errors print one
    ``error: ...`` line and exit with status 1 (no traceback); before spawning, ``check(args)``
    runs once in this process so that common mistakes are reported once, not by every rank.
    """
    env = torchrun_env()
    ids = cli.gpu_ids(args)
    if env is not None:
        _process(env[2], worker, args, env[1], None)
        return
    if args.nproc > 1 and ids:
        fail("--nproc is for CPU processes; with GPUs list them in --gpu instead")
    world_size = args.nproc if args.nproc > 1 else max(len(ids), 1)
    if world_size == 1:
        _process(0, worker, args, 1, None)
        return
    if args.nproc > 1 and cli.resolve_device(args).type != "cpu":
        fail(f"--nproc spawns CPU processes; it needs --device cpu, not {args.device}")
    cli.resolve_device(args)  # --gpu without CUDA fails here, before spawning
    if check is not None:
        _run_reporting(lambda a, _: check(a), args, 0)
    try:
        mp.spawn(_process, args=(worker, args, world_size, free_port()), nprocs=world_size)
    except mp.ProcessExitedException as error:
        # The failing process has printed its message already.
        raise SystemExit(
            error.exit_code if error.exit_code and error.exit_code > 0 else 1
        ) from None
