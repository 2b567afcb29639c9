"""predict.py: files, folders and globs in; class-index, colour, overlay and attention PNGs out.

Predictions are compared with a forward pass written out here; images include odd sizes,
grayscale, RGBA and a broken file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_predictor import small_model

import predict
from dataset.palette import palette
from inplace_abn import ABN
from network import get_segmentation_model

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
MEAN = np.array((0.485, 0.456, 0.406), dtype=np.float32)
STD = np.array((0.229, 0.224, 0.225), dtype=np.float32)


def blocky(height, width, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, height // 6), max(1, width // 6), channels), np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    return image if channels > 1 else image.reshape(height, width)


def make_model():
    """resnet18 Base-OC, context on, batch-norm statistics from a few images (varied output),
    and a classifier with large weights so that all 19 classes show up."""
    model = small_model("base_oc_dsn", 19)
    with torch.no_grad():
        model.cls.weight.normal_(0, 1)
    return model


def reference_labels(model, rgb):
    """Independent: imagenet normalisation, forward, align_corners upsampling, argmax."""
    x = (rgb.astype(np.float32) / 255 - MEAN) / STD
    x = torch.from_numpy(x.transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        logits = model(x)[-1]
    logits = F.interpolate(logits, size=rgb.shape[:2], mode="bilinear", align_corners=True)
    return logits.argmax(1)[0].numpy().astype(np.uint8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    model = make_model()
    meta = {
        "network": "resnet18",
        "method": "base_oc_dsn",
        "num_classes": 19,
        "dataset": "cityscapes",
        "normalize": "imagenet",
    }
    ckpt = root / "model.pth"
    torch.save({"model": model.state_dict(), "meta": meta}, ckpt)
    bare = root / "bare.pth"
    torch.save(model.state_dict(), bare)
    photos = root / "photos"
    (photos / "day").mkdir(parents=True)
    rgb = {
        "street": blocky(45, 67, seed=1),  # odd size
        "day/wide": blocky(40, 96, seed=2),
        "day/gray": np.dstack([blocky(37, 53, channels=1, seed=3)] * 3),
        "day/alpha": blocky(48, 48, seed=4),
    }
    cv2.imwrite(str(photos / "street.png"), rgb["street"][:, :, ::-1])
    cv2.imwrite(
        str(photos / "day" / "wide.jpg"),
        rgb["day/wide"][:, :, ::-1],
        [cv2.IMWRITE_JPEG_QUALITY, 100],
    )
    rgb["day/wide"] = cv2.imread(str(photos / "day" / "wide.jpg"))[:, :, ::-1]  # as decoded
    cv2.imwrite(str(photos / "day" / "gray.png"), rgb["day/gray"][:, :, 0])
    alpha = np.dstack([rgb["day/alpha"][:, :, ::-1], np.full((48, 48), 90, np.uint8)])
    cv2.imwrite(str(photos / "day" / "alpha.png"), alpha)
    (photos / "broken.png").write_bytes(b"\x89PNG not really")
    (photos / "readme.txt").write_text("ignored: not an image suffix")
    return {"root": root, "model": model, "ckpt": ckpt, "bare": bare, "photos": photos, "rgb": rgb}


def run(args, capsys=None):
    """Run predict.py in-process; return (exit status, stderr)."""
    try:
        predict.main(predict.get_args_parser().parse_args([str(a) for a in args]))
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    err = capsys.readouterr().err if capsys is not None else ""
    return status, err


def base(setup, out, *extra):
    return [
        "--ckpt",
        setup["ckpt"],
        "--output-dir",
        out,
        "--device",
        "cpu",
        "--workers",
        "0",
        *extra,
    ]


def test_folder_in_labels_colours_overlays_out(setup, tmp_path, capsys):
    out = tmp_path / "out"
    status, err = run(
        base(setup, out, setup["photos"], "--color", "--overlay", "--alpha", "0.3"), capsys
    )
    # The broken file is named, skipped, and makes the exit status 1; the others are written.
    assert status == 1
    assert f"predict.py: skipped {setup['photos'] / 'broken.png'}: unreadable" in err
    assert err.strip().splitlines()[-1].startswith("predict.py: error: 1 input(s) skipped")
    assert "Traceback" not in err
    colours = palette("cityscapes")
    for name, rgb in setup["rgb"].items():
        labels = cv2.imread(str(out / f"{name}_trainIds.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == rgb.shape[:2], name
        assert np.array_equal(labels, reference_labels(setup["model"], rgb)), name
        color = cv2.imread(str(out / f"{name}_color.png"))[:, :, ::-1]
        assert np.array_equal(color, colours[labels])
        overlay = cv2.imread(str(out / f"{name}_overlay.png"))[:, :, ::-1].astype(int)
        expected = np.round(0.7 * rgb + 0.3 * colours[labels].astype(np.float32))
        assert np.abs(overlay - expected).max() <= 1
    assert len(np.unique(cv2.imread(str(out / "street_trainIds.png"), 0))) >= 2
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert len(written) == 3 * 4 and not any(".tmp-" in p for p in written)


def test_files_and_globs_batches_and_test_time_options(setup, tmp_path, capsys):
    day = setup["photos"] / "day"
    one = tmp_path / "one"
    status, _ = run(base(setup, one, setup["photos"] / "street.png", f"{day}/*.png"), capsys)
    assert status == 0
    assert sorted(p.name for p in one.iterdir()) == [
        "alpha_trainIds.png",
        "gray_trainIds.png",
        "street_trainIds.png",
    ]
    # Batches of mixed sizes give what one image at a time gives.
    two = tmp_path / "two"
    status, _ = run(
        base(setup, two, setup["photos"] / "street.png", f"{day}/*.png", "--batch-size", "3"),
        capsys,
    )
    assert status == 0
    for name in ("street", "gray", "alpha"):
        a = cv2.imread(str(one / f"{name}_trainIds.png"), 0)
        b = cv2.imread(str(two / f"{name}_trainIds.png"), 0)
        assert np.array_equal(a, b), name
    options = ("--predict-choice", "sliding", "--input-size", "32,40", "--use-flip")
    status, _ = run(base(setup, tmp_path / "s", setup["photos"] / "street.png", *options), capsys)
    assert status == 0
    assert cv2.imread(str(tmp_path / "s" / "street_trainIds.png"), 0).shape == (45, 67)


def test_overlay_is_a_switch_and_the_folder_after_it_an_input(setup, tmp_path, capsys):
    """The command of a new user: ``predict.py --ckpt F --overlay DIR``."""
    out = tmp_path / "out"
    day = setup["photos"] / "day"
    argv = ["--ckpt", setup["ckpt"], "--output-dir", out, "--device", "cpu", "--workers", "0"]
    status, err = run([*argv, "--overlay", day], capsys)
    assert status == 0 and "error" not in err
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        f"{n}_{k}.png" for n in ("alpha", "gray", "wide") for k in ("overlay", "trainIds")
    ]
    rgb = setup["rgb"]["day/gray"]
    labels = reference_labels(setup["model"], rgb)
    overlay = cv2.imread(str(out / "gray_overlay.png"))[:, :, ::-1].astype(int)
    expected = np.round(0.5 * rgb + 0.5 * palette("cityscapes")[labels].astype(np.float32))
    assert np.abs(overlay - expected).max() <= 1
    # --no-overlay after it wins; the switch takes no value, so "True" is an input (missing).
    status, err = run(
        [*argv, "--output-dir", tmp_path / "none", "--overlay", "--no-overlay", day], capsys
    )
    assert status == 0 and sorted(p.name for p in (tmp_path / "none").iterdir()) == [
        "alpha_trainIds.png", "gray_trainIds.png", "wide_trainIds.png",
    ]  # fmt: skip
    status, err = run([*argv, "--overlay", "True"], capsys)
    assert (status, err) == (
        2,
        "predict.py: error: no images to predict: True: no such file or folder\n",
    )


def test_attention_pictures(setup, tmp_path, capsys):
    out = tmp_path / "att"
    image = setup["photos"] / "street.png"
    args = base(setup, out, image, "--attention-at", "10,20", "--attention-at", "66,44")
    status, _ = run(args, capsys)
    assert status == 0
    for x, y in ((10, 20), (66, 44)):
        picture = cv2.imread(str(out / f"street_attention_{x}_{y}.png"))
        assert picture.shape == (45 + 22, 67, 3)  # one attention module: one titled panel
    status, err = run(base(setup, tmp_path / "o", image, "--attention-at", "67,0"), capsys)
    assert status == 1 and "--attention-at 67,0 is outside its 67x45" in err


def test_a_checkpoint_without_meta_needs_the_model_flags(setup, tmp_path, capsys):
    image = setup["photos"] / "street.png"
    args = ["--ckpt", setup["bare"], "--output-dir", tmp_path, "--device", "cpu", image]
    status, err = run(args, capsys)
    assert status == 2
    assert err.strip() == (
        f"predict.py: error: checkpoint {setup['bare']} does not record its model (no 'meta'; "
        "e.g. an original OCNet or openseg.pytorch file): give --network and --method"
    )
    flags = ["--network", "resnet18", "--method", "base_oc_dsn", "--normalize", "imagenet"]
    status, _ = run(args + flags + ["--workers", "0"], capsys)
    assert status == 0
    labels = cv2.imread(str(tmp_path / "street_trainIds.png"), 0)
    assert np.array_equal(labels, reference_labels(setup["model"], setup["rgb"]["street"]))


def test_usage_errors_come_before_any_work(setup, tmp_path, capsys):
    status, err = run(base(setup, tmp_path / "a", tmp_path / "nothing-here"), capsys)
    assert status == 2 and "no images to predict" in err and "nothing-here" in err
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for folder in ("x", "y"):
        cv2.imwrite(str(tmp_path / folder / "same.png"), blocky(16, 16))
    status, err = run(
        base(setup, tmp_path / "b", tmp_path / "x" / "same.png", tmp_path / "y" / "same.png"),
        capsys,
    )
    assert status == 2 and "would both write" in err
    status, err = run(base(setup, tmp_path / "c", setup["photos"], "--alpha", "2"), capsys)
    assert (status, err) == (2, "predict.py: error: --alpha must lie in [0, 1], got 2\n")
    baseline = tmp_path / "baseline.pth"
    model = get_segmentation_model("resnet18_baseline", 19, norm_layer=ABN)
    meta = {"network": "resnet18", "method": "baseline", "num_classes": 19}
    torch.save({"model": model.state_dict(), "meta": meta}, baseline)
    args = [
        "--ckpt",
        baseline,
        "--output-dir",
        tmp_path / "d",
        setup["photos"],
        "--attention-at",
        "1,1",
    ]
    status, err = run(args, capsys)
    assert status == 2 and "baseline has no attention" in err


def test_from_a_shell_errors_are_one_line(setup, tmp_path):
    proc = subprocess.run(
        [sys.executable, "predict.py", "--ckpt", str(setup["ckpt"]), "--output-dir",
         str(tmp_path), "--device", "cpu", "--workers", "0", str(setup["photos"] / "broken.png"),
         str(setup["photos"] / "street.png")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("predict.py: error: 1 input(s)")
    assert (tmp_path / "street_trainIds.png").is_file()
