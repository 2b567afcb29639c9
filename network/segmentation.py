"""Whole segmentation models: a backbone with the heads of its method beside its layers.

The model *is* the backbone plus head modules at the top level (``conv1`` ... ``layer4``,
``context``, ``cls``, ``dsn``; the baseline's ``layer5``, ``layer6``), as in the original, so its
ResNet-101 checkpoints load with ``strict=True``; HRNet models likewise keep the official
backbone keys (``conv1``, ``layer1``, ``transition1``, ``stage2`` ...). What the heads are comes
from the method table (``network.methods``).
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import nn

from inplace_abn import NormLayer, default_norm_layer

from .hrnet import HRNET_SPECS, HRNet
from .methods import AuxSpec, MethodSpec, build_aux, method_spec
from .resnet import BLOCKS, DilatedResNet

RESNETS = tuple(f"resnet{depth}" for depth in BLOCKS)
HRNETS = tuple(f"hrnetv2_w{width}" for width in HRNET_SPECS)
NETWORKS = RESNETS + HRNETS


class HeadsMixin(nn.Module):
    """Attaches a method's heads to a backbone model and runs them.

    The backbone class provides ``forward_aux_input(x)`` (the features deep supervision reads)
    and ``forward_from_aux_input(t)`` (the rest of the backbone).
    """

    def attach_heads(
        self,
        spec: MethodSpec,
        in_ch: int,
        width: int,
        aux: AuxSpec | None,
        aux_ch: int,
        aux_width: int,
        num_classes: int,
        norm_layer: NormLayer,
        family: str,
    ) -> None:
        self.method = spec.name
        self.num_classes = num_classes
        self._forward_head = spec.forward_head
        options = spec.head_options.get(family, {})
        head = spec.build_head(in_ch, width, num_classes, norm_layer, **options)
        # Everything registered so far is the backbone (what an ImageNet file initialises).
        self.backbone_names = tuple(name for name, _ in self.named_children())
        for name, module in head.items():
            self.add_module(name, module)
        self.head_names = tuple(head)
        self.aux_name = None
        if aux is not None:
            self.aux_name = aux.name
            self.add_module(aux.name, build_aux(aux, aux_ch, aux_width, num_classes, norm_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = self.forward_aux_input(x)
        # Auxiliary head before the rest of the backbone, as the original: dropout masks are
        # drawn in the same order.
        aux = None if self.aux_name is None else getattr(self, self.aux_name)(x)
        x = self.forward_from_aux_input(x)
        heads = {name: getattr(self, name) for name in self.head_names}
        x = self._forward_head(heads, x, aux)
        return x if aux is None else [aux, x]


class SegmentationModel(HeadsMixin, DilatedResNet):
    """Dilated ResNet whose layer4 output runs through the heads of ``method``.

    With an auxiliary (DSN) head the forward returns ``[aux(layer3), head(layer4)]`` (deep
    supervision, as the original's ``*_dsn`` models), otherwise the head's logits alone; both at
    stride 8. Head width is the backbone's output channels / 4 (512 on ResNet-50/101).
    """

    def __init__(
        self,
        depth: int,
        method: str,
        num_classes: int = 19,
        norm_layer: NormLayer | None = None,
    ) -> None:
        spec = method_spec(method)
        norm_layer = norm_layer or default_norm_layer()
        DilatedResNet.__init__(
            self, depth, multi_grid=spec.multi_grid, norm_layer=norm_layer,
            variant=spec.resnet_variant,
        )  # fmt: skip
        width = self.out_channels // 4
        self.attach_heads(
            spec, self.out_channels, width, spec.aux, self.layer3_channels, width, num_classes,
            norm_layer, "resnet",
        )  # fmt: skip

    def forward_aux_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_to_layer3(x)

    def forward_from_aux_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(x)


class HRNetSegmentationModel(HeadsMixin, HRNet):
    """HRNetV2 whose concatenated stride-4 features feed both the auxiliary head and the head.

    As the official HRNet-OCR: norms are BatchNorm + ReLU (its checkpoints were trained with
    ReLU, not leaky ReLU), the head is 512 wide, and the auxiliary head is a 1x1 conv as wide as
    the features, norm, ReLU, 1x1 classifier. Outputs ``[aux, logits]`` at stride 4.
    """

    head_width = 512  # the official OCR_MID_CHANNELS

    def __init__(
        self,
        width: int,
        method: str,
        num_classes: int = 19,
        norm_layer: NormLayer | None = None,
    ) -> None:
        spec = method_spec(method)
        norm_layer = functools.partial(norm_layer or default_norm_layer(), activation="relu")
        HRNet.__init__(self, HRNET_SPECS[width], norm_layer)
        aux = None
        if spec.aux is not None:
            aux = dataclasses.replace(
                spec.aux, activation="relu", dropout=0.0, kernel_size=1, bias=True
            )
        features = self.out_channels
        self.attach_heads(
            spec, features, self.head_width, aux, features, features, num_classes, norm_layer,
            "hrnet",
        )  # fmt: skip

    def forward_aux_input(self, x: torch.Tensor) -> torch.Tensor:
        return HRNet.forward(self, x)

    def forward_from_aux_input(self, x: torch.Tensor) -> torch.Tensor:
        return x


def build_segmentation_model(
    network: str, method: str, num_classes: int = 19, norm_layer: NormLayer | None = None
) -> nn.Module:
    """The model of ``network`` (a name of ``NETWORKS``) and ``method``."""
    if network in HRNETS:
        return HRNetSegmentationModel(
            int(network.removeprefix("hrnetv2_w")), method, num_classes, norm_layer
        )
    return SegmentationModel(int(network.removeprefix("resnet")), method, num_classes, norm_layer)
