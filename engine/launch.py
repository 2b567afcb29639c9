"""The one process launcher of train.py, evaluate.py, generate_submit.py and predict.py.

One process, one process per GPU (``--gpu 0,1``, NCCL), N CPU processes (``--nproc N``, gloo),
or whatever torchrun started (RANK / WORLD_SIZE / LOCAL_RANK).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.multiprocessing as mp

from engine.cli import (
    RUN_STATUS,
    USAGE_STATUS,
    UserError,
    gpu_ids,
    report,
    resolve_device,
    user_errors,
)
from utils.distributed import destroy_process_group, free_port, init_process_group, torchrun_env


def world_layout(args: argparse.Namespace) -> tuple[int, str]:
    """``(processes, how)`` with how in single / torchrun / spawn, from ``--gpu`` and ``--nproc``.

    Raises ``UserError`` for device flags that cannot work (``--nproc`` with GPUs, ``--gpu``
    without CUDA), so that they are reported before any process starts.
    """
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
    env = torchrun_env()
    rank = env[0] if env is not None else local_rank
    try:
        device = process_device(args, local_rank)
        if world_size > 1:
            init_process_group("nccl" if device.type == "cuda" else "gloo", rank, world_size, port)
        worker(args, device)
    except user_errors() as error:
        report(prog, error, rank, RUN_STATUS)
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
    User errors (``engine.cli.user_errors``) end with one ``<prog>: error: ...`` line: exit status
    2 from the checks, 1 from a worker (``engine.cli.fail``).
    """
    env = torchrun_env()
    try:
        world_size, how = world_layout(args)
        if check is not None:
            check(args)
    except user_errors() as error:
        report(prog, error, env[0] if env is not None else 0, USAGE_STATUS)
    if how != "spawn":
        _process(env[2] if env is not None else 0, worker, args, prog, world_size, None)
        return
    try:
        mp.spawn(_process, args=(worker, args, prog, world_size, free_port()), nprocs=world_size)
    except mp.ProcessExitedException as error:
        # The failing process has printed its message already.
        raise SystemExit(
            error.exit_code if error.exit_code and error.exit_code > 0 else RUN_STATUS
        ) from None
