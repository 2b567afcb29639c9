"""Object-context attention and the OCNet heads built from it (Base-OC, Pyramid-OC, ASP-OC)."""

from .asp_oc import ASPOC
from .attention import ObjectContext, object_attention
from .base_oc import BaseOC, BaseOCContext
from .pyramid_oc import PyramidOC, RegionObjectContext, region_bounds

__all__ = [
    "ASPOC",
    "BaseOC",
    "BaseOCContext",
    "ObjectContext",
    "PyramidOC",
    "RegionObjectContext",
    "object_attention",
    "region_bounds",
]
