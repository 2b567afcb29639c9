"""Activated batchnorm without a build step: ABN, InPlaceABN, InPlaceABNSync."""

from .abn import ABN
from .inplace import InPlaceABN, InPlaceABNSync

__all__ = ["ABN", "InPlaceABN", "InPlaceABNSync"]
