"""The one process launcher of train.py, evaluate.py, generate_submit.py and predict.py.

One process, one process per GPU (``--gpu 0,1``, NCCL), N CPU processes (``--nproc N``, gloo),
whatever torchrun started (RANK / WORLD_SIZE / LOCAL_RANK), or the tasks of ``srun``
(SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, rendezvous on the first node of the job; see
``utils.distributed.launcher_env``).

``--dist-timeout`` bounds every collective: a rank that died or hangs makes the others end with
one line naming it and what they were doing (``describe_collective_failure``) and status 1, which
torchrun (``--max-restarts``) and SLURM see.

Exit statuses: 0 done; ``USAGE_STATUS`` (2) the command cannot run as given; ``RUN_STATUS`` (1)
a started run failed; ``PREEMPTED_STATUS`` (75) training stopped on SIGTERM / SIGUSR1 after
writing a checkpoint, continue with ``--resume``; 128 + N a process was killed by signal N.
"""

from __future__ import annotations

import argparse
import multiprocessing.connection
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable

import torch
import torch.multiprocessing as mp

from dataset.sampler import STOP_SIGNALS
from engine.cli import (
    RUN_STATUS,
    USAGE_STATUS,
    UserError,
    gpu_ids,
    report,
    resolve_device,
    user_errors,
)
from utils.distributed import (
    describe_collective_failure,
    destroy_process_group,
    free_port,
    init_process_group,
    is_collective_failure,
    launcher_env,
)

# sysexits.h EX_TEMPFAIL ("temporary failure; the user is invited to retry"): training stopped on
# a stop signal after a checkpoint was written; the same command with --resume continues it.
PREEMPTED_STATUS = 75
# After one process fails, how long the others may take to end by themselves before they are killed.
FAILURE_GRACE_S = 5.0


def world_layout(args: argparse.Namespace) -> tuple[int, str]:
    """``(processes, how)`` with how in single / torchrun / slurm / spawn, from the launcher's
    environment, ``--gpu`` and ``--nproc``.

    Raises ``UserError`` for device flags that cannot work (``--nproc`` with GPUs, ``--gpu``
    without CUDA), so that they are reported before any process starts.
    """
    env = launcher_env()
    ids = gpu_ids(args)
    if env is None and args.nproc > 1 and ids:
        raise UserError("--nproc is for CPU processes; with GPUs list them in --gpu instead")
    device = resolve_device(args)
    if env is not None:
        return env.world_size, env.launcher
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
    env = launcher_env()
    rank = env.rank if env is not None else local_rank
    try:
        device = process_device(args, local_rank)
        if world_size > 1:
            backend = "nccl" if device.type == "cuda" else "gloo"
            timeout = getattr(args, "dist_timeout", None)
            init_process_group(backend, rank, world_size, port, timeout)
        worker(args, device)
    except user_errors() as error:
        report(prog, error, rank, RUN_STATUS)
    except Exception as error:
        if not is_collective_failure(error):
            raise
        report(prog, UserError(describe_collective_failure(error)), rank, RUN_STATUS)
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
    (gloo); under torchrun RANK / WORLD_SIZE / LOCAL_RANK are honoured, under ``srun`` the SLURM
    task variables. The device flags, then
    ``check(args)``, are checked first in the launching process, so that common mistakes are found
    before any work and reported once.
    User errors (``engine.cli.user_errors``) end with one ``<prog>: error: ...`` line: exit status
    2 from the checks, 1 from a worker (``engine.cli.fail``).
    """
    env = launcher_env()
    try:
        world_size, how = world_layout(args)
        if check is not None:
            check(args)
    except user_errors() as error:
        report(prog, error, env.rank if env is not None else 0, USAGE_STATUS)
    if how != "spawn":
        _process(env.local_rank if env is not None else 0, worker, args, prog, world_size, None)
        return
    quiet_resource_tracker()
    context = mp.start_processes(
        _process,
        args=(worker, args, prog, world_size, free_port()),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    status = supervise(context)
    if status:
        raise SystemExit(status)


# multiprocessing's resource tracker warns at exit about the semaphores of a child that was
# killed (SIGKILL from outside, or by ``supervise``) and unlinks them; after the run's one error
# line that warning is noise. The tracker is its own process and reads PYTHONWARNINGS.
_TRACKER_FILTER = "ignore:resource_tracker:UserWarning"


def quiet_resource_tracker() -> None:
    """Silence the resource tracker's leaked-semaphore warning (before it starts)."""
    filters = [f for f in os.environ.get("PYTHONWARNINGS", "").split(",") if f]
    if _TRACKER_FILTER not in filters:
        os.environ["PYTHONWARNINGS"] = ",".join([*filters, _TRACKER_FILTER])


def _exit_status(exitcode: int) -> int:
    """A process's exit code as a shell reports it (killed by signal N: 128 + N)."""
    return 128 - exitcode if exitcode < 0 else exitcode


def supervise(context: mp.ProcessContext) -> int:
    """Wait for the spawned processes and return the exit status of the whole.

    Stop signals (SIGTERM, SIGUSR1) sent to this process are passed on to every child, which
    decide together when to stop; children that stopped so (``PREEMPTED_STATUS``) are waited for.
    When a child fails, the others get ``FAILURE_GRACE_S`` to end by themselves, then are killed:
    they may be blocked in a collective that can no longer complete. Of the failed children, one
    that reported a user error (its one line is printed) is the cause; others that died of it,
    e.g. of the broken connection, are not. A child that raised an unexpected exception (a bug)
    has its traceback re-raised here.
    """

    def forward(signum: int, frame) -> None:
        for process in context.processes:
            if process.is_alive():
                os.kill(process.pid, signum)

    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
    try:
        pending = {p.sentinel: rank for rank, p in enumerate(context.processes)}
        finished: list[int] = []  # ranks in the order they ended
        deadline = None
        while pending:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                break
            for sentinel in multiprocessing.connection.wait(list(pending), timeout):
                finished.append(pending.pop(sentinel))
                context.processes[finished[-1]].join()
            if deadline is None and _failures(context, finished):
                deadline = time.monotonic() + FAILURE_GRACE_S
        for rank in pending.values():  # killed: they are not failures of their own
            context.processes[rank].kill()
            context.processes[rank].join()
        return _outcome(context, finished)
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)
        sys.stderr.flush()


def _failures(context: mp.ProcessContext, ranks: list[int]) -> list[int]:
    return [
        rank
        for rank in ranks
        if _exit_status(context.processes[rank].exitcode) not in (0, PREEMPTED_STATUS)
    ]


def _outcome(context: mp.ProcessContext, finished: list[int]) -> int:
    """The exit status of the children that ended by themselves, in that order (``supervise``)."""
    failures = _failures(context, finished)
    if not failures:
        return max((_exit_status(context.processes[r].exitcode) for r in finished), default=0)
    crashed = [rank for rank in failures if os.path.exists(context.error_files[rank])]
    reported = [rank for rank in failures if rank not in crashed]
    if reported:  # a user error, whose line is printed; the crashes followed from it
        return _exit_status(context.processes[reported[0]].exitcode)
    rank = crashed[0]  # the first to crash
    with open(context.error_files[rank], "rb") as handle:
        trace = pickle.load(handle)
    raise mp.ProcessRaisedException(
        f"\n\n-- process {rank} failed with:\n{trace}", rank, context.processes[rank].pid
    )
