"""Using a trained model from Python: ``Segmenter``, and the image reading ``predict.py`` shares.

Example::

    from engine.predictor import Segmenter

    segmenter = Segmenter.from_checkpoint("snapshots/CS_scenes_40000.pth", device="cpu")
    labels = segmenter.predict("photo.jpg")  # HxW class indices (numpy)
    colors = segmenter.colorize(labels)  # HxWx3 RGB

Images are decoded as ``dataset`` decodes them (cv2: grayscale and RGBA become RGB, EXIF
orientation applied) and normalised with the checkpoint's ``normalize``.
"""

from __future__ import annotations

import argparse
import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from dataset import DATASET_NAMES, dataset_info
from dataset.catalog import spread_colors
from dataset.transforms import normalize
from engine.cli import UserError
from engine.models import build_model, model_num_classes, resolve_model_args
from inplace_abn import ABN
from network.weights import load_weights
from utils.inference import final_logits, predict

# What a folder given to predict.py is searched for (recursively).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ImageLike = str | os.PathLike | Image.Image | np.ndarray


class UnreadableImage(UserError):
    """An input that is not an image cv2 can decode."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """HxWx3 uint8 RGB of an image file; grayscale and RGBA become RGB, 16 bits become 8.

    ``cv2.IMREAD_COLOR`` does all of that and applies the EXIF orientation of a photo.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UnreadableImage(f"{path}: no such file")
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise UnreadableImage(f"{path}: unreadable (not an image cv2 can decode)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def as_rgb(image: ImageLike) -> np.ndarray:
    """HxWx3 uint8 RGB from a path, a PIL image, or an HxW / HxWx3 / HxWx4 uint8 array."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image array, got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return np.ascontiguousarray(array[:, :, :3])
    raise TypeError(f"expected an HxW or HxWx3 (RGB) image array, got shape {array.shape}")


def image_tensor(rgb: np.ndarray, mode: str) -> torch.Tensor:
    """``[3, H, W]`` float32 network input of an RGB uint8 image (``dataset.transforms``)."""
    return torch.from_numpy(normalize(rgb[:, :, ::-1], mode).transpose(2, 0, 1).copy())


def label_palette(dataset: str, num_classes: int) -> np.ndarray:
    """uint8[256, 3] colours of ``dataset``'s classes, or a spread palette when the table does
    not apply (a custom dataset, whose colours live in its data folder, or another class count)."""
    if dataset in DATASET_NAMES and dataset != "custom":
        info = dataset_info(dataset)
        if info.num_classes == num_classes:
            return info.palette()
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:num_classes] = spread_colors(num_classes)
    return table


def class_names(dataset: str, num_classes: int) -> list[str]:
    if dataset in DATASET_NAMES and dataset != "custom":
        names = list(dataset_info(dataset).class_names)
        if len(names) == num_classes:
            return names
    return [f"class_{k}" for k in range(num_classes)]


class Segmenter:
    """A segmentation model with what it needs to take images: normalisation, device, options.

    ``predict`` returns class indices at the image's size; ``predict_logits`` the final logits
    of one whole-image pass, upsampled to the image (bilinear, ``align_corners=True``, as the
    evaluation); ``predict_probabilities`` the softmax averaged over the test-time options
    (``mode="sliding"``, ``scales``, ``flip``; see ``utils.inference.predict``).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        normalize: str = "caffe",
        dataset: str = "cityscapes",
        device: str | torch.device = "cpu",
        **options: Any,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.num_classes = num_classes
        self.normalize = normalize
        self.dataset = dataset
        self.options = options

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        *,
        network: str | None = None,
        method: str | None = None,
        num_classes: int | None = None,
        dataset: str | None = None,
        normalize: str | None = None,
        **options: Any,
    ) -> Segmenter:
        """The model of a checkpoint (``.pth`` or ``.safetensors``) with its recorded meta.

        Keywords override the meta; a file without meta (the original OCNet's) needs
        ``network`` and ``method``. ``options`` are defaults of ``predict`` (``mode``,
        ``scales``, ``flip``, ``tile``, ``amp``...).
        """
        args = argparse.Namespace(
            network=network,
            method=method,
            num_classes=num_classes,
            dataset=dataset,
            normalize=normalize,
        )
        resolve_model_args(args, path)
        classes = model_num_classes(args)
        model = build_model(args, classes, norm_layer=ABN)
        load_weights(model, path)
        return cls(model, classes, args.normalize, args.dataset, device, **options)

    def input(self, image: ImageLike) -> torch.Tensor:
        """``[1, 3, H, W]`` normalised input on the model's device."""
        return image_tensor(as_rgb(image), self.normalize)[None].to(self.device)

    @torch.inference_mode()
    def predict_logits(self, image: ImageLike) -> torch.Tensor:
        """``[C, H, W]`` float32 logits of one whole-image pass at the image's size."""
        x = self.input(image)
        logits = final_logits(self.model(x)).float()
        logits = torch.nn.functional.interpolate(
            logits, size=x.shape[-2:], mode="bilinear", align_corners=True
        )
        return logits[0].cpu()

    @torch.inference_mode()
    def predict_probabilities(self, image: ImageLike, **options: Any) -> torch.Tensor:
        """``[C, H, W]`` class probabilities with the test-time options (defaults: whole, 1.0)."""
        options = {**self.options, **options}
        probs = predict(self.model, self.input(image), self.num_classes, **options)
        return probs[0].cpu()

    def predict(self, image: ImageLike, **options: Any) -> np.ndarray:
        """HxW class indices (uint8 below 256 classes, else int64)."""
        labels = self.predict_probabilities(image, **options).argmax(0).numpy()
        return labels.astype(np.uint8) if self.num_classes <= 256 else labels

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """HxWx3 RGB colours of class indices (the dataset's palette)."""
        return label_palette(self.dataset, self.num_classes)[np.asarray(labels)]

    @property
    def class_names(self) -> list[str]:
        return class_names(self.dataset, self.num_classes)


# --- image files, as predict.py reads them -------------------------------------------------------


@dataclass
class InputImage:
    """An input file and the path of its results relative to the output folder, without suffix."""

    path: str
    relative: str


@dataclass
class Inputs:
    images: list[InputImage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # inputs that name no image


def _glob_root(pattern: str) -> str:
    """The folder part of a glob before its first wildcard (``data/**/*.png`` -> ``data``)."""
    parts = []
    for part in os.path.normpath(pattern).split(os.sep):
        if glob.has_magic(part):
            break
        parts.append(part)
    return os.sep.join(parts) if parts else "."


def _relative(path: str, root: str) -> str:
    relative = os.path.relpath(path, root) if root else os.path.basename(path)
    return os.path.splitext(relative)[0]


def find_images(inputs: Sequence[str]) -> Inputs:
    """Expand files, folders (recursively: .png, .jpg, .jpeg) and globs, in the order given.

    Result names are relative to the folder given, or to the fixed part of a glob; a file given
    by itself keeps its base name. An input that matches nothing is a problem, not an error;
    a file found twice is read once.
    """
    found = Inputs()
    seen: set[str] = set()

    def add(path: str, root: str | None) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            found.images.append(InputImage(path, _relative(path, root or "")))

    for item in inputs:
        if os.path.isdir(item):
            files = []
            for folder, subfolders, names in os.walk(item):
                subfolders.sort()
                files += [
                    os.path.join(folder, n)
                    for n in sorted(names)
                    if n.lower().endswith(IMAGE_SUFFIXES)
                ]
            if not files:
                found.problems.append(f"{item}: no .png, .jpg or .jpeg files in this folder")
            for path in files:
                add(path, item)
        elif os.path.isfile(item):
            add(item, None)
        elif glob.has_magic(item):
            root = _glob_root(item)
            files = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not files:
                found.problems.append(f"{item}: no file matches")
            for path in files:
                add(path, root)
        else:
            found.problems.append(f"{item}: no such file or folder")
    return found


class ImageFiles(Dataset):
    """Decoded, normalised images for a DataLoader; an unreadable file yields its error instead.

    Items are ``(input [3, H, W] or None, rgb HxWx3 or None, meta)`` with ``meta`` holding
    ``index``, ``path``, ``relative`` and, for an unreadable file, ``error``.
    """

    def __init__(self, images: Sequence[InputImage], mode: str, keep_rgb: bool = False) -> None:
        self.images = list(images)
        self.mode = mode
        self.keep_rgb = keep_rgb

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        item = self.images[index]
        meta = {"index": index, "path": item.path, "relative": item.relative}
        try:
            rgb = read_image(item.path)
        except UnreadableImage as error:
            return None, None, {**meta, "error": str(error)}
        return image_tensor(rgb, self.mode), rgb if self.keep_rgb else None, meta


def collate_list(batch):
    """Keep a batch as a list: images of one batch may differ in size (predict.py groups them)."""
    return list(batch)
