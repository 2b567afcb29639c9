"""The attention primitive and the heads built from it: OCNet's Base/Pyramid/ASP-OC, ISA, OCR."""

from .asp_oc import ASPOC
from .attention import ObjectContext, attention_weights, object_attention, softmax_attention
from .base_oc import BaseOC, BaseOCContext
from .isa import ISABlock, ISAModule, SelfAttentionBlock
from .ocr import ObjectAttention, SpatialGather, SpatialOCR
from .pyramid_oc import PyramidOC, RegionObjectContext, region_bounds

__all__ = [
    "ASPOC",
    "BaseOC",
    "BaseOCContext",
    "ISABlock",
    "ISAModule",
    "ObjectAttention",
    "ObjectContext",
    "PyramidOC",
    "RegionObjectContext",
    "SelfAttentionBlock",
    "SpatialGather",
    "SpatialOCR",
    "attention_weights",
    "object_attention",
    "region_bounds",
    "softmax_attention",
]
