"""Placeholder until the in-place autograd implementation lands: same API as ABN."""

from .abn import ABN


class InPlaceABN(ABN):
    pass


class InPlaceABNSync(InPlaceABN):
    pass
