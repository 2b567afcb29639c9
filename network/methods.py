"""The table of methods: every fact about a context head that other code needs, in one place.

A method is the part of ``"{network}_{method}"`` after the backbone: which head sits on the
backbone, whether a deep-supervision (auxiliary) head reads an earlier stage and how it is built,
the layer4 multi-grid, and the auxiliary loss weight. The model factory, the criterion, the
command lines (``--method`` choices), the benchmarks and the parametrised tests all read
``METHOD_SPECS``. Adding a head is one module in ``oc_module`` plus one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from inplace_abn import NormLayer
from oc_module import ASPOC, BaseOC, ISAModule, PyramidOC, SpatialGather, SpatialOCR

# Builds the head's modules, in application order: (backbone channels ``in_ch``, head width,
# classes, norm layer, **backbone options) -> modules by name. The model class picks the width
# (ResNet: in_ch // 4, HRNet: 512).
HeadBuilder = Callable[..., dict[str, nn.Module]]
# Runs the head: (its modules by name, backbone features, auxiliary logits or None) -> logits.
HeadForward = Callable[[Mapping[str, nn.Module], torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class AuxSpec:
    """The deep-supervision head: conv, norm, dropout, 1x1 classifier on an earlier stage."""

    name: str = "dsn"  # module name, so checkpoints keep their keys
    activation: str = "leaky_relu"  # of its norm
    dropout: float = 0.05
    kernel_size: int = 3
    bias: bool = True  # of its first conv


def sequential_forward(
    modules: Mapping[str, nn.Module], x: torch.Tensor, aux: torch.Tensor | None
) -> torch.Tensor:
    """The OCNet heads: apply the modules in order; the auxiliary logits are not read."""
    for module in modules.values():
        x = module(x)
    return x


@dataclass(frozen=True)
class MethodSpec:
    """Everything the rest of the code needs to know about one method."""

    name: str
    description: str
    build_head: HeadBuilder
    aux: AuxSpec | None = None
    forward_head: HeadForward = sequential_forward
    multi_grid: tuple[int, ...] = (1, 1, 1)  # layer4 dilation multipliers per block
    aux_weight: float = 0.4  # default weight of the auxiliary loss (paper Sec. 4.2)
    resnet_variant: str = "ocnet"  # DilatedResNet variant its released checkpoints were trained on
    # Keyword arguments of ``build_head`` per backbone family ("resnet", "hrnet"), where the
    # released models of one method differ between families (HRNet-OCR's convs have no bias).
    head_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def has_aux(self) -> bool:
        return self.aux is not None


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)


def _classifier(in_ch: int, num_classes: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, num_classes, kernel_size=1)


# Key width is ``width // 2``: the original's 512 and 256 on ResNet-50/101.


def _baseline(
    in_ch: int, width: int, num_classes: int, norm_layer: NormLayer
) -> dict[str, nn.Module]:
    return {
        "layer5": nn.Sequential(_conv3x3(in_ch, width), norm_layer(width), nn.Dropout2d(0.05)),
        "layer6": _classifier(width, num_classes),
    }


def _base_oc(
    in_ch: int, width: int, num_classes: int, norm_layer: NormLayer
) -> dict[str, nn.Module]:
    context = nn.Sequential(
        _conv3x3(in_ch, width),
        norm_layer(width),
        BaseOC(width, width, width // 2, width // 2, 0.05, (1,), norm_layer),
    )
    return {"context": context, "cls": _classifier(width, num_classes)}


def _pyramid_oc(
    in_ch: int, width: int, num_classes: int, norm_layer: NormLayer
) -> dict[str, nn.Module]:
    return {
        # The original's layer5 uses the backbone's BN (no activation) here.
        "layer5": nn.Sequential(_conv3x3(in_ch, width), norm_layer(width, activation="identity")),
        "context": PyramidOC(width, width, 0.05, (1, 2, 3, 6), norm_layer),
        "cls": _classifier(width, num_classes),
    }


def _asp_oc(
    in_ch: int, width: int, num_classes: int, norm_layer: NormLayer
) -> dict[str, nn.Module]:
    return {
        "context": nn.Sequential(ASPOC(in_ch, width, norm_layer=norm_layer)),
        "cls": _classifier(width, num_classes),
    }


def _isa(in_ch: int, width: int, num_classes: int, norm_layer: NormLayer) -> dict[str, nn.Module]:
    # openseg.pytorch ISANet: 3x3 conv (no bias) + norm, ISA with key width/2, value width,
    # 8x8 down factor, dropout 0.05 (lib/models/nets/isanet.py).
    return {
        "isa_head": nn.Sequential(
            nn.Conv2d(in_ch, width, kernel_size=3, padding=1, bias=False),
            norm_layer(width),
            ISAModule(width, width // 2, width, width, ((8, 8),), 0.05, norm_layer),
        ),
        "cls_head": _classifier(width, num_classes),
    }


def _ocr(
    in_ch: int, width: int, num_classes: int, norm_layer: NormLayer, bias: bool = True
) -> dict[str, nn.Module]:
    # openseg.pytorch SpatialOCRNet (lib/models/nets/ocrnet.py); HRNet-OCR names these
    # conv3x3_ocr, ocr_gather_head, ocr_distri_head, cls_head and has no bias in the OCR block.
    return {
        "conv_3x3": nn.Sequential(_conv3x3(in_ch, width), norm_layer(width)),
        "spatial_context_head": SpatialGather(),
        "spatial_ocr_head": SpatialOCR(width, width // 2, width, 1, 0.05, bias, norm_layer),
        "head": _classifier(width, num_classes),
    }


def _ocr_forward(
    modules: Mapping[str, nn.Module], x: torch.Tensor, aux: torch.Tensor | None
) -> torch.Tensor:
    """OCR: the auxiliary logits are the soft object regions the pixel features are pooled by."""
    feats = modules["conv_3x3"](x)
    regions = modules["spatial_context_head"](feats, aux)  # [B, C, K, 1]
    return modules["head"](modules["spatial_ocr_head"](feats, regions))


METHOD_SPECS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "baseline",
            "dilated ResNet + 3x3 conv, no context (FCN-style)",
            _baseline,
            aux=None,
            multi_grid=(1, 2, 1),
        ),
        MethodSpec(
            "base_oc_dsn",
            "Base-OC: object context over the whole map (OCNet Sec. 3.3)",
            _base_oc,
            aux=AuxSpec(),
        ),
        MethodSpec(
            "pyramid_oc_dsn",
            "Pyramid-OC: object context inside 1x1, 2x2, 3x3, 6x6 regions",
            _pyramid_oc,
            # The original's Pyramid-OC DSN norm has no activation.
            aux=AuxSpec(activation="identity"),
        ),
        MethodSpec(
            "asp_oc_dsn",
            "ASP-OC: object context beside dilated convolutions, as in ASPP",
            _asp_oc,
            aux=AuxSpec(dropout=0.10),
        ),
        MethodSpec(
            "isa_oc_dsn",
            "ISA (Fast-OCNet): interlaced sparse self-attention, long- then short-range",
            _isa,
            aux=AuxSpec(name="dsn_head", bias=False),
            resnet_variant="openseg",
        ),
        MethodSpec(
            "ocr_dsn",
            "OCR: pixels attend to object regions from the auxiliary segmentation",
            _ocr,
            aux=AuxSpec(name="dsn_head"),
            forward_head=_ocr_forward,
            resnet_variant="openseg",
            head_options={"hrnet": {"bias": False}},
        ),
    )
}
METHODS = tuple(METHOD_SPECS)


def method_spec(method: str) -> MethodSpec:
    """The table entry of ``method``, or a ValueError listing the choices."""
    if method not in METHOD_SPECS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHOD_SPECS[method]


def build_aux(
    spec: AuxSpec, in_ch: int, width: int, num_classes: int, norm_layer: NormLayer
) -> nn.Sequential:
    """Deep supervision: conv (with bias), norm, dropout, 1x1 classifier (indices 0, 1, 2, 3)."""
    padding = spec.kernel_size // 2
    return nn.Sequential(
        nn.Conv2d(in_ch, width, kernel_size=spec.kernel_size, padding=padding, bias=spec.bias),
        norm_layer(width, activation=spec.activation),
        nn.Dropout2d(spec.dropout) if spec.dropout > 0 else nn.Identity(),
        _classifier(width, num_classes),
    )
