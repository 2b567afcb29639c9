"""Segmentation models: dilated ResNet backbones with OCNet context heads."""

NETWORKS = ("resnet18", "resnet34", "resnet50", "resnet101")
METHODS = ("baseline", "base_oc_dsn", "pyramid_oc_dsn", "asp_oc_dsn")

from .segmentation import SegmentationModel, get_segmentation_model, model_names  # noqa: E402

__all__ = ["METHODS", "NETWORKS", "SegmentationModel", "get_segmentation_model", "model_names"]
