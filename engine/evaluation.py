"""The one evaluation loop: a confusion matrix over a loader, summed over processes.

``evaluate.py`` and ``train.py --val-every`` both call ``confusion_over``; they differ only in the
prediction options (sliding, scales, flips) and in what they do with each image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from engine.cli import UserError
from utils.distributed import all_reduce_sum, is_main_process
from utils.inference import predict
from utils.metrics import confusion_matrix

# Called with (prediction [H, W], label [H, W], meta) of each image, cropped to its size.
ImageHook = Callable[[torch.Tensor, torch.Tensor, dict], None]


def predicted_batches(
    model: nn.Module,
    loader: Iterable,
    num_classes: int,
    device: torch.device,
    options: dict,
    progress: bool = False,
):
    """Yield ``(train-id prediction [B, H, W], label [B, H, W], metas)`` on ``device``.

    ``options`` are the keyword arguments of ``utils.inference.predict`` (mode, scales, ...).
    """
    batches = tqdm(
        loader, desc="predict", unit="batch", disable=not (progress and is_main_process())
    )
    with torch.inference_mode():
        for images, labels, metas in batches:
            probs = predict(model, images.to(device, non_blocking=True), num_classes, **options)
            yield probs.argmax(1), labels.to(device, non_blocking=True), metas


def confusion_over(
    model: nn.Module,
    loader: Iterable,
    num_classes: int,
    device: torch.device,
    options: dict,
    ignore_index: int = 255,
    each_image: ImageHook | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """``[K, K]`` int64 confusion matrix (rows truth, columns prediction) of ``model`` on the
    loader, summed over every process; the model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    try:
        for pred, label, metas in predicted_batches(
            model, loader, num_classes, device, options, progress
        ):
            for i, meta in enumerate(metas):
                height, width = meta["size"]
                pred_i, label_i = pred[i, :height, :width], label[i, :height, :width]
                try:
                    confusion += confusion_matrix(pred_i, label_i, num_classes, ignore_index)
                except ValueError as error:
                    raise UserError(f"{meta['image_path']}: {error}") from None
                if each_image is not None:
                    each_image(pred_i, label_i, meta)
    finally:
        model.train(was_training)
    return all_reduce_sum(confusion)
