"""Predict a split (normally Cityscapes test) into files the official server and evaluator accept.

For each input ``<city>_<seq>_<frame>_leftImg8bit.png`` it writes
``<output-path>/<city>/<city>_<seq>_<frame>.png`` holding Cityscapes *label ids* (train ids mapped
back through the dataset table's ``submission_lut``; ADE20K: class index + 1, 0 = other; a custom
dataset: the ``value`` column of its ``classes.csv``), and ``<output-path>/submission.zip`` with the
same ``<city>/...`` tree. ``--store-output`` (the original's flag) also writes colour pictures to
``<output-path>/color/<city>/<name>.png``, outside the zip. Prediction options and model loading
are those of ``evaluate.py`` (shared in ``engine.prediction``); every ``--scales`` entry is used
(the original's version silently dropped 0.75).
"""

from __future__ import annotations

import argparse
import os
import zipfile

import torch

from dataset import SPLIT_BUILDERS, dataset_info
from dataset.base import Sample
from dataset.palette import colorize
from engine import cli
from engine.data import eval_dataset
from engine.evaluation import predicted_batches
from engine.launch import launch
from engine.prediction import (
    add_prediction_args,
    check_inputs,
    load_model,
    prediction_loader,
    prediction_options,
    write_png,
)
from utils.distributed import barrier, is_main_process
from utils.fileio import atomic_path

PROG = os.path.basename(__file__)
ZIP_NAME = "submission.zip"
COLOR_DIR = "color"


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    add_prediction_args(parser, split="test")
    parser.add_argument(
        "--split",
        default="test",
        choices=("test", "val"),
        help="list kind: test lists may hold images only; labels are never read either way",
    )
    cli.add_flag(
        parser, "--store-output", f"also write colour pictures to <output-path>/{COLOR_DIR}/"
    )
    return parser


def dataset_split(args: argparse.Namespace) -> str:
    """Datasets without a test split here (ADE20K, LIP, ...) predict their val list instead."""
    return args.split if f"{args.dataset}_test" in SPLIT_BUILDERS else "val"


def relative_result_path(sample: Sample) -> str:
    """``<city>/<name>.png``: the city is the image's folder, as in ``leftImg8bit/<split>/<city>``
    (custom: the sub-folder below ``images/<split>/``)."""
    return os.path.join(sample.result_folder, f"{sample.name}.png")


def write_zip(output_path: str, relative_paths: list[str]) -> str:
    """Zip the result files (and only those, in list order) atomically."""
    zip_path = os.path.join(output_path, ZIP_NAME)
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative in relative_paths:
            archive.write(os.path.join(output_path, relative), arcname=relative)
    return zip_path


def submit_worker(args: argparse.Namespace, device: torch.device) -> str | None:
    """Write this process's share of label-id PNGs; rank 0 then zips the whole list."""
    num_classes = cli.resolve_num_classes(args)
    dataset = eval_dataset(args, dataset_split(args), args.data_list)
    model = load_model(args, num_classes, device)
    loader = prediction_loader(args, dataset, device)
    info = dataset_info(args.dataset, args.data_dir)
    options = prediction_options(args)
    batches = predicted_batches(model, loader, num_classes, device, options, progress=True)
    for pred, _, metas in batches:
        pred = pred.to("cpu", dtype=torch.uint8).numpy()
        for i, meta in enumerate(metas):
            height, width = meta["size"]
            train_ids = pred[i, :height, :width]
            relative = relative_result_path(dataset.samples[meta["index"]])
            write_png(os.path.join(args.output_path, relative), info.submission_lut[train_ids])
            if args.store_output:
                color = colorize(train_ids, info)
                write_png(os.path.join(args.output_path, COLOR_DIR, relative), color)
    barrier()
    if not is_main_process():
        return None
    relative = [relative_result_path(s) for s in dataset.samples]
    zip_path = write_zip(args.output_path, relative)
    colors = f", colour pictures under {COLOR_DIR}/" if args.store_output else ""
    print(f"wrote {len(relative)} label-id PNGs under {args.output_path}{colors} and {zip_path}")
    return zip_path


def main(args: argparse.Namespace) -> None:
    # The split depends on the dataset, which may come from the checkpoint: pass the function.
    launch(submit_worker, args, PROG, check=lambda a: check_inputs(a, dataset_split))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
