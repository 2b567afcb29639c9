"""The synthetic scenes written in the other datasets' layouts, for tests and demos of their loaders.

Scenes are rendered with Cityscapes label ids (``dataset.synthetic.scene``) and relabelled by a
table: each Cityscapes class becomes the nearest class of the target dataset (road -> "road",
vegetation -> "tree", ...), written with that dataset's own pixel values; everything else gets the
value the dataset ignores. LIP is a human-parsing dataset, so its table is arbitrary but keeps
what matters for its loader: the left half of the picture holds "Left-*" classes and the right
half "Right-*" ones, so a mirrored scene is a correct scene only if left and right labels swap.

Layouts (see ``dataset.layouts``): ``custom`` (``images/``, ``labels/``, ``classes.csv``),
``lip``, ``pascal_context``, ``coco_stuff`` (``.mat`` labels), ``ade20k``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from dataset.base import MAT_LABEL_KEY
from dataset.catalog import dataset_info
from dataset.custom import ClassRow, classes_csv
from dataset.labels import CITYSCAPES_LABELS, LABEL_ID
from dataset.make_lists import make_lists
from dataset.synthetic.scene import render_scene, scene_rng
from utils.fileio import atomic_write

# The classes of the synthetic custom dataset: values need not be train ids or contiguous.
CUSTOM_CLASSES: tuple[ClassRow, ...] = (
    ClassRow("road", 10, (128, 64, 128)),
    ClassRow("sidewalk", 20, (244, 35, 232)),
    ClassRow("building", 30, (70, 70, 70)),
    ClassRow("vegetation", 40, (107, 142, 35)),
    ClassRow("sky", 50, (70, 130, 180)),
    ClassRow("car", 60, (0, 0, 142)),
    ClassRow("person", 70, (220, 20, 60)),
)

# Cityscapes class -> class of the target dataset (by name); unlisted classes are ignored there.
NEAREST: dict[str, dict[str, str]] = {
    "custom": {
        "road": "road",
        "sidewalk": "sidewalk",
        "building": "building",
        "vegetation": "vegetation",
        "sky": "sky",
        "car": "car",
        "person": "person",
        "rider": "person",
    },
    "ade20k": {
        "road": "road",
        "sidewalk": "sidewalk",
        "building": "building",
        "wall": "wall",
        "fence": "fence",
        "pole": "pole",
        "traffic light": "traffic light",
        "traffic sign": "signboard",
        "vegetation": "tree",
        "terrain": "grass",
        "sky": "sky",
        "person": "person",
        "rider": "person",
        "car": "car",
        "truck": "truck",
        "bus": "bus",
        "bicycle": "bicycle",
    },
    "pascal_context": {
        "road": "road",
        "sidewalk": "sidewalk",
        "building": "building",
        "wall": "wall",
        "fence": "fence",
        "traffic light": "light",
        "traffic sign": "sign",
        "vegetation": "tree",
        "terrain": "grass",
        "sky": "sky",
        "person": "person",
        "rider": "person",
        "car": "car",
        "truck": "truck",
        "bus": "bus",
        "bicycle": "bicycle",
    },
    "coco_stuff": {
        "road": "road",
        "sidewalk": "pavement",
        "building": "building-other",
        "wall": "wall-other",
        "fence": "fence",
        "traffic light": "traffic light",
        "traffic sign": "stop sign",
        "vegetation": "tree",
        "terrain": "grass",
        "sky": "sky-other",
        "person": "person",
        "rider": "person",
        "car": "car",
        "truck": "truck",
        "bus": "bus",
        "bicycle": "bicycle",
    },
    "lip": {
        "sky": "Background",
        "building": "UpperClothes",
        "road": "Pants",
        "sidewalk": "Hair",
        "terrain": "Face",
        "vegetation": "*-arm",
        "car": "*-leg",
        "person": "*-shoe",
        "rider": "*-shoe",
    },
}
# The value a target dataset ignores, for Cityscapes classes it has no counterpart for.
IGNORED_VALUE = {"custom": 0, "ade20k": 0, "pascal_context": 0, "coco_stuff": 0, "lip": 255}
LAYOUT_NAMES = ("cityscapes", *NEAREST)


def relabel_tables(layout: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8[256] Cityscapes label id -> target value, for the left and the right image half."""
    if layout == "custom":
        values = {row.name: row.value for row in CUSTOM_CLASSES}
    else:
        info = dataset_info(layout)
        values = {n: int(info.submission_lut[k]) for k, n in enumerate(info.class_names)}
    tables = []
    for side in ("Left", "Right"):
        table = np.full(256, IGNORED_VALUE[layout], dtype=np.uint8)
        for label in CITYSCAPES_LABELS:
            target = NEAREST[layout].get(label.name)
            if target is not None:
                table[label.id] = values[target.replace("*", side)]
        tables.append(table)
    return tables[0], tables[1]


def relabel(label: np.ndarray, layout: str) -> np.ndarray:
    """Cityscapes label ids -> the target dataset's values (left/right halves for LIP)."""
    left, right = relabel_tables(layout)
    out = cv2.LUT(label, left)
    half = label.shape[1] // 2
    out[:, half:] = cv2.LUT(np.ascontiguousarray(label[:, half:]), right)
    return out


def _encode(array: np.ndarray, suffix: str) -> bytes:
    params = (
        [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    )
    ok, data = cv2.imencode(suffix, array, params)
    if not ok:
        raise RuntimeError(f"{suffix} encoding failed")
    return data.tobytes()


def _mat(label: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {MAT_LABEL_KEY: label.astype(np.uint16)}, do_compression=True)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)


def _lines(names: list[str]) -> bytes:
    return "".join(n + "\n" for n in names).encode("utf-8")


# Per layout: (stem of scene ``index`` of ``split``, writer of one scene, writer of a split's ids).
Writer = Callable[[Path, str, str, np.ndarray, np.ndarray], None]


def _custom(out: Path, split: str, stem: str, image: np.ndarray, label: np.ndarray) -> None:
    city = stem.split("_")[0]
    _write(out / "images" / split / city / f"{stem}.png", _encode(image, ".png"))
    if split != "test":
        _write(out / "labels" / split / city / f"{stem}.png", _encode(label, ".png"))


def _ade20k(out: Path, split: str, stem: str, image: np.ndarray, label: np.ndarray) -> None:
    word = {"train": "training", "val": "validation"}[split]
    _write(out / "images" / word / f"{stem}.jpg", _encode(image, ".jpg"))
    _write(out / "annotations" / word / f"{stem}.png", _encode(label, ".png"))


def _lip(out: Path, split: str, stem: str, image: np.ndarray, label: np.ndarray) -> None:
    _write(out / "TrainVal_images" / f"{split}_images" / f"{stem}.jpg", _encode(image, ".jpg"))
    segmentations = out / "TrainVal_parsing_annotations" / f"{split}_segmentations"
    _write(segmentations / f"{stem}.png", _encode(label, ".png"))


def _pascal_context(out: Path, split: str, stem: str, image: np.ndarray, label: np.ndarray) -> None:
    _write(out / "VOC2010" / "JPEGImages" / f"{stem}.jpg", _encode(image, ".jpg"))
    _write(out / "VOC2010" / "SegmentationClassContext" / f"{stem}.png", _encode(label, ".png"))


def _coco_stuff(out: Path, split: str, stem: str, image: np.ndarray, label: np.ndarray) -> None:
    _write(out / "images" / f"{stem}.jpg", _encode(image, ".jpg"))
    _write(out / "annotations" / f"{stem}.mat", _mat(label))


WRITERS: dict[str, Writer] = {
    "custom": _custom,
    "ade20k": _ade20k,
    "lip": _lip,
    "pascal_context": _pascal_context,
    "coco_stuff": _coco_stuff,
}
# Where each layout lists a split's stems (None: the loader scans the folders).
ID_LISTS: dict[str, str | None] = {
    "custom": None,
    "ade20k": None,
    "lip": "TrainVal_images/{split}_id.txt",
    "pascal_context": "VOC2010/ImageSets/SegmentationContext/{split}.txt",
    "coco_stuff": "imageLists/{split}.txt",
}
# Splits each layout has (COCO-Stuff-10k calls its val split "test").
SPLITS: dict[str, tuple[str, ...]] = {
    "custom": ("train", "val", "test"),
    "ade20k": ("train", "val"),
    "lip": ("train", "val"),
    "pascal_context": ("train", "val"),
    "coco_stuff": ("train", "val"),
}


def scene_stem(layout: str, split: str, index: int) -> str:
    """A file stem in the style of the dataset (stems are unique across splits)."""
    number = {"train": 0, "val": 50000, "test": 90000}[split] + index
    if layout == "custom":
        return f"{('scene', 'street', 'road')[index % 3]}_{index:05d}"
    if layout == "ade20k":
        return f"ADE_{'train' if split == 'train' else 'val'}_{index + 1:08d}"
    if layout == "lip":
        return f"{number + 100000:06d}_{(number * 7919) % 1000000:06d}"
    if layout == "pascal_context":
        return f"{2008 + number // 50000}_{number % 50000:06d}"
    return f"COCO_{'train' if split == 'train' else 'val'}2014_{number:012d}"


def generate_layout(
    out: str | os.PathLike,
    layout: str,
    counts: dict[str, int],
    height: int = 256,
    width: int = 512,
    seed: int = 0,
) -> dict[str, int]:
    """Write ``counts`` scenes per split in ``layout`` under ``out``; returns samples per split."""
    if layout not in WRITERS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUT_NAMES)}")
    out = Path(out)
    for split in counts:
        if split not in SPLITS[layout]:
            raise ValueError(f"the {layout} layout has no {split} split")
    for split, count in counts.items():
        stems = []
        for index in range(count):
            image, label = render_scene(scene_rng(seed, split, index), height, width)
            stem = scene_stem(layout, split, index)
            WRITERS[layout](out, split, stem, image, relabel(label, layout))
            stems.append(stem)
        id_list = ID_LISTS[layout]
        if id_list is not None and count:
            word = "test" if layout == "coco_stuff" and split == "val" else split
            _write(out / id_list.format(split=word), _lines(stems))
    if layout == "custom":
        _write(out / "classes.csv", classes_csv(list(CUSTOM_CLASSES)))
        return make_lists(out, dataset="custom")
    return {split: count for split, count in counts.items() if count}


def coarse_label(label: np.ndarray, width: int) -> np.ndarray:
    """A coarse annotation from a fine one: pixels near class boundaries become 0 (unlabeled),
    like the polygons of Cityscapes' ``gtCoarse`` that leave object borders unlabelled."""
    size = max(3, width // 64) | 1
    kernel = np.ones((size, size), np.uint8)
    boundary = cv2.dilate(label, kernel) != cv2.erode(label, kernel)
    coarse = label.copy()
    coarse[boundary] = LABEL_ID["unlabeled"]
    return coarse
