"""Train an OCNet segmentation model: SGD with poly learning rate, DSN / OHEM losses, DDP, resume.

One process by default; ``--gpu 0,1,2,3`` spawns one DistributedDataParallel process per GPU
(NCCL), ``--nproc N --device cpu`` spawns N CPU processes (gloo), and under torchrun each process
reads RANK / WORLD_SIZE / LOCAL_RANK. ``--batch-size`` is the total over all processes.
Checkpoints (``checkpoint_<iteration>.pth``) hold everything needed to continue with
``--resume`` so that the result equals an uninterrupted run with the same seed. SIGTERM or SIGUSR1
(a scheduler's preemption) writes one after the current step and exits with status 75; one run at
a time may use a ``--snapshot-dir`` (``<snapshot-dir>/.lock``).
"""

from __future__ import annotations

import argparse
import os
import warnings

import torch

from dataset import dataset_info
from dataset.check import build_sources, check_sources, format_table, summary
from engine.cli import (
    ArgumentParser,
    UserError,
    add_data_args,
    add_device_args,
    add_flag,
    add_model_args,
    list_path,
    non_negative_float,
    non_negative_int,
    number_in,
    output_folder,
    positive_float,
    positive_int,
    resolve_num_classes,
)
from engine.data import eval_dataset, extra_sources, train_dataset
from engine.launch import launch, world_layout
from engine.models import build_model
from engine.training import FAULT_HELP, build_criterion, restore_path, train
from inplace_abn import ABN
from network.weights import restore_weights
from utils.criterion import DSN_WEIGHT, OHEM_MIN_KEPT, OHEM_THRESH
from utils.distributed import launcher_env
from utils.lock import FolderLock, FolderLockedError

PROG = os.path.basename(__file__)


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Train OCNet (Cityscapes / ADE20K).",
        epilog=FAULT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(parser)
    add_data_args(parser, split="train", input_size="769,769")
    add_device_args(parser)
    # The original's training defaults: 4 GPUs x 2 images, 769 crops, 40k steps.
    parser.set_defaults(batch_size=8, workers=4)

    group = parser.add_argument_group("optimisation (the original's defaults)")
    group.add_argument(
        "--learning-rate", type=positive_float, default=1e-2, help="base learning rate"
    )
    group.add_argument("--momentum", type=non_negative_float, default=0.9, help="SGD momentum")
    group.add_argument(
        "--weight-decay", type=non_negative_float, default=5e-4, help="SGD weight decay"
    )
    group.add_argument(
        "--power", type=non_negative_float, default=0.9, help="poly learning-rate exponent"
    )
    group.add_argument("--num-steps", type=positive_int, default=40000, help="training iterations")
    group.add_argument(
        "--start-iters",
        type=non_negative_int,
        default=0,
        help="start at this iteration (lr schedule and sample stream), e.g. to continue "
        "from --restore-from weights; --resume is the exact way",
    )
    add_flag(group, "--fix-lr", "keep the learning rate at --learning-rate (fine-tuning)")

    group = parser.add_argument_group("augmentation")
    add_flag(group, "--random-mirror", "random horizontal flips")
    add_flag(group, "--random-scale", "random rescaling by 0.5 ... 2.1 before cropping")
    group.add_argument("--ignore-label", type=int, default=255, help="label value to ignore")

    group = parser.add_argument_group("loss")
    add_flag(group, "--ohem", "online hard example mining")
    group.add_argument(
        "--ohem-thres",
        type=number_in(0, 1, low_open=True),
        default=OHEM_THRESH,
        help="OHEM keeps pixels whose true-class probability is <= this",
    )
    group.add_argument(
        "--ohem-keep",
        type=non_negative_int,
        default=OHEM_MIN_KEPT,
        help="OHEM keeps at least this many pixels per process and step",
    )
    add_flag(group, "--ohem-single", "OHEM on the final output only; the DSN output uses plain CE")
    group.add_argument(
        "--dsn-weight",
        type=non_negative_float,
        default=DSN_WEIGHT,
        help="weight of the DSN (layer3) loss",
    )
    add_flag(group, "--use-weight", "the original's Cityscapes class weights (19 classes only)")

    group = parser.add_argument_group("checkpoints and logs")
    group.add_argument(
        "--restore-from",
        default=None,
        help="initial weights: ImageNet backbone or segmentation checkpoint; absent or 'none' "
        "for random initialisation (in the prediction tools it is an alias of --ckpt)",
    )
    group.add_argument(
        "--snapshot-dir",
        default="./snapshots/",
        type=output_folder,
        help="checkpoints, train.log, metrics, events",
    )
    group.add_argument(
        "--save-pred-every", type=positive_int, default=5000, help="checkpoint every N iterations"
    )
    group.add_argument(
        "--keep-checkpoints",
        type=non_negative_int,
        default=0,
        help="keep only the newest N checkpoint_*.pth (0: keep all)",
    )
    add_flag(
        group,
        "--resume",
        "continue from the newest checkpoint in --snapshot-dir, if any (also after a change of "
        "the number of processes: same sample stream, no longer bit-exact)",
    )
    group.add_argument(
        "--log-every", type=positive_int, default=10, help="log the loss every N iterations"
    )

    group = parser.add_argument_group("validation during training")
    group.add_argument(
        "--val-every",
        type=non_negative_int,
        default=0,
        help="validation mIoU every N iterations (0: never)",
    )
    group.add_argument(
        "--val-list", default=None, help="validation list (default: the dataset's val list)"
    )
    add_flag(
        group,
        "--check-data",
        "before training, read every training (and validation) image and label once and stop "
        "with a table of every problem found (python -m dataset.check)",
    )

    group = parser.add_argument_group("performance and reproducibility")
    add_flag(group, "--channels-last", "channels-last memory format")
    add_flag(group, "--compile", "torch.compile the model")
    add_flag(
        group,
        "--recompute",
        "recompute activations in the backward (torch.utils.checkpoint over the backbone blocks "
        "and the heads): about a third of the activation memory for ~1.25x the step time, "
        "same results",
    )
    add_flag(group, "--deterministic", "deterministic algorithms (warn-only where none exist)")
    group.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads per process"
    )
    return parser


# ----------------------------------------------------------------------------------------------
# Checks before any work


def probe_crop(args: argparse.Namespace, num_classes: int) -> None:
    """Run the model on ``meta`` tensors (shapes only, no memory, no compute) at the crop size.

    Catches crops too small for the model (e.g. a batch-norm over a single pooled value) before
    any data is read. Synchronised batch norm sees the whole batch, hence the total batch size;
    the plain ``ABN`` stands in for it because it needs no values, only shapes.
    """
    name = f"{args.network}_{args.method}"
    try:
        with torch.device("meta"), torch.no_grad():
            model = build_model(args, num_classes, norm_layer=ABN)
            model.train()
            model(torch.empty(args.batch_size, 3, *args.input_size))
    except (ValueError, RuntimeError) as error:
        h, w = args.input_size
        raise UserError(
            f"--input-size {h},{w} does not fit {name} with --batch-size {args.batch_size}: "
            f"{str(error).splitlines()[0]}"
        ) from None


def check_args(args: argparse.Namespace) -> None:
    """Validate flags, paths and data before spawning anything, then create ``--snapshot-dir``.

    A value one flag decides on its own is checked by its argparse type at parse time
    (``--num-steps 0``, a ``--snapshot-dir`` that is a file); what is left here needs two flags
    (``--start-iters`` and ``--num-steps``, the batch and the processes, ``--dataset`` and the
    list it implies) or a file's content (a ``--restore-from`` that is missing or does not fit,
    list lines, samples; so a documented command line parses on a machine without its files),
    or a default naming where data usually lives (``--data-dir``). Every problem raises
    ``UserError``, reported by ``engine.launch.launch`` as one line.
    """
    if args.start_iters >= args.num_steps:
        raise UserError(
            f"--start-iters {args.start_iters} must be below --num-steps {args.num_steps}"
        )
    if args.recompute and args.compile:
        raise UserError("--recompute does not work with --compile; choose one")

    world_size = world_layout(args)[0]
    if args.batch_size < world_size:
        raise UserError(
            f"--batch-size {args.batch_size} is smaller than the {world_size} processes"
        )
    if args.batch_size % world_size:
        raise UserError(
            f"--batch-size {args.batch_size} is not divisible by the {world_size} processes"
        )

    num_classes = resolve_num_classes(args)
    if num_classes < 2:
        raise UserError(f"--num-classes must be at least 2, got {num_classes}")
    try:
        build_criterion(args, num_classes)
    except ValueError as error:
        raise UserError(str(error)) from None
    if args.use_weight and args.dataset != "cityscapes":
        raise UserError(f"--use-weight holds Cityscapes class weights; --dataset is {args.dataset}")
    path = restore_path(args)
    if path is not None:
        if not os.path.isfile(path):
            raise UserError(f"--restore-from {path} is not a file")
        # Loaded into a model without storage (meta): a file that is unreadable or does not fit
        # is reported now, before any process starts; the worker loads it for real.
        with torch.device("meta"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
            restore_weights(build_model(args, num_classes, norm_layer=ABN), path)
    if not os.path.isdir(args.data_dir):
        raise UserError(f"--data-dir {args.data_dir} is not a folder")
    lists = [("--data-list", list_path(args.data_list, args.dataset, "train"))]
    if args.val_every > 0:
        lists.append(("--val-list", list_path(args.val_list, args.dataset, "val")))
    for flag_name, path in lists:
        if path is not None and not os.path.isfile(path):
            raise UserError(f"{flag_name} {path} is not a file")

    if args.check_data:
        check_data(args)
    train_dataset(args)  # a DatasetError names the bad list line
    if args.val_every > 0:
        eval_dataset(args, "val", args.val_list)
    probe_crop(args, num_classes)
    try:
        os.makedirs(args.snapshot_dir, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"--snapshot-dir {args.snapshot_dir} cannot be created: {error.strerror or error}"
        ) from None
    if not os.access(args.snapshot_dir, os.W_OK | os.X_OK):
        raise UserError(f"--snapshot-dir {args.snapshot_dir} is not writable")


def check_data(args: argparse.Namespace) -> None:
    """``--check-data``: every training (and validation) sample read once; a table of every
    problem on stdout and one error line if there is any."""
    info = dataset_info(args.dataset, args.data_dir)
    lists = [("train", list_path(args.data_list, args.dataset, "train")), *extra_sources(args)]
    if args.val_every > 0:
        lists.append(("val", list_path(args.val_list, args.dataset, "val")))
    report = check_sources(info, build_sources(info, args.data_dir, lists), args.workers)
    if not report.ok:
        print(format_table(report.problems), flush=True)
        raise UserError(f"--check-data: {summary(report)}, listed above")
    print(f"--check-data: {summary(report)}", flush=True)


def main(args: argparse.Namespace) -> None:
    """Check, hold ``--snapshot-dir`` for the whole run (rank 0 of torchrun or srun, or the launching
    process), train."""
    env = launcher_env()
    lock = FolderLock(args.snapshot_dir, what=f"--snapshot-dir {args.snapshot_dir}")

    def check(args: argparse.Namespace) -> None:
        check_args(args)
        if env is None or env.rank == 0:
            try:
                lock.acquire()
            except FolderLockedError as error:
                raise UserError(str(error)) from None

    try:
        launch(train, args, PROG, check=check)
    finally:
        lock.release()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
