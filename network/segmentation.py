"""Whole segmentation models: the dilated ResNet with an OCNet head beside its layers.

The model *is* the backbone plus head modules at the top level (``conv1`` ... ``layer4``,
``context``, ``cls``, ``dsn``; the baseline's ``layer5``, ``layer6``), as in the original, so its
ResNet-101 checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import torch
from torch import nn

from inplace_abn import NormLayer, default_norm_layer
from oc_module import ASPOC, BaseOC, PyramidOC

from . import METHODS, NETWORKS
from .resnet import BLOCKS, DilatedResNet


class SegmentationModel(DilatedResNet):
    """Dilated ResNet whose layer4 output runs through ``head`` (modules applied in order).

    With ``dsn`` the forward returns ``[dsn(layer3), head(layer4)]`` (deep supervision, as the
    original's ``*_dsn`` models), otherwise the head's logits alone; both at stride 8.
    """

    def __init__(
        self,
        depth: int,
        head: dict[str, nn.Module],
        dsn: nn.Module | None = None,
        multi_grid: tuple[int, ...] = (1, 1, 1),
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__(depth, multi_grid=multi_grid, norm_layer=norm_layer)
        for name, module in head.items():
            self.add_module(name, module)
        self.head_names = tuple(head)
        self.dsn = dsn

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = self.forward_to_layer3(x)
        # DSN before layer4, as the original: dropout masks are drawn in the same order.
        aux = None if self.dsn is None else self.dsn(x)
        x = self.layer4(x)
        for name in self.head_names:
            x = getattr(self, name)(x)
        return x if aux is None else [aux, x]


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)


def build_head(
    method: str, in_ch: int, num_classes: int, norm_layer: NormLayer
) -> dict[str, nn.Module]:
    """Head modules of ``method`` for a backbone with ``in_ch`` output channels.

    Widths: ``width = in_ch // 4`` and key width ``width // 2`` - the original's 512 and 256 on
    ResNet-50/101 (2048 channels), scaled the same way for ResNet-18/34 (512 -> 128, 64).
    """
    width = in_ch // 4
    if method == "baseline":
        return {
            "layer5": nn.Sequential(_conv3x3(in_ch, width), norm_layer(width), nn.Dropout2d(0.05)),
            "layer6": nn.Conv2d(width, num_classes, kernel_size=1),
        }
    if method == "base_oc_dsn":
        context = nn.Sequential(
            _conv3x3(in_ch, width),
            norm_layer(width),
            BaseOC(width, width, width // 2, width // 2, 0.05, (1,), norm_layer),
        )
        return {"context": context, "cls": nn.Conv2d(width, num_classes, kernel_size=1)}
    if method == "pyramid_oc_dsn":
        return {
            # The original's layer5 uses the backbone's BN (no activation) here.
            "layer5": nn.Sequential(
                _conv3x3(in_ch, width), norm_layer(width, activation="identity")
            ),
            "context": PyramidOC(width, width, 0.05, (1, 2, 3, 6), norm_layer),
            "cls": nn.Conv2d(width, num_classes, kernel_size=1),
        }
    if method == "asp_oc_dsn":
        return {
            "context": nn.Sequential(ASPOC(in_ch, width, norm_layer=norm_layer)),
            "cls": nn.Conv2d(width, num_classes, kernel_size=1),
        }
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def build_dsn(
    method: str, in_ch: int, width: int, num_classes: int, norm_layer: NormLayer
) -> nn.Sequential:
    """Deep supervision on layer3: 3x3 conv, ABN, dropout, 1x1 classifier (as the original:
    Pyramid-OC's ABN has no activation, ASP-OC's dropout is 0.10, the others' 0.05)."""
    activation = "identity" if method == "pyramid_oc_dsn" else "leaky_relu"
    return nn.Sequential(
        _conv3x3(in_ch, width),
        norm_layer(width, activation=activation),
        nn.Dropout2d(0.10 if method == "asp_oc_dsn" else 0.05),
        nn.Conv2d(width, num_classes, kernel_size=1),
    )


def model_names() -> list[str]:
    """Every valid ``get_segmentation_model`` name."""
    return [f"{network}_{method}" for network in NETWORKS for method in METHODS]


def get_segmentation_model(
    name: str, num_classes: int = 19, norm_layer: NormLayer | None = None
) -> SegmentationModel:
    """Build ``"{network}_{method}"``, e.g. ``"resnet101_asp_oc_dsn"`` (the original's names).

    ``norm_layer`` is an ABN-like class (default ``inplace_abn.InPlaceABNSync``). The baseline
    uses layer4 multi-grid (1, 2, 1), the OC networks (1, 1, 1), as the original.
    """
    if name not in model_names():
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}")
    network, method = name.split("_", 1)
    depth = int(network.removeprefix("resnet"))
    norm_layer = norm_layer or default_norm_layer()
    block, _ = BLOCKS[depth]
    out_ch, layer3_ch = 512 * block.expansion, 256 * block.expansion
    head = build_head(method, out_ch, num_classes, norm_layer)
    dsn = None
    if method != "baseline":
        dsn = build_dsn(method, layer3_ch, out_ch // 4, num_classes, norm_layer)
    multi_grid = (1, 2, 1) if method == "baseline" else (1, 1, 1)
    return SegmentationModel(depth, head, dsn, multi_grid, norm_layer)
