"""The training sample stream: a sampler that can start at any step, and DataLoader worker seeding."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


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


def seed_worker(worker_id: int, seed: int = 0, epoch: int = 0) -> None:
    """Seed Python, numpy and torch in a DataLoader worker from (seed, epoch, worker id).

    Augmentation itself draws from per-sample generators; this covers any other randomness a
    worker might use, so two runs with one seed behave identically.
    """
    state = np.random.SeedSequence([seed, epoch, worker_id])
    words = state.generate_state(2, dtype=np.uint32)
    random.seed(int(words[0]))
    np.random.seed(int(words[0]))
    torch.manual_seed(int(words[0]) << 32 | int(words[1]))


def make_worker_init_fn(seed: int, epoch: int = 0):
    """``worker_init_fn`` for a DataLoader of the given run seed and epoch (picklable)."""
    return functools.partial(seed_worker, seed=seed, epoch=epoch)
