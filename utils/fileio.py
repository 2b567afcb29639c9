"""Atomic file writes: a crash or error mid-write never leaves a half-written file behind.

Data goes to a temporary file in the destination folder, is flushed to disk, and is then renamed onto
the destination with ``os.replace`` (atomic on POSIX and Windows within one file system). The
temporary name starts with a dot and ends in ``.tmp-<pid>-<random>``, so it never matches a pattern
such as ``*.pth`` and concurrent writers (DDP ranks, two runs) never share one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

PathLike = str | os.PathLike


def check_writable_folder(path: PathLike) -> str:
    """Return the absolute folder that will hold ``path``; raise a clear error if unusable."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {os.fspath(path)}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {os.fspath(path)}: folder {folder} is not writable")
    return folder


def temporary_name(path: PathLike) -> str:
    """A fresh temporary path beside ``path`` whose name does not end in ``path``'s suffix."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _fsync(path: str, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if directory:  # Windows cannot open a folder; the rename is still atomic there.
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed.

    The file is fsynced before the rename (and the folder after it) so that after a power cut the
    destination holds either the old or the new content, never a truncated one.
    """
    path = os.fspath(path)
    folder = check_writable_folder(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if not os.path.isfile(tmp):
            raise FileNotFoundError(f"nothing was written for {path} (expected {tmp})")
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync(folder, directory=True)


def atomic_write(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
