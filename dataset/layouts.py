"""Where each dataset keeps its files: one ``Layout`` per dataset, read by the one loader.

A layout says, per split, which folder holds the images, where an image's label lies (same
relative folder and stem, other folder and ending), and whether a file of stems (an "id list")
names the split's samples. ``scan_split`` turns that into samples; ``dataset.make_lists`` writes
list files from it; list files (``image [label]`` lines) may always replace the scan.

Facts and their sources:

- Cityscapes: ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with
  ``gtFine/<split>/<city>/<name>_gtFine_labelIds.png``; the coarse set ``train_extra`` has
  ``gtCoarse/train_extra/<city>/<name>_gtCoarse_labelIds.png`` (cityscapesScripts, the original
  OCNet README's data tree).
- ADE20K: ``images/{training,validation}/*.jpg``, ``annotations/.../*.png`` (ADEChallengeData2016).
- LIP: ``TrainVal_images/{train,val}_images/*.jpg``,
  ``TrainVal_parsing_annotations/{train,val}_segmentations/*.png`` and the stems in
  ``TrainVal_images/{train,val}_id.txt`` (the LIP release; ``<root>/{split}_id.txt`` as laid out by
  CE2P / Self-Correction-Human-Parsing is accepted too).
- PASCAL-Context: ``VOC2010/JPEGImages/*.jpg``, ``VOC2010/SegmentationClassContext/*.png`` and
  ``VOC2010/ImageSets/SegmentationContext/{train,val}.txt``, as written by mmsegmentation's
  ``tools/convert_datasets/pascal_context.py`` (the data dir is the folder holding ``VOC2010/``).
- COCO-Stuff-10k: ``images/*.jpg``, ``annotations/*.mat`` (key ``S``) and
  ``imageLists/{train,test}.txt`` (cocostuff-10k v1.1); its test list serves as val, as in
  openseg.pytorch ``lib/datasets/preprocess/coco_stuff/coco_stuff_generator.py``.
- custom: ``images/<split>/**/<stem>.<jpg|png|...>`` with ``labels/<split>/**/<stem>.png`` and
  ``classes.csv`` (see ``dataset.custom``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dataset.base import DatasetError, Sample, list_file_lines

# Extensions cv2 decodes, for datasets whose images may be of several kinds.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class SplitFiles:
    """Where one split's labels lie, when they differ from the layout's default."""

    label_dir: str
    label_tail: str


@dataclass(frozen=True)
class Layout:
    """Folders and file names of one dataset. Templates take ``{split}``, the dataset's own word."""

    title: str  # the dataset's name in messages
    splits: tuple[str, ...]  # the splits it has: "train", "val", "test", "train_extra"
    image_dir: str  # e.g. "images/{split}"
    label_dir: str  # e.g. "annotations/{split}"
    image_tails: tuple[str, ...]  # what an image file name ends with after its stem
    label_tail: str  # what a label file name ends with after the stem
    split_words: dict[str, str] = field(default_factory=dict)  # our split -> the dataset's word
    split_files: dict[str, SplitFiles] = field(default_factory=dict)  # per-split label overrides
    id_lists: tuple[str, ...] = ()  # candidate files of stems, first existing wins
    id_list_required: bool = False  # the image folder holds several splits: a list must say which
    nested: bool = False  # images lie in sub-folders (cities, or any depth)
    image_only: tuple[str, ...] = ("test",)  # splits without labels
    default_list: str | None = None  # "{split}" template of shipped lists; None: scan the folders
    default_root: str | None = None  # where the run scripts look for the data
    raw_label_glob: str = "*.png"  # the usual label files, named in the list-mixing error

    def word(self, split: str) -> str:
        return self.split_words.get(split, split)

    def label_files(self, split: str) -> SplitFiles:
        return self.split_files.get(split, SplitFiles(self.label_dir, self.label_tail))


LAYOUTS: dict[str, Layout] = {
    "cityscapes": Layout(
        title="Cityscapes",
        splits=("train", "val", "test", "train_extra"),
        image_dir="leftImg8bit/{split}",
        label_dir="gtFine/{split}",
        image_tails=("_leftImg8bit.png",),
        label_tail="_gtFine_labelIds.png",
        split_files={"train_extra": SplitFiles("gtCoarse/{split}", "_gtCoarse_labelIds.png")},
        nested=True,
        default_list="./dataset/list/cityscapes/{split}.lst",
        default_root="./dataset/cityscapes",
        raw_label_glob="*_labelIds.png",
    ),
    "ade20k": Layout(
        title="ADE20K",
        splits=("train", "val"),
        image_dir="images/{split}",
        label_dir="annotations/{split}",
        image_tails=(".jpg",),
        label_tail=".png",
        split_words={"train": "training", "val": "validation"},
        default_root="./dataset/ADEChallengeData2016",
    ),
    "lip": Layout(
        title="LIP",
        splits=("train", "val"),
        image_dir="TrainVal_images/{split}_images",
        label_dir="TrainVal_parsing_annotations/{split}_segmentations",
        image_tails=(".jpg",),
        label_tail=".png",
        id_lists=("TrainVal_images/{split}_id.txt", "{split}_id.txt"),
        default_root="./dataset/LIP",
    ),
    "pascal_context": Layout(
        title="PASCAL-Context",
        splits=("train", "val"),
        image_dir="VOC2010/JPEGImages",
        label_dir="VOC2010/SegmentationClassContext",
        image_tails=(".jpg",),
        label_tail=".png",
        id_lists=("VOC2010/ImageSets/SegmentationContext/{split}.txt",),
        id_list_required=True,
        default_root="./dataset/VOCdevkit",
    ),
    "coco_stuff": Layout(
        title="COCO-Stuff",
        splits=("train", "val"),
        image_dir="images",
        label_dir="annotations",
        image_tails=(".jpg",),
        label_tail=".mat",
        split_words={"val": "test"},
        id_lists=("imageLists/{split}.txt",),
        id_list_required=True,
        default_root="./dataset/cocostuff-10k",
        raw_label_glob="*.mat",
    ),
    "custom": Layout(
        title="custom dataset",
        splits=("train", "val", "test"),
        image_dir="images/{split}",
        label_dir="labels/{split}",
        image_tails=IMAGE_EXTENSIONS,
        label_tail=".png",
        nested=True,
    ),
}


def dataset_layout(name: str) -> Layout:
    """The layout of dataset ``name``, or a ValueError listing the known ones."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def _strip_tail(file_name: str, tails: tuple[str, ...]) -> str | None:
    """The stem of ``file_name`` if it ends with one of ``tails`` (case-insensitive), else None."""
    lowered = file_name.lower()
    for tail in tails:
        if lowered.endswith(tail.lower()) and len(file_name) > len(tail):
            return file_name[: -len(tail)]
    return None


def _find_id_list(layout: Layout, root: Path, split: str) -> Path | None:
    for template in layout.id_lists:
        path = root / template.format(split=layout.word(split))
        if path.is_file():
            return path
    return None


def _label_path(layout: Layout, root: Path, split: str, relative: str) -> str | None:
    """The label of the image at ``relative`` (its sub-folder and stem), or None without labels."""
    if split in layout.image_only:
        return None
    files = layout.label_files(split)
    return str(
        root / files.label_dir.format(split=layout.word(split)) / (relative + files.label_tail)
    )


def scan_split(
    layout: Layout, root: str | os.PathLike, split: str, allow_empty: bool = False
) -> list[Sample]:
    """The samples of ``split``: from the split's id list when there is one, else by folder scan.

    Images are sorted by relative path; a sample's ``where`` is its id-list line or its image
    path, so a missing label is reported against the line or image that asked for it. An image
    folder without images is an error unless ``allow_empty``.
    """
    root = Path(root)
    image_dir = root / layout.image_dir.format(split=layout.word(split))
    id_list = _find_id_list(layout, root, split)
    if id_list is None and layout.id_list_required:
        wanted = " or ".join(
            str(root / t.format(split=layout.word(split))) for t in layout.id_lists
        )
        raise DatasetError(f"{layout.title} split list {wanted} not found")
    if id_list is not None:
        return _samples_from_id_list(layout, root, split, image_dir, id_list)
    if not image_dir.is_dir():
        raise DatasetError(f"{layout.title} image folder {image_dir} not found")
    found = []
    candidates = image_dir.rglob("*") if layout.nested else image_dir.iterdir()
    for path in candidates:
        stem = _strip_tail(path.name, layout.image_tails)
        if stem is not None and path.is_file():
            folder = path.parent.relative_to(image_dir)
            found.append((folder.parts + (stem,), path, folder))
    if not found and not allow_empty:
        raise DatasetError(
            f"{layout.title} image folder {image_dir} holds no {'/'.join(layout.image_tails)} images"
        )
    samples = []
    for parts, path, folder in sorted(found, key=lambda item: item[0]):
        relative = "/".join(parts)
        samples.append(
            Sample(
                image=str(path),
                label=_label_path(layout, root, split, relative),
                name=parts[-1],
                where=str(path),
                folder="/".join(folder.parts) if layout.nested else None,
            )
        )
    return samples


def _samples_from_id_list(
    layout: Layout, root: Path, split: str, image_dir: Path, id_list: Path
) -> list[Sample]:
    """One sample per stem line of ``id_list``; blank lines are skipped, a stem may carry an
    extension (some releases write ``name.jpg``), which is dropped."""
    samples = []
    for number, parts in list_file_lines(id_list):
        if not parts:
            continue
        if len(parts) != 1:
            raise DatasetError(
                f"{id_list} line {number}: expected one image name, found {len(parts)} "
                f"fields: {' '.join(parts)!r}"
            )
        stem = _strip_tail(parts[0], layout.image_tails) or parts[0]
        samples.append(
            Sample(
                image=str(image_dir / (stem + layout.image_tails[0])),
                label=_label_path(layout, root, split, stem),
                name=stem,
                where=f"{id_list} line {number}",
            )
        )
    if not samples:
        raise DatasetError(f"{layout.title} split list {id_list} is empty")
    return samples
