"""Past one machine, on one machine: torchrun's elastic restarts, dead and hung ranks, two nodes,
SLURM tasks without torchrun, and run_slurm.sh.

Real processes throughout (gloo on CPU, resnet18, 65x65 crops); the reference is an
uninterrupted two-process torchrun run with the same flags. Timeouts of a few seconds stand in
for torch's 30 minutes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train import REPO, assert_same_weights, cli, final_weights, write_scenes

from utils import lock as lock_module
from utils.distributed import (
    SLURM_PORT_BASE,
    expand_nodelist,
    free_port,
    launcher_env,
    slurm_rendezvous,
)
from utils.lock import FolderLock, FolderLockedError

pytestmark = pytest.mark.slow

TIMEOUT_S = 5  # --dist-timeout of the dead-rank tests
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any launcher's variables, one thread per process."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in LAUNCHER_VARIABLES and not k.startswith(("SLURM_", "TORCHELASTIC_"))
    }
    return {**env, "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, "train", 4, seed=1)
    write_scenes(root, "val", 3, seed=2)  # odd: two ranks must not score one image twice
    return root


def torchrun(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", *args],
        cwd=REPO,
        env=clean_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(
            f"still running after {timeout} s: {proc.communicate()[1][-3000:]}"
        ) from None
    return proc.returncode, stderr


def train_argv(data: Path, snapshot: Path, *extra: str) -> list[str]:
    return ["train.py", *cli(data, snapshot, "--dist-timeout", "60", *extra)]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """An uninterrupted torchrun run of two processes: 6 steps, a checkpoint every 2."""
    snapshot = tmp_path_factory.mktemp("reference")
    status, stderr = finish(torchrun("--standalone", "--nproc-per-node", "2",
                                     *train_argv(data, snapshot)))  # fmt: skip
    assert status == 0, stderr[-3000:]
    return snapshot


# ------------------------------------------------------------------------------------------------
# Elastic restarts


@pytest.mark.parametrize(
    ("kill_at", "workers", "logged"),
    [
        (3, "2", "elastic restart 1: resuming from {snapshot}/checkpoint_2.pth"),
        (1, "0", "elastic restart 1: no checkpoint in {snapshot} yet, starting from scratch"),
    ],
    ids=["after-a-checkpoint", "before-any-checkpoint"],
)
def test_a_restarted_group_continues_by_itself(data, reference, tmp_path, kill_at, workers, logged):
    snapshot = tmp_path / "run"
    proc = torchrun(
        "--standalone", "--nproc-per-node", "2", "--max-restarts", "1",
        *train_argv(data, snapshot, "--workers", workers),
        OCNET_FAULT_KILL_AT=str(kill_at), OCNET_FAULT_RANK="1",
    )  # fmt: skip
    status, stderr = finish(proc)
    assert status == 0, stderr[-3000:]
    assert "exitcode: -9" in stderr  # rank 1 really died, and the agent restarted the group
    assert logged.format(snapshot=snapshot) in stderr
    assert_same_weights(final_weights(snapshot, 6), final_weights(reference, 6))


def test_the_lock_belongs_to_the_job_not_to_one_incarnation(tmp_path, monkeypatch):
    """A process of the same job waits for what is left of its predecessor; another job is
    refused at once."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from utils.lock import FolderLock\n"
         f"lock = FolderLock({str(tmp_path)!r}, job='slurm:7'); lock.acquire()\n"
         "print('held', flush=True); time.sleep(2)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with pytest.raises(FolderLockedError, match=str(holder.pid)):
        FolderLock(tmp_path, job="slurm:8").acquire()
    assert time.monotonic() - started < 1
    with FolderLock(tmp_path, job="slurm:7") as same_job:
        waited = time.monotonic() - started
        assert same_job.held
    assert 0.5 < waited < lock_module.SAME_JOB_WAIT_S
    holder.wait(timeout=10)

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert lock_module.current_job() == "slurm:4242"
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "exp-3")
    assert lock_module.current_job() == "torchelastic:exp-3"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's default: the agent is the job
    assert lock_module.current_job() == f"torchrun:{os.uname().nodename}:{os.getppid()}"


# ------------------------------------------------------------------------------------------------
# Dead and hung ranks


def slurm_tasks(script_argv: list[str], tasks: int = 2, **env: str) -> list[subprocess.Popen]:
    """``tasks`` processes as ``srun`` starts them: SLURM's variables, no torchrun."""
    port = str(free_port())
    return [
        subprocess.Popen(
            [sys.executable, *script_argv],
            cwd=REPO,
            env=clean_env(
                SLURM_PROCID=str(rank),
                SLURM_NTASKS=str(tasks),
                SLURM_LOCALID=str(rank),
                SLURM_JOB_NODELIST="localhost",
                SLURM_JOB_ID="31337",
                MASTER_PORT=port,
                **env,
            ),  # fmt: skip
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(tasks)
    ]


def stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP): state T in /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0] == "T"


def watch(survivor: subprocess.Popen, victim: subprocess.Popen, timeout: float = 240) -> float:
    """Seconds from the victim's death or stop to the survivor's end."""
    deadline = time.monotonic() + timeout
    fault_at = None
    while survivor.poll() is None:
        if fault_at is None and (victim.poll() is not None or stopped(victim.pid)):
            fault_at = time.monotonic()
        if time.monotonic() > deadline:
            survivor.kill()
            victim.kill()
            raise AssertionError("the survivor never ended")
        time.sleep(0.02)
    assert fault_at is not None, "the survivor ended before the fault"
    return time.monotonic() - fault_at


def last_line(stderr: str) -> str:
    """The last line a terminal shows (tqdm redraws with carriage returns)."""
    return stderr.rstrip("\n").splitlines()[-1].split("\r")[-1]


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("OCNET_FAULT_KILL_AT", r"rank 1 was lost \(its connection closed\) during the \S.+ 3"),
        ("OCNET_FAULT_STOP_AT",
         rf"rank 1 did not answer within {TIMEOUT_S} s during the gradient all-reduce at "
         "iteration 3"),
    ],
    ids=["SIGKILL", "SIGSTOP"],
)  # fmt: skip
def test_a_dead_or_hung_rank_ends_the_others(data, tmp_path, fault, message):
    argv = train_argv(data, tmp_path / "run", "--dist-timeout", str(TIMEOUT_S))
    survivor, victim = slurm_tasks(argv, **{fault: "3", "OCNET_FAULT_RANK": "1"})
    try:
        waited = watch(survivor, victim)
    finally:
        victim.kill()
        victim.communicate()
    stderr = survivor.communicate()[1]
    assert survivor.returncode == 1, stderr[-3000:]
    assert re.fullmatch("train.py: error: " + message, last_line(stderr)), stderr[-2000:]
    assert "Traceback" not in stderr
    # A killed peer is noticed at once; a stopped one after --dist-timeout, plus one step.
    assert waited < (3 if fault == "OCNET_FAULT_KILL_AT" else TIMEOUT_S + 5), waited


@pytest.mark.parametrize("fault", ["OCNET_FAULT_KILL_AT", "OCNET_FAULT_STOP_AT"])
def test_our_own_processes_end_together_when_one_dies_or_hangs(data, tmp_path, fault):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, *train_argv(data, tmp_path / "run", "--nproc", "2",
                                     "--dist-timeout", str(TIMEOUT_S))],
        cwd=REPO, env=clean_env(**{fault: "3", "OCNET_FAULT_RANK": "1"}),
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    line = last_line(result.stderr)
    assert line.startswith("train.py: error: rank 1 "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "leaked" not in result.stderr
    assert elapsed < 60


# ------------------------------------------------------------------------------------------------
# Two nodes on one machine


def two_nodes(rendezvous: str, *script: str) -> list[subprocess.Popen]:
    port = str(free_port())
    launches = []
    for node in range(2):
        where = (
            ["--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", port]
            if rendezvous == "static"
            else ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                  "--rdzv-id", "two-nodes"]
        )  # fmt: skip
        launches.append(torchrun("--nnodes", "2", "--nproc-per-node", "1", *where, *script))
    return launches


@pytest.mark.parametrize("rendezvous", ["static", "c10d"])
def test_two_nodes_train_as_one_node_with_as_many_processes(data, reference, tmp_path, rendezvous):
    snapshot = tmp_path / "run"  # one folder, as on a shared file system
    for node in two_nodes(rendezvous, *train_argv(data, snapshot)):
        status, stderr = finish(node)
        assert status == 0, stderr[-3000:]
    assert_same_weights(final_weights(snapshot, 6), final_weights(reference, 6))


def evaluate_argv(data: Path, reference: Path, out: Path) -> list[str]:
    return [
        "evaluate.py", "--ckpt", str(reference / "CS_scenes_6.pth"), "--data-dir", str(data),
        "--data-list", str(data / "val.lst"), "--device", "cpu", "--batch-size", "1",
        "--input-size", "64,128", "--output-path", str(out), "--dist-timeout", "60",
    ]  # fmt: skip


def test_evaluation_on_two_nodes_or_slurm_tasks_scores_each_image_once(data, reference, tmp_path):
    one = subprocess.run(
        [sys.executable, *evaluate_argv(data, reference, tmp_path / "one")],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    expected = json.loads((tmp_path / "one" / "metrics.json").read_text())
    launches = {
        "nodes": two_nodes("static", *evaluate_argv(data, reference, tmp_path / "nodes")),
        "slurm": slurm_tasks(evaluate_argv(data, reference, tmp_path / "slurm")),
    }
    for name, processes in launches.items():
        for process in processes:
            status, stderr = finish(process)
            assert status == 0, stderr[-3000:]
        assert json.loads((tmp_path / name / "metrics.json").read_text()) == expected, name


# ------------------------------------------------------------------------------------------------
# SLURM


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("node01", ["node01"]),
        ("node[01-04,07]", ["node01", "node02", "node03", "node04", "node07"]),
        ("tux[0-2],linux7", ["tux0", "tux1", "tux2", "linux7"]),
        ("a[1-2],b[08-10]", ["a1", "a2", "b08", "b09", "b10"]),
        ("rack1-node[001-003]", ["rack1-node001", "rack1-node002", "rack1-node003"]),
        ("n[1-2]-ib", ["n1-ib", "n2-ib"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("gpu-a100-[9-11]", ["gpu-a100-9", "gpu-a100-10", "gpu-a100-11"]),
        ("node[7]", ["node7"]),
    ],
)
def test_nodelist_expands_as_slurm_writes_it(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize(
    ("nodelist", "message"),
    [("node[01-04", "unbalanced '\\['"), ("node01]", "unbalanced '\\]'"), ("n[4-2]", "bad range")],
)
def test_nodelist_errors_name_the_list(nodelist, message):
    with pytest.raises(ValueError, match=message):
        expand_nodelist(nodelist)


def test_slurm_rendezvous_and_task_variables():
    slurm = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
             "SLURM_JOB_NODELIST": "gpu[12-13]", "SLURM_JOB_ID": "123456"}  # fmt: skip
    env = launcher_env(slurm)
    assert (env.rank, env.world_size, env.local_rank, env.launcher) == (3, 8, 1, "slurm")
    assert slurm_rendezvous(slurm) == ("gpu12", SLURM_PORT_BASE + 123456 % 20000)
    assert slurm_rendezvous({**slurm, "MASTER_PORT": "29400", "MASTER_ADDR": "head"}) == (
        "head",
        29400,
    )
    # The step's node list, when there is one, is where the tasks run.
    assert slurm_rendezvous({**slurm, "SLURM_STEP_NODELIST": "gpu13"})[0] == "gpu13"
    # torchrun inside a SLURM job wins; a job of one task is one process (it may spawn).
    torchrun_inside = {**slurm, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    assert launcher_env(torchrun_inside).launcher == "torchrun"
    assert launcher_env({**slurm, "SLURM_NTASKS": "1"}) is None
    assert launcher_env({}) is None


def test_slurm_tasks_train_as_torchrun_does(data, reference, tmp_path):
    snapshot = tmp_path / "run"
    for task in slurm_tasks(train_argv(data, snapshot)):
        status, stderr = finish(task)
        assert status == 0, stderr[-3000:]
    assert_same_weights(final_weights(snapshot, 6), final_weights(reference, 6))


def test_our_own_processes_train_as_torchrun_does(data, reference, tmp_path):
    snapshot = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, *train_argv(data, snapshot, "--nproc", "2")],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_weights(final_weights(snapshot, 6), final_weights(reference, 6))


def fake_slurm(tmp_path: Path, train_status: int) -> dict[str, str]:
    """srun (runs its command once per task with SLURM's variables), scontrol (records) and a
    python that records its arguments and exits ``train_status`` for train.py."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    calls = tmp_path / "calls.txt"
    scripts = {
        "srun": f"""#!/usr/bin/env bash
echo "srun $*" >> {calls}
while [ "${{1#-}}" != "$1" ]; do shift; done
status=0; pids=()
for ((task = 0; task < SLURM_NTASKS; task++)); do
  SLURM_PROCID=$task SLURM_LOCALID=$task "$@" & pids+=($!)
done
for pid in "${{pids[@]}}"; do wait "$pid" || status=$?; done
exit $status
""",
        "scontrol": f'#!/bin/sh\necho "scontrol $*" >> {calls}\n',
        "python": f"""#!/bin/sh
echo "task $SLURM_PROCID: $*" >> {calls}
case "$*" in *train.py*) exit {train_status};; esac
""",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    lists = tmp_path / "lists"
    lists.mkdir()
    for name in ("train", "val", "test"):
        (lists / f"{name}.lst").write_text("")
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": str(bin_dir / "python"),
        "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2", "SLURM_SUBMIT_DIR": str(REPO),
        "DATA_DIR": "/data/cs", "LIST_DIR": str(lists), "LOG_DIR": str(tmp_path / "log"),
        "MAX_ITERS": "7",
    }  # fmt: skip


def run_slurm(tmp_path: Path, train_status: int, **env: str):
    settings = fake_slurm(tmp_path, train_status)
    result = subprocess.run(
        ["bash", str(REPO / "run_slurm.sh")],
        env={**clean_env(), **settings, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    return result, calls


def test_run_slurm_requeues_a_preempted_job_and_the_requeued_job_resumes(tmp_path):
    result, calls = run_slurm(tmp_path / "first", 75)
    assert result.returncode == 0, result.stderr
    assert "requeueing job 4242 (1/20)" in result.stdout
    srun, *tasks, requeue = calls
    assert srun.startswith("srun --kill-on-bad-exit=1 ") and " -u train.py " in srun
    assert sorted(line.split(":")[0] for line in tasks) == ["task 0", "task 1"]
    for line in tasks:
        assert "--resume True" in line and "--device cuda" in line and "--gpu" not in line
    assert requeue == "scontrol requeue 4242"  # and neither evaluation nor submission ran

    result, calls = run_slurm(tmp_path / "requeued", 0, SLURM_RESTART_COUNT="1")
    assert result.returncode == 0, result.stderr
    steps = [line.split(" -u ", 1)[1].split()[0] for line in calls if line.startswith("srun")]
    assert steps == ["train.py", "evaluate.py", "generate_submit.py"]
    assert not any(line.startswith("scontrol") for line in calls)

    result, calls = run_slurm(tmp_path / "last", 75, SLURM_RESTART_COUNT="20")
    assert result.returncode == 75
    assert "not requeueing: the job was requeued 20 times (MAX_REQUEUES=20)" in result.stderr
    assert not any(line.startswith("scontrol") for line in calls)
