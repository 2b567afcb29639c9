"""More data: your own dataset (classes.csv), LIP, PASCAL-Context, COCO-Stuff-10k, Cityscapes'
coarse set, --use-val / --use-extra, and the per-dataset recipes of the run scripts."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch

import evaluate
import generate_submit
import train
from dataset import DatasetError, dataset_info, get_segmentation_dataset
from dataset.catalog import custom_info
from dataset.make_lists import main as make_lists_main
from dataset.make_lists import make_lists
from dataset.synthetic import CUSTOM_CLASSES, generate, generate_layout
from dataset.synthetic import main as synthetic_main
from engine.cli import UserError, resolve_num_classes
from engine.data import train_dataset
from engine.prediction import prediction_options
from inplace_abn import ABN
from network import get_segmentation_model

REPO = Path(__file__).resolve().parents[1]
CSV_HEADER = "name,value,r,g,b\n"


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


# ------------------------------------------------------------------------- classes.csv


def csv_error(tmp_path: Path, text: str) -> str:
    (tmp_path / "classes.csv").write_text(text)
    with pytest.raises(DatasetError) as info:
        dataset_info("custom", tmp_path)
    return str(info.value)


def test_classes_csv_errors_name_the_row(tmp_path):
    path = tmp_path / "classes.csv"
    assert csv_error(tmp_path, CSV_HEADER + "road,1,0,0,0\ncar,1,9,9,9\n") == (
        f"{path} line 3 ('car'): value 1 is already used on line 2"
    )
    assert csv_error(tmp_path, "name,value,r,g\nroad,1,0,0\n") == (
        f"{path} line 1: missing column b; the header must name name,value,r,g,b"
    )
    assert csv_error(tmp_path, "label,r,g,b\n") == (
        f"{path} line 1: missing columns name, value; the header must name name,value,r,g,b"
    )
    assert csv_error(tmp_path, CSV_HEADER + "road,1,0,0,0\nsky,2,70,300,180\n") == (
        f"{path} line 3 ('sky'): colour g=300 is outside 0..255"
    )
    assert csv_error(tmp_path, CSV_HEADER + "road,1,0,0,0\nsky,-1,0,0,0\n") == (
        f"{path} line 3 ('sky'): value=-1 is outside 0..255"
    )
    assert csv_error(tmp_path, CSV_HEADER + "road,one,0,0,0\n") == (
        f"{path} line 2 ('road'): value must be an integer in 0..255, got 'one'"
    )
    assert csv_error(tmp_path, CSV_HEADER + "road,1,0,0\n") == (
        f"{path} line 2: no b in row 'road,1,0,0'"
    )
    assert csv_error(tmp_path, CSV_HEADER + "road,1,0,0,0\nroad,2,0,0,0\n") == (
        f"{path} line 3: class name 'road' is already used on line 2"
    )
    assert csv_error(tmp_path, CSV_HEADER + "road,1,0,0,0\n") == (
        f"{path} lists 1 class(es); segmentation needs at least 2"
    )
    path.unlink()
    with pytest.raises(DatasetError, match=r"classes.csv not found: a custom dataset needs"):
        dataset_info("custom", tmp_path)


def test_custom_table_from_classes_csv(tmp_path):
    # Columns in any order, blank lines and spaces tolerated; rows give the train ids.
    (tmp_path / "classes.csv").write_text("value, name ,r,g,b\n\n 7,car,0,0,142\n0,bg,1,2,3\n")
    info = dataset_info("custom", tmp_path)
    assert info.class_names == ("car", "bg") and info.num_classes == 2
    assert info.label_lut[7] == 0 and info.label_lut[0] == 1
    assert info.label_lut[5] == 255 and info.known_values.all()  # unlisted values are ignored
    assert info.submission_lut[0] == 7 and info.submission_lut[1] == 0
    assert tuple(info.palette()[0]) == (0, 0, 142) and tuple(info.palette()[255]) == (0, 0, 0)
    assert dataset_info("custom", tmp_path) is info  # cached
    (tmp_path / "classes.csv").write_text(CSV_HEADER + "a,1,0,0,0\nb,2,0,0,0\nc,3,0,0,0\n")
    assert custom_info(tmp_path).num_classes == 3  # a changed file is read again
    args = argparse.Namespace(num_classes=None, dataset="custom", data_dir=str(tmp_path))
    assert resolve_num_classes(args) == 3
    with pytest.raises(ValueError, match="give data_dir"):
        dataset_info("custom")


# ------------------------------------------------------------------------- custom layout


@pytest.fixture(scope="module")
def custom_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    counts = generate_layout(root, "custom", {"train": 3, "val": 2, "test": 2}, 64, 128, seed=1)
    assert counts == {"test": 2, "train": 3, "val": 2, "trainval": 5}
    return root


def test_custom_scan_equals_lists_and_maps_values(custom_tree):
    scanned = get_segmentation_dataset("custom_val", root=str(custom_tree))
    listed = get_segmentation_dataset(
        "custom_val", root=str(custom_tree), list_path=str(custom_tree / "val.lst")
    )
    assert [s.image for s in scanned.samples] == [s.image for s in listed.samples]
    assert [s.name for s in scanned.samples] == ["scene_00000", "street_00001"]
    assert scanned.samples[1].result_folder == "street"  # the sub-folder below images/val/
    _, label, meta = scanned[0]
    raw = cv2.imread(str(custom_tree / "labels/val/scene/scene_00000.png"), -1)
    expected = np.full(raw.shape, 255)
    for train_id, row in enumerate(CUSTOM_CLASSES):
        expected[raw == row.value] = train_id
    assert set(np.unique(raw)) - {r.value for r in CUSTOM_CLASSES} == {0}  # 0: not listed
    np.testing.assert_array_equal(label.numpy(), expected)
    test = get_segmentation_dataset("custom_test", root=str(custom_tree))
    assert len(test) == 2 and all(s.label is None for s in test.samples)


def test_custom_missing_label_and_folder(custom_tree, tmp_path):
    root = tmp_path / "mine"
    (root / "images/train/a").mkdir(parents=True)
    (root / "classes.csv").write_text(CSV_HEADER + "x,1,0,0,0\ny,2,0,0,0\n")
    write_png(root / "images/train/a/p1.jpg", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError) as info:
        get_segmentation_dataset("custom_train", root=str(root))
    assert str(info.value) == (
        f"{root}/images/train/a/p1.jpg: label {root}/labels/train/a/p1.png not found"
    )
    with pytest.raises(FileNotFoundError, match=r"label .*labels/train/a/p1.png for image"):
        make_lists(root, tmp_path / "lists", dataset="custom")
    assert not (tmp_path / "lists").exists()  # nothing written half
    with pytest.raises(DatasetError, match=r"custom dataset image folder .*images/val not found"):
        get_segmentation_dataset("custom_val", root=str(root))


def test_make_lists_and_synthetic_cli_for_custom(custom_tree, tmp_path, capsys):
    make_lists_main(["--data-dir", str(custom_tree), "--dataset", "custom", "--out", str(tmp_path)])
    for name in ("train", "val", "test", "trainval"):
        assert (tmp_path / f"{name}.lst").read_text() == (custom_tree / f"{name}.lst").read_text()
    assert (tmp_path / "test.lst").read_text().splitlines()[
        0
    ] == "images/test/scene/scene_00000.png"
    out = tmp_path / "syn"
    synthetic_main(["--out", str(out), "--layout", "custom", "--train", "1", "--val", "1",
                    "--test", "0", "--height", "32", "--width", "64"])  # fmt: skip
    assert "train.lst: 1" in capsys.readouterr().out
    assert (out / "classes.csv").read_text().startswith(CSV_HEADER + "road,10,128,64,128\n")
    with pytest.raises(SystemExit):
        synthetic_main(["--out", str(out), "--layout", "lip", "--test", "2"])


def tiny_checkpoint(path: Path, num_classes: int) -> str:
    torch.manual_seed(0)
    model = get_segmentation_model("resnet18_base_oc_dsn", num_classes, norm_layer=ABN)
    torch.save(model.state_dict(), path)
    return str(path)


def test_custom_train_and_submit(custom_tree, tmp_path):
    """Class count and values from classes.csv end to end: train.py, then generate_submit.py
    writes the csv's values and (--store-output) its colours."""
    snapshot = tmp_path / "snap"
    train.main(train.get_args_parser().parse_args([
        "--dataset", "custom", "--data-dir", str(custom_tree), "--network", "resnet18",
        "--method", "base_oc_dsn", "--input-size", "33,33", "--batch-size", "2",
        "--num-steps", "1", "--snapshot-dir", str(snapshot), "--workers", "0", "--device", "cpu",
        "--threads", "1", "--use-val=True",
    ]))  # fmt: skip
    state = torch.load(snapshot / "CS_scenes_1.pth", weights_only=True)
    assert state["meta"]["num_classes"] == len(CUSTOM_CLASSES) == 7
    assert state["meta"]["dataset"] == "custom"
    out = tmp_path / "submit"
    generate_submit.main(generate_submit.get_args_parser().parse_args([
        "--dataset", "custom", "--data-dir", str(custom_tree), "--network", "resnet18",
        "--method", "base_oc_dsn", "--ckpt", str(snapshot / "CS_scenes_1.pth"), "--device", "cpu",
        "--workers", "0", "--output-path", str(out), "--store-output", "True",
    ]))  # fmt: skip
    values = {row.value for row in CUSTOM_CLASSES}
    colors = {row.color for row in CUSTOM_CLASSES}
    for stem in ("scene/scene_00000", "street/street_00001"):
        written = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert written.shape == (64, 128) and set(np.unique(written)) <= values
        color = cv2.imread(str(out / "color" / f"{stem}.png"))[:, :, ::-1]
        assert {tuple(c) for c in color.reshape(-1, 3)} <= colors
        # The colour picture shows the same classes as the value PNG.
        by_value = {row.value: row.color for row in CUSTOM_CLASSES}
        np.testing.assert_array_equal(
            color, np.array([by_value[v] for v in written.flat]).reshape(color.shape)
        )


# ------------------------------------------------------------------------- LIP


def lip_tree(root: Path) -> Path:
    """One LIP training image: dark left half labelled Left-arm (14), bright right half
    Right-arm (15)."""
    image = np.zeros((24, 32, 3), np.uint8)
    image[:, 16:] = 230
    label = np.full((24, 32), 14, np.uint8)
    label[:, 16:] = 15
    write_png(root / "TrainVal_images/train_images/100_1.jpg", image)
    write_png(root / "TrainVal_parsing_annotations/train_segmentations/100_1.png", label)
    (root / "TrainVal_images/train_id.txt").write_text("100_1\n")
    return root


def test_lip_flip_swaps_left_and_right(tmp_path):
    info = dataset_info("lip")
    assert info.num_classes == 20 and info.class_names[14:16] == ("Left-arm", "Right-arm")
    assert info.flip_pairs == ((14, 15), (16, 17), (18, 19))
    assert info.flip_channels == [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        10,
        11,
        12,
        13,
        15,
        14,
        17,
        16,
        19,
        18,
    ]
    assert info.flip_lut[255] == 255 and info.flip_lut[18] == 19
    ds = get_segmentation_dataset(
        "lip_train", root=str(lip_tree(tmp_path)), crop_size=(24, 32), scale=False
    )
    seen = set()
    for epoch in range(10):
        ds.set_epoch(epoch)
        image, label, _ = ds[0]
        mirrored = bool(image[:, :, :16].mean() > image[:, :, 16:].mean())
        seen.add(mirrored)
        # Mirrored or not, the left arm is on the left: the flip relabels what it moves.
        assert (label[:, :16] == 14).all() and (label[:, 16:] == 15).all()
    assert seen == {False, True}
    # Without flip pairs (Cityscapes) the same mirror moves labels unchanged.
    assert dataset_info("cityscapes").flip_pairs == ()


def test_lip_layout_id_list_and_errors(tmp_path):
    root = lip_tree(tmp_path)
    (root / "TrainVal_images/train_id.txt").unlink()
    (root / "train_id.txt").write_text("100_1.jpg\n")  # CE2P's place for the list; with suffix
    ds = get_segmentation_dataset("lip_train", root=str(root))
    assert [s.name for s in ds.samples] == ["100_1"]
    (root / "train_id.txt").write_text("100_1\n100_2\n")
    with pytest.raises(DatasetError) as info:
        get_segmentation_dataset("lip_train", root=str(root))
    assert str(info.value) == (
        f"{root}/train_id.txt line 2: image {root}/TrainVal_images/train_images/100_2.jpg not found"
    )
    (root / "train_id.txt").unlink()  # no list: the folder is scanned
    assert len(get_segmentation_dataset("lip_train", root=str(root))) == 1
    cv2.imwrite(
        str(root / "TrainVal_parsing_annotations/train_segmentations/100_1.png"),
        np.full((24, 32), 20, np.uint8),
    )
    with pytest.raises(DatasetError, match=r"contains ids \[20\] that the label table"):
        get_segmentation_dataset("lip_train", root=str(root))[0]


# ------------------------------------------------------------------------- PASCAL-Context


def test_pascal_context_mapping(tmp_path):
    info = dataset_info("pascal_context")
    assert info.num_classes == 59 and info.class_names[0] == "aeroplane"
    assert info.class_names[-1] == "wood"
    generate_layout(tmp_path, "pascal_context", {"train": 1, "val": 1}, 32, 64)
    val = get_segmentation_dataset("pascal_context_val", root=str(tmp_path))
    stem = val.samples[0].name
    label_path = tmp_path / f"VOC2010/SegmentationClassContext/{stem}.png"
    raw = np.zeros((32, 64), np.uint8)
    raw[:, 10:20], raw[:, 20:] = 41, 59  # background, road, wood
    cv2.imwrite(str(label_path), raw)
    label = val[0][1].numpy()
    assert (label[:, :10] == 255).all() and (label[:, 10:20] == 40).all()
    assert (label[:, 20:] == 58).all() and info.class_names[40] == "road"
    raw[0, 0] = 60
    cv2.imwrite(str(label_path), raw)
    with pytest.raises(DatasetError, match=r"contains ids \[60\]"):
        val[0]
    (tmp_path / "VOC2010/ImageSets/SegmentationContext/val.txt").unlink()
    with pytest.raises(DatasetError) as error:
        get_segmentation_dataset("pascal_context_val", root=str(tmp_path))
    assert str(error.value) == (
        f"PASCAL-Context split list {tmp_path}/VOC2010/ImageSets/SegmentationContext/val.txt "
        "not found"
    )


# ------------------------------------------------------------------------- COCO-Stuff


def write_mat(path: Path, **variables) -> None:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables)
    path.write_bytes(buffer.getvalue())


def test_coco_stuff_mat_labels(tmp_path):
    info = dataset_info("coco_stuff")
    assert info.num_classes == 171
    # The 182 raw ids minus 11 unused; 0 and unused ids ignored.
    assert info.label_lut[0] == 255 and info.label_lut[12] == 255 and info.label_lut[91] == 255
    assert info.label_lut[1] == 0 and info.label_lut[13] == 11 and info.label_lut[182] == 170
    assert info.class_names[info.label_lut[92]] == "banner"
    assert info.class_names[info.label_lut[149]] == "road"
    assert info.submission_lut[170] == 182
    generate_layout(tmp_path, "coco_stuff", {"train": 1, "val": 1}, 32, 64)
    assert (tmp_path / "imageLists/test.txt").is_file()  # its test list is our val
    val = get_segmentation_dataset("coco_stuff_val", root=str(tmp_path))
    mat = tmp_path / f"annotations/{val.samples[0].name}.mat"
    raw = np.zeros((32, 64), np.uint16)
    raw[:, 8:16], raw[:, 16:24], raw[:, 24:] = 1, 12, 182
    write_mat(mat, S=raw)
    label = val[0][1].numpy()
    assert (label[:, :8] == 255).all() and (label[:, 8:16] == 0).all()
    assert (label[:, 16:24] == 255).all() and (label[:, 24:] == 170).all()
    write_mat(mat, L=raw)
    where = f"{tmp_path}/imageLists/test.txt line 1"
    with pytest.raises(DatasetError) as error:
        val[0]
    assert str(error.value) == f"{where}: label {mat} holds no variable 'S'"
    raw[0, 0] = 300
    write_mat(mat, S=raw)
    with pytest.raises(DatasetError, match=r"holds values outside 0..255 \(0..300\)"):
        val[0]
    mat.write_bytes(b"MATLAB garbage")
    with pytest.raises(DatasetError, match=rf"{where}: label {mat} is unreadable"):
        val[0]


# ------------------------------------------------------------------------- evaluation tables


@pytest.mark.parametrize(
    ("name", "count"), [("lip", 20), ("pascal_context", 59), ("coco_stuff", 171)]
)
def test_evaluate_reads_each_layout(tmp_path, name, count):
    """evaluate.py on each synthetic layout: the class table has the dataset's classes."""
    generate_layout(tmp_path / "data", name, {"val": 1}, 48, 64)
    ckpt = tiny_checkpoint(tmp_path / "model.pth", count)
    out = tmp_path / "eval"
    evaluate.main(evaluate.get_args_parser().parse_args([
        "--dataset", name, "--data-dir", str(tmp_path / "data"), "--network", "resnet18",
        "--method", "base_oc_dsn", "--ckpt", ckpt, "--device", "cpu", "--workers", "0",
        "--output-path", str(out),
    ]))  # fmt: skip
    per_class = json.loads((out / "metrics.json").read_text())["per_class"]
    assert list(per_class) == list(dataset_info(name).class_names)


# ------------------------------------------------------------------------- coarse, --use-val


@pytest.fixture(scope="module")
def city_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    generate(root, {"train": 2, "val": 2, "train_extra": 2}, height=48, width=96, seed=2)
    return root


def train_args(root: Path, *extra: str) -> argparse.Namespace:
    return train.get_args_parser().parse_args([
        "--dataset", "cityscapes_train", "--data-dir", str(root),
        "--data-list", str(root / "train.lst"), "--val-list", str(root / "val.lst"),
        "--extra-list", str(root / "train_extra.lst"), "--input-size", "33,33", *extra,
    ])  # fmt: skip


def test_coarse_lists_and_labels(city_tree):
    lines = (city_tree / "train_extra.lst").read_text().splitlines()
    assert lines[0] == (
        "leftImg8bit/train_extra/augsburg/augsburg_000000_000019_leftImg8bit.png "
        "gtCoarse/train_extra/augsburg/augsburg_000000_000019_gtCoarse_labelIds.png"
    )
    trainval = (city_tree / "trainval.lst").read_text()
    assert "train_extra" not in trainval  # coarse images never join trainval
    ds = train_dataset(train_args(city_tree, "--use-extra"))
    assert [s.where.split("/")[-1] for s in ds.samples] == [
        "train.lst line 1", "train.lst line 2", "train_extra.lst line 1", "train_extra.lst line 2",
    ]  # fmt: skip
    # Coarse labels are label ids read like fine ones: same table.
    raw = cv2.imread(str(city_tree / lines[0].split()[1]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(
        get_segmentation_dataset(
            "cityscapes_val", root=str(city_tree), list_path=str(city_tree / "train_extra.lst")
        )[0][1].numpy(),
        dataset_info("cityscapes").label_lut[raw],
    )
    assert (raw == 0).mean() > 0.05  # unlabelled borders, as coarse polygons leave them


def test_use_val_and_use_extra(city_tree, tmp_path):
    args = train_args(city_tree, "--use-val", "False", "--use-extra=False")
    assert args.dataset == "cityscapes" and len(train_dataset(args).samples) == 2
    both = train_dataset(train_args(city_tree, "--use-val=True", "--use-extra", "True"))
    assert len(both.samples) == 6
    args = train_args(city_tree, "--use-val")
    args.data_list = str(city_tree / "trainval.lst")
    with pytest.raises(DatasetError) as error:
        train_dataset(args)
    assert str(error.value).startswith(
        f"{city_tree / 'val.lst'} line 1: image {city_tree}/leftImg8bit/val/frankfurt/"
        "frankfurt_000000_000019_leftImg8bit.png is already in the training data "
        f"({city_tree / 'trainval.lst'} line 3)"
    )
    args = train_args(city_tree, "--use-extra")
    args.extra_list = str(tmp_path / "missing.lst")
    with pytest.raises(UserError) as error:
        train_dataset(args)
    assert str(error.value) == (
        f"--use-extra: list file {tmp_path / 'missing.lst'} not found; give --extra-list, or "
        "write the lists with python -m dataset.make_lists --data-dir DIR"
    )
    ade = train.get_args_parser().parse_args(["--dataset", "ade20k", "--use-extra"])
    with pytest.raises(UserError, match="--use-extra: dataset ade20k has no train_extra split"):
        train_dataset(ade)


def test_use_val_scans_datasets_without_lists(tmp_path):
    generate_layout(tmp_path, "lip", {"train": 2, "val": 1}, 32, 48)
    args = train.get_args_parser().parse_args(
        ["--dataset", "lip", "--data-dir", str(tmp_path), "--use-val", "--input-size", "17,17"]
    )
    ds = train_dataset(args)
    assert len(ds.samples) == 3 and ds.samples[-1].where.endswith("val_id.txt line 1")


# ------------------------------------------------------------------------- recipes


def run_recipe(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    calls = tmp_path / "calls.txt"
    stub = tmp_path / "python-stub"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    stub.chmod(0o755)
    settings = {"PYTHON": str(stub), "LOG_DIR": str(tmp_path / "log"), "GPUS": "0,1", **env}
    result = subprocess.run(
        ["sh", str(REPO / "run_asp_oc.sh")],
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    return result, calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.parametrize(
    ("dataset", "recipe"),
    [
        ("ade20k", "--data-dir ./dataset/ADEChallengeData2016 --data-list none "
         "--input-size 520,520 --batch-size 16 --learning-rate 2e-2 --weight-decay 1e-4 "
         "--start-iters 0 --num-steps 150000"),
        ("lip", "--data-dir ./dataset/LIP --data-list none --input-size 473,473 --batch-size 32 "
         "--learning-rate 7e-3 --weight-decay 5e-4 --start-iters 0 --num-steps 100000"),
        ("pascal_context", "--data-dir ./dataset/VOCdevkit --data-list none --input-size 520,520 "
         "--batch-size 16 --learning-rate 1e-3 --weight-decay 1e-4 --start-iters 0 "
         "--num-steps 30000"),
        ("coco_stuff", "--data-dir ./dataset/cocostuff-10k --data-list none --input-size 520,520 "
         "--batch-size 16 --learning-rate 1e-3 --weight-decay 1e-4 --start-iters 0 "
         "--num-steps 60000"),
    ],
)  # fmt: skip
def test_run_scripts_pick_the_dataset_recipe(tmp_path, dataset, recipe):
    result, calls = run_recipe(tmp_path, DATASET=dataset)
    assert result.returncode == 0, result.stderr
    train_call, eval_call = calls  # no test submission outside Cityscapes
    flat = train_call.replace(
        " --normalize caffe --workers 4 --amp none --gpu 0,1 --data-list none", " --data-list none"
    )
    flat = flat.replace("--restore-from ./pretrained_model/resnet101-imagenet.pth ", "")
    assert f"--dataset {dataset} {recipe} " in flat, train_call
    assert "--use-weight False" in train_call and "--use-val False" in train_call
    assert "--data-list none --batch-size 1 " in eval_call  # images differ in size


def test_run_scripts_custom_needs_a_data_dir(tmp_path):
    result, calls = run_recipe(tmp_path, DATASET="custom")
    assert result.returncode != 0 and calls == []
    assert "DATASET=custom needs DATA_DIR" in result.stderr
    root = tmp_path / "mine"
    (root / "images/test").mkdir(parents=True)
    result, calls = run_recipe(tmp_path, DATASET="custom", DATA_DIR=str(root))
    assert result.returncode == 0, result.stderr
    assert [c.split()[1] for c in calls] == ["train.py", "evaluate.py", "generate_submit.py"]
    assert f"--dataset custom --data-dir {root} " in calls[0]


def test_flip_testing_swaps_lip_left_and_right_classes():
    flags = argparse.Namespace(
        dataset="lip", data_dir=None, use_flip=True, predict_choice="whole", input_size=(8, 8),
        overlap=0.3, use_ms=False, whole_scale=1.0, scales=[1.0], tile_batch=1, amp="none",
    )  # fmt: skip
    # LIP: 14/15 arms, 16/17 legs, 18/19 shoes swap places in a mirrored image.
    expected = [*range(14), 15, 14, 17, 16, 19, 18]
    assert prediction_options(flags)["flip_channels"] == expected
    flags.dataset = "cityscapes"
    assert prediction_options(flags)["flip_channels"] is None
