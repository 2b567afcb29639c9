"""HRNetV2 backbones (W18, W32, W48): four parallel resolutions, concatenated at stride 4.

Built as the official segmentation code (HRNet-Semantic-Segmentation, branch ``HRNet-OCR``,
``lib/models/seg_hrnet_ocr.py``) so that its checkpoints and the ImageNet weights of
HRNet-Image-Classification load by name: ``conv1``/``bn1``/``conv2``/``bn2`` stem, ``layer1``,
``transition1..3``, ``stage2..4`` with ``branches`` and ``fuse_layers``. Where upstream has a
batchnorm followed by ReLU, this has ``norm_layer(c, activation="identity")`` and a ReLU.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from inplace_abn import ABN, NormLayer

from .resnet import BasicBlock, Bottleneck

# Upstream's BN_MOMENTUM; every batchnorm of the backbone is built with it.
BN_MOMENTUM = 0.1
# Upstream's config default MODEL.ALIGN_CORNERS (the Cityscapes OCR recipe keeps it): every
# bilinear resize of the backbone uses it.
ALIGN_CORNERS = True

# Keys of the ImageNet classification checkpoints (HRNet-Image-Classification ``cls_hrnet.py``)
# that belong to its classification head; the stem and stage keys equal the segmentation ones.
IMAGENET_ONLY_PREFIXES = ("incre_modules", "downsamp_modules", "final_layer", "classifier")

HRNET_WIDTHS = (18, 32, 48)


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``num_modules`` HR modules of ``num_blocks`` BasicBlocks per branch."""

    num_modules: int
    num_blocks: int
    channels: tuple[int, ...]


@dataclass(frozen=True)
class HRNetSpec:
    """The architecture config: upstream's STAGE1..STAGE4 (``lib/config/hrnet_config.py``)."""

    width: int
    layer1_blocks: int  # Bottlenecks in STAGE1
    layer1_planes: int  # their inner width; output is 4x this
    stages: tuple[StageSpec, StageSpec, StageSpec]  # STAGE2, STAGE3, STAGE4

    @property
    def out_channels(self) -> int:
        return sum(self.stages[-1].channels)


def hrnet_spec(width: int) -> HRNetSpec:
    """HRNetV2-W``width``: branch widths C, 2C, 4C, 8C; 1, 4 and 3 modules of 4 blocks."""
    if width <= 0:
        raise ValueError(f"HRNet width must be positive, got {width}")
    channels = tuple(width * 2**i for i in range(4))
    return HRNetSpec(
        width=width,
        layer1_blocks=4,
        layer1_planes=64,
        stages=(
            StageSpec(num_modules=1, num_blocks=4, channels=channels[:2]),
            StageSpec(num_modules=4, num_blocks=4, channels=channels[:3]),
            StageSpec(num_modules=3, num_blocks=4, channels=channels),
        ),
    )


HRNET_SPECS = {width: hrnet_spec(width) for width in HRNET_WIDTHS}


def conv_norm(
    in_ch: int, out_ch: int, kernel: int, stride: int, norm_layer: NormLayer, relu: bool
) -> nn.Sequential:
    """Bias-free conv, norm and optionally ReLU: indices 0, 1, 2 as upstream's Sequentials."""
    layers = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        norm_layer(out_ch, activation="identity"),
    ]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def downsample_chain(
    in_ch: int, out_ch: int, steps: int, norm_layer: NormLayer, relu_last: bool
) -> nn.Sequential:
    """``steps`` stride-2 3x3 convs, each with a ReLU but maybe the last; the last sets the width.

    Fuse layers end without ReLU (a sum and a ReLU follow); transitions end with one.
    """
    return nn.Sequential(
        *(
            conv_norm(
                in_ch, out_ch if last else in_ch, 3, 2, norm_layer, relu=relu_last or not last
            )
            for last in (k == steps - 1 for k in range(steps))
        )
    )


def fuse_layer(channels: Sequence[int], i: int, j: int, norm_layer: NormLayer) -> nn.Module:
    """What brings branch j to branch i's width (the resize of a coarser j is in the forward)."""
    if j == i:
        return nn.Identity()
    if j > i:
        return conv_norm(channels[j], channels[i], 1, 1, norm_layer, relu=False)
    return downsample_chain(channels[j], channels[i], i - j, norm_layer, relu_last=False)


class HRModule(nn.Module):
    """Parallel branches of BasicBlocks, then every output is the ReLU of a sum over all inputs.

    ``fuse_layers[i][j]`` brings branch j to branch i: a 1x1 conv + norm then a bilinear resize to
    branch i's exact size when j is coarser (so odd input sizes work), a chain of stride-2 convs
    when j is finer, nothing (identity) when i == j. HRNetV2 keeps every resolution in every
    module, the last one included (upstream's ``multi_scale_output=True``).
    """

    def __init__(self, channels: Sequence[int], num_blocks: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(c, c, norm_layer=norm_layer) for _ in range(num_blocks)))
            for c in channels
        )
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(fuse_layer(channels, i, j, norm_layer) for j in range(len(channels)))
            for i in range(len(channels))
        )

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        outs = []
        for i, fuse in enumerate(self.fuse_layers):
            size = xs[i].shape[-2:]
            total = None
            # Summed from branch 0 upwards, the order upstream adds in.
            for j, (layer, x) in enumerate(zip(fuse, xs)):
                y = layer(x)
                if j > i:
                    y = F.interpolate(y, size=size, mode="bilinear", align_corners=ALIGN_CORNERS)
                total = y if total is None else total + y
            outs.append(F.relu(total))
        return outs


def make_transition(
    in_channels: Sequence[int], out_channels: Sequence[int], norm_layer: NormLayer
) -> nn.ModuleList:
    """Adapts stage outputs to the next stage: a new, coarser branch from the coarsest output.

    Existing branches pass unchanged when the width already matches (always in HRNetV2 after
    stage 2), else through a 3x3 conv; upstream holds ``None`` there, an identity here (no keys).
    """
    layers = []
    for i, out_ch in enumerate(out_channels):
        if i < len(in_channels):
            same = in_channels[i] == out_ch
            layers.append(
                nn.Identity()
                if same
                else conv_norm(in_channels[i], out_ch, 3, 1, norm_layer, relu=True)
            )
        else:
            steps = i + 1 - len(in_channels)
            layers.append(
                downsample_chain(in_channels[-1], out_ch, steps, norm_layer, relu_last=True)
            )
    return nn.ModuleList(layers)


class HRNet(nn.Module):
    """HRNetV2: the stem and four stages, output = all branches resized to stride 4 and joined.

    ``forward(x)`` returns ``out_channels`` (15C) channels at ceil(ceil(H/2)/2) x ceil(ceil(W/2)/2).
    Convolutions start as upstream's ``init_weights`` (normal, std 0.001; ImageNet weights
    replace them); norms as their class does (weight 1, bias 0).
    """

    stride = 4

    def __init__(self, spec: HRNetSpec, norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        # Plain batchnorm by default: the ABN class with identity activation.
        norm_layer = functools.partial(norm_layer or ABN, momentum=BN_MOMENTUM)
        self.spec = spec
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = norm_layer(64, activation="identity")
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = norm_layer(64, activation="identity")

        planes = spec.layer1_planes
        expanded = planes * Bottleneck.expansion
        downsample = nn.Sequential(
            nn.Conv2d(64, expanded, 1, bias=False), norm_layer(expanded, activation="identity")
        )
        self.layer1 = nn.Sequential(
            Bottleneck(64, planes, downsample=downsample, norm_layer=norm_layer),
            *(
                Bottleneck(expanded, planes, norm_layer=norm_layer)
                for _ in range(spec.layer1_blocks - 1)
            ),
        )

        previous: tuple[int, ...] = (expanded,)
        for index, stage in enumerate(spec.stages, start=1):
            self.add_module(
                f"transition{index}", make_transition(previous, stage.channels, norm_layer)
            )
            modules = (
                HRModule(stage.channels, stage.num_blocks, norm_layer)
                for _ in range(stage.num_modules)
            )
            self.add_module(f"stage{index + 1}", nn.Sequential(*modules))
            previous = stage.channels
        self.out_channels = spec.out_channels
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.001)

    def forward_branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stage-4 outputs, finest (stride 4) first."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for index in range(1, 4):
            transition = getattr(self, f"transition{index}")
            # A new branch grows out of the coarsest existing one.
            xs = [t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(transition)]
            xs = getattr(self, f"stage{index + 1}")(xs)
        return xs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.forward_branches(x)
        size = xs[0].shape[-2:]
        upsampled = [
            F.interpolate(y, size=size, mode="bilinear", align_corners=ALIGN_CORNERS)
            for y in xs[1:]
        ]
        return torch.cat([xs[0], *upsampled], dim=1)


def hrnetv2_w18(norm_layer: NormLayer | None = None) -> HRNet:
    return HRNet(HRNET_SPECS[18], norm_layer)


def hrnetv2_w32(norm_layer: NormLayer | None = None) -> HRNet:
    return HRNet(HRNET_SPECS[32], norm_layer)


def hrnetv2_w48(norm_layer: NormLayer | None = None) -> HRNet:
    return HRNet(HRNET_SPECS[48], norm_layer)


def strip_imagenet_only(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ImageNet checkpoint without its classification head, ready for the backbone."""
    return {
        key: value
        for key, value in state.items()
        if key.split(".", 1)[0] not in IMAGENET_ONLY_PREFIXES
    }
