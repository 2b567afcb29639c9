"""What the prediction tools share (one copy): prediction flags (checked by their types), model
loading, the sharded loader, predicted batches and atomic PNG writes.

The prediction itself is ``utils.inference.predict``; processes are started by
``engine.launch.launch`` and user errors (``engine.cli.UserError``) reported by it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from dataset import dataset_info
from engine import cli
from engine.cli import UserError
from engine.data import eval_dataset, make_loader
from engine.models import (
    FOREIGN_DEFAULTS,
    CheckpointDefault,
    build_model,
    resolve_model_args,
)
from inplace_abn import ABN
from network.weights import check_weights, load_weights
from utils.distributed import get_world_size
from utils.fileio import atomic_write

CKPT_HELP = (
    "weights: a checkpoint of this project (.pth or exported .safetensors; it records its "
    "model, so the model flags are optional), or a plain / module.-prefixed state_dict such as "
    "the original OCNet's (then give --network and --method)"
)


def add_checkpoint_arg(group: argparse._ActionsContainer) -> None:
    """``--ckpt`` (``--restore-from`` is an alias, as in the original's scripts)."""
    group.add_argument(
        "--ckpt",
        "--restore-from",
        dest="ckpt",
        required=True,
        help=CKPT_HELP + " (--restore-from is an alias, as in the original's scripts)",
    )


def add_inference_args(group: argparse._ActionsContainer, add_boolean=cli.add_flag) -> None:
    """Test-time options of ``utils.inference.predict``: whole/sliding, scales, flip.

    ``add_boolean`` makes ``--use-ms`` and ``--use-flip``: ``cli.add_flag`` (the original's
    ``--use-flip=False`` style) in evaluate.py and generate_submit.py, ``cli.add_switch`` in
    predict.py.
    """
    group.add_argument(
        "--predict-choice",
        default="whole",
        choices=("whole", "sliding"),
        help="whole: one pass per image; sliding: --input-size tiles overlapping by --overlap",
    )
    group.add_argument(
        "--overlap",
        type=cli.number_in(0, 1, high_open=True),
        default=1 / 3,
        help="fraction of a tile shared with the next",
    )
    group.add_argument(
        "--tile-batch",
        type=cli.positive_int,
        default=4,
        help="sliding tiles per forward pass (memory)",
    )
    group.add_argument(
        "--whole-scale",
        type=cli.positive_float,
        default=1.0,
        help="scale of the single pass without --use-ms",
    )
    add_boolean(group, "--use-ms", "multi-scale: average the probabilities over --scales")
    group.add_argument(
        "--scales",
        type=cli.float_list,
        default=[0.75, 1.0, 1.25, 1.5, 1.75, 2.0],
        help="scales for --use-ms (the paper's multi-scale test uses 0.75 .. 2.0)",
    )
    add_boolean(group, "--use-flip", "also predict the mirrored image and average")


def add_prediction_args(parser: argparse.ArgumentParser, split: str) -> None:
    """Model/data/device flags (``engine.cli``) plus checkpoint and test-time prediction flags.

    The model flags, ``--dataset`` and ``--normalize`` default to what the checkpoint records:
    ``check_inputs`` fills them in (``engine.models.resolve_model_args``).
    """
    cli.add_model_args(parser, from_checkpoint=True)
    cli.add_data_args(parser, split=split, input_size="769,769")
    parser.set_defaults(dataset=CheckpointDefault(FOREIGN_DEFAULTS["dataset"]), normalize=None)
    cli.add_device_args(parser)
    group = parser.add_argument_group("prediction")
    add_checkpoint_arg(group)
    add_inference_args(group)
    group.add_argument(
        "--output-path",
        default="./outputs",
        type=cli.output_folder,
        help="folder for the results (created)",
    )


def add_image_file_args(parser: argparse.ArgumentParser) -> None:
    """predict.py's flags: the model (from ``--ckpt``), how images are read, test-time options.

    ``--dataset`` (palette, class names), ``--normalize``, ``--input-size``, ``--batch-size`` and
    ``--workers`` mean what they mean in ``engine.cli.add_data_args``, without the list and
    folder flags a dataset needs.
    """
    cli.add_model_args(parser, from_checkpoint=True)
    group = parser.add_argument_group("images")
    cli.add_recorded_data_args(group, "class names and colours", "input normalisation")
    group.add_argument(
        "--input-size",
        type=cli.image_size,
        default=cli.image_size("769,769"),
        help="tile H,W of --predict-choice sliding",
    )
    group.add_argument(
        "--batch-size",
        type=cli.positive_int,
        default=1,
        help="images per forward pass (consecutive images of one size are batched)",
    )
    group.add_argument(
        "--workers", type=cli.non_negative_int, default=2, help="image-decoding processes"
    )
    cli.add_device_args(parser)
    group = parser.add_argument_group("prediction")
    add_checkpoint_arg(group)
    add_inference_args(group, add_boolean=cli.add_switch)


def prediction_scales(args: argparse.Namespace) -> list[float]:
    return list(args.scales) if args.use_ms else [args.whole_scale]


def prepare_output_dir(path: str, flag: str = "--output-path") -> str:
    """Create ``path`` (and parents) or fail with one clear message before any prediction."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag} {path} exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserError(f"{flag} {path} cannot be created: {error.strerror or error}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path} is not writable")
    return path


def load_model(args: argparse.Namespace, num_classes: int, device: torch.device) -> nn.Module:
    """The model with the weights of ``--ckpt`` (strict), in eval mode on ``device``.

    Plain ``ABN`` for normalisation: at test time the synchronised/in-place variants compute the
    same thing and their state_dicts are identical, so the simplest one is used.
    """
    model = build_model(args, num_classes, norm_layer=ABN)
    load_weights(model, args.ckpt)
    return model.to(device).eval()


def prediction_options(args: argparse.Namespace) -> dict:
    """The ``utils.inference.predict`` keyword arguments the prediction flags ask for.

    Flip testing swaps the dataset's left/right classes (LIP's arms, legs and shoes) back.
    """
    flip_channels = None
    if args.use_flip:
        info = dataset_info(args.dataset, getattr(args, "data_dir", None))
        flip_channels = info.flip_channels if info.flip_pairs else None
    return {
        "mode": args.predict_choice,
        "tile": tuple(args.input_size),
        "overlap": args.overlap,
        "scales": prediction_scales(args),
        "flip": args.use_flip,
        "flip_channels": flip_channels,
        "tile_batch": args.tile_batch,
        "amp": cli.autocast_dtype(args.amp),
    }


def prediction_loader(args: argparse.Namespace, dataset: Dataset, device: torch.device):
    """This rank's shard of ``dataset`` in list order, ``--batch-size`` split over processes."""
    batch = max(1, args.batch_size // get_world_size())
    return make_loader(dataset, batch, args.workers, device, seed=args.seed)


def write_png(path: str, image: np.ndarray) -> None:
    """Encode ``image`` (HxW uint8, or HxWx3 RGB) as PNG and write it atomically."""
    if image.ndim == 3:
        image = np.ascontiguousarray(image[:, :, ::-1])  # cv2 expects BGR
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise UserError(f"could not encode {path} as PNG")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, encoded.tobytes())


def check_inputs(
    args: argparse.Namespace, split: str | Callable[[argparse.Namespace], str]
) -> None:
    """Everything a user can get wrong that is cheap to find before any process starts.

    Fills the model flags left unset from the checkpoint first (the processes inherit them);
    ``split`` may be a function of the completed flags (the dataset may come from the file).
    """
    resolve_model_args(args, args.ckpt)
    if callable(split):
        split = split(args)
    prepare_output_dir(args.output_path)
    eval_dataset(args, split, args.data_list)
    check_model_weights(args, cli.resolve_num_classes(args))


def check_model_weights(args: argparse.Namespace, num_classes: int) -> None:
    """Raise unless ``--ckpt`` fits the model the flags describe, key for key.

    On the meta device: shapes are all the check needs, so no weights are allocated or copied
    here; the worker loads them once.
    """
    with torch.device("meta"):
        model = build_model(args, num_classes, norm_layer=ABN)
    check_weights(model, args.ckpt)
