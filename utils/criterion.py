"""Training losses of OCNet: cross-entropy, deep supervision (DSN) and online hard example mining.

Follows the original release's ``utils/criterion.py`` and ``utils/loss.py``: logits come at 1/8 of
the input and are upsampled bilinearly (``align_corners=True``) to the label size before the loss;
the DSN (auxiliary, after layer3) loss is weighted 0.4; OHEM keeps the pixels whose probability of
the true class is at most ``thresh``, and at least ``min_kept`` of them. Differences on purpose:
class weights are used only when asked for (the original hard-coded them), OHEM runs on the
logits' device without a numpy round trip, and a batch with nothing to learn from gives a zero
loss (connected to the graph) instead of NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Per-class weights of the original for the 19 Cityscapes trainIds (road ... bicycle), used by
# its CriterionDSN / OhemCrossEntropy2d when class balancing is on.
CITYSCAPES_CLASS_WEIGHTS = (
    0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023,
    0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507,
)  # fmt: skip

# The original's defaults: DSN weight 0.4 (paper Sec. 4.2), OHEM threshold 0.7 and 100000 kept
# pixels in its README recipe.
DSN_WEIGHT = 0.4
OHEM_THRESH = 0.7
OHEM_MIN_KEPT = 100000


def class_weights(num_classes: int, use_weight: bool) -> torch.Tensor | None:
    """The original's Cityscapes class weights, or None; other class counts have none to offer."""
    if not use_weight:
        return None
    if num_classes != len(CITYSCAPES_CLASS_WEIGHTS):
        raise ValueError(
            f"--use-weight has class weights only for the 19 Cityscapes classes, "
            f"but the model predicts {num_classes} classes"
        )
    return torch.tensor(CITYSCAPES_CLASS_WEIGHTS, dtype=torch.float32)


def upsample_to(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear upsampling (``align_corners=True`` like the original) in float32.

    float32 so that an autocast forward still gets a full-precision softmax in the loss.
    """
    logits = logits.float()
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Mean (weighted) cross-entropy over non-ignored pixels; 0 when there are none.

    ``nn.CrossEntropyLoss`` divides by the summed weights of the kept pixels, i.e. 0/0 = NaN for
    an all-ignore batch. Here the sum is divided by that total clamped away from zero, which is
    the same mean otherwise and a zero loss (still in the graph) for an empty batch, without a
    host synchronisation; the NaN guard in train.py is left for real faults.
    """
    if weight is not None:
        weight = weight.to(logits.device)
    total = F.cross_entropy(
        logits, target, weight=weight, ignore_index=ignore_index, reduction="sum"
    )
    valid = target != ignore_index
    if weight is None:
        denominator = valid.sum().to(total.dtype)
    else:
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        denominator = (weight[safe_target] * valid).sum().to(total.dtype)
    return total / denominator.clamp_min(torch.finfo(total.dtype).tiny)


def ohem_mask(
    logits: torch.Tensor,
    target: torch.Tensor,
    thresh: float = OHEM_THRESH,
    min_kept: int = OHEM_MIN_KEPT,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Boolean mask of the hard pixels OHEM trains on (over the whole batch, like the original).

    A valid pixel is kept when its softmax probability of the true class is <= the threshold,
    where the threshold is ``thresh`` raised to the ``min_kept``-th smallest such probability
    (so at least ``min_kept`` pixels stay). With ``min_kept`` >= the valid count, all are kept.
    Ignored pixels get probability +inf before ``kthvalue`` so they sort last: the k-th smallest
    over all pixels is then the k-th smallest valid one, with no host synchronisation.
    """
    with torch.no_grad():
        valid = target != ignore_index
        prob = torch.softmax(logits.detach().float(), dim=1)
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        true_prob = prob.gather(1, safe_target.unsqueeze(1)).squeeze(1)
        true_prob = torch.where(valid, true_prob, torch.full_like(true_prob, float("inf")))
        threshold = torch.tensor(float(thresh), device=logits.device)
        flat = true_prob.reshape(-1)
        k = min(int(min_kept), flat.numel())
        if k > 0:
            kth = flat.kthvalue(k).values
            threshold = torch.maximum(threshold, kth)
        return valid & (true_prob <= threshold)


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    thresh: float = OHEM_THRESH,
    min_kept: int = OHEM_MIN_KEPT,
    weight: torch.Tensor | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Cross-entropy over the pixels ``ohem_mask`` keeps (the others become ``ignore_index``)."""
    keep = ohem_mask(logits, target, thresh, min_kept, ignore_index)
    hard_target = torch.where(keep, target, torch.full_like(target, ignore_index))
    return cross_entropy(logits, hard_target, weight, ignore_index)


class _Criterion(nn.Module):
    """Shared plumbing: class weights as a buffer (follows ``.to(device)``), loss terms for logs."""

    def __init__(self, num_classes: int, use_weight: bool, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", class_weights(num_classes, use_weight), persistent=False)

    def terms(self, preds, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each weighted loss term by name; ``forward`` returns their sum."""
        raise NotImplementedError

    def forward(self, preds, target: torch.Tensor) -> torch.Tensor:
        return sum(self.terms(preds, target).values())

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = upsample_to(logits, target.shape[-2:])
        return cross_entropy(logits, target, self.weight, self.ignore_index)


class CriterionCrossEntropy(_Criterion):
    """Plain cross-entropy for models with one output (the baseline)."""

    def __init__(
        self, num_classes: int = 19, use_weight: bool = False, ignore_index: int = 255
    ) -> None:
        super().__init__(num_classes, use_weight, ignore_index)

    def terms(self, preds, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss_main": self._ce(_single(preds), target)}


class _OhemCriterion(_Criterion):
    """Shared plumbing of the OHEM criteria: the threshold, ``min_kept`` and the hard-pixel CE."""

    def __init__(
        self, num_classes: int, thresh: float, min_kept: int, use_weight: bool, ignore_index: int
    ) -> None:
        super().__init__(num_classes, use_weight, ignore_index)
        self.thresh, self.min_kept = float(thresh), int(min_kept)

    def _ohem(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = upsample_to(logits, target.shape[-2:])
        return ohem_cross_entropy(
            logits, target, self.thresh, self.min_kept, self.weight, self.ignore_index
        )


class CriterionOhemCrossEntropy(_OhemCriterion):
    """OHEM cross-entropy for models with one output (``--ohem`` with the baseline)."""

    def __init__(
        self,
        num_classes: int = 19,
        thresh: float = OHEM_THRESH,
        min_kept: int = OHEM_MIN_KEPT,
        use_weight: bool = False,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(num_classes, thresh, min_kept, use_weight, ignore_index)

    def terms(self, preds, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss_main": self._ohem(_single(preds), target)}


class CriterionDSN(_Criterion):
    """``dsn_weight * CE(dsn) + CE(main)`` for ``[dsn_logits, logits]`` (deep supervision)."""

    def __init__(
        self,
        num_classes: int = 19,
        dsn_weight: float = DSN_WEIGHT,
        use_weight: bool = False,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(num_classes, use_weight, ignore_index)
        self.dsn_weight = float(dsn_weight)

    def terms(self, preds, target: torch.Tensor) -> dict[str, torch.Tensor]:
        dsn, main = _pair(preds)
        return {
            "loss_dsn": self.dsn_weight * self._ce(dsn, target),
            "loss_main": self._ce(main, target),
        }


class CriterionOhemDSN(_OhemCriterion):
    """DSN with OHEM on both outputs (each output selects its own hard pixels)."""

    def __init__(
        self,
        num_classes: int = 19,
        thresh: float = OHEM_THRESH,
        min_kept: int = OHEM_MIN_KEPT,
        dsn_weight: float = DSN_WEIGHT,
        use_weight: bool = False,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(num_classes, thresh, min_kept, use_weight, ignore_index)
        self.dsn_weight = float(dsn_weight)

    def terms(self, preds, target: torch.Tensor) -> dict[str, torch.Tensor]:
        dsn, main = _pair(preds)
        return {
            "loss_dsn": self.dsn_weight * self._ohem(dsn, target),
            "loss_main": self._ohem(main, target),
        }


class CriterionOhemDSN_single(CriterionOhemDSN):
    """DSN with OHEM on the main output only.

    The original found hard mining on both supervisions hurts, so the shallow (DSN) output keeps
    plain cross-entropy; its README's +0.9 mIoU recipe (80.4 val) uses this one.
    """

    def terms(self, preds, target: torch.Tensor) -> dict[str, torch.Tensor]:
        dsn, main = _pair(preds)
        return {
            "loss_dsn": self.dsn_weight * self._ce(dsn, target),
            "loss_main": self._ohem(main, target),
        }


def _single(preds) -> torch.Tensor:
    if isinstance(preds, list | tuple):
        raise TypeError(
            f"this criterion expects one logits tensor, got {len(preds)} outputs "
            "(use a *_dsn criterion for models with deep supervision)"
        )
    return preds


def _pair(preds) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(preds, list | tuple) or len(preds) != 2:
        raise TypeError("a DSN criterion expects [dsn_logits, logits] from a *_dsn model")
    return preds[0], preds[1]


def build_criterion(
    method: str,
    num_classes: int,
    ohem: bool = False,
    ohem_single: bool = False,
    thresh: float = OHEM_THRESH,
    min_kept: int = OHEM_MIN_KEPT,
    dsn_weight: float = DSN_WEIGHT,
    use_weight: bool = False,
    ignore_index: int = 255,
) -> _Criterion:
    """The criterion train.py uses for ``--method`` and the OHEM flags (as the original chose)."""
    if not method.endswith("_dsn"):
        if ohem:
            return CriterionOhemCrossEntropy(
                num_classes, thresh, min_kept, use_weight, ignore_index
            )
        return CriterionCrossEntropy(num_classes, use_weight, ignore_index)
    if not ohem:
        return CriterionDSN(num_classes, dsn_weight, use_weight, ignore_index)
    cls = CriterionOhemDSN_single if ohem_single else CriterionOhemDSN
    return cls(num_classes, thresh, min_kept, dsn_weight, use_weight, ignore_index)
