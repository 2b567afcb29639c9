"""Score a checkpoint on a labelled list: confusion matrix -> IoU table, JSON and CSV.

Example (the paper's multi-scale + flip test on Cityscapes val)::

    python evaluate.py --ckpt snapshots/CS_scenes_40000.pth --network resnet101 \
        --method asp_oc_dsn --data-dir data/cityscapes --data-list dataset/list/cityscapes/val.lst \
        --predict-choice sliding --input-size 769,769 --use-ms --use-flip --output-path outputs

Writes ``metrics.json`` (mIoU, pixel_acc, mean_acc, per_class) and ``metrics.csv`` in
``--output-path``; with ``--store-output`` also ``trainid/<name>.png`` (train ids),
``color/<name>.png`` (palette colours) and ``panels/<name>.png`` (image | prediction | ground
truth) for the first ``--num-panels`` images. ``--gpu 0,1`` (or torchrun) shards the list across
processes and sums their confusion matrices.
"""

from __future__ import annotations

import argparse
import os

import cv2
import numpy as np
import torch

from dataset import dataset_info
from dataset.palette import colorize
from engine import cli
from engine.data import eval_dataset
from engine.evaluation import confusion_over
from engine.launch import launch
from engine.prediction import (
    add_prediction_args,
    check_inputs,
    load_model,
    prediction_loader,
    prediction_options,
    write_png,
)
from utils.distributed import barrier, get_world_size, is_main_process
from utils.metrics import format_table, save_scores, scores

PROG = os.path.basename(__file__)


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    add_prediction_args(parser, split="val")
    group = parser.add_argument_group("outputs")
    cli.add_flag(group, "--store-output", "also write train-id, colour and panel PNGs")
    group.add_argument(
        "--num-panels",
        type=cli.non_negative_int,
        default=5,
        help="image | prediction | truth panels to write",
    )
    return parser


def class_names_for(args: argparse.Namespace, num_classes: int) -> list[str]:
    names = list(dataset_info(args.dataset, args.data_dir).class_names)
    return names if len(names) == num_classes else [f"class_{i}" for i in range(num_classes)]


def write_outputs(
    args: argparse.Namespace, pred: np.ndarray, label: np.ndarray, meta: dict
) -> None:
    """Train-id and colour PNGs of one image, plus a panel for the first ``--num-panels``."""
    name = meta["name"]
    root = args.output_path
    write_png(os.path.join(root, "trainid", f"{name}.png"), pred.astype(np.uint8))
    info = dataset_info(args.dataset, args.data_dir)
    color = colorize(pred, info)
    write_png(os.path.join(root, "color", f"{name}.png"), color)
    if meta["index"] < args.num_panels:
        image = cv2.imread(meta["image_path"], cv2.IMREAD_COLOR)
        if image is None:
            return
        image = cv2.resize(image, (pred.shape[1], pred.shape[0]))[:, :, ::-1]
        panel = np.concatenate([image, color, colorize(label, info)], axis=1)
        write_png(os.path.join(root, "panels", f"{name}.png"), panel)


def evaluate_worker(args: argparse.Namespace, device: torch.device) -> dict | None:
    """Predict this process's shard, sum the confusion matrices, and (rank 0) report scores."""
    num_classes = cli.resolve_num_classes(args)
    dataset = eval_dataset(args, "val", args.data_list)
    model = load_model(args, num_classes, device)
    loader = prediction_loader(args, dataset, device)

    def store(pred: torch.Tensor, label: torch.Tensor, meta: dict) -> None:
        write_outputs(args, pred.cpu().numpy(), label.cpu().numpy(), meta)

    confusion = confusion_over(
        model,
        loader,
        num_classes,
        device,
        prediction_options(args),
        each_image=store if args.store_output else None,
        progress=True,
    )
    barrier()
    if not is_main_process():
        return None
    names = class_names_for(args, num_classes)
    print(format_table(confusion, names))
    json_path, csv_path = save_scores(confusion, args.output_path, names)
    print(f"wrote {json_path} and {csv_path} ({get_world_size()} process(es))")
    return scores(confusion, names)


def main(args: argparse.Namespace) -> None:
    launch(evaluate_worker, args, PROG, check=lambda a: check_inputs(a, "val"))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
