"""The successors' run scripts pass their published recipes (PYTHON is a recording stub)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import pytest
from test_train import REPO, run_script

from utils.checkpoint import load_checkpoint

RECIPES = {
    # openseg.pytorch configs/cityscapes/R_101_D_8.json + its MODEL_ZOO (batch 8, 40k steps).
    "run_isa_oc.sh": (
        "resnet101", "isa_oc_dsn", "openseg",
        "--input-size 512,1024 --batch-size 8 --learning-rate 1e-2 --weight-decay 5e-4",
        "--num-steps 40000",
    ),
    "run_ocr.sh": (
        "resnet101", "ocr_dsn", "openseg",
        "--input-size 512,1024 --batch-size 8 --learning-rate 1e-2 --weight-decay 5e-4",
        "--num-steps 40000",
    ),
    # HRNet-OCR's seg_hrnet_ocr_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml.
    "run_hrnet_ocr.sh": (
        "hrnetv2_w48", "ocr_dsn", "imagenet",
        "--input-size 512,1024 --batch-size 12 --learning-rate 1e-2 --weight-decay 5e-4",
        "--num-steps 119548",
    ),
}  # fmt: skip


@pytest.mark.parametrize("script", sorted(RECIPES))
def test_successor_scripts_run_their_recipe(tmp_path, script):
    network, method, normalize, optimisation, steps = RECIPES[script]
    result, calls = run_script(script, tmp_path)
    assert result.returncode == 0, result.stderr
    train_call, eval_call, submit_call = calls
    model = f"--network {network} --method {method} "
    for call in calls:
        assert model in call and f"--normalize {normalize} " in call
    assert optimisation in train_call and steps in train_call
    assert "--ohem False" in train_call and "--use-weight True" in train_call
    assert eval_call.startswith("-u evaluate.py ") and submit_call.startswith("-u generate_submit")
    if network.startswith("hrnet"):
        assert "--restore-from ./pretrained_model/hrnetv2_w48_imagenet_pretrained.pth" in train_call


@pytest.mark.slow
def test_demo_runs_hrnet_ocr_end_to_end(tmp_path):
    """``NETWORK=hrnetv2_w18 METHOD=ocr_dsn sh run_demo.sh``, shrunk to seconds: every step runs
    and leaves its outputs."""
    out = tmp_path / "demo"
    settings = {
        "PYTHON": sys.executable, "OUT": str(out), "NETWORK": "hrnetv2_w18", "METHOD": "ocr_dsn",
        "TRAIN_IMAGES": "4", "VAL_IMAGES": "2", "TEST_IMAGES": "2", "SCENE_SIZE": "64,128",
        "INPUT_SIZE": "65,65", "BATCHSIZE": "2", "STEPS": "2", "WORKERS": "0",
        "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    result = subprocess.run(
        ["sh", str(REPO / "run_demo.sh")], env={**os.environ, **settings},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = load_checkpoint(out / "snapshots" / "CS_scenes_2.pth")
    assert (checkpoint["meta"]["network"], checkpoint["meta"]["method"]) == (
        "hrnetv2_w18",
        "ocr_dsn",
    )
    scores = json.loads((out / "eval" / "metrics.json").read_text())
    assert 0.0 <= scores["mIoU"] <= 1.0
    assert len(list((out / "submit").rglob("*.zip"))) == 1
    overlays = sorted((out / "predict").rglob("*_overlay.png"))
    assert len(overlays) == 2 and all(cv2.imread(str(p)).shape == (64, 128, 3) for p in overlays)
    (attention,) = (out / "attention").rglob("*_attention_72_28.png")
    height, width = cv2.imread(str(attention)).shape[:2]
    assert width == 128 and height >= 64  # a title bar above the picture
    assert f"attention picture (where pixel 72,28 looks): {attention}" in result.stdout
