"""Run a trained model on your own images: class-index PNGs, colours, overlays, attention pictures.

Example::

    python predict.py --ckpt snapshots/CS_scenes_40000.pth --output-dir out photos/ extra/*.jpg \
        --overlay --attention-at 400,300

Each INPUT is an image file, a folder (searched recursively for .png, .jpg and .jpeg) or a glob.
For each image it writes, under ``--output-dir`` with the input's name relative to the folder
(or the fixed part of the glob) given: ``<stem>_trainIds.png`` (the class index of each pixel),
with ``--color`` ``<stem>_color.png``, with ``--overlay`` ``<stem>_overlay.png`` (image and colours
blended by ``--alpha``) and with ``--attention-at X,Y`` ``<stem>_attention_X_Y.png`` (where the
object context of pixel (X, Y) looks, one panel per attention module). Images of any size; the
test-time options of ``evaluate.py`` apply. Unreadable inputs are reported and skipped, and the
exit status is then 1. The checkpoint records its model; the model flags are needed only for
files that do not (the original OCNet's).
"""

from __future__ import annotations

import argparse
import os
import sys
from itertools import groupby

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from engine import cli
from engine.attention_maps import attention_maps, attention_modules, attention_picture
from engine.cli import UserError
from engine.data import Indexed
from engine.launch import launch
from engine.models import build_model, model_num_classes, resolve_model_args
from engine.prediction import (
    add_image_file_args,
    check_model_weights,
    load_model,
    prediction_options,
    prepare_output_dir,
    write_png,
)
from engine.predictor import (
    ImageFiles,
    class_names,
    collate_list,
    find_images,
    label_palette,
)
from inplace_abn import ABN
from utils.distributed import get_rank, get_world_size, is_main_process
from utils.inference import predict

PROG = os.path.basename(__file__)
SUFFIXES = {"labels": "_trainIds.png", "color": "_color.png", "overlay": "_overlay.png"}


def point(value: str) -> tuple[int, int]:
    """argparse type of ``--attention-at``: ``X,Y`` pixel coordinates (column, row)."""
    parts = value.split(",")
    try:
        x, y = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected pixel coordinates X,Y (two integers), got {value!r}"
        ) from None
    if x < 0 or y < 0:
        raise argparse.ArgumentTypeError(f"pixel coordinates must not be negative, got {value!r}")
    return x, y


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, globs")
    add_image_file_args(parser)
    group = parser.add_argument_group("outputs")
    group.add_argument(
        "--output-dir",
        default="./predictions",
        type=cli.output_folder,
        help="folder for the results (created)",
    )
    cli.add_switch(group, "--color", "also write <stem>_color.png (the dataset's colours)")
    cli.add_switch(group, "--overlay", "also write <stem>_overlay.png (image and colours blended)")
    group.add_argument(
        "--alpha",
        type=cli.number_in(0, 1),
        default=0.5,
        help="weight of the colours in --overlay (0..1)",
    )
    group.add_argument(
        "--attention-at",
        type=point,
        action="append",
        default=[],
        metavar="X,Y",
        help="write <stem>_attention_X_Y.png: the attention of pixel (X, Y)'s object context "
        "over the image (repeatable)",
    )
    return parser


def output_path(args: argparse.Namespace, relative: str, suffix: str) -> str:
    return os.path.join(args.output_dir, relative + suffix)


def check_args(args: argparse.Namespace) -> None:
    """Flags, inputs and checkpoint, checked once before any process starts (exit status 2)."""
    resolve_model_args(args, args.ckpt)
    prepare_output_dir(args.output_dir, "--output-dir")
    found = find_images(args.inputs)
    if not found.images:
        raise UserError("no images to predict: " + "; ".join(found.problems))
    owners: dict[str, str] = {}
    for image in found.images:
        target = output_path(args, image.relative, SUFFIXES["labels"])
        if target in owners:
            raise UserError(
                f"{owners[target]} and {image.path} would both write {target}; "
                "give them separately, with different --output-dir"
            )
        owners[target] = image.path
    num_classes = model_num_classes(args)
    check_model_weights(args, num_classes)
    if args.attention_at:
        with torch.device("meta"):
            model = build_model(args, num_classes, norm_layer=ABN)
        if not attention_modules(model):
            raise UserError(f"--attention-at: {args.method} has no attention to picture")


def same_size_runs(items: list) -> list[list]:
    """Consecutive items whose images have one size: each run is one forward pass."""
    return [list(run) for _, run in groupby(items, key=lambda item: tuple(item[0].shape))]


def write_results(
    args: argparse.Namespace, labels: np.ndarray, rgb: np.ndarray | None, meta: dict, palette
) -> None:
    relative = meta["relative"]
    write_png(output_path(args, relative, SUFFIXES["labels"]), labels.astype(np.uint8))
    if args.color or args.overlay:
        color = palette[labels]
        if args.color:
            write_png(output_path(args, relative, SUFFIXES["color"]), color)
        if args.overlay:
            blend = (1 - args.alpha) * rgb.astype(np.float32) + args.alpha * color
            write_png(
                output_path(args, relative, SUFFIXES["overlay"]), blend.round().astype(np.uint8)
            )


def write_attention(
    args: argparse.Namespace, model, image: torch.Tensor, rgb: np.ndarray, meta: dict, names
) -> list[str]:
    """``<stem>_attention_X_Y.png`` for each ``--attention-at``; returns the problems."""
    height, width = rgb.shape[:2]
    problems = []
    for x, y in args.attention_at:
        if x >= width or y >= height:
            problems.append(
                f"{meta['path']}: --attention-at {x},{y} is outside its {width}x{height}"
            )
            continue
        maps = attention_maps(model, image[None], (x, y), names)
        suffix = f"_attention_{x}_{y}.png"
        write_png(output_path(args, meta["relative"], suffix), attention_picture(rgb, maps, (x, y)))
    return problems


def predict_worker(args: argparse.Namespace, device: torch.device) -> list[str]:
    """Predict this process's share of the images; raise at the end if any was skipped."""
    num_classes = model_num_classes(args)
    model = load_model(args, num_classes, device)
    options = prediction_options(args)
    palette = label_palette(args.dataset, num_classes)
    names = class_names(args.dataset, num_classes)
    found = find_images(args.inputs)
    keep_rgb = bool(args.overlay or args.attention_at)
    files = ImageFiles(found.images, args.normalize, keep_rgb=keep_rgb)
    shard = Indexed(files, range(get_rank(), len(files), get_world_size()))
    batch = max(1, args.batch_size // get_world_size())
    loader = DataLoader(shard, batch_size=batch, num_workers=args.workers, collate_fn=collate_list)
    problems = list(found.problems) if is_main_process() else []
    progress = tqdm(total=len(shard), unit="image", desc="predict", disable=not is_main_process())
    for problem in problems:
        progress.write(f"{PROG}: skipped {problem}", file=sys.stderr)
    for items in loader:
        readable = []
        for item in items:
            if "error" in item[2]:
                problems.append(item[2]["error"])
                progress.write(f"{PROG}: skipped {item[2]['error']}", file=sys.stderr)
            else:
                readable.append(item)
        for run in same_size_runs(readable):
            images = torch.stack([image for image, _, _ in run]).to(device)
            try:
                labels = predict_labels(model, images, num_classes, options)
            except RuntimeError as error:  # e.g. an image too small for the network's strides
                for _, _, meta in run:
                    problem = f"{meta['path']}: could not be predicted ({cli.one_line(error)})"
                    problems.append(problem)
                    progress.write(f"{PROG}: skipped {problem}", file=sys.stderr)
                continue
            for i, (_, rgb, meta) in enumerate(run):
                write_results(args, labels[i], rgb, meta, palette)
                if args.attention_at:
                    for problem in write_attention(args, model, images[i], rgb, meta, names):
                        problems.append(problem)
                        progress.write(f"{PROG}: skipped {problem}", file=sys.stderr)
        progress.update(len(items))
    progress.close()
    if problems:
        raise UserError(
            f"{len(problems)} input(s) skipped: "
            + "; ".join(problems[:5])
            + (f"; ... and {len(problems) - 5} more" if len(problems) > 5 else "")
        )
    if is_main_process():
        print(f"wrote the results of {len(files)} image(s) under {args.output_dir}")
    return problems


@torch.inference_mode()
def predict_labels(model, images: torch.Tensor, num_classes: int, options: dict) -> np.ndarray:
    """``[B, H, W]`` class indices (uint8 numpy) of a batch of images of one size."""
    probs = predict(model, images, num_classes, **options)
    return probs.argmax(1).to("cpu", torch.uint8).numpy()


def main(args: argparse.Namespace) -> None:
    launch(predict_worker, args, PROG, check=check_args)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
