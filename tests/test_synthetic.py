"""Synthetic scenes and list files: determinism, layout, label coverage, list tool."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cs_labels

from dataset import get_segmentation_dataset
from dataset.make_lists import main as make_lists_main
from dataset.synthetic import SPLIT_CITIES, main, render_scene, scene_rng


def _digests(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    main(["--out", str(root), "--train", "8", "--val", "3", "--test", "2", "--height", "64",
          "--width", "128", "--seed", "11"])  # fmt: skip
    return root


def test_generator_is_deterministic(generated, tmp_path):
    again = tmp_path / "again"
    main(["--out", str(again), "--train", "8", "--val", "3", "--test", "2", "--height", "64",
          "--width", "128", "--seed", "11"])  # fmt: skip
    assert _digests(generated) == _digests(again)
    other = tmp_path / "other"
    main(["--out", str(other), "--train", "1", "--val", "0", "--test", "0", "--height", "64",
          "--width", "128", "--seed", "12"])  # fmt: skip
    name = "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    assert _digests(other)[name] != _digests(generated)[name]


def test_layout_and_lists(generated):
    train_lines = (generated / "train.lst").read_text().splitlines()
    assert len(train_lines) == 8
    # Cities take turns: the 8th train scene is the 1st of the 2nd round in the first city.
    assert (
        "leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png "
        "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png"
    ) in train_lines
    for line in train_lines:
        image, label = line.split(" ")
        city = image.split("/")[2]
        assert city in SPLIT_CITIES["train"]
        assert (generated / image).is_file() and (generated / label).is_file()
        color = generated / label.replace("_labelIds.png", "_color.png")
        assert color.is_file()
    val_lines = (generated / "val.lst").read_text().splitlines()
    assert [line.split("/")[2] for line in val_lines] == ["frankfurt", "lindau", "munster"]
    test_lines = (generated / "test.lst").read_text().splitlines()
    assert test_lines == [
        "leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png",
        "leftImg8bit/test/bielefeld/bielefeld_000000_000019_leftImg8bit.png",
    ]
    assert (generated / "trainval.lst").read_text().splitlines() == train_lines + val_lines


def test_images_labels_and_colours_agree(generated):
    id_to_color = {label.id: label.color for label in cs_labels.labels if label.id >= 0}
    for label_path in sorted(generated.glob("gtFine/*/*/*_gtFine_labelIds.png"))[:4]:
        label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        image_path = (
            str(label_path)
            .replace("gtFine", "leftImg8bit", 1)
            .replace("_gtFine_labelIds", "_leftImg8bit")
        )
        image = cv2.imread(image_path, cv2.IMREAD_COLOR)
        assert label.shape == (64, 128) and image.shape == (64, 128, 3)
        assert set(np.unique(label).tolist()) <= set(id_to_color)
        color = cv2.imread(str(label_path).replace("_labelIds", "_color"))[:, :, ::-1]
        for label_id in np.unique(label):
            assert (color[label == label_id] == id_to_color[int(label_id)]).all()


def test_dataset_reads_generated_tree(generated):
    ds = get_segmentation_dataset(
        "cityscapes_train", root=str(generated), list_path=str(generated / "train.lst"),
        crop_size=(48, 48),
    )  # fmt: skip
    image, label, meta = ds[0]
    assert image.shape == (3, 48, 48) and meta["name"] == "aachen_000000_000019"
    test = get_segmentation_dataset(
        "cityscapes_test", root=str(generated), list_path=str(generated / "test.lst")
    )
    assert len(test) == 2 and (test[1][1] == 255).all()


def test_labels_cover_the_classes():
    train_ids = {label.id: label.trainId for label in cs_labels.labels if label.id >= 0}
    seen_train, seen_ids = set(), set()
    fractions = np.zeros(256)
    for index in range(10):
        _, label = render_scene(scene_rng(0, "train", index), 128, 256)
        ids, counts = np.unique(label, return_counts=True)
        seen_ids |= set(ids.tolist())
        seen_train |= {train_ids[int(i)] for i in ids} - {255}
        fractions[ids] += counts / label.size / 10
    assert len(seen_train) >= 12, sorted(seen_train)
    assert {1, 3, 4} & seen_ids  # some void ids: ego vehicle, out of roi, static
    # Large classes are large: road, building, sky, sidewalk, vegetation, car.
    for label_id, least in ((7, 0.15), (11, 0.15), (23, 0.03), (8, 0.02), (21, 0.01), (26, 0.005)):
        assert fractions[label_id] > least, (label_id, fractions[label_id])


def test_preview_writes_samples_beside_labels(tmp_path):
    path = tmp_path / "samples.png"
    main(["--preview", str(path), "--height", "64", "--width", "128"])
    picture = cv2.imread(str(path))
    assert picture.shape == (3 * 64 + 2 * 4, 2 * 128 + 4, 3)


def test_make_lists_cli(generated, tmp_path, capsys):
    out = tmp_path / "lists"
    make_lists_main(["--data-dir", str(generated), "--out", str(out)])
    for name in ("train", "val", "test", "trainval"):
        assert (out / f"{name}.lst").read_text() == (generated / f"{name}.lst").read_text()
    assert "train.lst: 8 samples" in capsys.readouterr().out
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        make_lists_main(["--data-dir", str(tmp_path / "nothing")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"python -m dataset.make_lists: error: {tmp_path / 'nothing' / 'leftImg8bit'} not found: "
        "expected the Cityscapes layout\n"
    )
    assert list((tmp_path / "nothing").iterdir()) == []
