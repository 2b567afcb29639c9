"""Segmentation models: dilated ResNet backbones with OCNet context heads."""

NETWORKS = ("resnet18", "resnet34", "resnet50", "resnet101")
METHODS = ("baseline", "base_oc_dsn", "pyramid_oc_dsn", "asp_oc_dsn")
