"""Losses against hand-computed values and a numpy sort-based OHEM reference."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from engine.training import build_criterion
from utils.criterion import (
    CITYSCAPES_CLASS_WEIGHTS,
    CriterionCrossEntropy,
    CriterionDSN,
    CriterionOhemCrossEntropy,
    CriterionOhemDSN,
    CriterionOhemDSN_single,
    ohem_cross_entropy,
    ohem_mask,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


def two_pixel_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel 0: p(class 1) = 3/4, label 1; pixel 1: p(class 0) = 2/3, label 0; pixel 2 ignored."""
    logits = torch.tensor([[0.0, LN2, 5.0], [LN3, 0.0, -5.0]]).reshape(1, 2, 1, 3)
    target = torch.tensor([[[1, 0, 255]]])
    return logits, target


def test_cross_entropy_by_hand():
    logits, target = two_pixel_case()
    # (ln(4/3) + ln(3/2)) / 2 = ln(2) / 2
    loss = CriterionCrossEntropy(num_classes=2)(logits, target)
    assert loss.item() == pytest.approx(LN2 / 2, abs=1e-6)


def test_cross_entropy_with_cityscapes_weights_by_hand():
    logits = torch.zeros(1, 19, 1, 2)
    logits[0, 1, 0, 0] = LN3  # p(class 1) = 3 / (3 + 18) = 1/7
    logits[0, 1, 0, 1] = LN3  # p(class 18) = 1 / 21
    target = torch.tensor([[[1, 18]]])
    w1, w18 = CITYSCAPES_CLASS_WEIGHTS[1], CITYSCAPES_CLASS_WEIGHTS[18]
    expected = (w1 * math.log(7.0) + w18 * math.log(21.0)) / (w1 + w18)
    loss = CriterionCrossEntropy(num_classes=19, use_weight=True)(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    unweighted = CriterionCrossEntropy(num_classes=19)(logits, target)
    assert unweighted.item() == pytest.approx((math.log(7.0) + math.log(21.0)) / 2, rel=1e-6)


def test_use_weight_with_other_class_count_is_a_clear_error():
    with pytest.raises(ValueError, match="only for the 19 Cityscapes classes.*150 classes"):
        CriterionDSN(num_classes=150, use_weight=True)
    CriterionDSN(num_classes=150, use_weight=False)  # ADE20K without weights is fine


def test_upsampling_is_bilinear_align_corners():
    # 2x2 logits of class 1 (class 0 fixed at 0) upsampled to 3x3 with align_corners=True: the
    # corners keep their values, the centre is the mean of all four, edge midpoints of two.
    a, b, c, d = 0.0, 2.0, 4.0, -2.0
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1] = torch.tensor([[a, b], [c, d]])
    target = torch.ones(1, 3, 3, dtype=torch.long)
    upsampled = [
        [a, (a + b) / 2, b],
        [(a + c) / 2, (a + b + c + d) / 4, (b + d) / 2],
        [c, (c + d) / 2, d],
    ]
    expected = np.mean([math.log1p(math.exp(-z)) for row in upsampled for z in row])
    loss = CriterionCrossEntropy(num_classes=2)(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_dsn_weights_auxiliary_loss_by_04():
    logits, target = two_pixel_case()
    uniform = torch.zeros_like(logits)  # CE = ln 2 per pixel
    loss = CriterionDSN(num_classes=2)([uniform, logits], target)
    assert loss.item() == pytest.approx(0.4 * LN2 + LN2 / 2, abs=1e-6)
    terms = CriterionDSN(num_classes=2, dsn_weight=0.25).terms([uniform, logits], target)
    assert terms["loss_dsn"].item() == pytest.approx(0.25 * LN2, abs=1e-6)
    assert terms["loss_main"].item() == pytest.approx(LN2 / 2, abs=1e-6)


def test_all_ignored_gives_zero_loss_and_zero_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255, dtype=torch.long)
    for criterion in (
        CriterionCrossEntropy(num_classes=3),
        CriterionOhemCrossEntropy(num_classes=3, min_kept=5),
    ):
        loss = criterion(logits, target)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.equal(logits.grad, torch.zeros_like(logits))
        logits.grad = None


def ohem_reference(logits: np.ndarray, target: np.ndarray, thresh: float, min_kept: int):
    """The original algorithm in numpy: argsort the true-class probabilities of valid pixels."""
    n, c, h, w = logits.shape
    label = target.reshape(-1).astype(np.int64)
    x = np.moveaxis(logits.astype(np.float64), 1, 0).reshape(c, -1)
    prob = np.exp(x - x.max(axis=0))
    prob /= prob.sum(axis=0)
    valid = np.flatnonzero(label != 255)
    keep = np.zeros(label.shape, dtype=bool)
    if min_kept >= len(valid):
        keep[valid] = True
    elif len(valid):
        pred = prob[label[valid], valid]
        threshold = thresh
        if min_kept > 0:
            kth = pred[np.argsort(pred, kind="stable")[min_kept - 1]]
            threshold = max(threshold, kth)
        keep[valid[pred <= threshold]] = True
    nll = -np.log(prob[np.where(keep, label, 0), np.arange(label.size)])
    loss = nll[keep].mean() if keep.any() else 0.0
    return keep.reshape(n, h, w), loss


@pytest.mark.parametrize(
    ("thresh", "min_kept"),
    [(0.7, 0), (0.7, 50), (0.3, 200), (0.05, 10), (0.9, 10_000), (1.0, 0), (0.2, 1)],
)
def test_ohem_matches_numpy_reference(thresh, min_kept):
    generator = torch.Generator().manual_seed(int(thresh * 100) + min_kept)
    logits = 3 * torch.randn(2, 5, 12, 10, generator=generator)
    target = torch.randint(0, 5, (2, 12, 10), generator=generator)
    target[torch.rand(2, 12, 10, generator=generator) < 0.2] = 255
    keep_ref, loss_ref = ohem_reference(logits.numpy(), target.numpy(), thresh, min_kept)
    keep = ohem_mask(logits, target, thresh, min_kept)
    assert torch.equal(keep, torch.from_numpy(keep_ref))
    assert keep.sum() >= min(min_kept, int((target != 255).sum()))
    loss = ohem_cross_entropy(logits, target, thresh, min_kept)
    assert loss.item() == pytest.approx(loss_ref, rel=1e-5)


def test_ohem_by_hand():
    # True-class probabilities 3/4 (pixel 0) and 2/3 (pixel 1): a 0.7 threshold keeps pixel 1.
    logits, target = two_pixel_case()
    assert ohem_mask(logits, target, 0.7, 0).tolist() == [[[False, True, False]]]
    loss = ohem_cross_entropy(logits, target, 0.7, 0)
    assert loss.item() == pytest.approx(math.log(1.5), abs=1e-6)
    # min_kept = 2 raises the threshold to the second smallest probability: both are kept.
    assert ohem_mask(logits, target, 0.7, 2).tolist() == [[[True, True, False]]]
    # Nothing below the threshold and nothing forced: a zero loss rather than NaN.
    assert ohem_cross_entropy(logits, target, 0.5, 0).item() == 0.0


def test_ohem_dsn_variants_by_hand():
    logits, target = two_pixel_case()
    uniform = torch.zeros_like(logits)  # true-class probability 1/2 everywhere: all kept at 0.7
    both = CriterionOhemDSN(num_classes=2, thresh=0.7, min_kept=0)([logits, logits], target)
    assert both.item() == pytest.approx(0.4 * math.log(1.5) + math.log(1.5), abs=1e-6)
    # _single: plain CE on the DSN output (both pixels), OHEM only on the main one.
    single = CriterionOhemDSN_single(num_classes=2, thresh=0.7, min_kept=0)(
        [logits, logits], target
    )
    assert single.item() == pytest.approx(0.4 * LN2 / 2 + math.log(1.5), abs=1e-6)
    mixed = CriterionOhemDSN(num_classes=2, thresh=0.7, min_kept=0)([uniform, logits], target)
    assert mixed.item() == pytest.approx(0.4 * LN2 + math.log(1.5), abs=1e-6)


def test_low_precision_logits_give_float32_loss():
    logits, target = two_pixel_case()
    loss = CriterionDSN(num_classes=2)([logits.bfloat16(), logits.bfloat16()], target)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(1.4 * LN2 / 2, abs=2e-2)


def loss_flags(method: str, **flags) -> argparse.Namespace:
    defaults = {
        "method": method, "dsn_weight": 0.4, "ohem": False, "ohem_single": False,
        "ohem_thres": 0.7, "ohem_keep": 100000, "use_weight": False, "ignore_label": 255,
    }  # fmt: skip
    return argparse.Namespace(**(defaults | flags))


def test_build_criterion_follows_the_method_table_and_flags():
    logits, target = two_pixel_case()
    uniform = torch.zeros_like(logits)
    # The baseline has no auxiliary head: one output, plain or OHEM CE.
    plain = build_criterion(loss_flags("baseline"), 2)
    assert plain.aux_weight is None and plain.ohem == "none"
    assert plain(logits, target).item() == pytest.approx(
        CriterionCrossEntropy(num_classes=2)(logits, target).item()
    )
    hard = build_criterion(loss_flags("baseline", ohem=True, ohem_keep=0), 2)
    assert hard(logits, target).item() == pytest.approx(math.log(1.5), abs=1e-6)
    # DSN methods: auxiliary term weighted by --dsn-weight; OHEM on both or the main only.
    dsn = build_criterion(loss_flags("asp_oc_dsn", dsn_weight=0.25), 2)
    assert dsn([uniform, logits], target).item() == pytest.approx(0.25 * LN2 + LN2 / 2, abs=1e-6)
    both = build_criterion(loss_flags("base_oc_dsn", ohem=True, ohem_keep=0), 2)
    assert both.ohem == "both"
    single = build_criterion(
        loss_flags("pyramid_oc_dsn", ohem=True, ohem_single=True, ohem_thres=0.6), 19
    )
    assert single.ohem == "main" and single.thresh == 0.6
    weighted = build_criterion(loss_flags("asp_oc_dsn", use_weight=True), 19)
    assert weighted.weight.shape == (19,)
    with pytest.raises(TypeError, match=r"\[aux_logits, logits\]"):
        build_criterion(loss_flags("asp_oc_dsn"), 2)(
            torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1).long()
        )
