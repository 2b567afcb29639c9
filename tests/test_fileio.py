"""Atomic writes (utils.fileio) and checkpoint files on disk (utils.checkpoint)."""

from __future__ import annotations

import os
import re

import pytest
import torch

from utils import fileio
from utils.checkpoint import (
    atomic_save,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
)
from utils.fileio import atomic_path, atomic_write


class Unpicklable:
    """Raises while being pickled: a save that fails after the file was opened and written to."""

    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_atomic_write_creates_and_replaces(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write(str(target), b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_temporary_path_is_beside_target_and_hidden_from_suffix_globs(tmp_path):
    target = tmp_path / "model.pth"
    with atomic_path(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path)
        name = os.path.basename(tmp)
        assert re.fullmatch(rf"\.model\.pth\.tmp-{os.getpid()}-[0-9a-f]{{8}}", name), name
        assert not name.endswith(".pth")
        with open(tmp, "wb") as f:
            f.write(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert os.listdir(tmp_path) == ["model.pth"]


def test_two_writers_get_different_temporary_paths(tmp_path):
    with atomic_path(tmp_path / "a.pth") as first, atomic_path(tmp_path / "a.pth") as second:
        assert first != second
        for path in (first, second):
            with open(path, "wb") as f:
                f.write(b"x")


def test_failure_keeps_old_file_and_removes_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_bytes(b"old content")
    with pytest.raises(ValueError, match="boom"), atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"half of the new")
        raise ValueError("boom")
    assert target.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_nothing_written_is_an_error_and_leaves_target(tmp_path):
    target = tmp_path / "t.bin"
    target.write_bytes(b"old")
    with pytest.raises(FileNotFoundError, match="nothing was written for"), atomic_path(target):
        pass
    assert target.read_bytes() == b"old"


def test_missing_folder_is_named(tmp_path):
    folder = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError) as info:
        atomic_write(folder / "x.pth", b"1")
    assert str(info.value) == f"cannot write {folder / 'x.pth'}: folder {folder} does not exist"


def test_unwritable_folder_is_named(tmp_path, monkeypatch):
    # Tests may run as root, for whom every folder is writable: make the check see a read-only one.
    monkeypatch.setattr(fileio.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError) as info:
        atomic_write(tmp_path / "x.pth", b"1")
    assert (
        str(info.value) == f"cannot write {tmp_path / 'x.pth'}: folder {tmp_path} is not writable"
    )
    assert os.listdir(tmp_path) == []


def test_atomic_save_round_trip_leaves_no_temporary(tmp_path):
    target = tmp_path / "checkpoint_3.pth"
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "iteration": 3, "args": {"lr": 0.01}}
    atomic_save(state, target)
    assert os.listdir(tmp_path) == ["checkpoint_3.pth"]
    loaded = load_checkpoint(target)
    assert loaded["iteration"] == 3 and loaded["args"] == {"lr": 0.01}
    assert torch.equal(loaded["model"]["w"], torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]))


def test_atomic_save_failing_midway_keeps_old_checkpoint(tmp_path):
    target = tmp_path / "checkpoint_1.pth"
    atomic_save({"w": torch.ones(3)}, target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="cannot pickle this"):
        atomic_save({"w": torch.zeros(1000), "bad": Unpicklable()}, target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint_1.pth"]
    assert torch.equal(load_checkpoint(target)["w"], torch.ones(3))


def test_checkpoint_path_names_the_iteration(tmp_path):
    assert checkpoint_path(tmp_path, 2500) == os.path.join(str(tmp_path), "checkpoint_2500.pth")


def test_latest_checkpoint_orders_by_iteration_and_ignores_other_files(tmp_path):
    for iteration in (5, 40, 100):
        atomic_save({"iteration": iteration}, checkpoint_path(tmp_path, iteration))
    # Leftovers of interrupted saves, the final plain model, and unrelated files.
    (tmp_path / f".checkpoint_200.pth.tmp-{os.getpid()}-0a1b2c3d").write_bytes(b"partial")
    (tmp_path / "checkpoint_300.pth.tmp").write_bytes(b"partial")
    (tmp_path / "checkpoint_x.pth").write_bytes(b"?")
    (tmp_path / "CS_scenes_400.pth").write_bytes(b"?")
    (tmp_path / "checkpoint_900.pth").mkdir()
    # 100 > 40 numerically even though "100" < "40" as text.
    assert latest_checkpoint(tmp_path) == os.path.join(str(tmp_path), "checkpoint_100.pth")


def test_latest_checkpoint_skips_incomplete_file(tmp_path):
    atomic_save({"iteration": 10}, checkpoint_path(tmp_path, 10))
    atomic_save({"w": torch.zeros(100)}, checkpoint_path(tmp_path, 20))
    full = open(checkpoint_path(tmp_path, 20), "rb").read()
    with open(checkpoint_path(tmp_path, 20), "wb") as f:
        f.write(full[: len(full) // 2])
    with pytest.warns(UserWarning, match="skipping incomplete checkpoint .*checkpoint_20.pth"):
        assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 10)


def test_latest_checkpoint_none_when_nothing_to_resume(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None


def test_prune_keeps_the_newest_checkpoints_only(tmp_path):
    for iteration in (2, 10, 4, 6):
        atomic_save({"iteration": iteration}, checkpoint_path(tmp_path, iteration))
    others = [tmp_path / "CS_scenes_10.pth", tmp_path / ".checkpoint_12.pth.tmp-1-ab"]
    for other in others:
        other.write_bytes(b"x")
    prune_checkpoints(tmp_path, keep=0)  # 0 keeps everything
    assert len(list(tmp_path.glob("checkpoint_*.pth"))) == 4
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*.pth")) == [
        "checkpoint_10.pth",
        "checkpoint_6.pth",
    ]
    assert all(other.exists() for other in others)
