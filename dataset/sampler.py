"""The training sample stream: a sampler that can start at any step, and DataLoader worker setup."""

from __future__ import annotations

import functools
import os
import random
import signal
import threading
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler, get_worker_info

# Signals that ask a training run to checkpoint and stop (``engine.training``); DataLoader
# workers ignore them unless their owner sends them (``init_worker``).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name)
)


class ResumableSampler(Sampler[int]):
    """This rank's share of a shuffled sample stream that can start at any training step.

    Global position ``p`` (sample ``p`` of the run, all ranks together) maps to index
    ``perm_e[p % n]`` with ``e = p // n`` and ``perm_e`` a permutation drawn from ``(seed, e)``
    alone. Step ``s`` uses positions ``s * batch ... s * batch + batch - 1``; rank ``r`` of ``w``
    takes the ``r``-th contiguous slice of ``batch / w``. So the order is a pure function of
    (seed, position): resuming at step ``k`` skips exactly the consumed samples, and the samples
    of a step do not depend on the number of processes sharing it - a run resumed on another
    number of processes (same total batch) continues at the same global position.
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


def _ignore_stop_signals_from_others() -> None:
    """Block ``STOP_SIGNALS`` in this process; a thread takes them: one sent by the parent (a
    DataLoader's ``terminate()``) ends the process as usual, one sent by anyone else is ignored."""
    owner = os.getppid()
    for stop_signal in STOP_SIGNALS:  # not the handler a forked worker inherits from its owner
        signal.signal(stop_signal, signal.SIG_DFL)
    # Threads started later (queue feeders, OpenMP) inherit the mask; a worker has only its main
    # thread when its init function runs.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    def take_signals() -> None:
        while True:
            info = signal.sigwaitinfo(STOP_SIGNALS)
            if info.si_pid == owner:  # let it act as it would have: end the process
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [info.si_signo])
                os.kill(os.getpid(), info.si_signo)

    threading.Thread(target=take_signals, name="stop-signals", daemon=True).start()


def init_worker(worker_id: int, seed: int = 0, epoch: int = 0) -> None:
    """Start of a DataLoader worker: ``seed_worker``, and deaf to other processes' stop signals.

    A scheduler that preempts a job signals every process of it (SIGTERM), DataLoader workers
    included. The process that owns the loader handles the signal: it finishes its step and
    writes a checkpoint (``engine.training``), and for that its workers must live on; killed,
    they would fail the loader at once. Their owner can still end them (``terminate()``), and
    they end when it dies. Outside a worker, or where ``sigwaitinfo`` is missing (macOS,
    Windows), only the seeding happens.
    """
    seed_worker(worker_id, seed=seed, epoch=epoch)
    if get_worker_info() is not None and hasattr(signal, "sigwaitinfo"):
        _ignore_stop_signals_from_others()


def make_worker_init_fn(seed: int, epoch: int = 0):
    """``worker_init_fn`` for a DataLoader of the given run seed and epoch (picklable)."""
    return functools.partial(init_worker, seed=seed, epoch=epoch)
