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


OHEM_MODES = ("none", "main", "both")


class SegmentationLoss(nn.Module):
    """``aux_weight * loss(aux) + loss(main)``: a main term and an optional auxiliary term.

    Each term is plain or OHEM cross-entropy on logits upsampled to the label size. ``ohem``:
    ``"none"``, ``"main"`` (the original's ``--ohem-single``: hard mining on both supervisions
    hurts, so the auxiliary output keeps plain CE; its +0.9 mIoU recipe uses this) or ``"both"``
    (each output selects its own hard pixels). With ``aux_weight=None`` the model has one output.
    Class weights are a buffer, so they follow ``.to(device)``.
    """

    def __init__(
        self,
        num_classes: int = 19,
        aux_weight: float | None = DSN_WEIGHT,
        ohem: str = "none",
        thresh: float = OHEM_THRESH,
        min_kept: int = OHEM_MIN_KEPT,
        use_weight: bool = False,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if ohem not in OHEM_MODES:
            raise ValueError(f"ohem must be one of {OHEM_MODES}, got {ohem!r}")
        self.aux_weight = None if aux_weight is None else float(aux_weight)
        self.ohem = ohem
        self.thresh, self.min_kept = float(thresh), int(min_kept)
        self.ignore_index = ignore_index
        self.register_buffer("weight", class_weights(num_classes, use_weight), persistent=False)

    def _term(self, logits: torch.Tensor, target: torch.Tensor, hard: bool) -> torch.Tensor:
        logits = upsample_to(logits, target.shape[-2:])
        if hard:
            return ohem_cross_entropy(
                logits, target, self.thresh, self.min_kept, self.weight, self.ignore_index
            )
        return cross_entropy(logits, target, self.weight, self.ignore_index)

    def terms(self, preds, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each weighted loss term by name (for the logs); ``forward`` returns their sum."""
        if self.aux_weight is None:
            if isinstance(preds, list | tuple):
                raise TypeError(
                    f"this criterion expects one logits tensor, got {len(preds)} outputs "
                    "(give it an aux_weight for models with an auxiliary head)"
                )
            return {"loss_main": self._term(preds, target, self.ohem != "none")}
        if not isinstance(preds, list | tuple) or len(preds) != 2:
            raise TypeError("a criterion with aux_weight expects [aux_logits, logits]")
        aux, main = preds
        return {
            "loss_dsn": self.aux_weight * self._term(aux, target, self.ohem == "both"),
            "loss_main": self._term(main, target, self.ohem != "none"),
        }

    def forward(self, preds, target: torch.Tensor) -> torch.Tensor:
        return sum(self.terms(preds, target).values())


# The original's criterion classes, kept as constructors so its scripts still build a criterion.


def CriterionCrossEntropy(  # noqa: N802
    num_classes: int = 19, use_weight: bool = False, ignore_index: int = 255
) -> SegmentationLoss:
    """Plain cross-entropy for models with one output (the baseline)."""
    return SegmentationLoss(
        num_classes, None, "none", use_weight=use_weight, ignore_index=ignore_index
    )


def CriterionOhemCrossEntropy(  # noqa: N802
    num_classes: int = 19,
    thresh: float = OHEM_THRESH,
    min_kept: int = OHEM_MIN_KEPT,
    use_weight: bool = False,
    ignore_index: int = 255,
) -> SegmentationLoss:
    """OHEM cross-entropy for models with one output (``--ohem`` with the baseline)."""
    return SegmentationLoss(num_classes, None, "main", thresh, min_kept, use_weight, ignore_index)


def CriterionDSN(  # noqa: N802
    num_classes: int = 19,
    dsn_weight: float = DSN_WEIGHT,
    use_weight: bool = False,
    ignore_index: int = 255,
) -> SegmentationLoss:
    """``dsn_weight * CE(dsn) + CE(main)`` for ``[dsn_logits, logits]`` (deep supervision)."""
    return SegmentationLoss(
        num_classes, dsn_weight, "none", use_weight=use_weight, ignore_index=ignore_index
    )


def CriterionOhemDSN(  # noqa: N802
    num_classes: int = 19,
    thresh: float = OHEM_THRESH,
    min_kept: int = OHEM_MIN_KEPT,
    dsn_weight: float = DSN_WEIGHT,
    use_weight: bool = False,
    ignore_index: int = 255,
) -> SegmentationLoss:
    """DSN with OHEM on both outputs."""
    return SegmentationLoss(
        num_classes, dsn_weight, "both", thresh, min_kept, use_weight, ignore_index
    )


def CriterionOhemDSN_single(  # noqa: N802
    num_classes: int = 19,
    thresh: float = OHEM_THRESH,
    min_kept: int = OHEM_MIN_KEPT,
    dsn_weight: float = DSN_WEIGHT,
    use_weight: bool = False,
    ignore_index: int = 255,
) -> SegmentationLoss:
    """DSN with OHEM on the main output only."""
    return SegmentationLoss(
        num_classes, dsn_weight, "main", thresh, min_kept, use_weight, ignore_index
    )


def ohem_mode(ohem: bool, ohem_single: bool) -> str:
    """The ``--ohem`` / ``--ohem-single`` flags as a ``SegmentationLoss`` mode."""
    if not ohem:
        return "none"
    return "main" if ohem_single else "both"
