"""Saving and loading checkpoints: atomic writes, safe reads, finding the newest one to resume from.

Checkpoints are read with ``torch.load(..., weights_only=True)`` only, so a file can never run code
when loaded; it may hold tensors, numbers, strings, lists and dicts. A file that needs more is
refused with a ``CheckpointError``; there is deliberately no ``weights_only=False`` fallback.
``.safetensors`` files (recognised by their header, whatever their name) are read without any
unpickling: their tensors and header metadata come back as ``{"model": ..., "meta": ...}``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import safetensors
import safetensors.torch
import torch

from utils.fileio import PathLike, atomic_path

CHECKPOINT_PATTERN = re.compile(r"checkpoint_(\d+)\.pth")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, unsafe, or does not fit the model."""


def checkpoint_path(snapshot_dir: PathLike, iteration: int) -> str:
    """The file name training uses for the resumable checkpoint after ``iteration`` steps."""
    return os.path.join(os.fspath(snapshot_dir), f"checkpoint_{int(iteration)}.pth")


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` to a temporary file, then rename onto ``path``: never a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def checkpoints_by_iteration(snapshot_dir: PathLike) -> list[tuple[int, str]]:
    """``(iteration, path)`` of every ``checkpoint_<iteration>.pth`` in ``snapshot_dir``, newest
    first. Temporary files (``.checkpoint_<i>.pth.tmp-...``) never match."""
    snapshot_dir = os.fspath(snapshot_dir)
    if not os.path.isdir(snapshot_dir):
        return []
    found = []
    for name in os.listdir(snapshot_dir):
        match = CHECKPOINT_PATTERN.fullmatch(name)
        path = os.path.join(snapshot_dir, name)
        if match and os.path.isfile(path):
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def latest_checkpoint(snapshot_dir: PathLike) -> str | None:
    """The ``checkpoint_<iteration>.pth`` in ``snapshot_dir`` with the highest iteration, or None.

    A file that is not a complete zip archive (e.g. copied in part) is skipped with a warning so a
    resume falls back to the one before.
    """
    for _, path in checkpoints_by_iteration(snapshot_dir):
        if zipfile.is_zipfile(path):
            return path
        warnings.warn(
            f"skipping incomplete checkpoint {path} (not a complete torch.save archive)",
            stacklevel=2,
        )
    return None


def prune_checkpoints(snapshot_dir: PathLike, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (``keep <= 0`` keeps all)."""
    if keep <= 0:
        return
    for _, path in checkpoints_by_iteration(snapshot_dir)[keep:]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _refusal_reason(error: BaseException) -> str:
    """The part of torch's weights_only refusal that says what was refused, without its advice."""
    lines = []
    for line in str(error).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if not line or "weights_only" in line or line.startswith(("Weights only", "Please file")):
            continue
        if line.startswith("Check the documentation"):
            continue
        lines.append(line)
    return " ".join(lines).rstrip(".") or type(error).__name__


def load_checkpoint(path: PathLike, mmap: bool = False) -> Any:
    """Load a file with ``torch.load(map_location="cpu", weights_only=True)``, or a safetensors
    file with ``load_safetensors``. ``mmap=True`` maps a zip-format file's tensors instead of
    reading them (for a look at its ``meta``).

    A missing, truncated or corrupt file, or one holding objects that ``weights_only`` refuses
    (arbitrary classes or functions, which could run code), raises one ``CheckpointError`` naming the
    path and the cause.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} is not a file")
    if is_safetensors(path):
        return load_safetensors(path)
    try:
        # mmap (zip archives only) maps the tensors lazily: a cheap look at the other entries.
        mmap = mmap and zipfile.is_zipfile(path)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:
        if isinstance(error, pickle.UnpicklingError) and str(error).startswith("Weights only"):
            raise CheckpointError(
                f"checkpoint {path} was refused by torch.load(weights_only=True): it holds objects "
                f"other than tensors, numbers, strings, lists and dicts ({_refusal_reason(error)}); "
                "it is not loaded because unpickling such objects can run arbitrary code"
            ) from None
        message = str(error).split(". ")[0].rstrip(".")
        detail = f"{type(error).__name__}: {message}" if message else type(error).__name__
        raise CheckpointError(
            f"checkpoint {path} could not be read; it is truncated or corrupt ({detail})"
        ) from None


# --- safetensors ----------------------------------------------------------------------------------

SAFETENSORS_SUFFIX = ".safetensors"


def is_safetensors(path: PathLike) -> bool:
    """A ``.safetensors`` name, or a safetensors header: 8-byte little-endian length, then ``{``.

    torch.save archives start with ``PK`` (zip) or a pickle opcode, never like that.
    """
    path = os.fspath(path)
    if path.endswith(SAFETENSORS_SUFFIX):
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return int.from_bytes(head[:8], "little") <= os.path.getsize(path) - 8


def load_safetensors(path: PathLike) -> dict[str, Any]:
    """``{"model": tensors, "meta": header metadata (str -> str)}`` of a safetensors file.

    The format holds only tensors and a string table, so nothing is unpickled.
    """
    path = os.fspath(path)
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as archive:
            meta = dict(archive.metadata() or {})
        tensors = safetensors.torch.load_file(path, device="cpu")
    except Exception as error:
        message = str(error).split(". ")[0].rstrip(".") or type(error).__name__
        raise CheckpointError(
            f"checkpoint {path} could not be read as safetensors; it is truncated or corrupt "
            f"({message})"
        ) from None
    return {"model": tensors, "meta": meta}


def save_safetensors(
    tensors: Mapping[str, torch.Tensor], path: PathLike, meta: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` and the string table ``meta`` as safetensors, atomically.

    Every tensor gets its own contiguous CPU copy: safetensors refuses tensors that share
    memory, such as OCNet's key projection saved under both ``f_key`` and ``f_query``.
    """
    copies = {str(k): v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(copies, tmp, metadata=dict(meta or {}))
