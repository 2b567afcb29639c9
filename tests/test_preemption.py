"""Faults a cluster causes: preemption signals, two runs on one folder, a changed process count.

Real processes where it matters: train.py is started as a subprocess, signalled from here and
resumed; the reference is always an uninterrupted run with the same flags.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import (
    REPO,
    assert_same_weights,
    cli,
    final_weights,
    metrics,
    run_main,
    write_scenes,
)

import utils.lock
from engine.launch import PREEMPTED_STATUS
from engine.training import StopRequest, agree_to_stop
from utils.checkpoint import load_checkpoint
from utils.lock import FolderLock, FolderLockedError


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, "train", 4, seed=1)
    return root


def start_train(argv: list[str], **env: str) -> subprocess.Popen:
    """train.py in its own process group, as a scheduler sees a job."""
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *argv],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"train.py ended before {what}: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def logged_iterations(snapshot: Path) -> int:
    path = snapshot / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def temporary_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".tmp-" in p.name]


# ------------------------------------------------------------------------------------------------
# Preemption


@pytest.mark.slow
def test_sigterm_mid_run_checkpoints_and_resume_is_bit_exact(data, tmp_path):
    steps = ["--num-steps", "8", "--save-pred-every", "100"]
    reference = tmp_path / "reference"
    run_main(cli(data, reference, *steps))

    snapshot = tmp_path / "preempted"
    argv = cli(data, snapshot, *steps, "--workers", "2")
    # A second SIGTERM arrives while the checkpoint is written (test hook, see train.py --help).
    proc = start_train(argv, OCNET_FAULT_SIGNAL_IN_SAVE="1")
    wait_for(lambda: logged_iterations(snapshot) >= 2, proc, "iteration 2")
    # The whole process group, DataLoader workers included, as a scheduler does.
    os.killpg(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == PREEMPTED_STATUS, stderr[-2000:]
    assert "Traceback" not in stderr
    found = re.search(r"stopped by SIGTERM after iteration (\d+)/8; checkpoint (\S+); ", stderr)
    assert found, stderr[-2000:]
    stopped_at = int(found.group(1))
    assert 2 <= stopped_at < 8
    saved = snapshot / f"checkpoint_{stopped_at}.pth"
    assert found.group(2) == str(saved)
    command = stderr[found.end() :].splitlines()[0]
    assert command == "to continue: " + shlex.join(
        ["python", str(REPO / "train.py"), *argv, "--resume"]
    )
    assert sorted(p.name for p in snapshot.glob("*.pth")) == [saved.name]
    assert not temporary_files(snapshot)
    assert load_checkpoint(saved)["iteration"] == stopped_at
    assert logged_iterations(snapshot) == stopped_at

    run_main([*argv, "--resume"])
    assert_same_weights(final_weights(snapshot, 8), final_weights(reference, 8))
    assert metrics(snapshot) == metrics(reference)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_is_noted_once_and_the_handlers_come_back(stop_signal):
    before = signal.getsignal(stop_signal)
    with StopRequest() as stop:
        assert not agree_to_stop(stop, torch.device("cpu"))
        os.kill(os.getpid(), stop_signal)
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal changes nothing
        assert stop.name == stop_signal.name
        assert agree_to_stop(stop, torch.device("cpu"))
    assert signal.getsignal(stop_signal) == before


@pytest.mark.slow
def test_sigusr1_to_the_launcher_stops_every_process_at_one_iteration(data, tmp_path):
    """--nproc 2: the launching process passes the signal on; rank 0 writes the checkpoint."""
    snapshot = tmp_path / "snap"
    argv = cli(data, snapshot, "--num-steps", "30", "--save-pred-every", "100", "--nproc", "2")
    proc = start_train(argv)
    wait_for(lambda: logged_iterations(snapshot) >= 2, proc, "iteration 2")
    os.kill(proc.pid, signal.SIGUSR1)  # the launcher only
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == PREEMPTED_STATUS, stderr[-2000:]
    assert "Traceback" not in stderr
    found = re.search(r"stopped by SIGUSR1 after iteration (\d+)/30; ", stderr)
    assert found, stderr[-2000:]
    saved = snapshot / f"checkpoint_{found.group(1)}.pth"
    assert sorted(snapshot.glob("*.pth")) == [saved]
    checkpoint = load_checkpoint(saved)
    assert checkpoint["rng"]["world_size"] == 2
    assert checkpoint["iteration"] == int(found.group(1)) == logged_iterations(snapshot)


def sample_stream(folder: Path) -> dict[int, list[int]]:
    """Iteration -> the step's sample indices, ranks in order (test hook records)."""
    stream: dict[int, list[int]] = {}
    for rank_file in sorted(folder.glob("rank*.jsonl")):
        for line in rank_file.read_text().splitlines():
            record = json.loads(line)
            stream.setdefault(record["iteration"], []).extend(record["indices"])
    return stream


@pytest.mark.slow
@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_resume_on_another_number_of_processes_continues_the_sample_stream(
    data, tmp_path, monkeypatch, before, after
):
    """Stopped at step 3 of 6 (mid-epoch: 4 samples x 3 repeats = 12 positions, 2 per step),
    then resumed on another number of gloo processes."""
    steps = ["--num-steps", "6", "--save-pred-every", "100"]
    monkeypatch.setenv("OCNET_DEBUG_SAMPLES_DIR", str(tmp_path / "reference_samples"))
    run_main(cli(data, tmp_path / "reference", *steps))
    expected = sample_stream(tmp_path / "reference_samples")
    assert sorted(i for step in expected.values() for i in step) == list(range(12))

    snapshot, samples = tmp_path / "run", tmp_path / "samples"
    monkeypatch.setenv("OCNET_DEBUG_SAMPLES_DIR", str(samples))
    monkeypatch.setenv("OCNET_FAULT_SIGNAL_AT", "3")  # rank 0 only: the others learn it
    with pytest.raises(SystemExit) as stopped:
        run_main(cli(data, snapshot, *steps, "--nproc", str(before)))
    assert stopped.value.code == PREEMPTED_STATUS
    # Every process stopped after step 3.
    for rank in range(before):
        iterations = [json.loads(x)["iteration"] for x in open(samples / f"rank{rank}.jsonl")]
        assert iterations == [1, 2, 3]
    assert load_checkpoint(snapshot / "checkpoint_3.pth")["rng"]["world_size"] == before

    monkeypatch.delenv("OCNET_FAULT_SIGNAL_AT")
    run_main(cli(data, snapshot, *steps, "--nproc", str(after), "--resume"))
    # Same samples in the same steps: none repeated, none skipped.
    assert sample_stream(samples) == expected
    log = (snapshot / "train.log").read_text()
    assert (
        f"warning: --resume: {snapshot / 'checkpoint_3.pth'} was written by {before} process(es), "
        f"this run has {after}: continuing at sample 6 of the same sample stream, but the run is "
        "no longer bit-exact" in log
    )
    assert [r["iteration"] for r in metrics(snapshot)] == list(range(1, 7))


# ------------------------------------------------------------------------------------------------
# One run per snapshot folder


@pytest.mark.slow
def test_a_second_run_on_a_snapshot_dir_stops_at_once_and_a_dead_one_does_not_block(data, tmp_path):
    snapshot = tmp_path / "snap"
    first = start_train(cli(data, snapshot, "--num-steps", "500", "--save-pred-every", "1000"))
    lock = snapshot / ".lock"
    wait_for(
        lambda: lock.exists() and lock.read_text().startswith(f"{first.pid} "),
        first,
        "the lock",
    )
    second = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *cli(data, snapshot, "--num-steps", "2")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 2
    assert second.stderr.splitlines() == [
        f"train.py: error: --snapshot-dir {snapshot} is in use by another run (process "
        f"{first.pid} on {os.uname().nodename}); wait for it to end or use another folder"
    ]
    assert first.poll() is None  # the first run goes on

    first.kill()  # kill -9: the lock file stays behind, naming a dead process
    first.communicate()
    assert lock.read_text().startswith(f"{first.pid} ")
    run_main(cli(data, snapshot, "--num-steps", "1", "--save-pred-every", "1"))
    assert (snapshot / "CS_scenes_1.pth").exists()


def test_folder_lock_is_exclusive_and_released(tmp_path):
    with FolderLock(tmp_path, what="--snapshot-dir X"):
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
        # flock belongs to the open file: a second holder in this very process is refused too.
        with pytest.raises(FolderLockedError, match=rf"^--snapshot-dir X is in use by another "
                           rf"run \(process {os.getpid()} on "):  # fmt: skip
            FolderLock(tmp_path, what="--snapshot-dir X").acquire()
    assert (tmp_path / ".lock").read_text() == ""
    with FolderLock(tmp_path):
        pass


def test_folder_lock_without_flock_checks_the_recorded_process(tmp_path, monkeypatch):
    monkeypatch.setattr(utils.lock, "fcntl", None)
    host = os.uname().nodename
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    (tmp_path / ".lock").write_text(f"{dead} {host}\n")
    with FolderLock(tmp_path):  # its process is gone
        pass
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(f"{alive.pid} {host}\n")
        with pytest.raises(FolderLockedError, match=f"process {alive.pid} on {host}"):
            FolderLock(tmp_path).acquire()
    finally:
        alive.kill()
        alive.wait()
