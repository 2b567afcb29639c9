"""Activated batchnorm without a build step: ABN, InPlaceABN, InPlaceABNSync.

Also the norm-layer type the backbones and heads are built with (``NormLayer``) and its default,
so that models depend on this package, not on each other.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .abn import ABN
from .inplace import InPlaceABN, InPlaceABNSync

# An ABN-like class: ``norm_layer(num_features, activation="leaky_relu", ...)``.
NormLayer = Callable[..., nn.Module]


def default_norm_layer() -> NormLayer:
    """The original's synchronised in-place ABN."""
    return InPlaceABNSync


__all__ = ["ABN", "InPlaceABN", "InPlaceABNSync", "NormLayer", "default_norm_layer"]
