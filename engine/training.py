"""The training run of one process: build it, restore it, step it, and what follows each step.

``train.py`` checks the flags and launches processes; each process calls ``train(args, device)``.
The pieces are separate so each reads on its own: ``build_run`` (model, DDP wrapper, criterion,
optimizer, scaler, loaders), ``restore_run`` (``--resume``), ``train_step`` (forward, loss terms,
all-reduce, non-finite guard, backward, optimizer step) and ``after_step`` (log, validate,
checkpoint). Checkpoints hold everything needed for ``--resume`` to equal an uninterrupted run.

Faults: SIGTERM / SIGUSR1 (``StopRequest``) make every process finish its step, agree on the
iteration, let rank 0 write a checkpoint and exit with ``PREEMPTED_STATUS``; a bad sample or a
non-finite loss stops the run with one line naming it and the last good checkpoint. When
torchrun's elastic agent restarts the group (``TORCHELASTIC_RESTART_COUNT`` > 0), the run
continues from the newest checkpoint as ``--resume`` would (``dist_utils.elastic_restart``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from dataset import DatasetError, ResumableSampler
from dataset.sampler import STOP_SIGNALS
from engine.cli import UserError, autocast_dtype, one_line, resolve_num_classes
from engine.data import Indexed, eval_dataset, make_loader, train_dataset
from engine.evaluation import confusion_over
from engine.launch import PREEMPTED_STATUS
from engine.models import build_model, model_meta
from network import method_spec
from network.weights import restore_weights
from utils import distributed as dist_utils
from utils.checkpoint import (
    atomic_save,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
)
from utils.criterion import SegmentationLoss, ohem_mode
from utils.fileio import atomic_path
from utils.logger import TrainingLogger
from utils.lr import poly_lr, set_lr
from utils.metrics import scores
from utils.recompute import enable_recompute
from utils.rng import rng_state, seed_everything, set_rng_state

# Flags a resumed run must share with the checkpoint for the weights (and sample stream) to fit.
RESUME_MUST_MATCH = ("network", "method", "dataset", "num_classes", "batch_size", "seed")

FAULT_HELP = f"""\
exit status: 0 done, 1 the run failed, 2 the command cannot run as given, {PREEMPTED_STATUS} stopped
  on SIGTERM or SIGUSR1 after writing a checkpoint (run the same command with --resume).

test hooks (environment variables, for exercising the guards and resume):
  OCNET_FAULT_NAN_AT=N        make the loss of iteration N NaN (the NaN guard must stop training)
  OCNET_FAULT_KILL_AT=N       SIGKILL the process during iteration N, after its backward
  OCNET_FAULT_STOP_AT=N       SIGSTOP the process during iteration N, before its backward
  OCNET_FAULT_RANK=R          the kill and stop hooks act in rank R only (default: every rank)
  (under torchrun the fault hooks act in the first incarnation only, not after a restart)
  OCNET_FAULT_SIGNAL_AT=N     rank 0 sends itself SIGTERM during iteration N, after its backward
  OCNET_FAULT_SIGNAL_IN_SAVE=1  rank 0 sends itself SIGTERM while writing each checkpoint
  OCNET_DEBUG_DUMP_DIR=D      every rank saves its final weights to D/rank<r>.pth
  OCNET_DEBUG_SAMPLES_DIR=D   every rank appends the sample indices of each step to D/rank<r>.jsonl
"""


class TrainingError(UserError):
    """A condition that stops training with a one-line message (e.g. a non-finite loss)."""


@dataclass(frozen=True)
class FaultHooks:
    """Faults the tests inject (``FAULT_HELP``); read once from the environment, inert by default."""

    nan_at: int | None = None
    kill_at: int | None = None
    dump_dir: str | None = None
    signal_at: int | None = None
    signal_in_save: bool = False
    samples_dir: str | None = None
    stop_at: int | None = None
    rank: int | None = None

    @classmethod
    def from_env(cls) -> FaultHooks:
        def number(name: str) -> int | None:
            value = os.environ.get(name)
            return int(value) if value else None

        dump_dir = os.environ.get("OCNET_DEBUG_DUMP_DIR") or None
        samples_dir = os.environ.get("OCNET_DEBUG_SAMPLES_DIR") or None
        if dist_utils.elastic_restart() > 0:  # faults belong to the first incarnation
            return cls(dump_dir=dump_dir, samples_dir=samples_dir)
        return cls(
            number("OCNET_FAULT_NAN_AT"),
            number("OCNET_FAULT_KILL_AT"),
            dump_dir,
            number("OCNET_FAULT_SIGNAL_AT"),
            bool(number("OCNET_FAULT_SIGNAL_IN_SAVE")),
            samples_dir,
            number("OCNET_FAULT_STOP_AT"),
            number("OCNET_FAULT_RANK"),
        )

    def _mine(self) -> bool:
        return self.rank is None or self.rank == dist_utils.get_rank()

    def before_backward(self, step: int) -> None:
        if self.stop_at == step and self._mine():
            os.kill(os.getpid(), signal.SIGSTOP)

    def loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if self.nan_at == step else loss

    def after_backward(self, step: int) -> None:
        if self.kill_at == step and self._mine():
            os.kill(os.getpid(), signal.SIGKILL)
        if self.signal_at == step and dist_utils.get_rank() == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    def during_save(self) -> None:
        """Called between writing a checkpoint's temporary file and renaming it into place."""
        if self.signal_in_save:
            os.kill(os.getpid(), signal.SIGTERM)

    def step_samples(self, step: int, rank: int, metas: list[dict]) -> None:
        if self.samples_dir:
            os.makedirs(self.samples_dir, exist_ok=True)
            record = {"iteration": step, "indices": [int(m["index"]) for m in metas]}
            with open(os.path.join(self.samples_dir, f"rank{rank}.jsonl"), "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def at_end(self, model: nn.Module, rank: int) -> None:
        if self.dump_dir:
            os.makedirs(self.dump_dir, exist_ok=True)
            torch.save(model.state_dict(), os.path.join(self.dump_dir, f"rank{rank}.pth"))


class StopRequest:
    """Remembers the first stop signal (SIGTERM, SIGUSR1) this process receives.

    The handler only takes note: the training loop finishes its step, and all processes agree
    (``agree_to_stop``) before rank 0 writes the checkpoint. Later signals, e.g. one arriving
    while the checkpoint is written, change nothing. ``with StopRequest() as stop:`` installs the
    handlers and puts the previous ones back.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signal is None:
            self.signal = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else "none"

    def __enter__(self) -> StopRequest:
        for stop_signal in STOP_SIGNALS:
            self._previous[stop_signal] = signal.signal(stop_signal, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for stop_signal, handler in self._previous.items():
            signal.signal(stop_signal, handler)
        self._previous.clear()


def agree_to_stop(stop: StopRequest, device: torch.device) -> bool:
    """True on every process when any process was asked to stop (one all-reduce of a flag)."""
    flag = torch.tensor([0.0 if stop.signal is None else 1.0], device=device)
    return bool(dist_utils.all_reduce_sum(flag).item() > 0)


def resume_command(args: argparse.Namespace) -> str:
    """The command that continues this run: the one that started it, plus ``--resume``."""
    argv = list(sys.argv)
    if not argv or not argv[0].endswith("train.py"):
        return "the same train.py command with --resume"
    return shlex.join(["python", *argv, *([] if args.resume else ["--resume"])])


@dataclass
class TrainingRun:
    """The state of one process's training."""

    args: argparse.Namespace
    device: torch.device
    rank: int
    world_size: int
    logger: TrainingLogger
    model: nn.Module
    forward: nn.Module  # the model as called: DDP-wrapped and/or compiled
    criterion: SegmentationLoss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: DataLoader
    val_loader: DataLoader | None
    iteration: int
    last_saved: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    hooks: FaultHooks = field(default_factory=FaultHooks)

    @property
    def num_classes(self) -> int:
        return resolve_num_classes(self.args)


def build_criterion(args: argparse.Namespace, num_classes: int) -> SegmentationLoss:
    """The loss ``--method`` and the loss flags ask for; the auxiliary term if the method has one."""
    spec = method_spec(args.method)
    return SegmentationLoss(
        num_classes,
        aux_weight=args.dsn_weight if spec.has_aux else None,
        ohem=ohem_mode(args.ohem, args.ohem_single),
        thresh=args.ohem_thres,
        min_kept=args.ohem_keep,
        use_weight=args.use_weight,
        ignore_index=args.ignore_label,
    )


def restore_path(args: argparse.Namespace) -> str | None:
    value = args.restore_from
    return None if value in (None, "", "none", "None") else value


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as plain values (tuples become lists) for a weights_only checkpoint."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items()}


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


def process_seed(seed: int, rank: int, iteration: int = 0) -> int:
    """The seed of rank ``rank``'s own random stream (dropout) from iteration ``iteration``.

    At iteration 0 it is ``seed + rank``, as it always was; a resume whose checkpoint has no
    state for this process (another number of processes) starts a stream of its own there.
    """
    if iteration == 0:
        return seed + rank
    words = np.random.SeedSequence([seed, rank, iteration]).generate_state(2, dtype=np.uint32)
    return int(words[0]) << 32 | int(words[1])


def build_run(
    args: argparse.Namespace,
    device: torch.device,
    logger: TrainingLogger,
    start: int,
    restore: bool,
) -> TrainingRun:
    """Model (with ``--restore-from`` weights when ``restore``), loss, optimizer and loaders."""
    rank, world_size = dist_utils.get_rank(), dist_utils.get_world_size()
    num_classes = resolve_num_classes(args)
    # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
    seed_everything(args.seed)
    model = build_model(args, num_classes)
    path = restore_path(args) if restore else None
    if path is not None:
        kind = restore_weights(model, path)
        logger.info(f"initialised the {kind} from {path}")
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if getattr(args, "recompute", False):
        wrapped = enable_recompute(model)
        logger.info(f"--recompute: activations of {', '.join(wrapped)} recomputed in the backward")
    criterion = build_criterion(args, num_classes).to(device)
    # One parameter group, weight decay on everything, as the original.
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=args.learning_rate,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")

    dataset = train_dataset(args)
    sampler = ResumableSampler(
        len(dataset), args.batch_size, args.num_steps, start, args.seed, rank, world_size
    )
    per_rank_batch = args.batch_size // world_size
    # Indexed: each sample's meta carries its position in the (repeated) list.
    dataset = Indexed(dataset, range(len(dataset)))
    loader = make_loader(dataset, per_rank_batch, args.workers, device, sampler, args.seed)
    val_loader = None
    if args.val_every > 0:
        val_set = eval_dataset(args, "val", args.val_list)
        val_loader = make_loader(val_set, 1, args.workers, device, seed=args.seed)
    # From here on every rank draws its own dropout masks.
    seed_everything(process_seed(args.seed, rank))
    forward = model
    if world_size > 1:
        forward = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if args.compile:
        forward = torch.compile(forward)
    return TrainingRun(
        args, device, rank, world_size, logger, model, forward, criterion, optimizer, scaler,
        loader, val_loader, iteration=start,
    )  # fmt: skip


def restore_run(run: TrainingRun, checkpoint: dict) -> None:
    """Weights, optimizer, scaler, metrics and every random state of a ``--resume`` checkpoint."""
    try:
        run.model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise TrainingError(f"--resume: {checkpoint['path']}: {error}") from None
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    run.metrics = dict(checkpoint.get("metrics", {}))
    run.last_saved = checkpoint["path"]
    states = checkpoint["rng"]["ranks"]
    if len(states) == run.world_size:
        set_rng_state(states[run.rank], run.loader.generator)
    else:
        # The sample stream is a function of the global position (ResumableSampler), so it
        # continues exactly; the random streams and the split of each step over processes
        # cannot, so each process starts a stream of its own at this iteration.
        seed_everything(process_seed(run.args.seed, run.rank, run.iteration))
        run.logger.info(
            f"warning: --resume: {checkpoint['path']} was written by {len(states)} process(es), "
            f"this run has {run.world_size}: continuing at sample "
            f"{run.iteration * run.args.batch_size} of the same sample stream, but the run is "
            "no longer bit-exact (per-process batches and random streams change)"
        )
    run.logger.info(f"resumed from {checkpoint['path']} at iteration {run.iteration}")


def learning_rate(args: argparse.Namespace, iteration: int) -> float:
    if args.fix_lr:
        return args.learning_rate
    return poly_lr(args.learning_rate, iteration, args.num_steps, args.power)


def train_step(
    run: TrainingRun, images: torch.Tensor, labels: torch.Tensor, hooks: FaultHooks
) -> dict[str, float]:
    """One optimisation step; returns the loss terms averaged over processes, and the lr."""
    args, device = run.args, run.device
    lr = learning_rate(args, run.iteration)
    set_lr(run.optimizer, lr)
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    amp = autocast_dtype(args.amp)
    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        preds = run.forward(images)
    terms = run.criterion.terms(preds, labels)  # float32 outside autocast
    loss = hooks.loss(run.iteration + 1, sum(terms.values()))
    # One all-reduce for the logged values; a non-finite loss on any rank stops every rank
    # before the weights are touched.
    values = torch.stack([loss.detach(), *(t.detach() for t in terms.values())]).float()
    dist_utils.set_phase(f"the loss all-reduce at iteration {run.iteration + 1}")
    values = (dist_utils.all_reduce_sum(values) / run.world_size).tolist()
    if not math.isfinite(values[0]):
        raise TrainingError(
            f"loss is {values[0]} at iteration {run.iteration + 1}; training stopped, "
            f"last good checkpoint: {run.last_saved or 'none'}"
        )
    run.optimizer.zero_grad(set_to_none=True)
    hooks.before_backward(run.iteration + 1)
    dist_utils.set_phase(f"the gradient all-reduce at iteration {run.iteration + 1}")
    run.scaler.scale(loss).backward()
    hooks.after_backward(run.iteration + 1)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.iteration += 1
    return {"loss": values[0], **dict(zip(terms, values[1:])), "lr": lr}


def validate(run: TrainingRun) -> float:
    """mIoU over the validation list, each process predicting its share."""
    dist_utils.set_phase(f"validation at iteration {run.iteration}")
    options = {"mode": "whole", "amp": autocast_dtype(run.args.amp)}
    confusion = confusion_over(
        run.model, run.val_loader, run.num_classes, run.device, options, run.args.ignore_label
    )
    return float(scores(confusion.cpu())["mIoU"])


def save_checkpoint(run: TrainingRun) -> str:
    """Gather every rank's RNG state and let rank 0 write ``checkpoint_<iteration>.pth``."""
    args = run.args
    dist_utils.set_phase(f"the checkpoint of iteration {run.iteration}")
    states = dist_utils.all_gather_object(rng_state(run.loader.generator))
    path = checkpoint_path(args.snapshot_dir, run.iteration)
    if dist_utils.is_main_process():
        checkpoint = {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict(),
            "iteration": int(run.iteration),
            "rng": {"world_size": len(states), "ranks": states},
            "args": plain_args(args),
            "meta": model_meta(args, run.num_classes),
            "metrics": {k: float(v) for k, v in run.metrics.items()},
        }
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
            run.hooks.during_save()
        prune_checkpoints(args.snapshot_dir, args.keep_checkpoints)
        run.logger.info(f"saved {path}")
    dist_utils.barrier()
    run.last_saved = path
    return path


def after_step(run: TrainingRun, values: dict[str, float]) -> None:
    """Log every ``--log-every``, validate every ``--val-every``, checkpoint every
    ``--save-pred-every`` iterations, and all three at the last one."""
    args, iteration = run.args, run.iteration
    last = iteration == args.num_steps
    record: dict[str, float] = {}
    if iteration % args.log_every == 0 or last:
        record = dict(values)
    if run.val_loader is not None and (iteration % args.val_every == 0 or last):
        record["mIoU"] = validate(run)
    if record:
        run.metrics.update(record)
        run.logger.scalars(iteration, record)
        run.logger.info(
            f"iteration {iteration}/{args.num_steps}"
            + "".join(f" {k} {v:.4g}" for k, v in record.items())
        )
    if iteration % args.save_pred_every == 0 or last:
        save_checkpoint(run)


def stop_for_signal(run: TrainingRun, stop: StopRequest) -> None:
    """Checkpoint the iteration every process agreed on (unless saved already), say how to
    continue, and exit with ``PREEMPTED_STATUS``."""
    path = checkpoint_path(run.args.snapshot_dir, run.iteration)
    if run.last_saved != path:
        path = save_checkpoint(run)
    cause = stop.name if stop.signal is not None else "a stop signal to another process"
    run.logger.info(
        f"stopped by {cause} after iteration {run.iteration}/{run.args.num_steps}; "
        f"checkpoint {path}; to continue: {resume_command(run.args)}"
    )
    raise SystemExit(PREEMPTED_STATUS)


def close_batches(batches) -> None:
    """Stop a DataLoader iterator's worker processes now.

    Left to the garbage collector, an iterator that an exception still references outlives the
    run: at exit ``multiprocessing`` terminates its workers and the DataLoader's SIGCHLD handler
    prints an "Exception ignored in atexit callback" traceback after the run's one error line.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)  # multi-process iterators only
    if shutdown is not None:
        shutdown()


def train_loop(run: TrainingRun, hooks: FaultHooks, stop: StopRequest | None = None) -> None:
    """Step until ``--num-steps``, then save the final weights.

    After each step the processes agree whether any of them was asked to stop (``stop``); if so
    they checkpoint that iteration and exit (``stop_for_signal``). A bad sample met by the loader
    stops the run with its file and list line, keeping the last good checkpoint.
    """
    args = run.args
    stop = stop or StopRequest()
    start, started = run.iteration, time.monotonic()
    run.model.train()
    progress = tqdm(
        total=args.num_steps,
        initial=start,
        disable=run.rank != 0,
        desc="train",
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=1.0,
    )
    batches = iter(run.loader)
    with progress, contextlib.ExitStack() as cleanup:
        cleanup.callback(close_batches, batches)
        while run.iteration < args.num_steps:
            try:
                images, labels, metas = next(batches)
            except StopIteration:
                break
            except DatasetError as error:
                raise TrainingError(
                    f"{one_line(error)}; training stopped before iteration {run.iteration + 1}, "
                    f"last good checkpoint: {run.last_saved or 'none'}"
                ) from None
            hooks.step_samples(run.iteration + 1, run.rank, metas)
            values = train_step(run, images, labels, hooks)
            after_step(run, values)
            progress.set_postfix(
                loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}", refresh=False
            )
            progress.update()
            dist_utils.set_phase(f"the stop-signal check after iteration {run.iteration}")
            if run.iteration < args.num_steps and agree_to_stop(stop, run.device):
                progress.close()
                stop_for_signal(run, stop)
    final = os.path.join(args.snapshot_dir, f"CS_scenes_{args.num_steps}.pth")
    if run.rank == 0:
        # The weights under "model" (as in checkpoints) beside what rebuilds the model.
        atomic_save(
            {"model": run.model.state_dict(), "meta": model_meta(args, run.num_classes)}, final
        )
        elapsed = time.monotonic() - started
        run.logger.info(f"saved {final} ({run.iteration - start} iterations in {elapsed:.1f} s)")
    hooks.at_end(run.model, run.rank)
    dist_utils.set_phase("the end of training")
    dist_utils.barrier()


def train(args: argparse.Namespace, device: torch.device) -> None:
    """The training of one process (rank) of the world ``engine.launch.launch`` started."""
    rank, world_size = dist_utils.get_rank(), dist_utils.get_world_size()
    setup_process(args)
    restart = dist_utils.elastic_restart()
    # A group torchrun restarted continues where the last checkpoint left it, as --resume would.
    resume = resume_state(args) if args.resume or restart > 0 else None
    start = int(resume["iteration"]) if resume else args.start_iters
    if start >= args.num_steps:
        if rank == 0:
            print(f"train.py: nothing to do: {resume['path']} is at iteration {start}")
        return
    logger = TrainingLogger(args.snapshot_dir, enabled=rank == 0, start_iteration=start)
    # Stop signals are noted from here on; the first check is after the first step.
    with contextlib.closing(logger), StopRequest() as stop:
        if restart > 0:
            logger.info(
                f"elastic restart {restart}: resuming from {resume['path']}"
                if resume is not None
                else f"elastic restart {restart}: no checkpoint in {args.snapshot_dir} yet, "
                "starting from scratch"
            )
        elif args.resume and resume is None:
            logger.info(f"--resume: no checkpoint in {args.snapshot_dir}, starting from scratch")
        logger.info("arguments:\n" + "\n".join(f"  {k:18} {v}" for k, v in vars(args).items()))
        logger.info(
            f"{world_size} process(es) on {device}, "
            f"{args.batch_size // world_size} images each per step"
        )
        run = build_run(args, device, logger, start, restore=resume is None)
        run.hooks = FaultHooks.from_env()
        if resume is not None:
            restore_run(run, resume)
        train_loop(run, run.hooks, stop)
