"""openseg.pytorch's dilated ResNet (``DilatedResNet(variant="openseg")``) and reading the
checkpoints of openseg.pytorch and HRNet-OCR (``network.weights``).

The upstream facts written out here are read from openseg.pytorch (master):
``lib/models/backbones/resnet/resnet_models.py`` (deep stem under ``resinit``, ceil-mode pool),
``resnet_backbone.py`` (``DilatedResnetBackbone._nostride_dilate``), ``lib/models/nets/isanet.py``
and ``ocrnet.py`` (head names) and ``segmentor/tools/module_runner.py`` (``save_net``: a dict with
``config_dict`` and ``state_dict`` of the DataParallel model); and from HRNet-Semantic-Segmentation
(branch HRNet-OCR): ``lib/models/seg_hrnet_ocr.py`` and ``lib/utils/utils.py`` (``FullModel``).
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inplace_abn import ABN
from network.resnet import DilatedResNet
from network.weights import (
    CheckpointError,
    check_weights,
    load_weights,
    read_state_dict,
    restore_weights,
)
from utils import checkpoint

STEM = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")
STAGES = ("layer1", "layer2", "layer3", "layer4")
CONFIG = {  # a piece of openseg's configs/cityscapes/R_101_D_8.json as configer.to_dict() has it
    "network": {
        "backbone": "deepbase_resnet101_dilated8",
        "multi_grid": [1, 1, 1],
        "model_name": "isanet",
        "bn_type": "inplace_abn",
        "stride": 8,
        "factors": [[8, 8]],
        "loss_weights": {"aux_loss": 0.4, "seg_loss": 1.0},
        "resume": None,
        "gathered": False,
    },
    "data": {"num_classes": 19},
    "gpu": [0, 1, 2, 3],
}


# --- the backbone variant ---------------------------------------------------------------------


def conv_dilations(stage: nn.Sequential, conv: str = "conv2") -> list[int]:
    return [getattr(block, conv).dilation[0] for block in stage]


def test_openseg_resnet101_structure_matches_upstream() -> None:
    with torch.device("meta"):
        model = DilatedResNet(101, norm_layer=ABN, variant="openseg")
        original = DilatedResNet(101, norm_layer=ABN)
    # Deep stem: 3x3 convs 3-64-64-128, the first with stride 2, padding 1, no bias.
    for name, in_ch, out_ch, stride in (
        ("conv1", 3, 64, 2),
        ("conv2", 64, 64, 1),
        ("conv3", 64, 128, 1),
    ):
        conv = getattr(model, name)
        assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (in_ch, out_ch, (3, 3))
        assert (conv.stride, conv.padding, conv.bias) == ((stride, stride), (1, 1), None)
    pool = model.maxpool
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 1, True)
    # _nostride_dilate: the formerly strided 3x3 gets dilate // 2, every other 3x3 dilate.
    assert conv_dilations(model.layer3) == [1] + [2] * 22
    assert conv_dilations(model.layer4) == [2, 4, 4]
    assert conv_dilations(model.layer1) == [1] * 3 and conv_dilations(model.layer2) == [1] * 4
    for stage in (model.layer3, model.layer4):
        assert all(b.conv2.stride == (1, 1) and b.conv2.padding == b.conv2.dilation for b in stage)
        assert stage[0].downsample[0].stride == (1, 1)
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].downsample[0].stride == (2, 2)
    # BatchNorm2d for inplace_abn is InPlaceABNSync(activation="none"), ReLU a module of its own.
    norms = [m for m in model.modules() if isinstance(m, ABN)]
    assert len(norms) == 3 + 3 * 33 + 4 and all(m.activation == "identity" for m in norms)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    # Same keys and shapes as the original OCNet's backbone.
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in original.state_dict().items()}
    assert (
        conv_dilations(original.layer3) == [2] * 23 and conv_dilations(original.layer4) == [4] * 3
    )


def test_openseg_basic_block_and_multi_grid_dilations() -> None:
    with torch.device("meta"):
        basic = DilatedResNet(18, norm_layer=ABN, variant="openseg")
        grid = DilatedResNet(50, multi_grid=(1, 2, 4), norm_layer=ABN, variant="openseg")
    # BasicBlock: conv1 carries the stride, so it is the one with half the dilation.
    assert conv_dilations(basic.layer3, "conv1") == [1, 2]
    assert conv_dilations(basic.layer3, "conv2") == [2, 2]
    assert conv_dilations(basic.layer4, "conv1") == [2, 4]
    assert conv_dilations(basic.layer4, "conv2") == [4, 4]
    # Multi-grid: block i of layer4 gets int(4 * r_i), the first block's strided conv half that.
    assert conv_dilations(grid.layer4) == [2, 8, 16]


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="variant must be one of ocnet, openseg, got 'mmseg'"):
        DilatedResNet(18, norm_layer=ABN, variant="mmseg")


def openseg_reference(model: DilatedResNet, x: torch.Tensor) -> torch.Tensor:
    """openseg's dilated ResNet written out with functional ops over the state_dict (eval BN)."""
    sd = model.state_dict()

    def bn(t: torch.Tensor, p: str) -> torch.Tensor:
        w, b, m, v = (sd[f"{p}.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
        return F.batch_norm(t, m, v, w, b, training=False, eps=1e-5)

    def conv(t: torch.Tensor, p: str, stride: int = 1, dilation: int = 1) -> torch.Tensor:
        w = sd[f"{p}.weight"]
        return F.conv2d(
            t, w, stride=stride, padding=dilation * (w.shape[-1] // 2), dilation=dilation
        )

    x = F.relu(bn(conv(x, "conv1", stride=2), "bn1"))
    x = F.relu(bn(conv(x, "conv2"), "bn2"))
    x = F.relu(bn(conv(x, "conv3"), "bn3"))
    x = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    bottleneck = "layer1.0.conv3.weight" in sd
    for layer, stride, dilation in ((1, 1, 1), (2, 2, 1), (3, 1, 2), (4, 1, 4)):
        blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith(f"layer{layer}.")})
        for i in blocks:
            p, s = f"layer{layer}.{i}", stride if i == 0 else 1
            first = dilation // 2 if i == 0 and layer >= 3 else dilation
            residual = x
            if f"{p}.downsample.0.weight" in sd:
                residual = bn(conv(x, f"{p}.downsample.0", stride=s), f"{p}.downsample.1")
            if bottleneck:
                out = F.relu(bn(conv(x, f"{p}.conv1"), f"{p}.bn1"))
                out = F.relu(bn(conv(out, f"{p}.conv2", s, first), f"{p}.bn2"))
                out = bn(conv(out, f"{p}.conv3"), f"{p}.bn3")
            else:
                out = F.relu(bn(conv(x, f"{p}.conv1", s, first), f"{p}.bn1"))
                out = bn(conv(out, f"{p}.conv2", 1, dilation), f"{p}.bn2")
            x = F.relu(out + residual)
    return x


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Every float tensor random (BN variances positive), so a wrong copy cannot go unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype) * 0.1
                tensor.copy_(values.abs() + 0.5 if "running_var" in key else values)
    return model.eval()


@pytest.mark.parametrize("depth", [18, 50])
def test_openseg_variant_equals_reference(depth: int) -> None:
    model = randomise(DilatedResNet(depth, norm_layer=ABN, variant="openseg").double(), depth)
    x = torch.randn(1, 3, 27, 35, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, openseg_reference(model, x))
        # Same weights in the original's dilations compute another function.
        original = randomise(DilatedResNet(depth, norm_layer=ABN).double(), depth)
        assert not torch.allclose(original(x), out)


@pytest.mark.parametrize("depth", [18, 50])
def test_openseg_variant_output_size_for_odd_input(depth: int) -> None:
    model = DilatedResNet(depth, norm_layer=ABN, variant="openseg").eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 97, 97))
    # 97 -> conv/2: 49 -> ceil-mode pool: 25 -> layer2 /2: 13 (= ceil(97 / 8)).
    assert out.shape == (1, model.out_channels, 13, 13)


# --- openseg.pytorch checkpoints ------------------------------------------------------------------


class HeadStub(DilatedResNet):
    """The openseg backbone with head modules under openseg's names (their insides are fakes)."""

    def __init__(self, heads: dict[str, nn.Module]) -> None:
        super().__init__(18, norm_layer=ABN, variant="openseg")
        for name, module in heads.items():
            self.add_module(name, module)


def dsn_head(in_ch: int, bias: bool) -> nn.Sequential:
    """openseg's dsn_head: conv, BNReLU (one InPlaceABNSync), Dropout2d, classifier."""
    return nn.Sequential(
        nn.Conv2d(in_ch, 16, 3, padding=1, bias=bias),
        ABN(16),
        nn.Dropout2d(0.05),
        nn.Conv2d(16, 19, 1),
    )


def conv_norm(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 1, bias=False), ABN(out_ch)]


def ocr_module(width: int, key: int) -> nn.Module:
    """openseg's SpatialOCR_Module layout: f_pixel/f_object/f_down/f_up and conv_bn_dropout."""
    block = nn.Module()
    block.f_pixel = nn.Sequential(*conv_norm(width, key), *conv_norm(key, key))
    block.f_object = nn.Sequential(*conv_norm(width, key), *conv_norm(key, key))
    block.f_down = nn.Sequential(*conv_norm(width, key))
    block.f_up = nn.Sequential(*conv_norm(key, width))
    module = nn.Module()
    module.object_context_block = block
    module.conv_bn_dropout = nn.Sequential(*conv_norm(2 * width, width), nn.Dropout2d(0.05))
    return module


def isa_stub(seed: int) -> HeadStub:
    heads = {
        "dsn_head": dsn_head(256, bias=False),
        "isa_head": nn.Sequential(
            nn.Conv2d(512, 16, 3, padding=1, bias=False), ABN(16), nn.Sequential(*conv_norm(16, 8))
        ),
        "cls_head": nn.Conv2d(16, 19, 1),
    }
    return randomise(HeadStub(heads), seed)


def ocr_stub(seed: int) -> HeadStub:
    heads = {
        "dsn_head": dsn_head(256, bias=True),
        "conv_3x3": nn.Sequential(nn.Conv2d(512, 16, 3, padding=1), ABN(16)),
        "spatial_context_head": nn.Module(),  # SpatialGather_Module has no weights
        "spatial_ocr_head": ocr_module(16, 8),
        "head": nn.Conv2d(16, 19, 1),
    }
    return randomise(HeadStub(heads), seed)


STUBS = {"isa": isa_stub, "ocr": ocr_stub}


def openseg_key(key: str) -> str:
    """Our key -> openseg's in a DataParallel checkpoint (written independently of the loader)."""
    top = key.split(".")[0]
    if top in STEM:
        return f"module.backbone.resinit.{key}"
    if top in STAGES:
        return f"module.backbone.{key}"
    return f"module.{key}"


def openseg_state(model: nn.Module) -> OrderedDict:
    """``net.state_dict()`` of openseg's DataParallel model: OrderedDict with _metadata, no counts."""
    state = OrderedDict(
        (openseg_key(k), v.clone())
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    )
    state._metadata = OrderedDict({"": {"version": 1}, "module": {"version": 1}})
    return state


def save_legacy(obj, path) -> None:
    """The pre-1.6 torch.save format the released files were written in."""
    torch.save(obj, path, _use_new_zipfile_serialization=False)


@pytest.mark.parametrize("head", sorted(STUBS))
def test_openseg_checkpoint_loads_strictly(tmp_path, head: str) -> None:
    source, target = STUBS[head](1), STUBS[head](2)
    path = tmp_path / f"{head}net_deepbase_resnet101_dilated8_max_performance.pth"
    save_legacy({"config_dict": CONFIG, "state_dict": openseg_state(source)}, path)
    assert not torch.equal(source.conv1.weight, target.conv1.weight)

    assert load_weights(target, path) == []
    expected = source.state_dict()
    assert target.state_dict().keys() == expected.keys()
    for key, value in target.state_dict().items():
        assert torch.equal(value, expected[key]), key
    x = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))
    check_weights(STUBS[head](3), path)
    assert restore_weights(STUBS[head](3), path) == "full"
    assert sorted(read_state_dict(path)) == sorted(expected)


def test_legacy_openseg_file_is_read_with_weights_only(tmp_path, monkeypatch) -> None:
    path = tmp_path / "openseg.pth"
    save_legacy({"config_dict": CONFIG, "state_dict": openseg_state(isa_stub(1))}, path)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    content = checkpoint.load_checkpoint(path)
    assert calls == [True]
    assert content["config_dict"] == CONFIG
    assert next(iter(content["state_dict"])) == "module.backbone.resinit.conv1.weight"


def test_openseg_unknown_and_missing_keys_named_in_one_error(tmp_path) -> None:
    target = isa_stub(2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    state = openseg_state(isa_stub(1))
    del state["module.backbone.resinit.bn2.running_var"]
    del state["module.backbone.layer3.0.downsample.1.weight"]
    state["module.isa_head.9.weight"] = torch.zeros(3)
    path = tmp_path / "openseg.pth"
    save_legacy({"config_dict": CONFIG, "state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_weights(target, path)
    assert str(info.value).splitlines()[:3] == [
        f"checkpoint {path} (openseg.pytorch layout: backbone.resinit.* and backbone.* read as *) "
        "does not fit the model:",
        "  missing from the checkpoint (2): bn2.running_var, layer3.0.downsample.1.weight",
        "  not in the model (1): isa_head.9.weight",
    ]
    for key, value in target.state_dict().items():  # nothing half-loaded
        assert torch.equal(value, before[key]), key


def test_openseg_keys_landing_on_one_key_are_refused() -> None:
    state = {
        "module.backbone.resinit.conv1.weight": torch.zeros(1),
        "module.backbone.conv1.weight": torch.zeros(1),
    }
    with pytest.raises(CheckpointError) as info:
        load_weights(isa_stub(1), {"state_dict": state})
    assert str(info.value) == (
        "checkpoint <state_dict>: keys backbone.resinit.conv1.weight and backbone.conv1.weight "
        "both map to conv1.weight"
    )


def openseg_resnet101_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of openseg's deepbase_resnet101_dilated8 (inplace_abn), from its code."""
    shapes: dict[str, tuple[int, ...]] = {}

    def norm(name: str, width: int) -> None:
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{suffix}"] = (width,)

    for index, (in_ch, out_ch) in enumerate(((3, 64), (64, 64), (64, 128)), start=1):
        shapes[f"backbone.resinit.conv{index}.weight"] = (out_ch, in_ch, 3, 3)
        norm(f"backbone.resinit.bn{index}", out_ch)
    inplanes = 128
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), (3, 4, 23, 3)), start=1):
        for index in range(count):
            p = f"backbone.layer{stage}.{index}"
            shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            for bn, width in (("bn1", planes), ("bn2", planes), ("bn3", planes * 4)):
                norm(f"{p}.{bn}", width)
            if index == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                norm(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    return shapes


def test_openseg_resnet101_backbone_keys_fit_the_openseg_variant() -> None:
    """Every key of openseg's ResNet-101 backbone lands on ours with its shape (meta tensors)."""
    state = {
        f"module.{k}": torch.empty(shape, device="meta")
        for k, shape in openseg_resnet101_shapes().items()
    }
    with torch.device("meta"):
        model = DilatedResNet(101, norm_layer=ABN, variant="openseg")
    check_weights(model, {"config_dict": CONFIG, "state_dict": state})
    del state["module.backbone.layer3.22.bn3.running_mean"]
    with pytest.raises(
        CheckpointError, match=r"missing from the checkpoint \(1\): layer3\.22\.bn3"
    ):
        check_weights(model, {"config_dict": CONFIG, "state_dict": state})


# --- HRNet-OCR checkpoints ------------------------------------------------------------------------

# Our (openseg's) head names -> HRNet-OCR's (seg_hrnet_ocr.py), indices unchanged except below.
HRNET_HEADS = {
    "dsn_head": "aux_head",
    "conv_3x3": "conv3x3_ocr",
    "spatial_context_head": "ocr_gather_head",
    "spatial_ocr_head": "ocr_distri_head",
    "head": "cls_head",
}


def hrnet_ocr_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What HRNet-OCR's train.py saves: ``FullModel.state_dict()`` flat, ``model.``/``loss.``.

    Inside the OCR module its BNReLU is ``nn.Sequential(SyncBatchNorm, ReLU)``: each norm sits one
    level deeper (``f_pixel.1`` -> ``f_pixel.1.0``) and carries ``num_batches_tracked``.
    """
    norms = {name for name, m in model.named_modules() if isinstance(m, ABN)}
    state = {}
    for key, value in model.state_dict().items():
        module, _, param = key.rpartition(".")
        top, _, rest = module.partition(".")
        if top == "spatial_ocr_head" and module in norms:
            module = f"{module}.0"
            if param == "weight":
                state[f"model.{HRNET_HEADS[top]}.{rest}.0.num_batches_tracked"] = torch.tensor(7)
        if top in HRNET_HEADS:
            module = HRNET_HEADS[top] + module[len(top) :]
        state[f"model.{module}.{param}"] = value.clone()
    state["loss.criterion.weight"] = torch.rand(19)
    return state


def test_hrnet_ocr_checkpoint_loads_strictly(tmp_path) -> None:
    source, target = ocr_stub(1), ocr_stub(2)
    state = hrnet_ocr_state(source)
    # Spot checks of the layout the rule has to undo.
    assert "model.ocr_distri_head.object_context_block.f_pixel.3.0.running_var" in state
    assert "model.aux_head.3.weight" in state and "model.conv3x3_ocr.1.bias" in state
    path = tmp_path / "hrnet_ocr_cs_8162_torch11.pth"
    save_legacy(state, path)
    assert load_weights(target, path) == []
    for key, value in target.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_hrnet_ocr_missing_key_named_in_our_names(tmp_path) -> None:
    state = hrnet_ocr_state(ocr_stub(1))
    del state["model.ocr_distri_head.conv_bn_dropout.1.0.running_mean"]
    state["model.ocr_distri_head.extra.weight"] = torch.zeros(2)
    path = tmp_path / "hrnet_ocr.pth"
    save_legacy({"epoch": 3, "state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_weights(ocr_stub(2), path)
    assert str(info.value).splitlines()[:3] == [
        f"checkpoint {path} (HRNet-OCR layout: model.* read as *, OCR heads renamed to openseg's, "
        "loss.* dropped) does not fit the model:",
        "  missing from the checkpoint (1): spatial_ocr_head.conv_bn_dropout.1.running_mean",
        "  not in the model (1): spatial_ocr_head.extra.weight",
    ]
