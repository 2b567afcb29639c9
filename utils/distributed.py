"""Thin helpers over torch.distributed so single-process code paths need no special cases.

Also what a launcher tells a process (``launcher_env``: torchrun's RANK / WORLD_SIZE, or SLURM's
SLURM_PROCID / SLURM_NTASKS under ``srun``), and what a survivor can say when another rank stops
answering (``describe_collective_failure``).
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


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


@dataclass(frozen=True)
class LauncherEnv:
    """Where a launcher put this process: its rank, the number of processes, its rank on the node."""

    rank: int
    world_size: int
    local_rank: int
    launcher: str  # "torchrun" (or any env:// launcher) or "slurm"


# MASTER_PORT under SLURM when it is not set: 15000 + SLURM_JOB_ID % 20000, so that two jobs
# sharing a node (and a job and its requeued self, whose old port may linger) rarely collide.
SLURM_PORT_BASE = 15000
SLURM_PORT_SPAN = 20000


def launcher_env(environ: dict[str, str] | None = None) -> LauncherEnv | None:
    """The process's place in a job started by torchrun or by ``srun``, or None.

    torchrun (and any env:// launcher) sets RANK / WORLD_SIZE / LOCAL_RANK, which win. Under
    ``srun`` without torchrun, SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID say the same; a job of
    one task is one process (None), so that ``--gpu`` / ``--nproc`` still spawn inside it.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        rank = int(env["RANK"])
        return LauncherEnv(
            rank, int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", rank)), "torchrun"
        )
    if all(name in env for name in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")):
        tasks = int(env["SLURM_NTASKS"])
        if tasks > 1:
            return LauncherEnv(int(env["SLURM_PROCID"]), tasks, int(env["SLURM_LOCALID"]), "slurm")
    return None


def elastic_restart() -> int:
    """How many times torchrun's elastic agent restarted this group (0: the first start)."""
    value = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return int(value) if value.isdigit() else 0


def slurm_rendezvous(environ: dict[str, str] | None = None) -> tuple[str, int]:
    """``(MASTER_ADDR, MASTER_PORT)`` of a SLURM job: the first host of its node list (unless
    MASTER_ADDR is set) and MASTER_PORT, or ``SLURM_PORT_BASE + SLURM_JOB_ID % SLURM_PORT_SPAN``,
    or 29500 without a job id."""
    env = os.environ if environ is None else environ
    address = env.get("MASTER_ADDR")
    if not address:
        nodelist = next(
            (env[name] for name in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
             if env.get(name)),
            None,
        )  # fmt: skip
        address = expand_nodelist(nodelist)[0] if nodelist else "127.0.0.1"
    port = env.get("MASTER_PORT")
    if port:
        return address, int(port)
    job = env.get("SLURM_JOB_ID", "")
    return address, SLURM_PORT_BASE + int(job) % SLURM_PORT_SPAN if job.isdigit() else 29500


def _split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for position, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:position])
            start = position + 1
    parts.append(text[start:])
    return [part for part in parts if part]


def _expand_ranges(body: str) -> list[str]:
    """``01-03,07`` -> ``01 02 03 07``; a range keeps the width of its first number."""
    values = []
    for item in body.split(","):
        low, _, high = item.partition("-")
        if not high:
            values.append(low)
            continue
        if not (low.isdigit() and high.isdigit()) or int(high) < int(low):
            raise ValueError(f"bad range {item!r}")
        values.extend(str(n).zfill(len(low)) for n in range(int(low), int(high) + 1))
    return values


def expand_nodelist(nodelist: str) -> list[str]:
    """The host names of a SLURM node list, in order: ``node[01-03,07]`` -> node01 .. node07.

    SLURM's hostlist forms: plain names (``node01``), comma-separated names and lists
    (``a[1-2],b3``), bracketed numbers and ranges anywhere in a name (``rack1-node[001-003]``,
    ``n[1-2]-ib``), several brackets in one name (``r[1-2]n[1-2]``: every combination,
    the last bracket varying fastest); ranges keep their leading zeros.
    """
    hosts: list[str] = []
    for name in _split_top_level(nodelist.strip()):
        pieces = [[""]]
        rest = name
        while rest:
            opening = rest.find("[")
            if opening < 0:
                pieces.append([rest])
                break
            closing = rest.find("]", opening)
            if closing < 0:
                raise ValueError(f"unbalanced '[' in node list {nodelist!r}")
            pieces.append([rest[:opening]])
            pieces.append(_expand_ranges(rest[opening + 1 : closing]))
            rest = rest[closing + 1 :]
        if "]" in "".join(p[0] for p in pieces if len(p) == 1):
            raise ValueError(f"unbalanced ']' in node list {nodelist!r}")
        names = [""]
        for choices in pieces:
            names = [prefix + choice for prefix in names for choice in choices]
        hosts.extend(names)
    return hosts


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago (for single-node spawning)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# torch's own defaults, for the messages (torch.distributed.constants).
DEFAULT_TIMEOUT_S = {"gloo": 1800.0, "nccl": 600.0}
_group_timeout_s: float | None = None


def init_process_group(
    backend: str,
    rank: int,
    world_size: int,
    port: int | None = None,
    timeout_s: float | None = None,
) -> None:
    """Join the default group over env:// : localhost on ``port`` (spawned ranks), SLURM's first
    node (``slurm_rendezvous``) under srun, else MASTER_ADDR / MASTER_PORT as torchrun set them.

    ``timeout_s`` (``--dist-timeout``) bounds how long a collective waits for a rank that died or
    hangs; None keeps torch's default (``DEFAULT_TIMEOUT_S``).
    """
    global _group_timeout_s
    if port is not None:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
    elif (env := launcher_env()) is not None and env.launcher == "slurm":
        address, slurm_port = slurm_rendezvous()
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = address, str(slurm_port)
    extra = {} if timeout_s is None else {"timeout": datetime.timedelta(seconds=timeout_s)}
    store = _incarnation_store(world_size, timeout_s) if port is None else None
    if store is not None:
        extra["store"] = store
    else:
        extra["init_method"] = "env://"
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **extra)
    _group_timeout_s = timeout_s if timeout_s is not None else DEFAULT_TIMEOUT_S.get(backend)


def _incarnation_store(world_size: int, timeout_s: float | None) -> dist.Store | None:
    """Under torchrun's agent store, the store of this incarnation of the group only, or None.

    torchrun's workers all meet in the agent's TCPStore, which outlives a restart of the group
    (``--max-restarts``); torch's env:// joins it without a per-restart prefix, so a restarted
    rank can read the gloo / NCCL addresses its dead predecessors left there and never connect.
    The prefix ``/worker/attempt_<TORCHELASTIC_RESTART_COUNT>`` (torch's own rule up to 2.0)
    gives every incarnation keys of its own.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    timeout = datetime.timedelta(seconds=timeout_s if timeout_s is not None else 1800.0)
    agent_store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=False,
        timeout=timeout,
    )
    return dist.PrefixStore(f"/worker/attempt_{elastic_restart()}", agent_store)


def destroy_process_group() -> None:
    if is_dist():
        dist.destroy_process_group()


# What this process is doing in the group, for the message when a collective fails.
_phase = "a collective operation"


def set_phase(text: str) -> None:
    """Name what the next collectives are part of, e.g. "the gradient all-reduce at iteration 3"."""
    global _phase
    _phase = text


# How gloo and NCCL word a peer that died or did not answer.
_PEER_FAILURE = ("gloo/transport", "Connection reset", "Connection closed", "Timed out", "NCCL")


def is_collective_failure(error: BaseException) -> bool:
    """True for the error a collective raises when another rank died or stopped answering."""
    if not is_dist() or get_world_size() < 2:
        return False
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    return isinstance(error, RuntimeError) and any(s in str(error) for s in _PEER_FAILURE)


def describe_collective_failure(error: BaseException) -> str:
    """One line for a failed collective: which rank, how, and what this process was doing.

    The rank is named when it can be told: with two processes it is the other one; with more,
    gloo and NCCL do not say which peer failed, so the line says "another rank".
    """
    rank, world_size = get_rank(), get_world_size()
    peer = f"rank {1 - rank}" if world_size == 2 else "another rank"
    text = str(error)
    if "timed out" in text.lower() or "timeout" in text.lower():
        limit = f"{_group_timeout_s:g} s" if _group_timeout_s is not None else "the timeout"
        return f"{peer} did not answer within {limit} during {_phase}"
    return f"{peer} was lost (its connection closed) during {_phase}"
