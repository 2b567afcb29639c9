"""Thin helpers over torch.distributed so single-process code paths need no special cases.

Also the one process launcher of train.py, evaluate.py and generate_submit.py (``launch``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Sampler


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (no-op without a process group); returns it."""
    if is_dist():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` without a process group)."""
    if not is_dist():
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` when started by torchrun (or any env:// launcher)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank = int(os.environ["RANK"])
    return rank, int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", rank))


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago (for single-node spawning)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_process_group(
    backend: str, rank: int, world_size: int, port: int | None = None, timeout_s: float = 1800
) -> None:
    """Join the default group: env:// under torchrun, else localhost on ``port`` (spawned ranks)."""
    if port is not None:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def destroy_process_group() -> None:
    if is_dist():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# Launching the processes of a CLI. ``utils.cli`` is imported inside the functions: it imports the
# models, whose synchronised batch norm imports this module.


def world_layout(args: argparse.Namespace) -> tuple[int, str]:
    """``(processes, how)`` with how in single / torchrun / spawn, from ``--gpu`` and ``--nproc``.

    Raises ``UserError`` for device flags that cannot work (``--nproc`` with GPUs, ``--gpu``
    without CUDA), so that they are reported before any process starts.
    """
    from utils.cli import UserError, gpu_ids, resolve_device

    env = torchrun_env()
    ids = gpu_ids(args)
    if env is None and args.nproc > 1 and ids:
        raise UserError("--nproc is for CPU processes; with GPUs list them in --gpu instead")
    device = resolve_device(args)
    if env is not None:
        return env[1], "torchrun"
    if args.nproc > 1:
        if device.type != "cpu":
            raise UserError(f"--nproc spawns CPU processes; it needs --device cpu, not {device}")
        return args.nproc, "spawn"
    return (len(ids), "spawn") if len(ids) > 1 else (1, "single")


def process_device(args: argparse.Namespace, local_rank: int) -> torch.device:
    """This process's device (``--gpu`` / ``--device``); a CUDA device becomes the current one."""
    from utils.cli import resolve_device

    device = resolve_device(args, local_rank)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


Worker = Callable[[argparse.Namespace, torch.device], object]


def _process(
    local_rank: int,
    worker: Worker,
    args: argparse.Namespace,
    prog: str,
    world_size: int,
    port: int | None,
) -> None:
    """One process: join the group when there are several, run, report user errors, leave."""
    from utils import cli

    env = torchrun_env()
    rank = env[0] if env is not None else local_rank
    try:
        device = process_device(args, local_rank)
        if world_size > 1:
            init_process_group("nccl" if device.type == "cuda" else "gloo", rank, world_size, port)
        worker(args, device)
    except cli.user_errors() as error:
        cli.report(prog, error, rank, cli.RUN_STATUS)
    finally:
        destroy_process_group()


def launch(
    worker: Worker,
    args: argparse.Namespace,
    prog: str,
    check: Callable[[argparse.Namespace], object] | None = None,
) -> None:
    """Run ``worker(args, device)`` once, in every torchrun process, or in spawned processes.

    ``--gpu 0,1`` spawns one process per GPU (NCCL), ``--nproc N --device cpu`` N CPU processes
    (gloo); under torchrun RANK / WORLD_SIZE / LOCAL_RANK are honoured. The device flags, then
    ``check(args)``, are checked first in the launching process, so that common mistakes are found
    before any work and reported once.
    User errors (``utils.cli.user_errors``) end with one ``<prog>: error: ...`` line: exit status
    2 from the checks, 1 from a worker (``utils.cli.fail``).
    """
    from utils import cli

    env = torchrun_env()
    try:
        world_size, how = world_layout(args)
        if check is not None:
            check(args)
    except cli.user_errors() as error:
        cli.report(prog, error, env[0] if env is not None else 0, cli.USAGE_STATUS)
    if how != "spawn":
        _process(env[2] if env is not None else 0, worker, args, prog, world_size, None)
        return
    try:
        mp.spawn(_process, args=(worker, args, prog, world_size, free_port()), nprocs=world_size)
    except mp.ProcessExitedException as error:
        # The failing process has printed its message already.
        raise SystemExit(
            error.exit_code if error.exit_code and error.exit_code > 0 else cli.RUN_STATUS
        ) from None


class ResumableSampler(Sampler[int]):
    """This rank's share of a shuffled sample stream that can start at any training step.

    Global position ``p`` (sample ``p`` of the run, all ranks together) maps to index
    ``perm_e[p % n]`` with ``e = p // n`` and ``perm_e`` a permutation drawn from ``(seed, e)``
    alone. Step ``s`` uses positions ``s * batch ... s * batch + batch - 1``; rank ``r`` of ``w``
    takes the ``r``-th contiguous slice of ``batch / w``. So the order is a pure function of
    (seed, position): resuming at step ``k`` skips exactly the consumed samples, and the samples
    of a step do not depend on the number of processes sharing it.
    """

    def __init__(
        self,
        dataset_len: int,
        batch_size: int,
        num_steps: int,
        start_step: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if dataset_len <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.dataset_len = dataset_len
        self.batch_size = batch_size
        self.per_rank = batch_size // world_size
        self.num_steps = num_steps
        self.start_step = start_step
        self.seed = seed
        self.rank = rank

    def permutation(self, epoch: int) -> torch.Tensor:
        words = np.random.SeedSequence([self.seed, epoch]).generate_state(2, dtype=np.uint32)
        generator = torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))
        return torch.randperm(self.dataset_len, generator=generator)

    def __len__(self) -> int:
        return max(0, self.num_steps - self.start_step) * self.per_rank

    def __iter__(self) -> Iterator[int]:
        epoch, perm = -1, None
        for step in range(self.start_step, self.num_steps):
            first = step * self.batch_size + self.rank * self.per_rank
            for position in range(first, first + self.per_rank):
                if position // self.dataset_len != epoch:
                    epoch = position // self.dataset_len
                    perm = self.permutation(epoch)
                yield int(perm[position % self.dataset_len])
