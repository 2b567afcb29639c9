"""Train an OCNet segmentation model: SGD with poly learning rate, DSN / OHEM losses, DDP, resume.

One process by default; ``--gpu 0,1,2,3`` spawns one DistributedDataParallel process per GPU
(NCCL), ``--nproc N --device cpu`` spawns N CPU processes (gloo), and under torchrun each process
reads RANK / WORLD_SIZE / LOCAL_RANK. ``--batch-size`` is the total over all processes.
Checkpoints (``checkpoint_<iteration>.pth``) hold everything needed to continue with
``--resume`` so that the result equals an uninterrupted run with the same seed.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import signal
import sys
import time
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from dataset import get_segmentation_dataset, make_worker_init_fn
from inplace_abn import ABN
from network import get_segmentation_model
from network.weights import restore_weights
from utils import distributed as dist_utils
from utils.checkpoint import (
    atomic_save,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
)
from utils.cli import (
    UserError,
    add_data_args,
    add_device_args,
    add_flag,
    add_model_args,
    autocast_dtype,
    list_path,
    resolve_num_classes,
)
from utils.criterion import DSN_WEIGHT, OHEM_MIN_KEPT, OHEM_THRESH, build_criterion
from utils.inference import predict
from utils.logger import TrainingLogger
from utils.lr import poly_lr, set_lr
from utils.metrics import confusion_matrix, scores

PROG = os.path.basename(__file__)
FAULT_HELP = """\
test hooks (environment variables, for exercising the guards and resume):
  OCNET_FAULT_NAN_AT=N    make the loss of iteration N NaN (the NaN guard must stop training)
  OCNET_FAULT_KILL_AT=N   SIGKILL the process during iteration N, after its backward
  OCNET_DEBUG_DUMP_DIR=D  every rank saves its final weights to D/rank<r>.pth
"""


class TrainingError(UserError):
    """A condition that stops training with a one-line message (e.g. a non-finite loss)."""


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    group.add_argument("--learning-rate", type=float, default=1e-2, help="base learning rate")
    group.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    group.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay")
    group.add_argument("--power", type=float, default=0.9, help="poly learning-rate exponent")
    group.add_argument("--num-steps", type=int, default=40000, help="training iterations")
    group.add_argument(
        "--start-iters",
        type=int,
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
        type=float,
        default=OHEM_THRESH,
        help="OHEM keeps pixels whose true-class probability is <= this",
    )
    group.add_argument(
        "--ohem-keep",
        type=int,
        default=OHEM_MIN_KEPT,
        help="OHEM keeps at least this many pixels per process and step",
    )
    add_flag(group, "--ohem-single", "OHEM on the final output only; the DSN output uses plain CE")
    group.add_argument(
        "--dsn-weight", type=float, default=DSN_WEIGHT, help="weight of the DSN (layer3) loss"
    )
    add_flag(group, "--use-weight", "the original's Cityscapes class weights (19 classes only)")

    group = parser.add_argument_group("checkpoints and logs")
    group.add_argument(
        "--restore-from",
        default=None,
        help="initial weights: ImageNet backbone or segmentation checkpoint; absent or 'none' "
        "for random initialisation",
    )
    group.add_argument(
        "--snapshot-dir", default="./snapshots/", help="checkpoints, train.log, metrics, events"
    )
    group.add_argument(
        "--save-pred-every", type=int, default=5000, help="checkpoint every N iterations"
    )
    group.add_argument(
        "--keep-checkpoints",
        type=int,
        default=0,
        help="keep only the newest N checkpoint_*.pth (0: keep all)",
    )
    add_flag(group, "--resume", "continue from the newest checkpoint in --snapshot-dir, if any")
    group.add_argument("--log-every", type=int, default=10, help="log the loss every N iterations")

    group = parser.add_argument_group("validation during training")
    group.add_argument(
        "--val-every", type=int, default=0, help="validation mIoU every N iterations (0: never)"
    )
    group.add_argument(
        "--val-list", default=None, help="validation list (default: the dataset's val list)"
    )

    group = parser.add_argument_group("performance and reproducibility")
    add_flag(group, "--channels-last", "channels-last memory format")
    add_flag(group, "--compile", "torch.compile the model")
    add_flag(group, "--deterministic", "deterministic algorithms (warn-only where none exist)")
    group.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    return parser


# ----------------------------------------------------------------------------------------------
# Checks before any work


def restore_path(args: argparse.Namespace) -> str | None:
    value = args.restore_from
    return None if value in (None, "", "none", "None") else value


def probe_crop(args: argparse.Namespace, num_classes: int) -> None:
    """Run the model on ``meta`` tensors (shapes only, no memory, no compute) at the crop size.

    Catches crops too small for the model (e.g. a batch-norm over a single pooled value) before
    any data is read. Synchronised batch norm sees the whole batch, hence the total batch size;
    the plain ``ABN`` stands in for it because it needs no values, only shapes.
    """
    name = f"{args.network}_{args.method}"
    try:
        with torch.device("meta"), torch.no_grad():
            model = get_segmentation_model(name, num_classes=num_classes, norm_layer=ABN)
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

    Every problem raises ``UserError``, reported by ``utils.distributed.launch`` as one line.
    """
    positive = {
        "--num-steps": args.num_steps,
        "--batch-size": args.batch_size,
        "--save-pred-every": args.save_pred_every,
        "--log-every": args.log_every,
        "--nproc": args.nproc,
    }
    for name, value in positive.items():
        if value <= 0:
            raise UserError(f"{name} must be positive, got {value}")
    non_negative = {
        "--workers": args.workers,
        "--start-iters": args.start_iters,
        "--ohem-keep": args.ohem_keep,
        "--val-every": args.val_every,
        "--keep-checkpoints": args.keep_checkpoints,
        "--seed": args.seed,
        "--dsn-weight": args.dsn_weight,
        "--weight-decay": args.weight_decay,
        "--momentum": args.momentum,
        "--power": args.power,
    }
    for name, value in non_negative.items():
        if value < 0:
            raise UserError(f"{name} must not be negative, got {value}")
    if not args.learning_rate > 0:
        raise UserError(f"--learning-rate must be positive, got {args.learning_rate}")
    if args.start_iters >= args.num_steps:
        raise UserError(
            f"--start-iters {args.start_iters} must be below --num-steps {args.num_steps}"
        )
    if not 0 < args.ohem_thres <= 1:
        raise UserError(f"--ohem-thres must lie in (0, 1], got {args.ohem_thres}")
    if args.threads is not None and args.threads <= 0:
        raise UserError(f"--threads must be positive, got {args.threads}")

    world_size = dist_utils.world_layout(args)[0]
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
        build_criterion(args.method, num_classes, use_weight=args.use_weight)
    except ValueError as error:
        raise UserError(str(error)) from None
    if args.use_weight and args.dataset != "cityscapes":
        raise UserError(f"--use-weight holds Cityscapes class weights; --dataset is {args.dataset}")
    path = restore_path(args)
    if path is not None and not os.path.isfile(path):
        raise UserError(f"--restore-from {path} is not a file")
    if not os.path.isdir(args.data_dir):
        raise UserError(f"--data-dir {args.data_dir} is not a folder")
    lists = [("--data-list", list_path(args.data_list, args.dataset, "train"))]
    if args.val_every > 0:
        lists.append(("--val-list", list_path(args.val_list, args.dataset, "val")))
    for flag_name, path in lists:
        if path is not None and not os.path.isfile(path):
            raise UserError(f"{flag_name} {path} is not a file")
    if os.path.exists(args.snapshot_dir) and not os.path.isdir(args.snapshot_dir):
        raise UserError(f"--snapshot-dir {args.snapshot_dir} exists and is not a folder")

    build_train_dataset(args)  # a DatasetError names the bad list line
    if args.val_every > 0:
        build_val_dataset(args)
    probe_crop(args, num_classes)
    os.makedirs(args.snapshot_dir, exist_ok=True)


# ----------------------------------------------------------------------------------------------
# Data


def build_train_dataset(args: argparse.Namespace):
    return get_segmentation_dataset(
        f"{args.dataset}_train",
        root=args.data_dir,
        list_path=list_path(args.data_list, args.dataset, "train"),
        crop_size=tuple(args.input_size),
        scale=args.random_scale,
        mirror=args.random_mirror,
        ignore_label=args.ignore_label,
        normalize=args.normalize,
        # Like the original: the list repeated to cover every sample of the run.
        max_iters=args.num_steps * args.batch_size,
        seed=args.seed,
    )


def build_val_dataset(args: argparse.Namespace):
    return get_segmentation_dataset(
        f"{args.dataset}_val",
        root=args.data_dir,
        list_path=list_path(args.val_list, args.dataset, "val"),
        ignore_label=args.ignore_label,
        normalize=args.normalize,
    )


def make_loader(
    dataset,
    sampler,
    batch_size: int,
    args: argparse.Namespace,
    device: torch.device,
    seed: int,
    rank: int,
) -> DataLoader:
    """A DataLoader with its own generator: making an iterator then leaves the global RNG alone."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        drop_last=False,
        generator=generator,
        # The rank takes the epoch slot so every worker of every process gets its own stream.
        worker_init_fn=make_worker_init_fn(seed, epoch=rank),
        persistent_workers=False,
    )


# ----------------------------------------------------------------------------------------------
# Random state, saved in checkpoints as plain lists and tensors (torch.load weights_only=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(loader_generator: torch.Generator) -> dict[str, Any]:
    version, words, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(words), gauss],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": loader_generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], loader_generator: torch.Generator) -> None:
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    numpy = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    loader_generator.set_state(state["loader"])


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as plain values (tuples become lists) for a weights_only checkpoint."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items()}


# Flags a resumed run must share with the checkpoint for the weights (and sample stream) to fit.
RESUME_MUST_MATCH = ("network", "method", "dataset", "num_classes", "batch_size", "seed")


# ----------------------------------------------------------------------------------------------
# Training


def fault_iteration(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def validate(
    model: torch.nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    amp: torch.dtype | None,
    ignore_label: int,
) -> float:
    """mIoU over this rank's share of the validation list, confusion summed over ranks."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    with torch.inference_mode():
        for images, labels, _ in loader:
            probs = predict(model, images.to(device), num_classes, mode="whole", amp=amp)
            confusion += confusion_matrix(
                probs.argmax(1), labels.to(device), num_classes, ignore_index=ignore_label
            )
    dist_utils.all_reduce_sum(confusion)
    model.train(was_training)
    return float(scores(confusion.cpu())["mIoU"])


def save_checkpoint(
    args, model, optimizer, scaler, iteration, loader_generator, metrics, logger
) -> str:
    """Gather every rank's RNG state and let rank 0 write ``checkpoint_<iteration>.pth``."""
    states = dist_utils.all_gather_object(rng_state(loader_generator))
    path = checkpoint_path(args.snapshot_dir, iteration)
    if dist_utils.is_main_process():
        checkpoint = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "iteration": int(iteration),
            "rng": {"world_size": len(states), "ranks": states},
            "args": plain_args(args),
            "metrics": {k: float(v) for k, v in metrics.items()},
        }
        atomic_save(checkpoint, path)
        prune_checkpoints(args.snapshot_dir, args.keep_checkpoints)
        logger.info(f"saved {path}")
    dist_utils.barrier()
    return path


def resume_state(args: argparse.Namespace) -> dict | None:
    """The newest checkpoint of ``--snapshot-dir`` (checked against the flags), or None."""
    path = latest_checkpoint(args.snapshot_dir)
    if path is None:
        return None
    checkpoint = load_checkpoint(path)
    saved = checkpoint.get("args", {})
    for key in RESUME_MUST_MATCH:
        if key in saved and saved[key] != getattr(args, key):
            option = "--" + key.replace("_", "-")
            raise TrainingError(
                f"--resume: {path} was trained with {option} {saved[key]}, not {getattr(args, key)}"
            )
    checkpoint["path"] = path
    return checkpoint


def setup_process(args: argparse.Namespace) -> None:
    """Threads and determinism of this process."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.deterministic:
        # warn_only: bilinear upsampling's CUDA backward has no deterministic kernel.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def train(args: argparse.Namespace, device: torch.device) -> None:
    """The training of one process (rank) of the world ``utils.distributed.launch`` started."""
    rank, world_size = dist_utils.get_rank(), dist_utils.get_world_size()
    setup_process(args)
    resume = resume_state(args) if args.resume else None
    start = int(resume["iteration"]) if resume else args.start_iters
    if start >= args.num_steps:
        if rank == 0:
            print(f"{PROG}: nothing to do: {resume['path']} is at iteration {start}")
        return
    logger = TrainingLogger(args.snapshot_dir, enabled=rank == 0, start_iteration=start)
    with contextlib.closing(logger):
        if args.resume and resume is None:
            logger.info(f"--resume: no checkpoint in {args.snapshot_dir}, starting from scratch")
        train_loop(args, rank, world_size, device, resume, start, logger)


def build_model(
    args: argparse.Namespace, num_classes: int, logger: TrainingLogger, restore: bool = True
) -> torch.nn.Module:
    """The model, initialised from ``--restore-from`` when ``restore`` (not when resuming)."""
    path = restore_path(args) if restore else None
    model = get_segmentation_model(f"{args.network}_{args.method}", num_classes=num_classes)
    if path is not None:
        kind = restore_weights(model, path)
        logger.info(f"initialised the {kind} from {path}")
    return model


def train_loop(
    args: argparse.Namespace,
    rank: int,
    world_size: int,
    device: torch.device,
    resume: dict | None,
    start: int,
    logger: TrainingLogger,
) -> None:
    main = rank == 0
    num_classes = resolve_num_classes(args)
    amp = autocast_dtype(args.amp)
    per_rank_batch = args.batch_size // world_size
    logger.info("arguments:\n" + "\n".join(f"  {k:18} {v}" for k, v in vars(args).items()))
    logger.info(f"{world_size} process(es) on {device}, {per_rank_batch} images each per step")

    # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
    seed_everything(args.seed)
    model = build_model(args, num_classes, logger, restore=resume is None)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    criterion = build_criterion(
        args.method,
        num_classes,
        ohem=args.ohem,
        ohem_single=args.ohem_single,
        thresh=args.ohem_thres,
        min_kept=args.ohem_keep,
        dsn_weight=args.dsn_weight,
        use_weight=args.use_weight,
        ignore_index=args.ignore_label,
    ).to(device)
    # One parameter group, weight decay on everything, as the original.
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=args.learning_rate,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")

    dataset = build_train_dataset(args)
    sampler = dist_utils.ResumableSampler(
        len(dataset), args.batch_size, args.num_steps, start, args.seed, rank, world_size
    )
    loader = make_loader(dataset, sampler, per_rank_batch, args, device, args.seed, rank)
    metrics: dict[str, float] = {}
    # From here on every rank draws its own dropout masks.
    seed_everything(args.seed + rank)
    if resume is not None:
        try:
            model.load_state_dict(resume["model"])
        except RuntimeError as error:
            raise TrainingError(f"--resume: {resume['path']}: {error}") from None
        optimizer.load_state_dict(resume["optimizer"])
        scaler.load_state_dict(resume["scaler"])
        metrics = dict(resume.get("metrics", {}))
        states = resume["rng"]["ranks"]
        if len(states) == world_size:
            set_rng_state(states[rank], loader.generator)
        else:
            logger.info(
                f"--resume: checkpoint of {len(states)} processes, now {world_size}: random "
                "streams restart, so the run will differ from an uninterrupted one"
            )
        logger.info(f"resumed from {resume['path']} at iteration {start}")

    forward = model
    if world_size > 1:
        forward = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if args.compile:
        forward = torch.compile(forward)

    val_loader = None
    if args.val_every > 0:
        val_set = build_val_dataset(args)
        val_indices = list(range(rank, len(val_set), world_size))
        val_loader = make_loader(val_set, val_indices, 1, args, device, args.seed, rank)

    nan_at = fault_iteration("OCNET_FAULT_NAN_AT")
    kill_at = fault_iteration("OCNET_FAULT_KILL_AT")
    last_saved = resume["path"] if resume else None
    model.train()
    with tqdm(
        total=args.num_steps,
        initial=start,
        disable=not main,
        desc="train",
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=1.0,
    ) as progress:
        iteration = start
        started = time.monotonic()
        for images, labels, _ in loader:
            if args.fix_lr:
                lr = args.learning_rate
            else:
                lr = poly_lr(args.learning_rate, iteration, args.num_steps, args.power)
            set_lr(optimizer, lr)
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if args.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                preds = forward(images)
            terms = criterion.terms(preds, labels)  # float32 outside autocast
            loss = sum(terms.values())
            if nan_at == iteration + 1:
                loss = loss * float("nan")
            # One all-reduce for the logged values; a non-finite loss on any rank stops every rank
            # before the weights are touched.
            values = torch.stack([loss.detach(), *(t.detach() for t in terms.values())]).float()
            values = (dist_utils.all_reduce_sum(values) / world_size).tolist()
            if not math.isfinite(values[0]):
                raise TrainingError(
                    f"loss is {values[0]} at iteration {iteration + 1}; training stopped, "
                    f"last good checkpoint: {last_saved or 'none'}"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if kill_at == iteration + 1:
                os.kill(os.getpid(), signal.SIGKILL)
            scaler.step(optimizer)
            scaler.update()
            iteration += 1

            record: dict[str, float] = {}
            if iteration % args.log_every == 0 or iteration == args.num_steps:
                record = {"loss": values[0], **dict(zip(terms, values[1:])), "lr": lr}
            validate_now = args.val_every and iteration % args.val_every == 0
            if val_loader is not None and (validate_now or iteration == args.num_steps):
                record["mIoU"] = validate(
                    model, val_loader, num_classes, device, amp, args.ignore_label
                )
            if record:
                metrics.update(record)
                logger.scalars(iteration, record)
                logger.info(
                    f"iteration {iteration}/{args.num_steps}"
                    + "".join(f" {k} {v:.4g}" for k, v in record.items())
                )
            progress.set_postfix(loss=f"{values[0]:.4f}", lr=f"{lr:.2e}", refresh=False)
            progress.update()
            if iteration % args.save_pred_every == 0 or iteration == args.num_steps:
                last_saved = save_checkpoint(
                    args, model, optimizer, scaler, iteration, loader.generator, metrics, logger
                )
            if iteration >= args.num_steps:
                break

    final = os.path.join(args.snapshot_dir, f"CS_scenes_{args.num_steps}.pth")
    if main:
        atomic_save(model.state_dict(), final)
        elapsed = time.monotonic() - started
        logger.info(f"saved {final} ({iteration - start} iterations in {elapsed:.1f} s)")
    dump = os.environ.get("OCNET_DEBUG_DUMP_DIR")
    if dump:
        os.makedirs(dump, exist_ok=True)
        torch.save(model.state_dict(), os.path.join(dump, f"rank{rank}.pth"))
    dist_utils.barrier()


def main(args: argparse.Namespace) -> None:
    dist_utils.launch(train, args, PROG, check=check_args)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
