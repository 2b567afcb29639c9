"""Thin helpers over torch.distributed so single-process code paths need no special cases."""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
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
