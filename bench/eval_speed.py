"""Evaluation speed: our confusion-matrix scoring vs. the official Cityscapes evaluator, and the
CPU cost of whole-image vs. sliding-window inference of resnet101_asp_oc_dsn.

Scoring: both read the same label-id prediction PNGs and ground-truth PNGs (synthetic, 1024x2048)
and produce class IoUs; ours maps ids through a lookup table and counts uint8 pairs with one
``torch.bincount``, the official script (cityscapesscripts, pure-Python path when its Cython
extension is not built) uses ``np.unique``. Inference: one image through the full model with random
weights, whole vs. 769x769 tiles (overlap 1/3, 8 tiles, as ``evaluate.py --predict-choice
sliding``). ``quick=True`` uses fewer / smaller images.
"""

from __future__ import annotations

import os
import tempfile
import time

import cv2
import numpy as np
import torch

from bench.common import markdown_table, row

# labelIds used for the fake ground truth: trained classes plus a few ignored ones.
LABEL_IDS = np.array(
    [0, 1, 4, 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
)


def _make_pairs(folder: str, count: int, size: tuple[int, int]) -> tuple[list[str], list[str]]:
    """Blocky ground truth and a prediction that agrees on ~70% of the pixels."""
    rng = np.random.default_rng(0)
    gts, preds = [], []
    height, width = size
    for k in range(count):
        city = "frankfurt"
        name = f"{city}_{k:06d}_000019"
        os.makedirs(os.path.join(folder, "gtFine", "val", city), exist_ok=True)
        os.makedirs(os.path.join(folder, "results", city), exist_ok=True)
        blocks = rng.choice(LABEL_IDS, size=(height // 64, width // 64)).astype(np.uint8)
        gt = cv2.resize(blocks, (width, height), interpolation=cv2.INTER_NEAREST)
        trained = LABEL_IDS[LABEL_IDS >= 7]
        noise = rng.choice(trained, size=(height, width)).astype(np.uint8)
        pred = np.where(rng.random((height, width)) < 0.7, gt, noise)
        pred = np.where(np.isin(pred, trained), pred, 7).astype(np.uint8)
        gt_path = os.path.join(folder, "gtFine", "val", city, f"{name}_gtFine_labelIds.png")
        pred_path = os.path.join(folder, "results", city, f"{name}.png")
        cv2.imwrite(gt_path, gt)
        cv2.imwrite(pred_path, pred)
        gts.append(gt_path)
        preds.append(pred_path)
    return gts, preds


def score_ours(preds: list[str], gts: list[str]) -> float:
    """Class mIoU of label-id PNGs the way evaluate.py scores (train ids, bincount)."""
    from dataset.catalog import DATASETS
    from utils.metrics import confusion_matrix, scores

    lut = DATASETS["cityscapes"].label_lut
    confusion = torch.zeros(19, 19, dtype=torch.int64)
    for pred_path, gt_path in zip(preds, gts):
        # The loaders' mapping (dataset.base): a 256-entry table through cv2.LUT, uint8 out.
        pred = cv2.LUT(cv2.imread(pred_path, cv2.IMREAD_UNCHANGED), lut)
        gt = cv2.LUT(cv2.imread(gt_path, cv2.IMREAD_UNCHANGED), lut)
        confusion += confusion_matrix(torch.from_numpy(pred), torch.from_numpy(gt), 19)
    return scores(confusion)["mIoU"]


def score_official(preds: list[str], gts: list[str], folder: str) -> float:
    os.environ["CITYSCAPES_DATASET"] = folder
    os.environ["CITYSCAPES_EXPORT_DIR"] = folder
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    official.args.evalInstLevelScore = False  # np.in1d is gone in numpy >= 2.4
    official.args.JSONOutput = False
    official.args.quiet = True
    return official.evaluateImgLists(preds, gts, official.args)["averageScoreClasses"]


def scoring_rows(count: int, size: tuple[int, int]) -> list[dict]:
    """Seconds per image for both scorers, single-threaded (the official one is plain numpy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        gts, preds = _make_pairs(folder, count, size)
        score_ours(preds[:1], gts[:1])  # imports and first-call set-up are not timed
        start = time.perf_counter()
        ours = score_ours(preds, gts)
        ours_s = (time.perf_counter() - start) / count
        start = time.perf_counter()
        theirs = score_official(preds, gts, folder)
        theirs_s = (time.perf_counter() - start) / count
    torch.set_num_threads(threads)
    note = (
        f"{count} images {size[0]}x{size[1]}, 1 thread; mIoU ours {ours:.6f}, official {theirs:.6f}"
    )
    return [row("score one image (read + IoU)", ours_s, theirs_s, "s", "cityscapesscripts", note)]


def inference_rows(size: tuple[int, int], tile: tuple[int, int], threads: int = 2) -> list[dict]:
    from inplace_abn import ABN
    from network import get_segmentation_model
    from utils.inference import predict, tile_windows

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = get_segmentation_model("resnet101_asp_oc_dsn", 19, norm_layer=ABN).eval()
    image = torch.randn(1, 3, *size)
    times = {}
    with torch.inference_mode():
        for mode in ("whole", "sliding"):
            start = time.perf_counter()
            predict(model, image, 19, mode=mode, tile=tile, overlap=1 / 3, tile_batch=1)
            times[mode] = time.perf_counter() - start
    tiles = len(tile_windows(*size, tile, 1 / 3))
    note = (
        f"resnet101_asp_oc_dsn, {size[0]}x{size[1]}, CPU {threads} threads, "
        f"{tiles} tiles of {tile[0]}x{tile[1]}"
    )
    return [row("CPU inference, sliding vs whole", times["sliding"], times["whole"], "s",
                "whole image", note)]  # fmt: skip


def run(quick: bool = False) -> list[dict]:
    if quick:
        rows = scoring_rows(2, (1024, 2048))
        rows += inference_rows((256, 512), (193, 193))
    else:
        rows = scoring_rows(10, (1024, 2048))
        rows += inference_rows((1024, 2048), (769, 769))
    return rows


if __name__ == "__main__":
    import sys

    print(markdown_table(run(quick="--quick" in sys.argv)))
