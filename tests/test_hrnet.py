"""HRNetV2 backbones against the official segmentation code's architecture, written out here.

The references below are transcribed from HRNet-Semantic-Segmentation (branch ``HRNet-OCR``):
the stage table of ``lib/config/hrnet_config.py`` and the layer rules of
``lib/models/seg_hrnet_ocr.py`` (bias-free convs, stride-2 3x3 chains with ReLU on all but the
last, 1x1 conv + BN then a bilinear resize with align_corners=True). Nothing here builds the
reference from ``network.hrnet``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from inplace_abn import ABN, InPlaceABN
from network import get_segmentation_model
from network.hrnet import (
    HRNET_SPECS,
    IMAGENET_ONLY_PREFIXES,
    HRModule,
    hrnet_spec,
    hrnetv2_w18,
    hrnetv2_w32,
    hrnetv2_w48,
    strip_imagenet_only,
)
from network.weights import CheckpointError, restore_weights

# Upstream's STAGE2..STAGE4 per width: (NUM_MODULES, NUM_BLOCKS per branch, NUM_CHANNELS).
# STAGE1 is 4 Bottlenecks of width 64 (output 256) for every width.
UPSTREAM_STAGES = {
    18: ((1, 4, (18, 36)), (4, 4, (18, 36, 72)), (3, 4, (18, 36, 72, 144))),
    32: ((1, 4, (32, 64)), (4, 4, (32, 64, 128)), (3, 4, (32, 64, 128, 256))),
    48: ((1, 4, (48, 96)), (4, 4, (48, 96, 192)), (3, 4, (48, 96, 192, 384))),
}

# Parameters of the bare backbones (no head). They equal upstream_backbone_params below, and the
# count of upstream's own HighResolutionNet with its head parameters left out (checked once by
# instantiating it outside this repository).
BACKBONE_PARAMS = {18: 9_562_260, 32: 29_305_536, 48: 65_325_120}

# The whole official HRNet-W48 + OCR model (seg_hrnet_ocr.py) for 19 classes; for the full-model
# test. Its aux head is a 1x1 720->720 conv (with bias) + BN + ReLU + 1x1 720->19.
HRNET_OCR_W48_PARAMS = 70_372_678


def conv(kernel: int, in_ch: int, out_ch: int, bias: bool = False) -> int:
    return kernel * kernel * in_ch * out_ch + (out_ch if bias else 0)


def bn(ch: int) -> int:
    return 2 * ch


def upstream_backbone_params(stages) -> int:
    """Stem, layer1, transitions and HR modules of upstream's HighResolutionNet, by arithmetic."""
    total = conv(3, 3, 64) + bn(64) + conv(3, 64, 64) + bn(64)
    in_ch = 64
    for block in range(4):
        total += conv(1, in_ch, 64) + bn(64) + conv(3, 64, 64) + bn(64) + conv(1, 64, 256)
        total += bn(256)
        if block == 0:
            total += conv(1, 64, 256) + bn(256)  # downsample
        in_ch = 256
    previous = (256,)
    for modules, blocks, channels in stages:
        for i, ch in enumerate(channels):
            if i < len(previous):
                total += 0 if previous[i] == ch else conv(3, previous[i], ch) + bn(ch)
            else:  # the one new branch, a stride-2 conv from the coarsest
                total += conv(3, previous[-1], ch) + bn(ch)
        for _ in range(modules):
            total += sum(blocks * 2 * (conv(3, ch, ch) + bn(ch)) for ch in channels)
            for i, ch_i in enumerate(channels):
                for j, ch_j in enumerate(channels):
                    if j > i:
                        total += conv(1, ch_j, ch_i) + bn(ch_i)
                    elif j < i:
                        total += (i - j - 1) * (conv(3, ch_j, ch_j) + bn(ch_j))
                        total += conv(3, ch_j, ch_i) + bn(ch_i)
        previous = channels
    return total


def upstream_ocr_head_params(in_ch: int, classes: int, mid: int = 512, key: int = 256) -> int:
    """aux_head, conv3x3_ocr, ocr_distri_head and cls_head of seg_hrnet_ocr.py (gather: none)."""
    aux = conv(1, in_ch, in_ch, bias=True) + bn(in_ch) + conv(1, in_ch, classes, bias=True)
    conv3x3_ocr = conv(3, in_ch, mid, bias=True) + bn(mid)
    f_pixel = f_object = conv(1, mid, key) + bn(key) + conv(1, key, key) + bn(key)
    f_down = conv(1, mid, key) + bn(key)
    f_up = conv(1, key, mid) + bn(mid)
    conv_bn_dropout = conv(1, 2 * mid, mid) + bn(mid)
    cls = conv(1, mid, classes, bias=True)
    return aux + conv3x3_ocr + f_pixel + f_object + f_down + f_up + conv_bn_dropout + cls


def bn_keys(prefix: str) -> list[str]:
    return [f"{prefix}.{name}" for name in ("weight", "bias", "running_mean", "running_var")]


def upstream_keys(stages) -> Iterator[str]:
    """Backbone state_dict keys of upstream's model in registration order.

    Without ``num_batches_tracked`` (absent from the torch 0.4 checkpoints, dropped on load).
    """
    for i in (1, 2):
        yield f"conv{i}.weight"
        yield from bn_keys(f"bn{i}")
    for block in range(4):
        for i in (1, 2, 3):
            yield f"layer1.{block}.conv{i}.weight"
            yield from bn_keys(f"layer1.{block}.bn{i}")
        if block == 0:
            yield "layer1.0.downsample.0.weight"
            yield from bn_keys("layer1.0.downsample.1")
    previous = (256,)
    for stage, (modules, blocks, channels) in enumerate(stages, start=2):
        transition = f"transition{stage - 1}"
        for i, ch in enumerate(channels):
            if i < len(previous) and previous[i] != ch:
                yield f"{transition}.{i}.0.weight"
                yield from bn_keys(f"{transition}.{i}.1")
            elif i >= len(previous):
                yield f"{transition}.{i}.0.0.weight"
                yield from bn_keys(f"{transition}.{i}.0.1")
        for module in range(modules):
            prefix = f"stage{stage}.{module}"
            for i in range(len(channels)):
                for block in range(blocks):
                    for k in (1, 2):
                        yield f"{prefix}.branches.{i}.{block}.conv{k}.weight"
                        yield from bn_keys(f"{prefix}.branches.{i}.{block}.bn{k}")
            for i in range(len(channels)):
                for j in range(len(channels)):
                    fuse = f"{prefix}.fuse_layers.{i}.{j}"
                    if j > i:
                        yield f"{fuse}.0.weight"
                        yield from bn_keys(f"{fuse}.1")
                    for k in range(i - j):
                        yield f"{fuse}.{k}.0.weight"
                        yield from bn_keys(f"{fuse}.{k}.1")
        previous = channels


@pytest.fixture(scope="module")
def w18() -> torch.nn.Module:
    torch.manual_seed(0)
    return hrnetv2_w18().eval()


def test_spec_table_is_upstream_config() -> None:
    for width, stages in UPSTREAM_STAGES.items():
        spec = HRNET_SPECS[width]
        assert spec == hrnet_spec(width)
        assert (spec.layer1_blocks, spec.layer1_planes) == (4, 64)
        assert [(s.num_modules, s.num_blocks, s.channels) for s in spec.stages] == list(stages)
        assert spec.out_channels == 15 * width


@pytest.mark.parametrize(
    ("width", "build"), [(18, hrnetv2_w18), (32, hrnetv2_w32), (48, hrnetv2_w48)]
)
def test_parameter_counts_equal_upstream(width: int, build) -> None:
    assert upstream_backbone_params(UPSTREAM_STAGES[width]) == BACKBONE_PARAMS[width]
    with torch.device("meta"):
        model = build()
    assert sum(p.numel() for p in model.parameters()) == BACKBONE_PARAMS[width]
    assert (model.out_channels, model.stride) == (15 * width, 4)


def test_hrnet_ocr_w48_parameter_count() -> None:
    total = BACKBONE_PARAMS[48] + upstream_ocr_head_params(720, 19)
    assert total == HRNET_OCR_W48_PARAMS


@pytest.mark.parametrize(("width", "build"), [(18, hrnetv2_w18), (48, hrnetv2_w48)])
def test_state_dict_keys_equal_upstream(width: int, build) -> None:
    with torch.device("meta"):
        model = build()
    keys = list(model.state_dict())
    assert keys == list(upstream_keys(UPSTREAM_STAGES[width]))
    # Names quoted from upstream checkpoints / its code.
    for quoted in (
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer1.0.downsample.1.running_var",
        "transition1.0.0.weight",
        "transition1.1.0.0.weight",
        "transition2.2.0.0.weight",
        "transition3.3.0.1.bias",
        "stage2.0.branches.0.0.conv1.weight",
        "stage2.0.fuse_layers.0.1.0.weight",
        "stage2.0.fuse_layers.1.0.0.0.weight",
        "stage4.2.fuse_layers.3.0.2.0.weight",
        "stage4.2.fuse_layers.0.3.1.running_mean",
    ):
        assert quoted in keys, quoted
    state = model.state_dict()
    assert state["transition1.0.0.weight"].shape == (width, 256, 3, 3)
    assert state["stage4.2.fuse_layers.3.0.0.0.weight"].shape == (width, width, 3, 3)
    assert state["stage4.2.fuse_layers.3.0.2.0.weight"].shape == (8 * width, width, 3, 3)
    assert state["stage4.2.fuse_layers.0.3.0.weight"].shape == (width, 8 * width, 1, 1)


def test_loads_official_keys_with_num_batches_tracked() -> None:
    """Checkpoints saved by torch >= 1.0 (SyncBatchNorm) carry num_batches_tracked."""
    with torch.device("meta"):
        model = hrnetv2_w18()
    state = dict(model.state_dict())
    state.update(
        {
            key.replace("running_mean", "num_batches_tracked"): torch.tensor(5)
            for key in state
            if key.endswith("running_mean")
        }
    )
    model.load_state_dict(state, strict=True, assign=True)


def test_norm_layer_and_momentum() -> None:
    with torch.device("meta"):
        default, inplace = hrnetv2_w18(), hrnetv2_w18(norm_layer=InPlaceABN)
    for model, kind in ((default, ABN), (inplace, InPlaceABN)):
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert len(norms) == sum(k.endswith("running_var") for k in model.state_dict())
        assert all(type(m) is kind for m in norms)
        assert all(m.momentum == 0.1 and m.activation == "identity" for m in norms)


def batch_norm(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        state[f"{prefix}.running_mean"],
        state[f"{prefix}.running_var"],
        state[f"{prefix}.weight"],
        state[f"{prefix}.bias"],
        training=False,
        eps=1e-5,
    )


def conv_bn(x: torch.Tensor, state: dict, prefix: str, stride: int = 1) -> torch.Tensor:
    weight = state[f"{prefix}.0.weight"]
    x = F.conv2d(x, weight, stride=stride, padding=weight.shape[-1] // 2)
    return batch_norm(x, state, f"{prefix}.1")


def resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


def test_fuse_layers_match_explicit_arithmetic(one_thread) -> None:
    torch.manual_seed(0)
    module = HRModule((2, 4, 8), num_blocks=1, norm_layer=ABN).eval()
    with torch.no_grad():
        for param in module.parameters():
            param.normal_()
        for name, buffer in module.named_buffers():
            buffer.copy_(torch.rand_like(buffer) + (0.5 if "var" in name else -0.5))
    state = module.state_dict()
    # Odd sizes: each coarser branch is ceil(side / 2) of the finer one.
    xs = [torch.randn(2, 2, 9, 11), torch.randn(2, 4, 5, 6), torch.randn(2, 8, 3, 3)]
    with torch.no_grad():
        outs = module(list(xs))
        b0, b1, b2 = (branch(x) for branch, x in zip(module.branches, xs))
    fuse = "fuse_layers"
    expected0 = b0 + resize(conv_bn(b1, state, f"{fuse}.0.1"), b0)
    expected0 = expected0 + resize(conv_bn(b2, state, f"{fuse}.0.2"), b0)
    expected1 = conv_bn(b0, state, f"{fuse}.1.0.0", stride=2) + b1
    expected1 = expected1 + resize(conv_bn(b2, state, f"{fuse}.1.2"), b1)
    # Two strides from branch 0 to 2: ReLU after the first conv only; the width changes last.
    down = F.relu(conv_bn(b0, state, f"{fuse}.2.0.0", stride=2))
    expected2 = conv_bn(down, state, f"{fuse}.2.0.1", stride=2)
    expected2 = expected2 + conv_bn(b1, state, f"{fuse}.2.1.0", stride=2) + b2
    assert state[f"{fuse}.2.0.0.0.weight"].shape == (2, 2, 3, 3)
    assert state[f"{fuse}.2.0.1.0.weight"].shape == (8, 2, 3, 3)
    for out, expected in zip(outs, (expected0, expected1, expected2)):
        torch.testing.assert_close(out, F.relu(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("size", "expected"), [((97, 129), (25, 33)), ((65, 65), (17, 17))])
def test_odd_input_sizes(w18, one_thread, size: tuple[int, int], expected: tuple[int, int]) -> None:
    branches = []
    hook = w18.stage4.register_forward_hook(lambda module, inputs, out: branches.extend(out))
    with torch.inference_mode():
        out = w18(torch.randn(1, 3, *size))
    hook.remove()
    assert out.shape == (1, 270, *expected)
    sides = [expected]
    for _ in range(3):
        sides.append(tuple(-(-s // 2) for s in sides[-1]))
    assert [tuple(b.shape[1:]) for b in branches] == [
        (18 * 2**i, *side) for i, side in enumerate(sides)
    ]
    # The output is the branches resized to the finest one (bilinear, align_corners=True).
    resized = [branches[0]] + [resize(b, branches[0]) for b in branches[1:]]
    torch.testing.assert_close(out, torch.cat(resized, dim=1))


def test_strip_imagenet_only_then_load_strict(w18) -> None:
    state = dict(w18.state_dict())
    extra = {
        "incre_modules.0.0.conv1.weight": torch.zeros(32, 18, 1, 1),
        "downsamp_modules.2.1.running_mean": torch.zeros(1024),
        "final_layer.0.weight": torch.zeros(2048, 1024, 1, 1),
        "classifier.weight": torch.zeros(1000, 2048),
        "classifier.bias": torch.zeros(1000),
    }
    assert {key.split(".")[0] for key in extra} == set(IMAGENET_ONLY_PREFIXES)
    stripped = strip_imagenet_only({**state, **extra})
    assert list(stripped) == list(state)
    with pytest.raises(RuntimeError, match="classifier.weight"):
        w18.load_state_dict({**state, **extra})
    w18.load_state_dict(stripped, strict=True)


def test_imagenet_file_initialises_the_hrnet_ocr_backbone_only(tmp_path) -> None:
    model = get_segmentation_model("hrnetv2_w18_ocr_dsn", num_classes=5, norm_layer=ABN)
    torch.manual_seed(3)
    backbone = {
        k: torch.randn_like(v) if v.is_floating_point() else v
        for k, v in hrnetv2_w18().state_dict().items()
    }
    classification = {
        "incre_modules.0.0.conv1.weight": torch.randn(32, 18, 1, 1),
        "downsamp_modules.0.0.weight": torch.randn(64, 32, 3, 3),
        "final_layer.0.weight": torch.randn(2048, 1024, 1, 1),
        "classifier.weight": torch.randn(1000, 2048),
    }
    path = tmp_path / "hrnetv2_w18_imagenet_pretrained.pth"
    torch.save({**backbone, **classification}, path)
    heads = {k: v.clone() for k, v in model.state_dict().items() if k not in backbone}

    assert restore_weights(model, path) == "backbone"
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in backbone.items())
    assert all(torch.equal(state[k], v) for k, v in heads.items())
    assert set(heads) and all(
        k.startswith(("conv_3x3", "spatial", "head", "dsn_head")) for k in heads
    )

    torch.save({**backbone, "stage5.0.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="stage5.0.weight"):
        restore_weights(model, path)
