"""The successors' run scripts pass their published recipes (PYTHON is a recording stub)."""

from __future__ import annotations

import pytest
from test_train import run_script

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
