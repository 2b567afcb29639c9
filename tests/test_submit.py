import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_evaluate import MODEL, make_model, make_tree, reference_prediction

import evaluate
import generate_submit
from dataset.catalog import DATASETS
from dataset.palette import palette

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    list_path = make_tree(str(root), split="test")
    images = [line.split()[0] for line in Path(list_path).read_text().splitlines()]
    image_list = root / "images_only.lst"
    image_list.write_text("\n".join(images) + "\n")  # a real test list: no labels
    model = make_model([root / p for p in images])
    ckpt = root / "model.pth"
    torch.save(model.state_dict(), ckpt)
    return {
        "root": root,
        "list": str(image_list),
        "images": images,
        "ckpt": str(ckpt),
        "model": model,
    }


def submit_args(setup, out, *extra):
    return [
        "--ckpt", setup["ckpt"], "--network", MODEL[0], "--method", MODEL[1],
        "--data-dir", str(setup["root"]), "--data-list", setup["list"],
        "--device", "cpu", "--workers", "0", "--output-path", str(out), *extra,
    ]  # fmt: skip


def test_trainid_labelid_round_trip_against_cityscapesscripts():
    from cityscapesscripts.helpers.labels import trainId2label

    to_label, to_train = DATASETS["cityscapes"].submission_lut, DATASETS["cityscapes"].label_lut
    for train_id in range(19):
        assert to_label[train_id] == trainId2label[train_id].id
        assert to_train[to_label[train_id]] == train_id


def test_submission_files_names_layout_and_zip(setup, tmp_path):
    generate_submit.main(generate_submit.get_args_parser().parse_args(submit_args(setup, tmp_path)))
    expected = [
        "aachen/aachen_000000_000019.png",
        "bonn/bonn_000001_000020.png",
        "aachen/aachen_000002_000021.png",
    ]
    pngs = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.png"))
    assert pngs == sorted(expected)
    with zipfile.ZipFile(tmp_path / "submission.zip") as archive:
        assert archive.namelist() == expected
        for name in expected:
            assert archive.read(name) == (tmp_path / name).read_bytes()
    to_label = DATASETS["cityscapes"].submission_lut
    for rel, image in zip(expected, setup["images"]):
        stored = cv2.imread(str(tmp_path / rel), cv2.IMREAD_UNCHANGED)
        assert stored.dtype == np.uint8 and stored.shape == (64, 128)
        assert np.array_equal(
            stored, to_label[reference_prediction(setup["model"], setup["root"] / image)]
        )
        assert set(np.unique(stored)) <= {
            7,
            8,
            11,
            12,
            13,
            17,
            19,
            20,
            21,
            22,
            23,
            24,
            25,
            26,
            27,
            28,
            31,
            32,
            33,
        }
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_store_output_writes_colour_pictures(setup, tmp_path):
    """--store-output=True (the original's flag) adds colour pictures, outside the zip."""
    generate_submit.main(
        generate_submit.get_args_parser().parse_args(
            submit_args(setup, tmp_path, "--store-output=True")
        )
    )
    ids = cv2.imread(str(tmp_path / "bonn/bonn_000001_000020.png"), cv2.IMREAD_UNCHANGED)
    color = cv2.imread(str(tmp_path / "color/bonn/bonn_000001_000020.png"))[:, :, ::-1]
    expected = palette("cityscapes")[DATASETS["cityscapes"].label_lut[ids]]
    np.testing.assert_array_equal(color, expected)
    with zipfile.ZipFile(tmp_path / "submission.zip") as archive:
        assert not [n for n in archive.namelist() if n.startswith("color")]
    args = generate_submit.get_args_parser().parse_args(
        submit_args(setup, tmp_path, "--store-output", "False")
    )
    assert args.store_output is False


def test_every_scale_is_used(setup, tmp_path):
    """0.75 alone through --use-ms must equal --whole-scale 0.75 and differ from scale 1."""
    generate_submit.main(
        generate_submit.get_args_parser().parse_args(
            submit_args(setup, tmp_path / "ms", "--use-ms", "--scales", "0.75")
        )
    )
    generate_submit.main(
        generate_submit.get_args_parser().parse_args(
            submit_args(setup, tmp_path / "ws", "--whole-scale", "0.75")
        )
    )
    generate_submit.main(
        generate_submit.get_args_parser().parse_args(submit_args(setup, tmp_path / "one"))
    )
    read = lambda d: [(d / "aachen" / "aachen_000000_000019.png").read_bytes()]  # noqa: E731
    assert read(tmp_path / "ms") == read(tmp_path / "ws")
    assert read(tmp_path / "ms") != read(tmp_path / "one")


def test_submit_error_is_one_line(setup, tmp_path, capsys):
    missing = str(tmp_path / "missing.pth")
    args = submit_args(setup, tmp_path)
    args[1] = missing
    with pytest.raises(SystemExit) as info:
        generate_submit.main(generate_submit.get_args_parser().parse_args(args))
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"generate_submit.py: error: checkpoint {missing} does not exist\n"
    )
    assert not (tmp_path / "submission.zip").exists()


OFFICIAL = """
import json, glob, sys
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev
ev.args.evalInstLevelScore = False  # crashes on numpy >= 2.4 (np.in1d); class IoU unaffected
ev.args.JSONOutput = False
ev.args.quiet = True
gt = sorted(glob.glob(ev.args.groundTruthSearch))
pred = [ev.getPrediction(ev.args, g) for g in gt]
result = ev.evaluateImgLists(pred, gt, ev.args)
print(json.dumps({"mIoU": result["averageScoreClasses"], "per_class": result["classScores"],
                  "count": len(gt)}))
"""


def official_scores(dataset_root, results_root, export_dir):
    env = {
        **os.environ,
        "CITYSCAPES_DATASET": str(dataset_root),
        "CITYSCAPES_RESULTS": str(results_root),
        "CITYSCAPES_EXPORT_DIR": str(export_dir),
    }
    proc = subprocess.run(
        [sys.executable, "-c", OFFICIAL], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("source", ["synthetic", "noise"])
def test_agrees_with_the_official_evaluator(tmp_path, source):
    """Our mIoU and per-class IoU equal cityscapesscripts' on files written by generate_submit.

    "synthetic": the project's scene generator; "noise": random labels including ignored ids.
    """
    data = tmp_path / "data"
    if source == "synthetic":
        subprocess.run(
            [sys.executable, "-m", "dataset.synthetic", "--out", str(data), "--train", "1",
             "--val", "4", "--test", "1", "--height", "64", "--width", "128", "--seed", "3"],
            cwd=REPO, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        val_list = data / "val.lst"
    else:
        val_list = Path(make_tree(str(data), sizes=[(64, 128)] * 4, split="val", seed=5))
    images = [data / line.split()[0] for line in val_list.read_text().splitlines() if line]
    model = make_model(images)
    ckpt = tmp_path / "model.pth"
    torch.save(model.state_dict(), ckpt)
    common = [
        "--ckpt", str(ckpt), "--network", MODEL[0], "--method", MODEL[1],
        "--data-dir", str(data), "--data-list", str(val_list), "--device", "cpu", "--workers", "0",
    ]  # fmt: skip
    evaluate.main(
        evaluate.get_args_parser().parse_args([*common, "--output-path", str(tmp_path / "ours")])
    )
    generate_submit.main(
        generate_submit.get_args_parser().parse_args(
            [*common, "--split", "val", "--output-path", str(tmp_path / "results")]
        )
    )
    ours = json.loads((tmp_path / "ours" / "metrics.json").read_text())
    official = official_scores(data, tmp_path / "results", tmp_path)
    assert official["count"] == len(images)
    predicted = [v for v in ours["per_class"].values() if v is not None]
    assert len(predicted) >= 3 and 0 < ours["mIoU"] < 1  # predictions are not constant
    assert ours["mIoU"] == pytest.approx(official["mIoU"], abs=0.01)
    for name, value in ours["per_class"].items():
        theirs = official["per_class"][name]
        if value is None:
            assert theirs != theirs  # NaN
        else:
            assert value == pytest.approx(theirs, abs=1e-6)


@pytest.mark.slow
def test_two_spawned_cpu_processes_write_the_same_submission(setup, tmp_path):
    generate_submit.main(
        generate_submit.get_args_parser().parse_args(submit_args(setup, tmp_path / "one"))
    )
    generate_submit.main(
        generate_submit.get_args_parser().parse_args(
            submit_args(setup, tmp_path / "two", "--nproc", "2")
        )
    )
    one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png"))
    two = sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.png"))
    assert one == two and len(one) == 3
    for rel in one:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()
    with zipfile.ZipFile(tmp_path / "two" / "submission.zip") as archive:
        assert sorted(archive.namelist()) == sorted(str(p) for p in one)
