"""Datasets: label tables, augmentation alignment, padding, errors, ADE20K, worker seeding."""

from __future__ import annotations

import math
import random

import cv2
import numpy as np
import pytest
import torch
from cityscapesscripts.helpers import labels as cs_labels
from torch.utils.data import DataLoader

import dataset
from dataset import DatasetError, get_segmentation_dataset, make_worker_init_fn
from dataset.catalog import DATASETS, dataset_info
from dataset.labels import ADE20K_CLASSES, CITYSCAPES_CLASSES
from dataset.palette import colorize, palette
from dataset.transforms import SCALES

# ---------------------------------------------------------------- label tables and palettes


def test_trainid_lut_matches_official_table():
    lut = DATASETS["cityscapes"].label_lut
    expected = np.full(256, 255, dtype=np.uint8)
    for label in cs_labels.labels:
        if label.id >= 0:
            expected[label.id] = 255 if label.trainId in (255, -1) else label.trainId
    assert lut.dtype == np.uint8 and lut.shape == (256,)
    np.testing.assert_array_equal(lut, expected)


def test_labelid_lut_inverts_train_ids():
    lut = DATASETS["cityscapes"].submission_lut
    for train_id in range(19):
        assert lut[train_id] == cs_labels.trainId2label[train_id].id
    assert lut[255] == 0
    # Round trip on every train id.
    np.testing.assert_array_equal(
        DATASETS["cityscapes"].label_lut[lut[np.arange(19)]], np.arange(19)
    )


def test_class_names():
    official = [cs_labels.trainId2label[k].name for k in range(19)]
    assert list(CITYSCAPES_CLASSES) == official
    assert len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150
    assert ADE20K_CLASSES[0] == "wall" and ADE20K_CLASSES[149] == "flag"
    assert DATASETS["ade20k"].class_names is ADE20K_CLASSES
    with pytest.raises(ValueError, match="choose one of cityscapes, ade20k"):
        dataset_info("voc")


def test_palette_and_colorize():
    table = palette("cityscapes")
    for k in range(19):
        assert tuple(table[k]) == cs_labels.trainId2label[k].color
    assert tuple(table[255]) == (0, 0, 0)
    ade = palette("ade20k")
    assert len({tuple(c) for c in ade[:150]}) == 150 and tuple(ade[255]) == (0, 0, 0)
    ids = torch.tensor([[0, 13], [255, 10]])
    image = colorize(ids, "cityscapes")
    assert image.shape == (2, 2, 3) and image.dtype == np.uint8
    assert tuple(image[0, 1]) == (0, 0, 142) and tuple(image[1, 0]) == (0, 0, 0)


# ---------------------------------------------------------------- a tiny Cityscapes tree

# Label ids used in the test images and the trainIds they map to.
BLOCK_IDS = np.array([7, 8, 11, 21, 23, 26, 4, 24], dtype=np.uint8)


def _block_label(rng, h, w, block=8):
    """Label ids in blocks (with a void id) so nearest/linear resizing agree away from edges."""
    small = rng.choice(BLOCK_IDS, size=(h // block + 1, w // block + 1))
    return np.kron(small, np.ones((block, block), np.uint8))[:h, :w]


def _image_from_label(label):
    """BGR image whose colour encodes the label: the label is drawn from the image itself."""
    colors = np.zeros((256, 3), np.uint8)
    for k, label_id in enumerate(BLOCK_IDS):
        colors[label_id] = (30 * k + 10, 255 - 30 * k, (70 * k) % 256)
    return colors[label], colors


def _write_city(root, split, city, index, h, w, rng, label=None):
    stem = f"{city}_{index:06d}_000019"
    image_rel = f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"
    label_rel = f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"
    for rel in (image_rel, label_rel):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    label = _block_label(rng, h, w) if label is None else label
    image, _ = _image_from_label(label)
    cv2.imwrite(str(root / image_rel), image)
    cv2.imwrite(str(root / label_rel), label)
    return image_rel, label_rel


@pytest.fixture
def city(tmp_path):
    rng = np.random.default_rng(0)
    lines = [
        " ".join(_write_city(tmp_path, "train", c, i, 48, 80, rng))
        for c, i in (("aachen", 0), ("aachen", 1), ("bochum", 0), ("bremen", 3))
    ]
    (tmp_path / "train.lst").write_text("\n".join(lines) + "\n")
    return tmp_path


def _decode_caffe(image_chw):
    """Undo caffe normalisation: channels are RGB minus the BGR-ordered mean."""
    rgb = image_chw.numpy().transpose(1, 2, 0) + np.array([102.9801, 115.9465, 122.7717])
    return rgb[:, :, ::-1]  # back to BGR


def _label_from_image(bgr):
    """Nearest block colour -> train id (independent of the dataset's table lookup)."""
    _, colors = _image_from_label(np.zeros((1, 1), np.uint8))
    ids = BLOCK_IDS
    dist = ((bgr[:, :, None, :] - colors[ids][None, None].astype(np.float64)) ** 2).sum(-1)
    return np.array([cs_labels.id2label[int(i)].trainId for i in ids])[dist.argmin(-1)]


@pytest.mark.parametrize("scale", [False, True])
def test_augmentation_keeps_image_and_label_aligned(city, scale):
    ds = get_segmentation_dataset(
        "cityscapes_train",
        root=str(city),
        list_path=str(city / "train.lst"),
        crop_size=(40, 56),
        scale=scale,
        seed=3,
    )
    flipped_any = False
    for index in range(len(ds)):
        for epoch in range(3):
            ds.set_epoch(epoch)
            image, label, meta = ds[index]
            assert image.shape == (3, 40, 56) and image.dtype == torch.float32
            assert label.shape == (40, 56) and label.dtype == torch.int64
            label = label.numpy()
            inside = (np.abs(image.numpy()).sum(0) > 0) & (label != 255)
            expected = _label_from_image(_decode_caffe(image))
            keep = inside & (expected != 255)  # void blocks decode to 255 anyway
            if scale:
                # Linear (image) and nearest (label) resizing may disagree by a pixel at
                # block edges: compare away from them.
                lab8 = label.astype(np.uint8)
                edge = cv2.dilate(lab8, np.ones((3, 3))) != cv2.erode(lab8, np.ones((3, 3)))
                edge[[0, -1], :] = edge[:, [0, -1]] = True  # neighbours beyond the crop
                keep &= ~edge
            assert keep.sum() > 200
            assert (expected[keep] == label[keep]).all()
            rng = np.random.default_rng([3, epoch, index])
            if scale:
                rng.integers(0, 17)
            rng.integers(0, 1)
            rng.integers(0, 1)
            flipped_any |= bool(rng.integers(0, 2))
    assert flipped_any


def test_mirror_flips_both_image_and_label(tmp_path):
    rng = np.random.default_rng(1)
    label = np.zeros((24, 32), np.uint8)
    label[:, :8] = 26  # car on the left only
    label[:, 8:] = 7
    rel = _write_city(tmp_path, "train", "ulm", 0, 24, 32, rng, label=label)
    (tmp_path / "l.lst").write_text(" ".join(rel) + "\n")
    ds = get_segmentation_dataset(
        "cityscapes_train",
        root=str(tmp_path),
        list_path=str(tmp_path / "l.lst"),
        crop_size=(24, 32),
        scale=False,
    )
    seen = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        image, out, _ = ds[0]
        car_left = bool((out[:, :8] == 13).all())
        car_right = bool((out[:, -8:] == 13).all())
        assert car_left != car_right
        decoded = _label_from_image(_decode_caffe(image))
        np.testing.assert_array_equal(decoded, out.numpy())
        seen.add(car_left)
    assert seen == {True, False}


def test_padding_values_and_normalisation_by_hand(tmp_path):
    image = np.zeros((10, 12, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 200  # B, G, R
    label = np.full((10, 12), 26, np.uint8)
    for rel, array in (
        ("leftImg8bit/train/ulm/ulm_000000_000019_leftImg8bit.png", image),
        ("gtFine/train/ulm/ulm_000000_000019_gtFine_labelIds.png", label),
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / rel), array)
    (tmp_path / "p.lst").write_text(
        "leftImg8bit/train/ulm/ulm_000000_000019_leftImg8bit.png "
        "gtFine/train/ulm/ulm_000000_000019_gtFine_labelIds.png\n"
    )
    for mode, expected in (
        # caffe: BGR -> RGB, then subtract the BGR-ordered mean (the original's order).
        ("caffe", (200 - 102.9801, 20 - 115.9465, 10 - 122.7717)),
        # openseg: the decoded BGR channels minus the same (BGR-ordered) mean.
        ("openseg", (10 - 102.9801, 20 - 115.9465, 200 - 122.7717)),
        (
            "imagenet",
            ((200 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (10 / 255 - 0.406) / 0.225),
        ),
    ):
        ds = get_segmentation_dataset(
            "cityscapes_train",
            root=str(tmp_path),
            list_path=str(tmp_path / "p.lst"),
            crop_size=(16, 20),
            scale=False,
            mirror=False,
            normalize=mode,
        )
        out, lab, _ = ds[0]
        # The crop is larger than the image: top-left is the image, the rest padding.
        np.testing.assert_allclose(
            out[:, :10, :12].numpy(),
            np.array(expected)[:, None, None] * np.ones((3, 10, 12)),
            rtol=1e-5,
        )
        assert (out[:, 10:, :] == 0).all() and (out[:, :, 12:] == 0).all()
        assert (lab[:10, :12] == 13).all()
        assert (lab[10:, :] == 255).all() and (lab[:, 12:] == 255).all()


def test_scale_draws_follow_the_original(city):
    assert SCALES == tuple(0.5 + k / 10 for k in range(17))
    ds = get_segmentation_dataset(
        "cityscapes_train", root=str(city), list_path=str(city / "train.lst"),
        crop_size=(200, 200), mirror=False, seed=5,
    )  # fmt: skip
    sizes = set()
    for epoch in range(40):
        ds.set_epoch(epoch)
        _, label, _ = ds[0]
        valid = label != 255
        # Void pixels inside the image are 255 as well: measure the extent of real classes.
        rows = np.nonzero(valid.any(1).numpy())[0]
        cols = np.nonzero(valid.any(0).numpy())[0]
        sizes.add((rows.max() + 1, cols.max() + 1))
        factor = 0.5 + np.random.default_rng([5, epoch, 0]).integers(0, 17) / 10
        assert abs(cols.max() + 1 - round(80 * factor)) <= 8  # up to one void block short
    assert len(sizes) > 5


def test_val_and_test_return_whole_images(city):
    ds = get_segmentation_dataset(
        "cityscapes_val", root=str(city), list_path=str(city / "train.lst")
    )
    image, label, meta = ds[2]
    assert image.shape == (3, 48, 80) and label.shape == (48, 80)
    assert meta["name"] == "bochum_000000_000019" and meta["size"] == (48, 80)
    assert meta["image_path"].endswith("bochum_000000_000019_leftImg8bit.png")
    raw = cv2.imread(str(city / "gtFine/train/bochum/bochum_000000_000019_gtFine_labelIds.png"), -1)
    np.testing.assert_array_equal(label.numpy(), DATASETS["cityscapes"].label_lut[raw])
    lines = [line.split()[0] for line in (city / "train.lst").read_text().splitlines()]
    (city / "test.lst").write_text("\n".join(lines) + "\n")
    test = get_segmentation_dataset(
        "cityscapes_test", root=str(city), list_path=str(city / "test.lst")
    )
    image, label, meta = test[0]
    assert image.shape == (3, 48, 80) and (label == 255).all()
    batch = next(iter(DataLoader(test, batch_size=2)))
    assert batch[1].shape == (2, 48, 80) and batch[2]["name"] == [
        "aachen_000000_000019",
        "aachen_000001_000019",
    ]


def test_max_iters_repeats_the_list_like_the_original(city):
    ds = get_segmentation_dataset(
        "cityscapes_train", root=str(city), list_path=str(city / "train.lst"), max_iters=10
    )
    assert len(ds) == 4 * math.ceil(10 / 4)
    assert ds[5][2]["name"] == ds[1][2]["name"]


def test_already_converted_train_ids(tmp_path):
    rng = np.random.default_rng(2)
    image_rel, _ = _write_city(tmp_path, "train", "jena", 0, 16, 16, rng)
    train_ids = np.full((16, 16), 255, np.uint8)
    train_ids[:8] = 13
    label_rel = "gtFine/train/jena/jena_000000_000019_gtFine_labelTrainIds.png"
    cv2.imwrite(str(tmp_path / label_rel), train_ids)
    (tmp_path / "t.lst").write_text(f"{image_rel} {label_rel}\n")
    ds = get_segmentation_dataset(
        "cityscapes_val", root=str(tmp_path), list_path=str(tmp_path / "t.lst")
    )
    np.testing.assert_array_equal(ds[0][1].numpy(), train_ids)
    train_ids[0, 0] = 25
    cv2.imwrite(str(tmp_path / label_rel), train_ids)
    with pytest.raises(DatasetError, match=r"contains ids \[25\]"):
        ds[0]


# ---------------------------------------------------------------- errors


def test_unknown_dataset_name_lists_choices():
    with pytest.raises(ValueError) as info:
        get_segmentation_dataset("voc_train", root=".")
    assert str(info.value) == (
        "unknown dataset 'voc_train'; choose one of cityscapes_train, cityscapes_val, "
        "cityscapes_test, ade20k_train, ade20k_val, lip_train, lip_val, pascal_context_train, "
        "pascal_context_val, coco_stuff_train, coco_stuff_val, custom_train, custom_val, "
        "custom_test, cityscapes_train_w_path"
    )


def _train(root, list_name="train.lst"):
    return get_segmentation_dataset(
        "cityscapes_train", root=str(root), list_path=str(root / list_name)
    )


def test_missing_and_empty_list(tmp_path):
    with pytest.raises(DatasetError) as info:
        _train(tmp_path, "nope.lst")
    assert str(info.value) == f"list file {tmp_path / 'nope.lst'} not found"
    (tmp_path / "empty.lst").write_text("\n  \n")
    with pytest.raises(DatasetError) as info:
        _train(tmp_path, "empty.lst")
    assert str(info.value) == f"list file {tmp_path / 'empty.lst'} is empty"


def test_wrong_field_count_names_the_line(city):
    lines = (city / "train.lst").read_text().splitlines()
    lines[2] = lines[2].split()[0]
    (city / "train.lst").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as info:
        _train(city)
    assert str(info.value).startswith(
        f"{city / 'train.lst'} line 3: expected 2 fields (image label), found 1:"
    )


def test_missing_files_found_at_construction(city):
    image = city / "leftImg8bit/train/bochum/bochum_000000_000019_leftImg8bit.png"
    image.unlink()
    with pytest.raises(DatasetError) as info:
        _train(city)
    assert str(info.value) == f"{city / 'train.lst'} line 3: image {image} not found"
    lines = (city / "train.lst").read_text().splitlines()
    (city / "train.lst").write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    label = city / "gtFine/train/bremen/bremen_000003_000019_gtFine_labelIds.png"
    label.unlink()
    with pytest.raises(DatasetError) as info:
        _train(city)
    assert str(info.value) == f"{city / 'train.lst'} line 3: label {label} not found"


def test_corrupt_image_and_label(city):
    ds = _train(city)
    image = city / "leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DatasetError) as info:
        ds[1]
    assert str(info.value) == (
        f"{city / 'train.lst'} line 2: image {image} is unreadable (missing or corrupt)"
    )
    label = city / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    label.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="line 1: label .* is unreadable"):
        ds[0]


def test_size_mismatch_and_unknown_ids(city):
    ds = _train(city)
    label = city / "gtFine/train/bochum/bochum_000000_000019_gtFine_labelIds.png"
    image = city / "leftImg8bit/train/bochum/bochum_000000_000019_leftImg8bit.png"
    cv2.imwrite(str(label), np.full((40, 80), 7, np.uint8))
    with pytest.raises(DatasetError) as info:
        ds[2]
    assert str(info.value) == (
        f"{city / 'train.lst'} line 3: label {label} is 40x80 but image {image} is 48x80"
    )
    bad = np.full((48, 80), 7, np.uint8)
    bad[0, 0], bad[5, 5] = 200, 34
    cv2.imwrite(str(label), bad)
    with pytest.raises(DatasetError) as info:
        ds[2]
    assert str(info.value) == (
        f"{city / 'train.lst'} line 3: label {label} contains ids [34, 200] that the label "
        "table does not know"
    )


def test_worker_errors_reach_the_main_process(city):
    label = city / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    cv2.imwrite(str(label), np.full((48, 80), 250, np.uint8))
    loader = DataLoader(_train(city), batch_size=1, num_workers=1)
    with pytest.raises(DatasetError, match=r"train.lst line 1: label .* contains ids \[250\]"):
        next(iter(loader))


# ---------------------------------------------------------------- ADE20K


def test_ade20k_mapping_and_scan(ade):
    val = get_segmentation_dataset("ade20k_val", root=str(ade))
    assert len(val) == 2
    image, label, meta = val[1]
    assert meta["name"] == "ADE_val_00000002" and image.shape == (3, 20, 30)
    assert (label[:, :10] == 255).all() and (label[:, 10:20] == 0).all()
    assert (label[:, 20:] == 149).all()
    train = get_segmentation_dataset("ade20k_train", root=str(ade), crop_size=(16, 16))
    assert len(train) == 3 and train[0][0].shape == (3, 16, 16)
    assert set(torch.unique(train[0][1]).tolist()) <= {0, 149, 255}


def test_ade20k_list_and_errors(ade):
    (ade / "a.lst").write_text(
        "images/validation/ADE_val_00000001.jpg annotations/validation/ADE_val_00000001.png\n"
    )
    ds = get_segmentation_dataset("ade20k_val", root=str(ade), list_path=str(ade / "a.lst"))
    assert len(ds) == 1
    label = ade / "annotations/validation/ADE_val_00000001.png"
    cv2.imwrite(str(label), np.full((20, 30), 151, np.uint8))
    with pytest.raises(DatasetError, match=r"a.lst line 1: label .* contains ids \[151\]"):
        ds[0]
    (ade / "annotations/validation/ADE_val_00000002.png").unlink()
    with pytest.raises(DatasetError) as info:
        get_segmentation_dataset("ade20k_val", root=str(ade))
    assert str(info.value) == (
        f"{ade}/images/validation/ADE_val_00000002.jpg: label "
        f"{ade}/annotations/validation/ADE_val_00000002.png not found"
    )
    with pytest.raises(
        DatasetError, match="ADE20K image folder .*/nothing/images/training not found"
    ):
        get_segmentation_dataset("ade20k_train", root=str(ade / "nothing"))


# ---------------------------------------------------------------- seeding


def _batches(ds, workers, seed, epoch=0):
    ds.set_epoch(epoch)
    loader = DataLoader(
        ds,
        batch_size=2,
        shuffle=True,
        num_workers=workers,
        worker_init_fn=make_worker_init_fn(seed, epoch),
        generator=torch.Generator().manual_seed(seed + epoch),
    )
    return [(b[0].clone(), b[1].clone(), list(b[2]["name"])) for b in loader]


def _same(a, b):
    return len(a) == len(b) and all(
        torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2] == y[2] for x, y in zip(a, b)
    )


def test_worker_seeding_gives_identical_batches(city):
    ds = get_segmentation_dataset(
        "cityscapes_train",
        root=str(city),
        list_path=str(city / "train.lst"),
        crop_size=(32, 32),
        seed=7,
    )
    first = _batches(ds, 0, seed=7)
    assert _same(first, _batches(ds, 0, seed=7))
    assert _same(first, _batches(ds, 2, seed=7))
    assert not _same(first, _batches(ds, 0, seed=7, epoch=1))


def test_seed_worker_derives_streams_from_seed_epoch_and_worker():
    def draw(seed, epoch, worker):
        dataset.seed_worker(worker, seed=seed, epoch=epoch)
        return (random.random(), float(np.random.rand()), float(torch.rand(1)))

    assert draw(1, 0, 0) == draw(1, 0, 0)
    assert len({draw(1, 0, 0), draw(1, 0, 1), draw(1, 1, 0), draw(2, 0, 0)}) == 4
    init = make_worker_init_fn(3, 2)
    init(1)
    after = float(np.random.rand())
    dataset.seed_worker(1, seed=3, epoch=2)
    assert after == float(np.random.rand())
