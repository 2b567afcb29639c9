"""The model a command line asks for: ``--network`` and ``--method`` through the one factory."""

from __future__ import annotations

import argparse
from typing import Any

from torch import nn

from inplace_abn import NormLayer
from network import get_segmentation_model


def build_model(
    args: argparse.Namespace, num_classes: int, norm_layer: NormLayer | None = None
) -> nn.Module:
    """``{--network}_{--method}`` with random weights; callers load what they need."""
    name = f"{args.network}_{args.method}"
    return get_segmentation_model(name, num_classes=num_classes, norm_layer=norm_layer)


# What a checkpoint records about its model, so ``--ckpt FILE`` alone rebuilds it.
META_KEYS = ("network", "method", "num_classes", "dataset", "normalize")


def model_meta(args: argparse.Namespace, num_classes: int) -> dict[str, Any]:
    """The model facts of a training run, as plain values for a weights_only checkpoint."""
    return {
        "network": args.network,
        "method": args.method,
        "num_classes": int(num_classes),
        "dataset": args.dataset,
        "normalize": args.normalize,
    }
