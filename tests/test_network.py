"""Segmentation models: names, output shapes, parameter counts and keys of the original release."""

from __future__ import annotations

import itertools
import re

import pytest
import torch
import torch.nn.functional as F

from inplace_abn import ABN
from network import METHODS, NETWORKS, get_segmentation_model
from network.resnet import DilatedResNet

NAMES = [f"{n}_{m}" for n, m in itertools.product(NETWORKS, METHODS)]
# Forward passes of every method on the small backbones; the wide HRNets only through shapes of
# their parameters (below), which is where they differ.
FORWARD_NAMES = [n for n in NAMES if not n.startswith(("hrnetv2_w32", "hrnetv2_w48"))]

# Parameter counts of the original OCNet ResNet-101 models (19 classes), the ASP-OC one being the
# 2018 release (88.4 M) rather than the 2019 variant (62.5 M).
ORIGINAL_COUNTS = {
    "baseline": 52_072_403,
    "base_oc_dsn": 57_722_854,
    "pyramid_oc_dsn": 62_584_294,
    "asp_oc_dsn": 88_399_078,
}


@pytest.fixture(scope="module")
def resnet101_models() -> dict[str, torch.nn.Module]:
    return {m: get_segmentation_model(f"resnet101_{m}") for m in METHODS}


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError) as info:
        get_segmentation_model("resnet101_asp_oc")
    assert str(info.value) == "unknown model 'resnet101_asp_oc'; choose one of: " + ", ".join(NAMES)


@pytest.mark.parametrize("name", FORWARD_NAMES)
def test_forward_shapes(resnet101_models, name: str) -> None:
    torch.manual_seed(0)
    # Odd sides: the stride-8 output is ceil(side / 8). ResNet-101 (shared, 19 classes) tiny.
    if name.startswith("resnet101"):
        model, classes = resnet101_models[name.removeprefix("resnet101_")], 19
        size, expected = (17, 25), (3, 4)
    elif name.startswith("hrnet"):
        # Stride 4 with two ceil-halvings in the stem: 33 -> 17 -> 9, 45 -> 23 -> 12.
        model, classes = get_segmentation_model(name, num_classes=7), 7
        size, expected = (33, 45), (9, 12)
    else:
        model, classes = get_segmentation_model(name, num_classes=7), 7
        size, expected = (
            ((49, 57), (7, 8)) if name.startswith("resnet50") else ((105, 137), (14, 18))
        )
    with torch.inference_mode():
        out = model.eval()(torch.randn(1, 3, *size))
    if name.endswith("baseline"):
        assert isinstance(out, torch.Tensor) and out.shape == (1, classes, *expected)
    else:
        assert isinstance(out, list) and [o.shape for o in out] == [(1, classes, *expected)] * 2


@pytest.mark.parametrize(("height", "expected"), [(769, 97), (1024, 129), (105, 14), (64, 9)])
def test_output_side_of_original(height: int, expected: int) -> None:
    """Conv stride 2, ceil-mode max-pool, layer2 stride 2 (hand-computed, as the original)."""
    backbone = DilatedResNet(18, norm_layer=ABN).eval()
    with torch.inference_mode():
        assert backbone(torch.randn(1, 3, height, 9)).shape == (1, 512, expected, 2)


def test_train_step_reaches_every_head() -> None:
    torch.manual_seed(0)
    model = get_segmentation_model("resnet18_asp_oc_dsn", num_classes=3).train()
    dsn, logits = model(torch.randn(2, 3, 33, 41))
    (dsn.square().mean() + logits.square().mean()).backward()
    for name in ("conv1.weight", "layer4.1.conv2.weight", "dsn.0.weight", "cls.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def reference_backbone(model: DilatedResNet, x: torch.Tensor, multi_grid: tuple[int, ...]):
    """The dilated ResNet written out with functional ops over the state_dict (eval BN)."""
    sd = model.state_dict()

    def bn(t: torch.Tensor, p: str) -> torch.Tensor:
        w, b, m, v = (sd[f"{p}.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
        return F.batch_norm(t, m, v, w, b, training=False, eps=1e-5)

    def conv(t: torch.Tensor, p: str, stride: int = 1, dilation: int = 1) -> torch.Tensor:
        w = sd[f"{p}.weight"]
        pad = dilation * (w.shape[-1] // 2)
        return F.conv2d(t, w, stride=stride, padding=pad, dilation=dilation)

    x = F.relu(bn(conv(x, "conv1", stride=2), "bn1"))
    x = F.relu(bn(conv(x, "conv2"), "bn2"))
    x = F.relu(bn(conv(x, "conv3"), "bn3"))
    x = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    bottleneck = "layer1.0.conv3.weight" in sd
    for layer, stride, dilation in ((1, 1, 1), (2, 2, 1), (3, 1, 2), (4, 1, 4)):
        blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith(f"layer{layer}.")})
        for i in blocks:
            p = f"layer{layer}.{i}"
            s = stride if i == 0 else 1
            d = dilation * (multi_grid[i % len(multi_grid)] if layer == 4 else 1)
            residual = x
            if f"{p}.downsample.0.weight" in sd:
                residual = bn(conv(x, f"{p}.downsample.0", stride=s), f"{p}.downsample.1")
            if bottleneck:
                out = F.relu(bn(conv(x, f"{p}.conv1"), f"{p}.bn1"))
                out = F.relu(bn(conv(out, f"{p}.conv2", s, d), f"{p}.bn2"))
                out = bn(conv(out, f"{p}.conv3"), f"{p}.bn3")
            else:
                out = F.relu(bn(conv(x, f"{p}.conv1", s, d), f"{p}.bn1"))
                out = bn(conv(out, f"{p}.conv2", 1, d), f"{p}.bn2")
            x = F.relu(out + residual)
    return x


@pytest.mark.parametrize(("depth", "multi_grid"), [(18, (1, 2, 1)), (50, (1, 1, 1))])
def test_backbone_equals_functional_reference(depth: int, multi_grid: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = DilatedResNet(depth, multi_grid=multi_grid, norm_layer=ABN).double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ABN):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 27, 35, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_backbone(model, x, multi_grid))


def _conv_params(in_ch: int, out_ch: int, kernel: int = 1, bias: bool = True) -> int:
    return in_ch * out_ch * kernel * kernel + (out_ch if bias else 0)


def _successor_counts(classes: int = 19) -> dict[str, int]:
    """ISA and OCR on ResNet-101 counted from openseg.pytorch's definitions, by hand.

    The backbone is the baseline minus its head (3x3 conv 2048->512 with bias + norm, 1x1
    classifier). ISA (lib/models/nets/isanet.py, modules/isa_block.py): every conv of the head
    and of the self-attention blocks without bias; f_key and f_query are two conv + norm pairs,
    W conv + norm. OCR (nets/ocrnet.py, modules/spatial_ocr_block.py): every conv with bias.
    """
    conv, norm = _conv_params, lambda c: 2 * c
    backbone = ORIGINAL_COUNTS["baseline"] - (conv(2048, 512, 3) + norm(512)) - conv(512, classes)

    def self_attention(in_ch: int, key: int, value: int, out: int) -> int:
        projection = conv(in_ch, key, bias=False) + norm(key) + conv(key, key, bias=False)
        projection += norm(key)
        return (
            2 * projection
            + conv(in_ch, value, bias=False)
            + conv(value, out, bias=False)
            + norm(out)
        )

    isa = conv(2048, 512, 3, bias=False) + norm(512)
    isa += 2 * self_attention(512, 256, 512, 512) + conv(1024, 512, bias=False) + norm(512)
    isa += conv(512, classes) + conv(1024, 512, 3, bias=False) + norm(512) + conv(512, classes)
    pair = conv(512, 256) + norm(256) + conv(256, 256) + norm(256)
    ocr = conv(2048, 512, 3) + norm(512) + 2 * pair + conv(512, 256) + norm(256)
    ocr += conv(256, 512) + norm(512) + conv(1024, 512) + norm(512) + conv(512, classes)
    ocr += conv(1024, 512, 3) + norm(512) + conv(512, classes)
    return {"isa_oc_dsn": backbone + isa, "ocr_dsn": backbone + ocr}


@pytest.mark.parametrize("method", METHODS)
def test_resnet101_parameter_count(resnet101_models, method: str) -> None:
    model = resnet101_models[method]
    expected = ORIGINAL_COUNTS | _successor_counts()
    assert sum(p.numel() for p in model.parameters()) == expected[method]


def test_hrnet_w48_ocr_parameter_count_is_the_official_models():
    # HRNet/HRNet-Semantic-Segmentation (HRNet-OCR branch) seg_hrnet_ocr.py with the W48 config
    # and 19 classes, counted from its definition: 65,325,120 backbone + 5,047,558 head.
    with torch.device("meta"):
        model = get_segmentation_model("hrnetv2_w48_ocr_dsn", norm_layer=ABN)
    assert sum(p.numel() for p in model.parameters()) == 70_372_678


def _conv(prefix: str, bias: bool = True) -> list[str]:
    return [f"{prefix}.weight"] + ([f"{prefix}.bias"] if bias else [])


def _bn(prefix: str) -> list[str]:
    return [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]


def _attention(prefix: str) -> list[str]:
    keys = _conv(f"{prefix}.f_value") + _conv(f"{prefix}.W")
    for projection in ("f_key", "f_query"):
        keys += _conv(f"{prefix}.{projection}.0") + _bn(f"{prefix}.{projection}.1")
    return keys


def expected_resnet101_keys(method: str) -> set[str]:
    keys = []
    for i in (1, 2, 3):
        keys += _conv(f"conv{i}", bias=False) + _bn(f"bn{i}")
    for layer, blocks in zip((1, 2, 3, 4), (3, 4, 23, 3)):
        keys += _conv(f"layer{layer}.0.downsample.0", bias=False) + _bn(
            f"layer{layer}.0.downsample.1"
        )
        for b, i in itertools.product(range(blocks), (1, 2, 3)):
            keys += _conv(f"layer{layer}.{b}.conv{i}", bias=False) + _bn(f"layer{layer}.{b}.bn{i}")
    if method == "baseline":
        return set(keys + _conv("layer5.0") + _bn("layer5.1") + _conv("layer6"))
    keys += _conv("dsn.0") + _bn("dsn.1") + _conv("dsn.3") + _conv("cls")
    if method == "base_oc_dsn":
        keys += _conv("context.0") + _bn("context.1") + _attention("context.2.stages.0")
        keys += _conv("context.2.conv_bn_dropout.0") + _bn("context.2.conv_bn_dropout.1")
    elif method == "pyramid_oc_dsn":
        keys += _conv("layer5.0") + _bn("layer5.1")
        for s in range(4):
            keys += _attention(f"context.stages.{s}")
        keys += _conv("context.conv_bn_dropout.0") + _bn("context.conv_bn_dropout.1")
        keys += _conv("context.up_dr.0") + _bn("context.up_dr.1")
    else:
        asp = "context.0"
        keys += _conv(f"{asp}.context.0") + _bn(f"{asp}.context.1")
        keys += _attention(f"{asp}.context.2.stages.0")
        keys += _conv(f"{asp}.context.2.conv_bn_dropout.0") + _bn(
            f"{asp}.context.2.conv_bn_dropout.1"
        )
        for branch in ("conv2", "conv3", "conv4", "conv5", "conv_bn_dropout"):
            keys += _conv(f"{asp}.{branch}.0", bias=False) + _bn(f"{asp}.{branch}.1")
    return set(keys)


ORIGINAL_METHODS = tuple(ORIGINAL_COUNTS)


@pytest.mark.parametrize("method", ORIGINAL_METHODS)
def test_resnet101_keys_of_original(resnet101_models, method: str) -> None:
    state = resnet101_models[method].state_dict()
    assert set(state) == expected_resnet101_keys(method)


SHAPES = {
    "baseline": {"layer5.0.weight": (512, 2048, 3, 3), "layer6.weight": (19, 512, 1, 1)},
    "base_oc_dsn": {
        "context.0.weight": (512, 2048, 3, 3),
        "context.2.stages.0.f_key.0.weight": (256, 512, 1, 1),
        "context.2.stages.0.f_value.weight": (256, 512, 1, 1),
        "context.2.stages.0.W.weight": (512, 256, 1, 1),
        "context.2.conv_bn_dropout.0.weight": (512, 1024, 1, 1),
    },
    "pyramid_oc_dsn": {
        "layer5.0.weight": (512, 2048, 3, 3),
        "context.stages.3.f_query.0.weight": (256, 512, 1, 1),
        "context.stages.3.f_value.weight": (512, 512, 1, 1),
        "context.up_dr.0.weight": (2048, 512, 1, 1),
        "context.conv_bn_dropout.0.weight": (512, 4096, 1, 1),
    },
    "asp_oc_dsn": {
        "context.0.context.0.weight": (512, 2048, 3, 3),
        "context.0.context.2.stages.0.f_key.0.weight": (256, 512, 1, 1),
        "context.0.context.2.stages.0.f_value.weight": (512, 512, 1, 1),
        "context.0.conv5.0.weight": (512, 2048, 3, 3),
        "context.0.conv_bn_dropout.0.weight": (512, 2560, 1, 1),
    },
}


@pytest.mark.parametrize("method", ORIGINAL_METHODS)
def test_resnet101_shapes_of_original(resnet101_models, method: str) -> None:
    state = resnet101_models[method].state_dict()
    expected = {
        "conv1.weight": (64, 3, 3, 3),
        "conv3.weight": (128, 64, 3, 3),
        "layer1.0.downsample.0.weight": (256, 128, 1, 1),
        "layer3.22.conv2.weight": (256, 256, 3, 3),
        "layer4.2.bn3.running_var": (2048,),
        **SHAPES[method],
    }
    if method != "baseline":
        expected |= {
            "cls.weight": (19, 512, 1, 1),
            "dsn.0.weight": (512, 1024, 3, 3),
            "dsn.3.weight": (19, 512, 1, 1),
        }
    assert {k: tuple(state[k].shape) for k in expected} == expected


@pytest.mark.parametrize("method", ORIGINAL_METHODS)
def test_resnet101_activations_dropout_dilation(resnet101_models, method: str) -> None:
    model = resnet101_models[method]
    identity = {n for n, m in model.named_modules() if getattr(m, "activation", None) == "identity"}
    backbone = re.compile(r"^(bn\d|layer\d\.\d+\.(bn\d|downsample\.1))$")
    head_identity = {n for n in identity if not backbone.match(n)}
    assert head_identity == ({"layer5.1", "dsn.1"} if method == "pyramid_oc_dsn" else set())
    norms = [n for n, m in model.named_modules() if hasattr(m, "activation")]
    assert {n for n in norms if backbone.match(n)} <= identity
    leaky = {n for n, m in model.named_modules() if getattr(m, "activation", None) == "leaky_relu"}
    assert leaky == set(norms) - identity
    dropouts = {n: m.p for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout2d)}
    expected_dropouts = {
        "baseline": {"layer5.2": 0.05},
        "base_oc_dsn": {"dsn.2": 0.05, "context.2.conv_bn_dropout.2": 0.05},
        "pyramid_oc_dsn": {"dsn.2": 0.05, "context.conv_bn_dropout.2": 0.05},
        "asp_oc_dsn": {"dsn.2": 0.10, "context.0.conv_bn_dropout.2": 0.1},
    }
    assert dropouts == expected_dropouts[method]
    grid = [model.layer4[i].conv2.dilation[0] for i in range(3)]
    assert grid == ([4, 8, 4] if method == "baseline" else [4, 4, 4])
    assert [model.layer3[i].conv2.dilation[0] for i in (0, 22)] == [2, 2]
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer3[0].conv2.stride == (1, 1)


def _pairs(prefix: str, count: int, bias: bool) -> list[str]:
    """``count`` conv + norm pairs in one Sequential (indices 0, 1, 2, 3, ...)."""
    keys = []
    for i in range(count):
        keys += _conv(f"{prefix}.{2 * i}", bias) + _bn(f"{prefix}.{2 * i + 1}")
    return keys


def expected_openseg_head_keys(method: str) -> set[str]:
    """Head keys of openseg.pytorch's ISANet / SpatialOCRNet (bn_type inplace_abn: one norm
    module per BNReLU), written from lib/models/nets/{isanet,ocrnet}.py and their modules."""
    if method == "isa_oc_dsn":
        keys = _conv("dsn_head.0", bias=False) + _bn("dsn_head.1") + _conv("dsn_head.3")
        keys += _conv("isa_head.0", bias=False) + _bn("isa_head.1") + _conv("cls_head")
        for block in ("long_range_sa", "short_range_sa"):
            prefix = f"isa_head.2.stages.0.{block}"
            keys += _pairs(f"{prefix}.f_key", 2, False) + _pairs(f"{prefix}.f_query", 2, False)
            keys += _conv(f"{prefix}.f_value", bias=False) + _pairs(f"{prefix}.W", 1, False)
        return set(keys + _pairs("isa_head.2.conv_bn", 1, False))
    keys = _conv("dsn_head.0") + _bn("dsn_head.1") + _conv("dsn_head.3") + _conv("head")
    keys += _pairs("conv_3x3", 1, True)
    block = "spatial_ocr_head.object_context_block"
    keys += _pairs(f"{block}.f_pixel", 2, True) + _pairs(f"{block}.f_object", 2, True)
    keys += _pairs(f"{block}.f_down", 1, True) + _pairs(f"{block}.f_up", 1, True)
    return set(keys + _pairs("spatial_ocr_head.conv_bn_dropout", 1, True))


@pytest.mark.parametrize("method", ["isa_oc_dsn", "ocr_dsn"])
def test_resnet101_successors_have_openseg_keys_and_backbone(resnet101_models, method):
    model = resnet101_models[method]
    backbone = expected_resnet101_keys("baseline") - set(_conv("layer5.0") + _bn("layer5.1"))
    backbone -= set(_conv("layer6"))
    assert set(model.state_dict()) == backbone | expected_openseg_head_keys(method)
    # openseg's deep-base ResNet halves the dilation of the first (formerly strided) block.
    assert [model.layer3[i].conv2.dilation[0] for i in (0, 1, 22)] == [1, 2, 2]
    assert [model.layer4[i].conv2.dilation[0] for i in range(3)] == [2, 4, 4]
    norms = {n: m.activation for n, m in model.named_modules() if hasattr(m, "activation")}
    assert {a for n, a in norms.items() if not n.startswith(("bn", "layer"))} == {"leaky_relu"}
    dropouts = {n: m.p for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout2d)}
    if method == "isa_oc_dsn":
        assert dropouts == {"dsn_head.2": 0.05, "isa_head.2.conv_bn.2": 0.05}
    else:
        assert dropouts == {"dsn_head.2": 0.05, "spatial_ocr_head.conv_bn_dropout.2": 0.05}
