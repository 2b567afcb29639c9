"""One process at a time per folder: an advisory lock file that dies with its process.

``FolderLock(folder)`` takes ``fcntl.flock`` on ``<folder>/.lock`` and writes its process id and
host into it. The kernel releases a flock when the process ends in any way (exit, crash, kill -9,
power loss), so a lock file left behind by a dead process never blocks: the file only says who
held it last. Where ``flock`` is not available (Windows) or not supported by the file system, the
recorded process id is checked instead (a live process holds the folder; one recorded by another
host counts as live, since it cannot be checked from here).

The lock belongs to a job, not to one incarnation of it: the lock file also records the job
(``current_job``: the SLURM job id, torchrun's run id or its agent). A process of the same job
that finds the folder held (a restarted torchrun group, a requeued SLURM job) waits up to
``SAME_JOB_WAIT_S`` for what is left of the previous incarnation, e.g. DataLoader workers that
inherited the lock and notice their parent's death within seconds, then takes the lock over; a
process of another job is refused at once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".lock"
# flock on a file system that cannot do it.
UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
# How long a process waits for a lock its own job holds (see the module docstring).
SAME_JOB_WAIT_S = 30.0


def current_job() -> str | None:
    """What identifies the job this process belongs to across restarts, or None.

    ``slurm:<SLURM_JOB_ID>`` (a requeued job keeps its id); under torchrun
    ``torchelastic:<TORCHELASTIC_RUN_ID>`` (``--rdzv-id``), or, when it is the default ``none``,
    ``torchrun:<host>:<agent pid>`` (the agent is the workers' parent and outlives restarts).
    """
    if os.environ.get("SLURM_JOB_ID"):
        return "slurm:" + os.environ["SLURM_JOB_ID"]
    if "TORCHELASTIC_RESTART_COUNT" not in os.environ:
        return None
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if run_id and run_id != "none":
        return "torchelastic:" + run_id
    return f"torchrun:{socket.gethostname()}:{os.getppid()}"


class FolderLockedError(RuntimeError):
    """Another live process holds the folder; the message names the folder and that process."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _read_owner(path: str) -> tuple[int | None, str, str | None]:
    """``(pid, host, job)`` recorded in a lock file, ``(None, "", None)`` if it holds none."""
    with contextlib.suppress(OSError, ValueError):
        with open(path, encoding="utf-8") as handle:
            fields = handle.read().split()
        if fields:
            host = fields[1] if len(fields) > 1 else ""
            return int(fields[0]), host, fields[2] if len(fields) > 2 else None
    return None, "", None


class FolderLock:
    """Exclusive use of ``folder`` by this process while held (``acquire`` / ``release``, or
    ``with``). ``what`` names the folder in the error, e.g. ``"--snapshot-dir runs/a"``; ``job``
    (default ``current_job()``) is the job the lock belongs to."""

    def __init__(
        self, folder: str | os.PathLike, what: str | None = None, job: str | None = "auto"
    ) -> None:
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self.what = what or self.folder
        self.job = current_job() if job == "auto" else job
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _refuse(self) -> None:
        pid, host, _ = _read_owner(self.path)
        if pid is None:
            owner = "another process"
        else:
            owner = f"process {pid}" + (f" on {host}" if host else "")
        raise FolderLockedError(
            f"{self.what} is in use by another run ({owner}); "
            "wait for it to end or use another folder"
        )

    def acquire(self) -> None:
        """Take the lock or raise ``FolderLockedError`` at once (never waits)."""
        if self.held:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = self._flock(fd)
            if not locked and self._same_job():
                deadline = time.monotonic() + SAME_JOB_WAIT_S
                while not locked and time.monotonic() < deadline:
                    time.sleep(0.2)
                    locked = self._flock(fd)
            if not locked:
                self._refuse()
            os.ftruncate(fd, 0)
            job = f" {self.job}" if self.job else ""
            os.write(fd, f"{os.getpid()} {socket.gethostname()}{job}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _same_job(self) -> bool:
        return self.job is not None and _read_owner(self.path)[2] == self.job

    def _flock(self, fd: int) -> bool:
        """True when the lock is ours; False when another process holds it."""
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
            except OSError as error:
                if error.errno not in UNSUPPORTED:
                    raise
        # No flock: the recorded process holds the folder while it lives (on another host that
        # cannot be checked, so it counts as alive).
        pid, host, job = _read_owner(self.path)
        if pid is None or (pid == os.getpid() and host == socket.gethostname()):
            return True
        if self.job is not None and job == self.job:  # an earlier incarnation of this job
            return True
        if host and host != socket.gethostname():
            return False
        return not _process_alive(pid)

    def release(self) -> None:
        """Give the folder up (the file stays, emptied: removing it would race a new owner)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
