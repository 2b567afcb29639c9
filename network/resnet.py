"""Dilated ResNet with the deep stem, output stride 8 (the backbone of the original OCNet).

Batchnorms are ``norm_layer(c, activation="identity")`` followed by a separate ReLU, exactly as
the original (so its ImageNet weights and checkpoints load and compute the same function).

Two variants of the same network (``DilatedResNet(variant=...)``). ``"ocnet"``: the original
OCNet's, every block of layer3/layer4 dilated alike. ``"openseg"``: openseg.pytorch's
``deepbase_resnet*_dilated8`` (ISANet, OCRNet), which dilates a strided ImageNet ResNet after the
fact: the conv that had stride 2 keeps half the dilation, so the first block of layer3 has
dilation 1 and that of layer4 dilation 2. Stem, pool, norms, biases and keys are the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from inplace_abn import NormLayer, default_norm_layer

VARIANTS = ("ocnet", "openseg")


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); both dilated in dilated stages.

    ``entry_dilation`` (default ``dilation``) is that of conv1, the conv that carries the stride.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer | None = None,
        entry_dilation: int | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or default_norm_layer()
        self.conv1 = conv3x3(inplanes, planes, stride, entry_dilation or dilation)
        self.bn1 = norm_layer(planes, activation="identity")
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = norm_layer(planes, activation="identity")
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + residual)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride and dilation here) -> 1x1 x4, as the original's ResNet-101.

    The 3x3 carries the stride, so ``entry_dilation`` (default ``dilation``) is its dilation.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer | None = None,
        entry_dilation: int | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or default_norm_layer()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = norm_layer(planes, activation="identity")
        self.conv2 = conv3x3(planes, planes, stride, entry_dilation or dilation)
        self.bn2 = norm_layer(planes, activation="identity")
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = norm_layer(planes * 4, activation="identity")
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + residual)


BLOCKS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class DilatedResNet(nn.Module):
    """ResNet-``depth`` with a deep stem and dilated layer3/layer4 (output stride 8).

    Stem: three 3x3 convs 3-64-64-128 (the first stride 2), then a ceil-mode 3x3/2 max-pool.
    layer3 has dilation 2, layer4 dilation 4 times ``multi_grid`` per block (cycled), both
    stride 1. For an input side n the output side is that of the original: ceil(n / 8) for odd
    n, one more for some even n (the ceil-mode pool), e.g. 769 -> 97, 1024 -> 129.

    ``variant="openseg"`` gives openseg.pytorch's backbone: in layer3 and layer4 the first
    block's strided-position conv (Bottleneck conv2, BasicBlock conv1) has half its block's
    dilation, as its ``DilatedResnetBackbone._nostride_dilate`` leaves it (layer3: 1, 2, 2, ...;
    layer4: 2, 4, 4). Keys and shapes are those of ``"ocnet"``.
    """

    def __init__(
        self,
        depth: int = 101,
        dilations: tuple[int, int] = (2, 4),
        multi_grid: tuple[int, ...] = (1, 1, 1),
        norm_layer: NormLayer | None = None,
        variant: str = "ocnet",
    ) -> None:
        super().__init__()
        if depth not in BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS)}, got {depth}")
        if variant not in VARIANTS:
            raise ValueError(
                f"ResNet variant must be one of {', '.join(VARIANTS)}, got {variant!r}"
            )
        self.variant = variant
        block, layers = BLOCKS[depth]
        norm_layer = norm_layer or default_norm_layer()
        self._norm_layer = norm_layer
        self.conv1 = conv3x3(3, 64, stride=2)
        self.bn1 = norm_layer(64, activation="identity")
        self.conv2 = conv3x3(64, 64)
        self.bn2 = norm_layer(64, activation="identity")
        self.conv3 = conv3x3(64, 128)
        self.bn3 = norm_layer(128, activation="identity")
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self.inplanes = 128
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        # layer3/layer4 are the stages whose ImageNet stride 2 became dilation.
        self.layer3 = self._make_layer(
            block, 256, layers[2], dilation=dilations[0], stride_removed=True
        )
        self.layer4 = self._make_layer(
            block, 512, layers[3], dilation=dilations[1], multi_grid=multi_grid, stride_removed=True
        )
        self.layer3_channels = 256 * block.expansion
        self.out_channels = 512 * block.expansion

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilation: int = 1,
        multi_grid: tuple[int, ...] = (1,),
        stride_removed: bool = False,
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                self._norm_layer(planes * block.expansion, activation="identity"),
            )
        layers = []
        for i in range(blocks):
            block_dilation = dilation * multi_grid[i % len(multi_grid)]
            entry_dilation = None
            if i == 0 and stride_removed and self.variant == "openseg":
                # openseg sets the formerly strided 3x3 to half the dilation (at least 1).
                entry_dilation = max(block_dilation // 2, 1)
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    stride if i == 0 else 1,
                    block_dilation,
                    downsample if i == 0 else None,
                    self._norm_layer,
                    entry_dilation,
                )
            )
            self.inplanes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward_to_layer3(self, x: torch.Tensor) -> torch.Tensor:
        """Stem to layer3: the features deep supervision (DSN) reads."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.layer3(self.layer2(self.layer1(self.maxpool(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.forward_to_layer3(x))
