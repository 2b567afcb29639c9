"""Segmentation metrics from a confusion matrix: IoU per class, mIoU, pixel and class accuracy.

The matrix is accumulated on the prediction's device with ``torch.bincount`` (no host copies per
image) and summed across DDP ranks once at the end. Rows are ground truth, columns prediction.
A class that appears neither in the ground truth nor in the prediction has no defined IoU: it is
NaN, left out of the mean (as the official Cityscapes evaluator does) and written as ``null``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence

import torch

from utils.fileio import atomic_write


def confusion_matrix(
    pred: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """``[C, C]`` int64 counts of (ground truth, prediction) pairs; ``ignore_index`` pixels skipped.

    Pairs are encoded in int32 (int64 conversion and boolean compaction cost ~15x more on CPU at
    Cityscapes size); ignored pixels go to one spare bin and out-of-range values to another, so a
    single ``bincount`` pass counts everything. A label outside ``[0, num_classes)`` other than
    ``ignore_index`` raises ``ValueError``: it usually means labelIds were not mapped to trainIds,
    which would silently corrupt the scores.
    """
    if pred.shape != label.shape:
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} differs from label shape {tuple(label.shape)}"
        )
    c = num_classes
    if label.dtype == pred.dtype == torch.uint8 and label.device == pred.device:
        return _confusion_uint8(pred, label, c, ignore_index)
    label = label.reshape(-1).to(torch.int32)
    pred = pred.reshape(-1).to(device=label.device, dtype=torch.int32)
    pairs = label * c + pred
    outside = (label < 0) | (label >= c) | (pred < 0) | (pred >= c)
    pairs.masked_fill_(outside, c * c + 1)
    pairs.masked_fill_(label == ignore_index, c * c)
    counts = torch.bincount(pairs, minlength=c * c + 2)
    if counts[c * c + 1]:
        valid = label[label != ignore_index]
        bad_labels = valid[(valid < 0) | (valid >= c)]
        if bad_labels.numel():
            raise _bad_label(int(bad_labels[0]), c, ignore_index)
        raise _bad_prediction(c)
    return counts[: c * c].reshape(c, c)


def _confusion_uint8(
    pred: torch.Tensor, label: torch.Tensor, c: int, ignore_index: int
) -> torch.Tensor:
    """``confusion_matrix`` of two uint8 maps (PNG labels, stored predictions): every
    (label, prediction) byte pair gets its bin, one ``bincount`` into 256 x 256 with no masks,
    about 8x faster at Cityscapes size; out-of-range values are found in the table after."""
    pairs = label.reshape(-1).to(torch.int32).mul_(256).add_(pred.reshape(-1))
    counts = torch.bincount(pairs, minlength=256 * 256).view(256, 256)  # [label, pred]
    per_label = counts.sum(1)
    per_label[:c] = 0
    if 0 <= ignore_index < 256:
        per_label[ignore_index] = 0
    bad_labels = per_label.nonzero()
    if bad_labels.numel():
        raise _bad_label(int(bad_labels[0]), c, ignore_index)
    if counts[:c, c:].any():
        raise _bad_prediction(c)
    return counts[:c, :c].clone()


def _bad_label(value: int, c: int, ignore_index: int) -> ValueError:
    return ValueError(
        f"label value {value} is outside 0..{c - 1} and is not the ignore index {ignore_index} "
        "(labelIds not converted to trainIds, or wrong --num-classes?)"
    )


def _bad_prediction(c: int) -> ValueError:
    return ValueError(f"prediction values must lie in 0..{c - 1}")


def _nanmean(values: torch.Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() else float("nan")


def class_statistics(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class IoU, accuracy (recall) and pixel counts as float64 CPU tensors (NaN if undefined)."""
    conf = confusion.detach().to("cpu", torch.float64)
    true_positive = conf.diagonal()
    gt_pixels = conf.sum(1)
    pred_pixels = conf.sum(0)
    union = gt_pixels + pred_pixels - true_positive
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), nan)
    accuracy = torch.where(gt_pixels > 0, true_positive / gt_pixels.clamp(min=1), nan)
    return {
        "iou": iou,
        "accuracy": accuracy,
        "true_positive": true_positive,
        "gt_pixels": gt_pixels,
        "pred_pixels": pred_pixels,
    }


def default_class_names(num_classes: int) -> list[str]:
    return [f"class_{i}" for i in range(num_classes)]


def scores(confusion: torch.Tensor, class_names: Sequence[str] | None = None) -> dict:
    """mIoU, pixel accuracy, mean class accuracy and per-class IoU (fractions in [0, 1], or NaN)."""
    num_classes = confusion.shape[0]
    names = list(class_names) if class_names is not None else default_class_names(num_classes)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names given for {num_classes} classes")
    stats = class_statistics(confusion)
    total = float(stats["gt_pixels"].sum())
    return {
        "mIoU": _nanmean(stats["iou"]),
        "pixel_acc": float(stats["true_positive"].sum()) / total if total else float("nan"),
        "mean_acc": _nanmean(stats["accuracy"]),
        "per_class": {name: float(v) for name, v in zip(names, stats["iou"].tolist())},
    }


def _json_value(value):
    """NaN has no JSON spelling; ``null`` keeps the file valid for strict parsers."""
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _percent(value: float) -> str:
    return "   nan" if math.isnan(value) else f"{100 * value:6.2f}"


def format_table(confusion: torch.Tensor, class_names: Sequence[str] | None = None) -> str:
    """Plain-text table: one row per class (IoU, accuracy in percent, pixel counts), then means."""
    num_classes = confusion.shape[0]
    names = list(class_names) if class_names is not None else default_class_names(num_classes)
    stats = class_statistics(confusion)
    result = scores(confusion, names)
    width = max(12, *(len(n) for n in names))
    lines = [
        f"{'class':<{width}}  {'IoU %':>6}  {'acc %':>6}  {'GT pixels':>12}  {'pred pixels':>12}",
        "-" * (width + 44),
    ]
    for i, name in enumerate(names):
        lines.append(
            f"{name:<{width}}  {_percent(float(stats['iou'][i]))}  "
            f"{_percent(float(stats['accuracy'][i]))}  {int(stats['gt_pixels'][i]):>12d}  "
            f"{int(stats['pred_pixels'][i]):>12d}"
        )
    lines.append("-" * (width + 44))
    lines.append(f"{'mIoU':<{width}}  {_percent(result['mIoU'])}")
    lines.append(f"{'pixel acc':<{width}}  {_percent(result['pixel_acc'])}")
    lines.append(f"{'mean acc':<{width}}  {_percent(result['mean_acc'])}")
    return "\n".join(lines)


def save_scores(
    confusion: torch.Tensor,
    output_dir: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    stem: str = "metrics",
) -> tuple[str, str]:
    """Write ``<stem>.json`` (mIoU, pixel_acc, mean_acc, per_class) and ``<stem>.csv`` atomically.

    The CSV has one row per class: name, IoU, accuracy, GT and predicted pixel counts. Returns the
    two paths.
    """
    num_classes = confusion.shape[0]
    names = list(class_names) if class_names is not None else default_class_names(num_classes)
    result = scores(confusion, names)
    stats = class_statistics(confusion)
    json_path = os.path.join(os.fspath(output_dir), f"{stem}.json")
    csv_path = os.path.join(os.fspath(output_dir), f"{stem}.csv")
    text = json.dumps(_json_value(result), indent=2, allow_nan=False) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class", "iou", "accuracy", "gt_pixels", "pred_pixels"])
    for i, name in enumerate(names):
        iou, acc = float(stats["iou"][i]), float(stats["accuracy"][i])
        writer.writerow(
            [
                name,
                "" if math.isnan(iou) else f"{iou:.6f}",
                "" if math.isnan(acc) else f"{acc:.6f}",
                int(stats["gt_pixels"][i]),
                int(stats["pred_pixels"][i]),
            ]
        )
    atomic_write(json_path, text.encode())
    atomic_write(csv_path, buffer.getvalue().encode())
    return json_path, csv_path
