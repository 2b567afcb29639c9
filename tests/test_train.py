"""train.py on CPU: guards, poly LR, every method learning, NaN stop, exact resume, 2-process DDP.

Tiny everything: resnet18, 65x65 crops, a handful of 64x128 scenes written by the fixture.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import train
from engine.launch import PREEMPTED_STATUS
from network import get_segmentation_model
from utils.checkpoint import load_checkpoint
from utils.criterion import CriterionCrossEntropy, CriterionDSN
from utils.lr import poly_lr

REPO = Path(__file__).resolve().parents[1]
# Cityscapes label ids: sky, building, road, car, and 0 (unlabeled -> ignored).
COLOURS = {23: (180, 130, 70), 11: (70, 70, 70), 7: (128, 64, 128), 26: (142, 0, 0)}


def write_scenes(root: Path, split: str, count: int, seed: int) -> Path:
    """Banded street-like scenes (sky / building / road with a car) in the Cityscapes layout."""
    rng = np.random.default_rng(seed)
    lines = []
    for index in range(count):
        label = np.full((64, 128), 7, np.uint8)
        top, middle = int(rng.integers(12, 21)), int(rng.integers(32, 42))
        label[:top], label[top:middle] = 23, 11
        x, y = int(rng.integers(0, 98)), int(rng.integers(middle, 54))
        label[y : y + 10, x : x + 30] = 26
        label[0, :4] = 0
        image = np.zeros((64, 128, 3), np.uint8)
        for label_id, colour in COLOURS.items():
            image[label == label_id] = colour
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        stem = f"city_{index:06d}_000019"
        image_rel = f"leftImg8bit/{split}/city/{stem}_leftImg8bit.png"
        label_rel = f"gtFine/{split}/city/{stem}_gtFine_labelIds.png"
        for rel, array in ((image_rel, image), (label_rel, label)):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / rel), array)
        lines.append(f"{image_rel} {label_rel}\n")
    path = root / f"{split}.lst"
    path.write_text("".join(lines))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, "train", 4, seed=1)
    write_scenes(root, "val", 2, seed=2)
    return root


def cli(data: Path, snapshot: Path, *extra: str) -> list[str]:
    return [
        "--network", "resnet18", "--method", "asp_oc_dsn",
        "--data-dir", str(data), "--data-list", str(data / "train.lst"),
        "--input-size", "65,65", "--batch-size", "2", "--num-steps", "6",
        "--save-pred-every", "2", "--snapshot-dir", str(snapshot), "--workers", "0",
        "--device", "cpu", "--threads", "1", "--deterministic", "--log-every", "1",
        "--random-mirror", "--random-scale", "True", "--seed", "7",
        *extra,
    ]  # fmt: skip


def run_main(argv: list[str]) -> None:
    train.main(train.get_args_parser().parse_args(argv))


def final_weights(snapshot: Path, steps: int) -> dict:
    """The weights ``train.py`` saved after ``steps`` steps."""
    return torch.load(snapshot / f"CS_scenes_{steps}.pth", weights_only=True)["model"]


def metrics(snapshot: Path) -> list[dict]:
    return [json.loads(line) for line in (snapshot / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


# ------------------------------------------------------------------------------------------------
# Learning rate


def test_poly_lr_by_hand():
    assert poly_lr(0.01, 0, 40000, 0.9) == 0.01
    assert poly_lr(0.01, 20000, 40000, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 30000, 40000, 1.0) == pytest.approx(0.0025)


# ------------------------------------------------------------------------------------------------
# Guards: one line, exit code 2, before any work


def guard_cases(data: Path, tmp: Path) -> list[tuple[list[str], str]]:
    missing = str(tmp / "missing.pth")
    return [
        (["--input-size", "17,17", "--batch-size", "1"],
         "--input-size 17,17 does not fit resnet18_asp_oc_dsn with --batch-size 1: "
         "Expected more than 1 value per channel when training"),
        (["--nproc", "2", "--batch-size", "1"],
         "--batch-size 1 is smaller than the 2 processes"),
        (["--nproc", "2", "--batch-size", "3"],
         "--batch-size 3 is not divisible by the 2 processes"),
        (["--restore-from", missing], f"--restore-from {missing} is not a file"),
        (["--data-list", str(tmp / "nope.lst")], f"--data-list {tmp / 'nope.lst'} is not a file"),
        (["--data-dir", str(tmp / "nodir")], f"--data-dir {tmp / 'nodir'} is not a folder"),
        (["--use-weight", "--num-classes", "150"],
         "--use-weight has class weights only for the 19 Cityscapes classes, "
         "but the model predicts 150 classes"),
        (["--val-every", "2", "--val-list", str(tmp / "nope.lst")],
         f"--val-list {tmp / 'nope.lst'} is not a file"),
        (["--data-list", "none"], "--data-list none: cityscapes is read through list files"),
        (["--start-iters", "6"], "--start-iters 6 must be below --num-steps 6"),
        (["--num-steps", "0"], "--num-steps must be positive, got 0"),
        (["--ohem-thres", "1.5"], "--ohem-thres must lie in (0, 1], got 1.5"),
        (["--gpu", "0,1"], "--gpu 0,1 given but no CUDA device is visible"),
    ]  # fmt: skip


def test_guards_fail_before_any_work(data, tmp_path, capsys):
    snapshot = tmp_path / "snap"
    for extra, message in guard_cases(data, tmp_path):
        with pytest.raises(SystemExit) as exit_info:
            run_main(cli(data, snapshot, *extra))
        assert exit_info.value.code == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"train.py: error: {message}"), (extra, err)
    assert not snapshot.exists()


def test_bad_list_line_is_reported_with_its_location(data, tmp_path, capsys):
    broken = tmp_path / "broken.lst"
    broken.write_text("leftImg8bit/train/city/gone_leftImg8bit.png gtFine/x.png\n")
    with pytest.raises(SystemExit) as exit_info:
        run_main(cli(data, tmp_path / "snap", "--data-list", str(broken)))
    assert exit_info.value.code == 2
    assert f"train.py: error: {broken} line 1: image" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "psp"], "argument --method: invalid choice: 'psp'"),
        (["--input-size", "0,65"], "argument --input-size: expected a size as H,W"),
        (["--ohem", "maybe"], "argument --ohem: expected a boolean"),
    ],
)
def test_parser_rejects_bad_values(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.get_args_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_original_boolean_style_flags():
    args = train.get_args_parser().parse_args(["--ohem", "True", "--use-weight", "--fix-lr", "0"])
    assert (args.ohem, args.use_weight, args.fix_lr, args.random_scale) == (
        True,
        True,
        False,
        False,
    )
    defaults = train.get_args_parser().parse_args([])
    assert (defaults.num_steps, defaults.batch_size, defaults.learning_rate) == (40000, 8, 0.01)
    assert (defaults.input_size, defaults.momentum, defaults.weight_decay) == (
        (769, 769),
        0.9,
        5e-4,
    )


# ------------------------------------------------------------------------------------------------
# Every method learns


def fixed_batch(data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from dataset import get_segmentation_dataset

    dataset = get_segmentation_dataset(
        "cityscapes_val", root=str(data), list_path=str(data / "train.lst")
    )
    images, labels, _ = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.stack(labels)


def batch_loss(model: torch.nn.Module, method: str, batch) -> float:
    """Loss with batch statistics (train-mode BN) but without dropout noise."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout | torch.nn.Dropout2d):
            module.eval()
    criterion = CriterionDSN() if method.endswith("_dsn") else CriterionCrossEntropy()
    with torch.no_grad():
        return criterion(model(batch[0]), batch[1]).item()


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("baseline", []),
        ("base_oc_dsn", []),
        ("pyramid_oc_dsn", ["--fix-lr"]),
        ("asp_oc_dsn", ["--ohem", "--ohem-single", "--ohem-keep", "2000"]),
        ("base_oc_dsn", ["--amp", "bf16", "--channels-last"]),
        ("isa_oc_dsn", []),
        ("ocr_dsn", ["--ohem", "--ohem-single", "--ohem-keep", "2000"]),
    ],
)
def test_every_method_lowers_the_loss(data, tmp_path, method, extra):
    torch.manual_seed(0)
    initial = get_segmentation_model(f"resnet18_{method}", num_classes=19)
    torch.save(initial.state_dict(), tmp_path / "init.pth")
    snapshot = tmp_path / "snap"
    argv = cli(data, snapshot, "--method", method, "--restore-from", str(tmp_path / "init.pth"))
    run_main([*argv, "--num-steps", "8", "--save-pred-every", "100", *extra])

    trained = get_segmentation_model(f"resnet18_{method}", num_classes=19)
    trained.load_state_dict(final_weights(snapshot, 8))
    batch = fixed_batch(data)
    before, after = batch_loss(initial, method, batch), batch_loss(trained, method, batch)
    assert after < 0.7 * before, (before, after)

    records = metrics(snapshot)
    assert [r["iteration"] for r in records] == list(range(1, 9))
    expected_lr = [0.01 if extra == ["--fix-lr"] else poly_lr(0.01, i, 8, 0.9) for i in range(8)]
    assert [r["lr"] for r in records] == pytest.approx(expected_lr, rel=1e-6)
    terms = ["loss_main"] if method == "baseline" else ["loss_dsn", "loss_main"]
    for record in records:
        assert record["loss"] == pytest.approx(sum(record[t] for t in terms), rel=1e-5)
    assert "iteration 8/8 loss" in (snapshot / "train.log").read_text()
    assert list(snapshot.glob("events.out.tfevents.*"))


# ------------------------------------------------------------------------------------------------
# NaN guard


def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_checkpoint(
    data, tmp_path, monkeypatch, capsys
):
    snapshot = tmp_path / "snap"
    monkeypatch.setenv("OCNET_FAULT_NAN_AT", "3")
    with pytest.raises(SystemExit) as exit_info:
        run_main(cli(data, snapshot, "--workers", "0"))
    assert exit_info.value.code == 1
    last = snapshot / "checkpoint_2.pth"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"train.py: error: loss is nan at iteration 3; training stopped, last good checkpoint: {last}"
    )
    assert sorted(p.name for p in snapshot.glob("*.pth")) == ["checkpoint_2.pth"]
    assert load_checkpoint(last)["iteration"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["broken sample", "non-finite loss", "stop signal"])
def test_an_early_stop_with_workers_running_ends_with_its_message(data, tmp_path, stop):
    """DataLoader workers are shut down with the run: nothing (no "Exception ignored in atexit
    callback" traceback) follows the run's last line."""
    scenes = tmp_path / "scenes"
    write_scenes(scenes, "train", 4, seed=1)
    env = {"OMP_NUM_THREADS": "1"}
    broken = scenes / "leftImg8bit/train/city/city_000002_000019_leftImg8bit.png"
    if stop == "broken sample":
        broken.write_bytes(b"\x89PNG\r\n\x1a\nnot a picture")
    elif stop == "non-finite loss":
        env["OCNET_FAULT_NAN_AT"] = "2"
    else:
        env["OCNET_FAULT_SIGNAL_AT"] = "2"
    snapshot = tmp_path / "snap"
    argv = cli(scenes, snapshot, "--workers", "2", "--save-pred-every", "100")
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *argv],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = result.stderr.rstrip("\n").splitlines()
    expected = {
        "broken sample": (1, f"train.py: error: {scenes / 'train.lst'} line 3: image {broken} is "
                          "unreadable (missing or corrupt); training stopped before iteration 2, "
                          "last good checkpoint: none"),
        "non-finite loss": (1, "train.py: error: loss is nan at iteration 2; training stopped, "
                            "last good checkpoint: none"),
        "stop signal": (PREEMPTED_STATUS, "stopped by SIGTERM after iteration 2/6; checkpoint "
                        f"{snapshot / 'checkpoint_2.pth'}; to continue: python "),
    }[stop]  # fmt: skip
    assert result.returncode == expected[0], result.stderr[-2000:]
    assert lines[-1].split("\r")[-1].startswith(expected[1]), result.stderr[-2000:]
    if stop != "stop signal":
        assert lines[-1].split("\r")[-1] == expected[1]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


# ------------------------------------------------------------------------------------------------
# Exact resume after SIGKILL


def killed_run(argv: list[str], kill_at: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OCNET_FAULT_KILL_AT": str(kill_at), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *argv],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(data, tmp_path):
    validation = ["--val-list", str(data / "val.lst"), "--val-every", "3"]
    reference = tmp_path / "reference"
    run_main(cli(data, reference, *validation))
    expected = final_weights(reference, 6)

    for workers in ("0", "2"):
        snapshot = tmp_path / f"resumed_w{workers}"
        argv = cli(data, snapshot, *validation, "--workers", workers)
        result = killed_run(argv, kill_at=4)  # dies after the backward of iteration 4
        assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
        assert sorted(p.name for p in snapshot.glob("*.pth")) == ["checkpoint_2.pth"]
        assert [r["iteration"] for r in metrics(snapshot)] == [1, 2, 3]

        run_main([*argv, "--resume"])
        assert_same_weights(final_weights(snapshot, 6), expected)
        # The resumed log repeats nothing and matches the uninterrupted one line for line.
        assert metrics(snapshot) == metrics(reference)
        assert "resumed from" in (snapshot / "train.log").read_text()

    checkpoint = load_checkpoint(reference / "checkpoint_6.pth")
    assert set(checkpoint) == {
        "model",
        "optimizer",
        "scaler",
        "iteration",
        "rng",
        "args",
        "meta",
        "metrics",
    }
    assert checkpoint["iteration"] == 6 and checkpoint["args"]["input_size"] == [65, 65]
    assert checkpoint["rng"]["world_size"] == 1
    assert set(checkpoint["rng"]["ranks"][0]) == {"python", "numpy", "torch", "cuda", "loader"}
    assert math.isfinite(checkpoint["metrics"]["mIoU"])


def test_resume_refuses_a_checkpoint_of_other_settings(data, tmp_path, capsys):
    snapshot = tmp_path / "snap"
    run_main(cli(data, snapshot, "--num-steps", "2"))
    run_main(cli(data, snapshot, "--num-steps", "2", "--resume"))
    assert "nothing to do" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        run_main(cli(data, snapshot, "--num-steps", "4", "--resume", "--seed", "8"))
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"train.py: error: --resume: {snapshot / 'checkpoint_2.pth'} was trained with --seed 7, "
        "not 8"
    )


# ------------------------------------------------------------------------------------------------
# Two CPU processes (gloo)


@pytest.mark.slow
def test_two_process_ddp_keeps_replicas_identical(data, tmp_path, monkeypatch):
    snapshot, dump = tmp_path / "snap", tmp_path / "ranks"
    monkeypatch.setenv("OCNET_DEBUG_DUMP_DIR", str(dump))
    run_main(cli(data, snapshot, "--nproc", "2", "--num-steps", "3", "--save-pred-every", "2"))
    rank0 = torch.load(dump / "rank0.pth", weights_only=True)
    rank1 = torch.load(dump / "rank1.pth", weights_only=True)
    assert_same_weights(rank0, rank1)
    assert_same_weights(rank0, final_weights(snapshot, 3))
    initial = get_segmentation_model("resnet18_asp_oc_dsn", num_classes=19).state_dict()
    assert not torch.equal(rank0["cls.weight"], initial["cls.weight"])

    checkpoint = load_checkpoint(snapshot / "checkpoint_2.pth")
    states = checkpoint["rng"]["ranks"]
    assert checkpoint["rng"]["world_size"] == 2
    # Each rank draws its own dropout masks: different torch streams.
    assert not torch.equal(states[0]["torch"], states[1]["torch"])
    assert [r["iteration"] for r in metrics(snapshot)] == [1, 2, 3]


HRNET = ("--network", "hrnetv2_w18", "--method", "ocr_dsn", "--amp", "bf16")


@pytest.mark.slow
def test_hrnet_ocr_in_ddp_with_amp_syncs_batchnorm(data, tmp_path, monkeypatch):
    """Two gloo processes: identical replicas, and BatchNorm statistics synchronised across them
    (each process sees other images, so per-process statistics would differ)."""
    snapshot, dump = tmp_path / "snap", tmp_path / "ranks"
    monkeypatch.setenv("OCNET_DEBUG_DUMP_DIR", str(dump))
    run_main(cli(data, snapshot, *HRNET, "--nproc", "2", "--num-steps", "2"))
    rank0 = torch.load(dump / "rank0.pth", weights_only=True)
    rank1 = torch.load(dump / "rank1.pth", weights_only=True)
    assert_same_weights(rank0, rank1)
    initial = get_segmentation_model("hrnetv2_w18_ocr_dsn", num_classes=19).state_dict()
    for key in ("conv1.weight", "stage4.2.fuse_layers.0.3.0.weight", "head.weight"):
        assert not torch.equal(rank0[key], initial[key]), key
    stats = [k for k in rank0 if k.endswith("running_mean")]
    assert len(stats) > 100 and not any(torch.equal(rank0[k], initial[k]) for k in stats)
    meta = load_checkpoint(snapshot / "CS_scenes_2.pth")["meta"]
    assert (meta["network"], meta["method"]) == ("hrnetv2_w18", "ocr_dsn")


@pytest.mark.slow
def test_hrnet_ocr_resume_with_amp_equals_an_uninterrupted_run(data, tmp_path, monkeypatch):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run_main(cli(data, reference, *HRNET, "--num-steps", "4"))
    monkeypatch.setenv("OCNET_FAULT_SIGNAL_AT", "3")  # SIGTERM: checkpoint after step 3, stop
    with pytest.raises(SystemExit) as stopped:
        run_main(cli(data, resumed, *HRNET, "--num-steps", "4"))
    assert stopped.value.code == PREEMPTED_STATUS
    monkeypatch.delenv("OCNET_FAULT_SIGNAL_AT")
    run_main(cli(data, resumed, *HRNET, "--num-steps", "4", "--resume"))
    assert_same_weights(final_weights(resumed, 4), final_weights(reference, 4))
    assert metrics(resumed) == metrics(reference)


# ------------------------------------------------------------------------------------------------
# Sample order


def test_sample_order_is_a_function_of_seed_and_position():
    from dataset.sampler import ResumableSampler

    whole = list(ResumableSampler(5, batch_size=4, num_steps=6, seed=3))
    assert len(whole) == 24
    # Each epoch (5 consecutive positions) is a permutation of the 5 samples.
    for epoch in range(4):
        assert sorted(whole[epoch * 5 : epoch * 5 + 5]) == list(range(5))
    assert whole[:5] != whole[5:10]
    # Resuming at step 2 yields exactly the rest; two ranks split each step's batch in halves.
    assert list(ResumableSampler(5, 4, 6, start_step=2, seed=3)) == whole[8:]
    rank0 = list(ResumableSampler(5, 4, 6, seed=3, rank=0, world_size=2))
    rank1 = list(ResumableSampler(5, 4, 6, seed=3, rank=1, world_size=2))
    for step in range(6):
        assert (
            rank0[2 * step : 2 * step + 2] + rank1[2 * step : 2 * step + 2]
            == whole[4 * step : 4 * step + 4]
        )
    assert list(ResumableSampler(5, 4, 6, seed=4)) != whole


# ------------------------------------------------------------------------------------------------
# Run scripts (wiring only: PYTHON is a stub that records its arguments)


def run_script(script: str, tmp_path: Path, fail_on: str = "", **env: str):
    calls = tmp_path / "calls.txt"
    stub = tmp_path / "python-stub"
    stub.write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in *{fail_on or "@never@"}*) exit 3;; esac\n'
    )
    stub.chmod(0o755)
    lists = tmp_path / "lists"
    lists.mkdir(exist_ok=True)
    for name in ("train", "val", "test"):
        (lists / f"{name}.lst").write_text("")
    settings = {
        "PYTHON": str(stub), "DATA_DIR": "/data/cs", "LIST_DIR": str(lists),
        "LOG_DIR": str(tmp_path / "log"), "GPUS": "0,1", **env,
    }  # fmt: skip
    result = subprocess.run(
        ["sh", str(REPO / script)], env={**os.environ, **settings}, capture_output=True, text=True
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    return result, lines


@pytest.mark.parametrize(
    ("script", "method"),
    [
        ("run_asp_oc.sh", "asp_oc_dsn"),
        ("run_base_oc.sh", "base_oc_dsn"),
        ("run_pyramid_oc.sh", "pyramid_oc_dsn"),
        ("run_baseline.sh", "baseline"),
    ],
)
def test_run_scripts_train_evaluate_and_submit(tmp_path, script, method):
    result, calls = run_script(script, tmp_path, USE_OHEM="True", OHEM_SINGLE="True", MAX_ITERS="7")
    assert result.returncode == 0, result.stderr
    train_call, eval_call, submit_call = calls
    assert train_call.startswith("-u train.py ") and f"--method {method} " in train_call
    assert "--ohem True --ohem-single True" in train_call and "--num-steps 7 " in train_call
    assert "--gpu 0,1" in train_call and "--use-weight True" in train_call
    assert eval_call.startswith("-u evaluate.py ") and "--data-dir /data/cs " in eval_call
    assert f"CS_scenes_7.pth --data-list {tmp_path}/lists/val.lst" in eval_call
    assert (
        submit_call.startswith("-u generate_submit.py ") and "--data-dir /data/cs " in submit_call
    )
    logs = sorted(p.name for p in (tmp_path / "log").rglob("log_*") if p.is_file())
    assert logs == [
        f"log_resnet101_{method}_1e-2_5e-4_8_7",
        f"log_result_resnet101_{method}_1e-2_5e-4_8_7_test",
        f"log_result_resnet101_{method}_1e-2_5e-4_8_7_val",
    ]


def test_run_script_stops_at_the_first_failure(tmp_path):
    result, calls = run_script("run_asp_oc.sh", tmp_path, fail_on="train.py")
    assert result.returncode == 3
    assert len(calls) == 1  # neither evaluation nor submission ran


def test_ade20k_trains_and_evaluates_without_list_files(tmp_path):
    """ADE20K needs no list: train.py and evaluate.py scan its folders; 150 classes throughout."""
    import evaluate
    from tests.conftest import write_ade_tree

    root = write_ade_tree(tmp_path / "ade", size=(48, 64))
    snapshot = tmp_path / "snap"
    run_main([
        "--dataset", "ade20k", "--data-dir", str(root), "--network", "resnet18",
        "--method", "base_oc_dsn", "--input-size", "33,33", "--batch-size", "2",
        "--num-steps", "2", "--val-every", "2", "--snapshot-dir", str(snapshot), "--workers", "0",
        "--device", "cpu", "--threads", "1",
    ])  # fmt: skip
    assert "mIoU" in metrics(snapshot)[-1]
    out = tmp_path / "eval"
    evaluate.main(evaluate.get_args_parser().parse_args([
        "--dataset", "ade20k", "--data-dir", str(root), "--network", "resnet18",
        "--method", "base_oc_dsn", "--ckpt", str(snapshot / "CS_scenes_2.pth"),
        "--device", "cpu", "--workers", "0", "--output-path", str(out),
    ]))  # fmt: skip
    result = json.loads((out / "metrics.json").read_text())
    assert len(result["per_class"]) == 150
    assert 0.0 <= result["pixel_acc"] <= 1.0
