import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import evaluate
from dataset.catalog import DATASETS
from dataset.palette import palette
from inplace_abn import ABN
from network import get_segmentation_model

REPO = Path(__file__).resolve().parents[1]
MODEL = ("resnet18", "base_oc_dsn")
# labelIds drawn for the fake ground truth: several trained classes plus ignored ones (0, 4).
LABEL_IDS = (0, 4, 7, 8, 11, 17, 21, 23, 24, 26)
CAFFE_MEAN = np.array((102.9801, 115.9465, 122.7717), dtype=np.float32)


def make_tree(root, sizes=((64, 128), (64, 128), (64, 128)), split="val", seed=0):
    """A tiny Cityscapes-layout tree and list file: noise images with labelId ground truth."""
    rng = np.random.default_rng(seed)
    lines = []
    for k, (height, width) in enumerate(sizes):
        city = ("aachen", "bonn")[k % 2]
        name = f"{city}_{k:06d}_{19 + k:06d}"
        image_rel = f"leftImg8bit/{split}/{city}/{name}_leftImg8bit.png"
        label_rel = f"gtFine/{split}/{city}/{name}_gtFine_labelIds.png"
        for rel in (image_rel, label_rel):
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        # Blocky images so a random network gives spatially varied predictions.
        small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
        label = rng.choice(LABEL_IDS, size=(height, width)).astype(np.uint8)
        cv2.imwrite(os.path.join(root, image_rel), image)
        cv2.imwrite(os.path.join(root, label_rel), label)
        lines.append(f"{image_rel} {label_rel}")
    list_path = os.path.join(root, f"{split}.lst")
    Path(list_path).write_text("\n".join(lines) + "\n")
    return list_path


def caffe_input(image_path):
    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    rgb = bgr[:, :, ::-1].astype(np.float32) - CAFFE_MEAN
    return torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None]


def make_model(image_paths, num_classes=19, method=MODEL[1], seed=0):
    """A random model whose BN statistics are set on the images, so predictions vary."""
    torch.manual_seed(seed)
    model = get_segmentation_model(f"{MODEL[0]}_{method}", num_classes, norm_layer=ABN)
    images = torch.cat([caffe_input(p) for p in image_paths])
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = 1.0
        model.train()
        model(images)
        head = model.cls if hasattr(model, "cls") else model.layer6
        head.weight.normal_(0, 1)
        head.bias.zero_()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1
    return model.eval()


def list_images(root, list_path):
    return [
        os.path.join(root, line.split()[0])
        for line in Path(list_path).read_text().split("\n")
        if line
    ]


def list_labels(root, list_path):
    return [
        os.path.join(root, line.split()[1])
        for line in Path(list_path).read_text().split("\n")
        if line
    ]


def reference_prediction(model, image_path):
    """Independent whole-image prediction: forward, upsample (align_corners), argmax."""
    x = caffe_input(image_path)
    with torch.no_grad():
        logits = model(x)[-1]
    logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)
    return logits.argmax(1)[0].numpy()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    list_path = make_tree(str(root))
    model = make_model(list_images(root, list_path))
    ckpt = root / "model.pth"
    torch.save(model.state_dict(), ckpt)
    return {"root": str(root), "list": list_path, "ckpt": str(ckpt), "model": model}


def base_args(setup, out, *extra, ckpt=None):
    return [
        "--ckpt", ckpt or setup["ckpt"],
        "--network", MODEL[0], "--method", MODEL[1],
        "--data-dir", setup["root"], "--data-list", setup["list"],
        "--device", "cpu", "--workers", "0", "--output-path", str(out), *extra,
    ]  # fmt: skip


def run_error(args, capsys, status=2):
    """Run the CLI in-process; return its single stderr line, checking exit status and format.

    Status 2: found by the checks before any work; 1: the run failed on the way.
    """
    with pytest.raises(SystemExit) as info:
        evaluate.main(evaluate.get_args_parser().parse_args(args))
    assert info.value.code == status
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("evaluate.py: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def naive_scores(preds, labels, num_classes=19):
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    for pred, label in zip(preds, labels):
        for g, p in zip(label.ravel(), pred.ravel()):
            if g != 255:
                conf[g, p] += 1
    ious = {}
    for c in range(num_classes):
        union = conf[c].sum() + conf[:, c].sum() - conf[c, c]
        ious[c] = conf[c, c] / union if union else None
    valid = [v for v in ious.values() if v is not None]
    return ious, sum(valid) / len(valid), np.trace(conf) / conf.sum()


def test_evaluate_matches_independent_computation(setup, tmp_path):
    evaluate.main(
        evaluate.get_args_parser().parse_args(
            base_args(setup, tmp_path, "--store-output", "--num-panels", "2")
        )
    )
    images = list_images(setup["root"], setup["list"])
    lut = DATASETS["cityscapes"].label_lut
    preds = [reference_prediction(setup["model"], p) for p in images]
    labels = [
        lut[cv2.imread(p, cv2.IMREAD_UNCHANGED)] for p in list_labels(setup["root"], setup["list"])
    ]
    assert len(np.unique(np.concatenate([p.ravel() for p in preds]))) >= 4  # not constant
    ious, miou, pixel_acc = naive_scores(preds, labels)

    data = json.loads((tmp_path / "metrics.json").read_text())
    assert set(data) == {"mIoU", "pixel_acc", "mean_acc", "per_class"}
    assert data["mIoU"] == pytest.approx(miou, abs=1e-9)
    assert data["pixel_acc"] == pytest.approx(pixel_acc, abs=1e-9)
    per_class = list(data["per_class"].values())
    assert list(data["per_class"])[:3] == ["road", "sidewalk", "building"]
    for c in range(19):
        assert per_class[c] == (None if ious[c] is None else pytest.approx(ious[c], abs=1e-9))
    assert (tmp_path / "metrics.csv").read_text().startswith("class,iou,accuracy")

    names = [Path(p).name.replace("_leftImg8bit", "") for p in images]
    for name, pred in zip(names, preds):
        stored = cv2.imread(str(tmp_path / "trainid" / name), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(stored, pred)
        color = cv2.imread(str(tmp_path / "color" / name))[:, :, ::-1]
        assert np.array_equal(color, palette("cityscapes")[pred])
    panels = sorted(p.name for p in (tmp_path / "panels").iterdir())
    assert panels == sorted(names[:2])
    panel = cv2.imread(str(tmp_path / "panels" / names[0]))
    assert panel.shape == (64, 3 * 128, 3)
    leftovers = [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []


@pytest.mark.parametrize("wrap", ["project", "module"])
def test_checkpoint_formats_give_the_same_scores(setup, tmp_path, wrap):
    state = setup["model"].state_dict()
    if wrap == "project":
        obj = {"model": state, "iteration": 7, "args": {"method": MODEL[1]}, "metrics": {}}
    else:
        obj = {f"module.{k}": v for k, v in state.items()}
    ckpt = tmp_path / f"{wrap}.pth"
    torch.save(obj, ckpt)
    evaluate.main(
        evaluate.get_args_parser().parse_args(base_args(setup, tmp_path / "a", ckpt=str(ckpt)))
    )
    evaluate.main(evaluate.get_args_parser().parse_args(base_args(setup, tmp_path / "b")))
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a == b


def test_sliding_and_multiscale_flags_run_and_differ_from_whole(setup, tmp_path):
    evaluate.main(evaluate.get_args_parser().parse_args(base_args(setup, tmp_path / "w")))
    evaluate.main(evaluate.get_args_parser().parse_args(
        base_args(
            setup, tmp_path / "s", "--predict-choice", "sliding", "--input-size", "48,64",
            "--use-ms", "--scales", "0.75,1.25", "--use-flip", "--batch-size", "2",
        )
    ))  # fmt: skip
    whole = json.loads((tmp_path / "w" / "metrics.json").read_text())
    other = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert 0 <= other["mIoU"] <= 1 and other["mIoU"] != whole["mIoU"]


def test_error_wrong_class_count(setup, tmp_path, capsys):
    line = run_error(base_args(setup, tmp_path, "--num-classes", "7"), capsys)
    assert line.startswith(
        f"evaluate.py: error: checkpoint {setup['ckpt']} does not fit the model:"
    )
    assert "another class count" in line


def test_error_wrong_method(setup, tmp_path, capsys):
    args = base_args(setup, tmp_path)
    args[args.index("--method") + 1] = "asp_oc_dsn"
    line = run_error(args, capsys)
    assert "does not fit the model" in line and "another --method" in line


def test_error_missing_checkpoint(setup, tmp_path, capsys):
    missing = str(tmp_path / "nope.pth")
    line = run_error(base_args(setup, tmp_path, ckpt=missing), capsys)
    assert line == f"evaluate.py: error: checkpoint {missing} does not exist"


def test_error_corrupt_checkpoint(setup, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(Path(setup["ckpt"]).read_bytes()[:5000])
    line = run_error(base_args(setup, tmp_path, ckpt=str(corrupt)), capsys)
    assert line.startswith(
        f"evaluate.py: error: checkpoint {corrupt} could not be read; it is truncated or corrupt"
    )


def test_error_missing_list(setup, tmp_path, capsys):
    args = base_args(setup, tmp_path)
    args[args.index("--data-list") + 1] = str(tmp_path / "missing.lst")
    line = run_error(args, capsys)
    assert line == f"evaluate.py: error: list file {tmp_path / 'missing.lst'} not found"


def test_error_mixed_sizes_in_a_batch(setup, tmp_path, capsys):
    root = tmp_path / "mixed"
    list_path = make_tree(str(root), sizes=((64, 128), (32, 64)))
    args = base_args(setup, tmp_path / "out", "--batch-size", "2")
    args[args.index("--data-dir") + 1] = str(root)
    args[args.index("--data-list") + 1] = list_path
    line = run_error(args, capsys, status=1)
    first, second = list_images(str(root), list_path)
    assert line == (
        f"evaluate.py: error: images in one batch must have one size, but {first} is 64x128 "
        f"and {second} is 32x64; use --batch-size 1 for mixed sizes"
    )
    evaluate.main(
        evaluate.get_args_parser().parse_args(args[:-2] + ["--batch-size", "1"])
    )  # works one at a time
    assert (tmp_path / "out" / "metrics.json").is_file()


def test_error_output_path_not_writable(setup, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = run_error(base_args(setup, blocker / "sub"), capsys)
    assert line.startswith(f"evaluate.py: error: --output-path {blocker / 'sub'} cannot be created")
    line = run_error(base_args(setup, blocker), capsys)
    assert line == f"evaluate.py: error: --output-path {blocker} exists and is not a folder"


def test_error_corrupt_image_leaves_no_partial_files(setup, tmp_path, capsys):
    root = tmp_path / "broken"
    list_path = make_tree(str(root))
    bad = list_images(str(root), list_path)[1]
    Path(bad).write_bytes(b"\x89PNG not really")
    args = base_args(setup, tmp_path / "out", "--store-output")
    args[args.index("--data-dir") + 1] = str(root)
    args[args.index("--data-list") + 1] = list_path
    line = run_error(args, capsys, status=1)
    assert bad in line and "unreadable" in line
    written = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["aachen_000000_000019.png"] * 3  # trainid, colour, panel of the first
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_error_is_one_line_from_a_subprocess(setup, tmp_path):
    proc = subprocess.run(
        [sys.executable, "evaluate.py", *base_args(setup, tmp_path, "--num-classes", "7")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("evaluate.py: error: checkpoint")


@pytest.mark.slow
def test_two_processes_sum_their_confusion_matrices(setup, tmp_path):
    """torchrun with 2 CPU (gloo) ranks: each scores half the list; the sum equals one process."""
    evaluate.main(evaluate.get_args_parser().parse_args(base_args(setup, tmp_path / "one")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--standalone", "evaluate.py", *base_args(setup, tmp_path / "two")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(2 process(es))" in proc.stdout
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert one == two
