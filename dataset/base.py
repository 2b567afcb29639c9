"""Segmentation samples: reading list files, checking and loading samples; one dataset class.

Problems a user can cause (missing or empty lists, malformed lines, missing files) are found
when the dataset is built, so training never starts on a broken list. Problems that need the
pixels (corrupt files, size mismatches, unknown label ids) raise :class:`DatasetError` from
``__getitem__``; DataLoader workers re-raise it in the main process with its message.
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io
import torch
from torch.utils.data import Dataset

from dataset.transforms import NORMALIZATIONS, normalize, train_transform


class DatasetError(ValueError):
    """A problem with the data on disk, naming the offending file and list line."""


@dataclass(frozen=True)
class Sample:
    image: str
    label: str | None
    name: str
    where: str  # "train.lst line 7", or the image path for scanned folders
    folder: str | None = None  # folder of results written for it; None: the image's folder name

    @property
    def result_folder(self) -> str:
        """Where prediction files of this sample go: ``<city>`` for Cityscapes, the sub-folder
        below ``images/<split>/`` for a custom dataset."""
        if self.folder is not None:
            return self.folder
        return os.path.basename(os.path.dirname(self.image))


def list_file_lines(list_path: str | os.PathLike) -> list[tuple[int, list[str]]]:
    """Every line of a list file as ``(line number, whitespace-separated fields)``.

    Read as editors and other tools save text: UTF-8 with or without a byte-order mark (UTF-16
    with one, as Windows tools write it), LF, CRLF or CR line ends, trailing spaces and tabs. A
    blank line has no fields; a final line end does not start another line. Raises
    ``DatasetError`` for a missing file or one that is not text.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise DatasetError(f"list file {list_path} not found")
    raw = list_path.read_bytes()
    try:
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            text = raw.decode("utf-16")
        else:
            text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"list file {list_path} is not UTF-8 text (byte {error.start}); "
            "a list holds one 'image [label]' line per sample"
        ) from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [(number, line.split()) for number, line in enumerate(lines, start=1)]


def read_list(list_path: str | os.PathLike, root: str | os.PathLike, fields: tuple[int, ...]):
    """Parse a list file of ``image [label]`` lines with paths relative to ``root``.

    ``fields`` gives the allowed numbers of whitespace-separated fields per line. Blank lines
    are skipped (``list_file_lines`` says how lines are read; ``python -m dataset.check`` lists
    every line skipped or refused). Returns ``[(line_number, [absolute paths...]), ...]``.
    """
    entries = []
    for number, parts in list_file_lines(list_path):
        if not parts:
            continue
        if len(parts) not in fields:
            raise DatasetError(
                f"{list_path} line {number}: {fields_problem(parts, fields)}: {' '.join(parts)!r}"
            )
        entries.append((number, [os.path.join(root, p) for p in parts]))
    if not entries:
        raise DatasetError(f"list file {list_path} is empty")
    return entries


def fields_problem(parts: list[str], fields: tuple[int, ...]) -> str:
    """``expected 2 fields (image label), found 1`` for a line of ``parts``."""
    expected = " or ".join(str(f) for f in fields)
    names = "image label" if max(fields) > 1 else "image"
    return f"expected {expected} fields ({names}), found {len(parts)}"


def check_exists(samples: list[Sample]) -> None:
    """Raise on the first listed image or label that is not a file (cheap: one stat each)."""
    for sample in samples:
        if not os.path.isfile(sample.image):
            raise DatasetError(f"{sample.where}: image {sample.image} not found")
        if sample.label is not None and not os.path.isfile(sample.label):
            raise DatasetError(f"{sample.where}: label {sample.label} not found")


def read_image(path: str, where: str) -> np.ndarray:
    """Decode a colour image as uint8 BGR, or raise DatasetError naming the file."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{where}: image {path} is unreadable (missing or corrupt)")
    return image


# The variable holding the label map in a COCO-Stuff-10k ``annotations/*.mat`` file.
MAT_LABEL_KEY = "S"


def read_mat_label(path: str, where: str) -> np.ndarray:
    """The ``S`` label map of a MATLAB file (COCO-Stuff-10k) as uint8, or a DatasetError."""
    try:
        content = scipy.io.loadmat(path, variable_names=[MAT_LABEL_KEY])
    except (
        scipy.io.matlab.MatReadError,
        OSError,
        ValueError,
        TypeError,
        NotImplementedError,
    ) as error:
        raise DatasetError(f"{where}: label {path} is unreadable ({error})") from None
    if MAT_LABEL_KEY not in content:
        raise DatasetError(f"{where}: label {path} holds no variable {MAT_LABEL_KEY!r}")
    label = np.asarray(content[MAT_LABEL_KEY])
    if label.ndim != 2 or label.dtype.kind not in "iu":
        raise DatasetError(
            f"{where}: label {path} variable {MAT_LABEL_KEY!r} must be a 2-D integer array, "
            f"got shape {label.shape} and type {label.dtype}"
        )
    if label.size and (label.min() < 0 or label.max() > 255):
        raise DatasetError(
            f"{where}: label {path} holds values outside 0..255 "
            f"({int(label.min())}..{int(label.max())})"
        )
    return label.astype(np.uint8)


def read_label(path: str, where: str) -> np.ndarray:
    """Decode a single-channel label (image, or ``.mat`` with ``S``) as uint8, or raise
    DatasetError naming the file."""
    if path.lower().endswith(".mat"):
        return read_mat_label(path, where)
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DatasetError(f"{where}: label {path} is unreadable (missing or corrupt)")
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DatasetError(
            f"{where}: label {path} must be a single-channel 8-bit image, "
            f"got shape {label.shape} and type {label.dtype}"
        )
    return label


class SegmentationDataset(Dataset):
    """Samples with a 256-entry label table; train mode augments, eval modes return whole images.

    ``mode``: "train" (scale/crop/mirror, needs labels), "val" (whole image and label) or
    "test" (whole image, label all ``ignore_label`` so batches collate).
    Augmentation randomness comes from ``np.random.default_rng([seed, epoch, index])``, so a
    sample's crop does not depend on worker count, worker order or resuming mid-epoch.
    ``flip_lut`` (train id -> train id) relabels a mirrored crop, for classes that trade places
    under a horizontal flip (LIP's left and right arm); None keeps labels as they are.
    """

    def __init__(
        self,
        samples: list[Sample],
        lut: np.ndarray,
        known: np.ndarray,
        mode: str = "train",
        crop_size: tuple[int, int] = (769, 769),
        scale: bool = True,
        mirror: bool = True,
        ignore_label: int = 255,
        normalize: str = "caffe",
        max_iters: int | None = None,
        seed: int = 0,
        flip_lut: np.ndarray | None = None,
    ) -> None:
        if mode not in ("train", "val", "test"):
            raise ValueError(f"mode must be train, val or test, got {mode!r}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(
                f"unknown normalisation {normalize!r}; choose one of {', '.join(NORMALIZATIONS)}"
            )
        if not samples:
            raise DatasetError("no samples found")
        check_exists(samples)
        self.samples = samples
        self.lut = np.asarray(lut, dtype=np.uint8).copy()
        self.lut[self.lut == 255] = ignore_label
        self.known = np.asarray(known, dtype=bool)
        self.mode = mode
        self.crop_size = tuple(int(s) for s in crop_size)
        self.scale = scale
        self.mirror = mirror
        self.ignore_label = ignore_label
        self.normalize = normalize
        self.seed = int(seed)
        self.flip_lut = None if flip_lut is None else np.asarray(flip_lut, dtype=np.uint8)
        self.epoch = 0
        # Like the original: repeat the whole list ceil(max_iters / n) times.
        self.repeats = 1 if max_iters is None else max(1, -(-int(max_iters) // len(samples)))

    def __len__(self) -> int:
        return len(self.samples) * self.repeats

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of an epoch (call before creating the iterator)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def load_label(self, sample: Sample, image_shape: tuple[int, ...]) -> np.ndarray:
        """Read a label, check its size and ids, and map it to train ids through the table."""
        raw = read_label(sample.label, sample.where)
        if raw.shape != image_shape[:2]:
            raise DatasetError(
                f"{sample.where}: label {sample.label} is {raw.shape[0]}x{raw.shape[1]} but "
                f"image {sample.image} is {image_shape[0]}x{image_shape[1]}"
            )
        unknown = cv2.LUT(raw, (~self.known).astype(np.uint8))
        if unknown.any():
            ids = np.unique(raw[unknown.astype(bool)]).tolist()
            raise DatasetError(
                f"{sample.where}: label {sample.label} contains ids {ids} that the label table "
                "does not know"
            )
        return cv2.LUT(raw, self.lut)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(index)
        sample = self.samples[index % len(self.samples)]
        image = read_image(sample.image, sample.where)
        size = (int(image.shape[0]), int(image.shape[1]))
        meta = {"name": sample.name, "size": size, "image_path": sample.image}
        if self.mode == "test" or sample.label is None:
            if self.mode == "train":
                raise DatasetError(f"{sample.where}: training needs a label for {sample.image}")
            label = np.full(size, self.ignore_label, dtype=np.uint8)
        else:
            label = self.load_label(sample, image.shape)
        if self.mode == "train":
            image_f, label = train_transform(
                image,
                label,
                self.rng(index),
                self.crop_size,
                self.scale,
                self.mirror,
                self.normalize,
                self.ignore_label,
                self.flip_lut,
            )
        else:
            image_f = normalize(image, self.normalize)
        image_t = torch.from_numpy(np.ascontiguousarray(image_f.transpose(2, 0, 1)))
        label_t = torch.from_numpy(label.astype(np.int64))
        return image_t, label_t, meta
