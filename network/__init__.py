"""Segmentation models: backbones with OCNet-line context heads; one factory over a table."""

from __future__ import annotations

from torch import nn

from .methods import METHOD_SPECS, METHODS, MethodSpec, method_spec
from .segmentation import (
    NETWORKS,
    HRNetSegmentationModel,
    SegmentationModel,
    build_segmentation_model,
)

__all__ = [
    "HRNetSegmentationModel",
    "METHODS",
    "METHOD_SPECS",
    "MethodSpec",
    "NETWORKS",
    "SegmentationModel",
    "get_segmentation_model",
    "method_spec",
    "model_names",
    "split_model_name",
]


def model_names() -> list[str]:
    """Every valid ``get_segmentation_model`` name."""
    return [f"{network}_{method}" for network in NETWORKS for method in METHODS]


def split_model_name(name: str) -> tuple[str, str]:
    """``"resnet101_asp_oc_dsn"`` -> ``("resnet101", "asp_oc_dsn")``, or a ValueError."""
    for network in NETWORKS:  # network names contain "_" too (hrnetv2_w48)
        method = name.removeprefix(f"{network}_")
        if method != name and method in METHOD_SPECS:
            return network, method
    raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}")


def get_segmentation_model(name: str, num_classes: int = 19, norm_layer=None) -> nn.Module:
    """Build ``"{network}_{method}"``, e.g. ``"resnet101_asp_oc_dsn"`` (the original's names)
    or ``"hrnetv2_w48_ocr_dsn"``.

    ``norm_layer`` is an ABN-like class (default ``inplace_abn.InPlaceABNSync``; HRNet models
    give it ReLU as their activation).
    """
    network, method = split_model_name(name)
    return build_segmentation_model(network, method, num_classes, norm_layer)
