"""Augmentation and normalisation, following the original OCNet data pipeline.

Order of the original training transform: labelId -> trainId, random scale (linear for the
image, nearest for the label), normalise, pad (image with 0 after normalisation, label with the
ignore value) up to the crop, random crop, random horizontal mirror. Here the crop window is
chosen first and only the cropped pixels are normalised; the padded border is filled with 0 after
normalisation, so the result equals the original's while touching far fewer pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

# "caffe": the original's mean, BGR-ordered (Caffe ResNet convention) in pixel units, no std.
# "openseg": the same mean subtracted from the BGR image as decoded, channels kept in BGR order
# (openseg.pytorch: image_tool cv2, input_mode BGR, configs/cityscapes/R_101_D_8.json).
CAFFE_MEAN = np.array((102.9801, 115.9465, 122.7717), dtype=np.float32)
# "imagenet": torchvision's RGB statistics on [0, 1] images.
IMAGENET_MEAN = np.array((0.485, 0.456, 0.406), dtype=np.float32)
IMAGENET_STD = np.array((0.229, 0.224, 0.225), dtype=np.float32)
NORMALIZATIONS = ("caffe", "openseg", "imagenet")

# Random scale factors of the original: 0.5 + randint(0, 16) / 10, i.e. 0.5, 0.6, ..., 2.1.
SCALES = tuple(0.5 + k / 10.0 for k in range(17))


def normalize(image_bgr: np.ndarray, mode: str = "caffe") -> np.ndarray:
    """uint8 HxWx3 BGR image (as cv2 decodes it) -> float32 HxWx3 network input.

    "caffe" reverses BGR to RGB and *then* subtracts the BGR-ordered mean, so the red channel
    loses the blue mean and vice versa. That is what the original code does and what the
    original checkpoints were trained with; keep the order to reproduce their numbers.
    "openseg" keeps BGR and subtracts the mean channel by channel, as openseg.pytorch's
    ISA/OCR checkpoints expect; "imagenet" is RGB in [0, 1] with torchvision's statistics (the
    official HRNet-OCR checkpoints).
    """
    if mode == "openseg":
        return image_bgr.astype(np.float32) - CAFFE_MEAN
    rgb = image_bgr[:, :, ::-1].astype(np.float32)
    if mode == "caffe":
        rgb -= CAFFE_MEAN
    elif mode == "imagenet":
        rgb *= np.float32(1.0 / 255.0)
        rgb -= IMAGENET_MEAN
        rgb /= IMAGENET_STD
    else:
        raise ValueError(
            f"unknown normalisation {mode!r}; choose one of {', '.join(NORMALIZATIONS)}"
        )
    return rgb


def random_scale(
    image: np.ndarray, label: np.ndarray, factor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resize by ``factor`` with cv2 (linear image, nearest label), as the original."""
    if factor == 1.0:
        return image, label
    image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    return image, label


def crop_pad_normalize(
    image: np.ndarray,
    label: np.ndarray,
    top: int,
    left: int,
    crop_size: tuple[int, int],
    mode: str,
    ignore_label: int = 255,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a ``crop_size`` window at (top, left) of the image padded at bottom/right.

    Pixels outside the image are 0 in the normalised image and ``ignore_label`` in the label,
    exactly the original's ``copyMakeBorder`` after normalisation.
    """
    crop_h, crop_w = crop_size
    h, w = label.shape
    out_image = np.zeros((crop_h, crop_w, 3), dtype=np.float32)
    out_label = np.full((crop_h, crop_w), ignore_label, dtype=np.uint8)
    valid_h = max(0, min(crop_h, h - top))
    valid_w = max(0, min(crop_w, w - left))
    if valid_h and valid_w:
        window = image[top : top + valid_h, left : left + valid_w]
        out_image[:valid_h, :valid_w] = normalize(window, mode)
        out_label[:valid_h, :valid_w] = label[top : top + valid_h, left : left + valid_w]
    return out_image, out_label


def train_transform(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    crop_size: tuple[int, int] = (769, 769),
    scale: bool = True,
    mirror: bool = True,
    mode: str = "caffe",
    ignore_label: int = 255,
    flip_lut: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The original's training augmentation on a BGR uint8 image and a trainId uint8 label.

    Draws, in order: scale index (0..16), crop top, crop left, mirror bit, all from ``rng``.
    Returns a float32 HxWx3 RGB normalised image and a uint8 HxW label, both contiguous. A
    mirrored label goes through ``flip_lut`` (uint8[256]) when given: left/right classes swap.
    """
    if scale:
        image, label = random_scale(image, label, SCALES[int(rng.integers(0, len(SCALES)))])
    crop_h, crop_w = crop_size
    h, w = label.shape
    top = int(rng.integers(0, max(h, crop_h) - crop_h + 1))
    left = int(rng.integers(0, max(w, crop_w) - crop_w + 1))
    image, label = crop_pad_normalize(image, label, top, left, crop_size, mode, ignore_label)
    if mirror and rng.integers(0, 2):
        image = image[:, ::-1]
        label = label[:, ::-1]
        if flip_lut is not None:
            label = cv2.LUT(np.ascontiguousarray(label), flip_lut)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)
