"""Whole segmentation models: a backbone with the heads of its method beside its layers.

The model *is* the backbone plus head modules at the top level (``conv1`` ... ``layer4``,
``context``, ``cls``, ``dsn``; the baseline's ``layer5``, ``layer6``), as in the original, so its
ResNet-101 checkpoints load with ``strict=True``. What the heads are comes from the method table
(``network.methods``).
"""

from __future__ import annotations

import torch
from torch import nn

from inplace_abn import NormLayer, default_norm_layer

from .methods import MethodSpec, build_aux, method_spec
from .resnet import DilatedResNet

NETWORKS = ("resnet18", "resnet34", "resnet50", "resnet101")


class HeadsMixin(nn.Module):
    """Attaches a method's heads to a backbone model and runs them.

    The backbone class provides ``forward_aux_input(x)`` (the stage deep supervision reads) and
    ``forward_from_aux_input(t)`` (the rest of the backbone).
    """

    def attach_heads(
        self,
        spec: MethodSpec,
        in_ch: int,
        aux_ch: int,
        num_classes: int,
        norm_layer: NormLayer,
    ) -> None:
        self.method = spec.name
        self.num_classes = num_classes
        self._forward_head = spec.forward_head
        head = spec.build_head(in_ch, num_classes, norm_layer)
        for name, module in head.items():
            self.add_module(name, module)
        self.head_names = tuple(head)
        self.aux_name = None
        if spec.aux is not None:
            self.aux_name = spec.aux.name
            aux = build_aux(spec.aux, aux_ch, in_ch // 4, num_classes, norm_layer)
            self.add_module(spec.aux.name, aux)

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
    stride 8.
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
        DilatedResNet.__init__(self, depth, multi_grid=spec.multi_grid, norm_layer=norm_layer)
        self.attach_heads(spec, self.out_channels, self.layer3_channels, num_classes, norm_layer)

    def forward_aux_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_to_layer3(x)

    def forward_from_aux_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(x)
