"""The original OCNet's command lines run here unchanged.

``ORIGINAL`` is the body of openseg-group/OCNet.pytorch ``run_resnet101_asp_oc.sh`` (train, evaluate
on val and train, submit the test set), copied verbatim. The test sets its variables to tiny values
(resnet18, a few steps, 65x65 crops, random initialisation instead of the ImageNet file) and runs
the lines with bash in a folder laid out like the original's checkout: ``./dataset/cityscapes``
(synthetic scenes), ``./dataset/list/cityscapes/*.lst``, ``./log/log_{train,test}``. Two things
differ, both outside the flags: ``--gpu 0,1,2,3`` becomes CPU settings (no GPU here), and the
original's ``eval.py`` is this project's ``evaluate.py`` (a symlink named like the original).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import train
from dataset.synthetic import generate
from engine.data import train_dataset

REPO = Path(__file__).resolve().parents[1]

# run_resnet101_asp_oc.sh of the original, from its training call on (the variables above that
# call are VARIABLES below).
ORIGINAL = r"""
$PYTHON -u train.py --network $NETWORK --method $METHOD --random-mirror --random-scale --gpu 0,1,2,3 --batch-size $BATCHSIZE \
  --snapshot-dir $SNAPSHOT_DIR  --num-steps $MAX_ITERS --ohem $USE_OHEM --data-list $DATA_LIST_PATH --weight-decay $WEIGHT_DECAY \
  --input-size $INPUT_SIZE --ohem-thres $OHEMTHRES --ohem-keep $OHEMKEEP --use-val $USE_VAL_SET --use-weight $USE_CLASS_BALANCE \
  --snapshot-dir $SNAPSHOT_DIR --restore-from $RESTORE_FROM --start-iters $START_ITERS --learning-rate $LEARNING_RATE  \
  --use-extra $USE_EXTRA_SET --dataset $DATASET --data-dir $DATA_DIR > $TRAIN_LOG_FILE 2>&1


# testing settings
TEST_USE_FLIP=False
TEST_USE_MS=False
TEST_STORE_RESULT=False
TEST_BATCHSIZE=4
PREDICT_CHOICE='whole'
WHOLE_SCALE='1'
TEST_RESTORE_FROM="${SNAPSHOT_DIR}CS_scenes_${MAX_ITERS}.pth"


########################################################################################################################
#  Testing
########################################################################################################################
# validation set
TESTDATASET="cityscapes_train"
TEST_SET="val"
TEST_DATA_LIST_PATH="./dataset/list/cityscapes/val.lst"
TEST_LOG_FILE="./log/log_test/log_result_${NETWORK}_${METHOD}_${TEST_SET}_${LEARNING_RATE}_${WEIGHT_DECAY}_${BATCHSIZE}_${MAX_ITERS}_${PREDICT_CHOICE}"
TEST_OUTPUT_PATH="./visualize/${NETWORK}_${METHOD}_${TEST_SET}_${LEARNING_RATE}_${WEIGHT_DECAY}_${BATCHSIZE}_${MAX_ITERS}/"

$PYTHON -u eval.py --network=$NETWORK --method=$METHOD --batch-size=$TEST_BATCHSIZE --data-list $TEST_DATA_LIST_PATH --dataset $TESTDATASET \
 --restore-from=$TEST_RESTORE_FROM  --store-output=$TEST_STORE_RESULT --output-path=$TEST_OUTPUT_PATH --input-size $INPUT_SIZE \
 --use-flip=$TEST_USE_FLIP  --use-ms=$TEST_USE_MS --gpu 0,1,2,3 --predict-choice $PREDICT_CHOICE --whole-scale ${WHOLE_SCALE} > $TEST_LOG_FILE 2>&1


# training set
TESTDATASET="cityscapes_train"
TEST_SET="train"
TEST_DATA_LIST_PATH="./dataset/list/cityscapes/train.lst"
TEST_LOG_FILE="./log/log_test/log_result_${NETWORK}_${METHOD}_${TEST_SET}_${LEARNING_RATE}_${WEIGHT_DECAY}_${BATCHSIZE}_${MAX_ITERS}_${PREDICT_CHOICE}"
TEST_OUTPUT_PATH="./visualize/${NETWORK}_${METHOD}_${TEST_SET}_${LEARNING_RATE}_${WEIGHT_DECAY}_${BATCHSIZE}_${MAX_ITERS}/"

$PYTHON -u eval.py --network=$NETWORK --method=$METHOD --batch-size=$TEST_BATCHSIZE --data-list $TEST_DATA_LIST_PATH --dataset $TESTDATASET \
 --restore-from=$TEST_RESTORE_FROM  --store-output=$TEST_STORE_RESULT --output-path=$TEST_OUTPUT_PATH --input-size $INPUT_SIZE \
 --use-flip=$TEST_USE_FLIP  --use-ms=$TEST_USE_MS --gpu 0,1,2,3 --predict-choice $PREDICT_CHOICE --whole-scale ${WHOLE_SCALE} > $TEST_LOG_FILE 2>&1


## test set
TEST_STORE_RESULT=True
TESTDATASET="cityscapes_test"
TEST_SET="test"
TEST_DATA_LIST_PATH="./dataset/list/cityscapes/test.lst"
TEST_LOG_FILE="./log/log_test/log_result_${NETWORK}_${METHOD}_${TEST_SET}_${LEARNING_RATE}_${WEIGHT_DECAY}_${BATCHSIZE}_${MAX_ITERS}_${PREDICT_CHOICE}"
TEST_OUTPUT_PATH="./visualize/${NETWORK}_${METHOD}_${TEST_SET}_${LEARNING_RATE}_${WEIGHT_DECAY}_${BATCHSIZE}_${MAX_ITERS}/"

$PYTHON -u generate_submit.py --network=$NETWORK --method=$METHOD --batch-size=$TEST_BATCHSIZE --data-list $TEST_DATA_LIST_PATH --dataset $TESTDATASET \
 --restore-from=$TEST_RESTORE_FROM  --store-output=$TEST_STORE_RESULT --output-path=$TEST_OUTPUT_PATH --input-size $INPUT_SIZE \
 --use-flip=$TEST_USE_FLIP  --use-ms=$TEST_USE_MS --gpu 0,1,2,3 --predict-choice $PREDICT_CHOICE --whole-scale ${WHOLE_SCALE} > $TEST_LOG_FILE 2>&1
"""

# The variables of the original script, with tiny values substituted where it ran a real job.
VARIABLES = {
    "NETWORK": "resnet18",  # original: resnet101
    "METHOD": "asp_oc_dsn",
    "DATASET": "cityscapes_train",
    "LEARNING_RATE": "1e-2",
    "WEIGHT_DECAY": "5e-4",
    "START_ITERS": "0",
    "MAX_ITERS": "2",  # original: 40000
    "BATCHSIZE": "2",  # original: 8
    "INPUT_SIZE": "'65,65'",  # original: '769,769'
    "USE_CLASS_BALANCE": "True",
    "USE_OHEM": "False",
    "OHEMTHRES": "0.7",
    "OHEMKEEP": "0",
    "USE_VAL_SET": "False",
    "USE_EXTRA_SET": "False",
    "DATA_DIR": "'./dataset/cityscapes'",
    "DATA_LIST_PATH": "'./dataset/list/cityscapes/train.lst'",
    "RESTORE_FROM": "'none'",  # original: './pretrained_model/resnet101-imagenet.pth'
    "TRAIN_LOG_FILE": '"./log/log_train/log_${NETWORK}_${METHOD}_${LEARNING_RATE}_${WEIGHT_DECAY}_${BATCHSIZE}_${MAX_ITERS}"',
    "SNAPSHOT_DIR": '"./checkpoint/snapshots_${NETWORK}_${METHOD}_${LEARNING_RATE}_${WEIGHT_DECAY}_${BATCHSIZE}_${MAX_ITERS}/"',
}
# The original README's OHEM setting ("USE_OHEM=True OHEMTHRES=0.7 OHEMKEEP=100000"); here the
# same run also trains on val and the coarse set, the two other switches of the script.
OHEM = {"USE_OHEM": "True", "OHEMKEEP": "100000", "USE_VAL_SET": "True", "USE_EXTRA_SET": "True"}
# No GPU here: each "--gpu 0,1,2,3" runs on the CPU instead, in one thread and without workers.
CPU = {"train.py": "--device cpu --workers 0 --threads 1", "other": "--device cpu --workers 0"}


def script(variables: dict[str, str]) -> str:
    """The original lines after its variable block, ``--gpu`` replaced by the CPU settings."""
    body = []
    for line in ORIGINAL.splitlines():
        cpu = CPU["train.py" if "train.py" in line else "other"]
        body.append(line.replace("--gpu 0,1,2,3", cpu))
    body_text = "\n".join(body)
    preamble = [f"PYTHON={sys.executable}", *(f"{k}={v}" for k, v in variables.items())]
    return "set -e\n" + "\n".join(preamble) + "\n" + body_text + "\n"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A folder laid out like the original's checkout, with synthetic Cityscapes data."""
    root = tmp_path_factory.mktemp("ocnet")
    data = root / "dataset" / "cityscapes"
    generate(data, {"train": 3, "val": 2, "test": 2, "train_extra": 2}, height=64, width=128)
    lists = root / "dataset" / "list" / "cityscapes"
    lists.mkdir(parents=True)
    for name in ("train", "val", "test", "train_extra"):
        shutil.copy(data / f"{name}.lst", lists / f"{name}.lst")
    for folder in ("log/log_train", "log/log_test"):
        (root / folder).mkdir(parents=True)
    for name, target in (
        ("train.py", "train.py"),
        ("eval.py", "evaluate.py"),
        ("generate_submit.py", "generate_submit.py"),
    ):
        os.symlink(REPO / target, root / name)
    return root


def run(root: Path, variables: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        ["bash", "-c", script(variables)], cwd=root, env=env, capture_output=True, text=True
    )


def logs(root: Path) -> str:
    return "\n".join(f"== {p}\n{p.read_text()[-1500:]}" for p in sorted(root.rglob("log_*")))


def test_the_script_is_the_original_but_for_the_gpu_flag():
    text = script(VARIABLES)
    assert text.count("--device cpu --workers 0 --threads 1") == 1  # training
    assert text.count("--device cpu --workers 0 --predict-choice") == 3  # eval, eval, submit
    original_lines = [line for line in ORIGINAL.splitlines() if "--gpu" not in line]
    assert all(line in text.splitlines() for line in original_lines)


@pytest.mark.slow
def test_original_train_evaluate_submit(checkout):
    result = run(checkout, VARIABLES)
    assert result.returncode == 0, result.stderr + logs(checkout)
    snapshot = checkout / "checkpoint/snapshots_resnet18_asp_oc_dsn_1e-2_5e-4_2_2"
    state = torch.load(snapshot / "CS_scenes_2.pth", weights_only=True)
    assert state["meta"]["dataset"] == "cityscapes" and state["meta"]["num_classes"] == 19
    for split in ("val", "train"):
        metrics = checkout / f"visualize/resnet18_asp_oc_dsn_{split}_1e-2_5e-4_2_2/metrics.json"
        assert len(json.loads(metrics.read_text())["per_class"]) == 19
    # --store-output=False in evaluation: scores only.
    assert not (checkout / "visualize/resnet18_asp_oc_dsn_val_1e-2_5e-4_2_2/color").exists()
    test = checkout / "visualize/resnet18_asp_oc_dsn_test_1e-2_5e-4_2_2"
    names = ["berlin/berlin_000000_000019.png", "bielefeld/bielefeld_000000_000019.png"]
    with zipfile.ZipFile(test / "submission.zip") as archive:
        assert archive.namelist() == names
    for name in names:
        ids = cv2.imread(str(test / name), cv2.IMREAD_UNCHANGED)
        assert ids.shape == (64, 128) and set(np.unique(ids)) <= {7, 8, 11, 12, 13, 17, 19, 20,
            21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}  # fmt: skip
        # --store-output=True in the submission: the colour pictures, beside the zip.
        color = cv2.imread(str(test / "color" / name))
        assert color.shape == (64, 128, 3)


@pytest.mark.slow
def test_original_ohem_variant_with_val_and_coarse(checkout):
    variables = {**VARIABLES, **OHEM, "MAX_ITERS": "3"}
    result = run(checkout, variables)
    assert result.returncode == 0, result.stderr + logs(checkout)
    snapshot = checkout / "checkpoint/snapshots_resnet18_asp_oc_dsn_1e-2_5e-4_2_3"
    saved = torch.load(snapshot / "checkpoint_3.pth", weights_only=True)["args"]
    assert saved["ohem"] and saved["ohem_keep"] == 100000 and saved["ohem_thres"] == 0.7
    assert saved["use_val"] and saved["use_extra"] and saved["dataset"] == "cityscapes"
    metrics = checkout / "visualize/resnet18_asp_oc_dsn_val_1e-2_5e-4_2_3/metrics.json"
    assert len(json.loads(metrics.read_text())["per_class"]) == 19


def test_original_training_flags_mean_what_they_meant(checkout, monkeypatch):
    """The training line's flags as parsed here: OHEM on, class weights, train + val + coarse."""
    monkeypatch.chdir(checkout)
    argv = (
        "--network resnet18 --method asp_oc_dsn --random-mirror --random-scale --batch-size 2 "
        "--snapshot-dir ./s/ --num-steps 3 --ohem True --data-list ./dataset/list/cityscapes/"
        "train.lst --weight-decay 5e-4 --input-size 65,65 --ohem-thres 0.7 --ohem-keep 100000 "
        "--use-val True --use-weight True --snapshot-dir ./s/ --restore-from none --start-iters 0 "
        "--learning-rate 1e-2 --use-extra True --dataset cityscapes_train "
        "--data-dir ./dataset/cityscapes"
    ).split()
    args = train.get_args_parser().parse_args(argv)
    assert args.dataset == "cityscapes" and args.ohem and args.use_weight
    assert args.random_mirror and args.random_scale and args.use_val and args.use_extra
    dataset = train_dataset(args)
    splits = [s.image.split("/")[-3] for s in dataset.samples]
    assert splits == ["train"] * 3 + ["val"] * 2 + ["train_extra"] * 2
    off = train.get_args_parser().parse_args([*argv, "--use-val=False", "--use-extra", "False"])
    assert not off.use_val and not off.use_extra and len(train_dataset(off).samples) == 3
