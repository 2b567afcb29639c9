"""Loading weights (network.weights) and reading checkpoint files safely (utils.checkpoint)."""

from __future__ import annotations

import copy
import functools
import os
import pickle

import pytest
import torch

import network.weights as weights_module
from network import get_segmentation_model, model_names
from network.weights import (
    FOREIGN_LAYOUTS,
    CheckpointError,
    ForeignLayout,
    check_weights,
    load_imagenet_backbone,
    load_weights,
    read_state_dict,
    restore_weights,
)
from utils import checkpoint

SMALL = "resnet18_base_oc_dsn"
CLASSIFIER_KEYS = ["cls.bias", "cls.weight", "dsn.3.bias", "dsn.3.weight"]


@functools.cache
def _random_model(name: str, seed: int, num_classes: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = get_segmentation_model(name, num_classes=num_classes)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand_like(tensor) + 0.5 if "running_var" in key else None
                tensor.copy_(values if values is not None else torch.randn_like(tensor) * 0.1)
    return model.eval()


def make_model(name: str = SMALL, seed: int = 0, num_classes: int = 19) -> torch.nn.Module:
    """A fresh model whose every float tensor (weights and BN statistics) is random for ``seed``."""
    return copy.deepcopy(_random_model(name, seed, num_classes))


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def outputs(model: torch.nn.Module) -> list[torch.Tensor]:
    torch.manual_seed(123)
    image = torch.randn(1, 3, 17, 17)
    with torch.no_grad():
        return model(image)


def assert_same_state(model: torch.nn.Module, expected: dict[str, torch.Tensor], keys=None) -> None:
    state = model.state_dict()
    for key in keys if keys is not None else expected:
        assert torch.equal(state[key], expected[key]), key


def deep_stem_imagenet_shapes(depth: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the original's deep-stem ImageNet ResNet, written out from its definition.

    Stem convs 3-64-64-128 (3x3, no bias); each block's first member downsamples when the width
    changes; BN entries weight/bias/running_mean/running_var plus the num_batches_tracked that files
    saved by newer torch versions carry; an ImageNet classifier ``fc``.
    """
    bottleneck = depth >= 50
    blocks = {18: (2, 2, 2, 2), 101: (3, 4, 23, 3)}[depth]
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(name: str, width: int) -> None:
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{suffix}"] = (width,)
        shapes[f"{name}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, 3, 3, 3)
    bn("bn1", 64)
    shapes["conv2.weight"] = (64, 64, 3, 3)
    bn("bn2", 64)
    shapes["conv3.weight"] = (128, 64, 3, 3)
    bn("bn3", 128)
    inplanes = 128
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        out = planes * (4 if bottleneck else 1)
        for index in range(count):
            prefix = f"layer{stage}.{index}"
            if bottleneck:
                shapes[f"{prefix}.conv1.weight"] = (planes, inplanes, 1, 1)
                shapes[f"{prefix}.conv2.weight"] = (planes, planes, 3, 3)
                shapes[f"{prefix}.conv3.weight"] = (out, planes, 1, 1)
                bn(f"{prefix}.bn1", planes)
                bn(f"{prefix}.bn2", planes)
                bn(f"{prefix}.bn3", out)
            else:
                shapes[f"{prefix}.conv1.weight"] = (planes, inplanes, 3, 3)
                shapes[f"{prefix}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{prefix}.bn1", planes)
                bn(f"{prefix}.bn2", planes)
            if index == 0 and inplanes != out:
                shapes[f"{prefix}.downsample.0.weight"] = (out, inplanes, 1, 1)
                bn(f"{prefix}.downsample.1", out)
            inplanes = out
    shapes["fc.weight"] = (1000, inplanes)
    shapes["fc.bias"] = (1000,)
    return shapes


def imagenet_file(path, depth: int = 18, drop=(), change=None, legacy: bool = False) -> dict:
    """Write a random ImageNet backbone file; return its tensors."""
    generator = torch.Generator().manual_seed(depth)
    state = {}
    for key, shape in deep_stem_imagenet_shapes(depth).items():
        if key in drop:
            continue
        shape = (change or {}).get(key, shape)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        else:
            state[key] = torch.rand(shape, generator=generator) + 0.5
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return state


# --- whole-model checkpoints ----------------------------------------------------------------------


def test_module_prefixed_checkpoint_gives_identical_outputs(tmp_path):
    source, target = make_model(seed=1), make_model(seed=2)
    assert not torch.equal(outputs(source)[1], outputs(target)[1])
    path = tmp_path / "dp.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    assert load_weights(target, path) == []
    for ours, theirs in zip(outputs(target), outputs(source)):
        assert torch.equal(ours, theirs)


def test_project_checkpoint_and_state_dict_wrappers_load(tmp_path):
    source = make_model(seed=3)
    expected = snapshot(source)
    project = {
        "model": source.state_dict(),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
        "scaler": {},
        "iteration": 40,
        "rng": {"torch": torch.get_rng_state(), "python": [3, [1, 2, 3], None]},
        "args": {"method": "base_oc_dsn", "lr": 0.01},
        "metrics": {"mIoU": 0.5},
    }
    for name, content in [
        ("project.pth", project),
        ("wrapped.pth", {"state_dict": {f"module.{k}": v for k, v in expected.items()}}),
    ]:
        torch.save(content, tmp_path / name)
        target = make_model(seed=4)
        load_weights(target, tmp_path / name)
        assert_same_state(target, expected)
        assert restore_weights(make_model(seed=4), tmp_path / name) == "full"


def test_read_state_dict_strips_wrappers_and_accepts_in_memory_dict(tmp_path):
    weight = torch.arange(4.0)
    torch.save({"model": {"module._orig_mod.conv1.weight": weight}}, tmp_path / "c.pth")
    state = read_state_dict(tmp_path / "c.pth")
    assert list(state) == ["conv1.weight"] and torch.equal(state["conv1.weight"], weight)
    source, target = make_model(seed=5), make_model(seed=6)
    load_weights(target, {f"module.{k}": v for k, v in source.state_dict().items()})
    assert_same_state(target, snapshot(source))


def test_missing_unexpected_and_wrong_shape_keys_named_in_one_error(tmp_path):
    source, target = make_model(seed=1), make_model(seed=2)
    before = snapshot(target)
    state = dict(source.state_dict())
    del state["cls.weight"]
    state["extra.weight"] = torch.zeros(2)
    state["dsn.0.bias"] = torch.zeros(7)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_weights(target, path)
    lines = str(info.value).splitlines()
    assert lines[:4] == [
        f"checkpoint {path} does not fit the model:",
        "  missing from the checkpoint (1): cls.weight",
        "  not in the model (1): extra.weight",
        "  wrong shape (1): dsn.0.bias (checkpoint [7], model [128])",
    ]
    assert_same_state(target, before)  # nothing half-loaded


def test_check_weights_on_a_meta_model_gives_the_load_error(tmp_path):
    """The pre-flight check needs no real weights: a meta-device model gives the same verdict."""
    source = make_model(seed=1)
    good, bad = tmp_path / "good.pth", tmp_path / "bad.pth"
    torch.save(source.state_dict(), good)
    state = dict(source.state_dict())
    state["dsn.0.bias"] = torch.zeros(7)
    torch.save(state, bad)
    with torch.device("meta"):
        meta_model = get_segmentation_model(SMALL)
    check_weights(meta_model, good)
    with pytest.raises(CheckpointError) as checked:
        check_weights(meta_model, bad)
    with pytest.raises(CheckpointError) as loaded:
        load_weights(make_model(seed=2), bad)
    assert str(checked.value) == str(loaded.value)
    assert "wrong shape (1): dsn.0.bias (checkpoint [7], model [128])" in str(checked.value)


def test_class_count_mismatch_has_hint_and_loads_partially(tmp_path):
    source, target = make_model(seed=1, num_classes=21), make_model(seed=2, num_classes=19)
    before, expected = snapshot(target), snapshot(source)
    path = tmp_path / "ade.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_weights(target, path)
    message = str(info.value)
    assert (
        "  wrong shape (4): cls.bias (checkpoint [21], model [19]), cls.weight (checkpoint"
        in message
    )
    assert "dsn.3.weight (checkpoint [21, 128, 1, 1], model [19, 128, 1, 1])" in message
    assert message.splitlines()[-1] == (
        "  hint: the classifier has 21 outputs in the checkpoint and 19 in the model: it was "
        "trained for another class count (check --dataset / --num-classes); to reuse everything "
        "else, load it partially"
    )
    assert_same_state(target, before)

    with pytest.warns(UserWarning, match="loaded partially; these keys were skipped") as record:
        skipped = load_weights(target, path, partial=True)
    assert skipped == CLASSIFIER_KEYS
    assert all(key in str(record[0].message) for key in CLASSIFIER_KEYS)
    assert_same_state(target, before, CLASSIFIER_KEYS)
    assert_same_state(target, expected, [k for k in expected if k not in CLASSIFIER_KEYS])


def test_other_method_gets_method_hint(tmp_path):
    path = tmp_path / "baseline.pth"
    torch.save(make_model("resnet18_baseline").state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_weights(make_model(), path)
    message = str(info.value)
    assert "  missing from the checkpoint (" in message and "cls.weight" in message
    assert "layer5.0.weight" in message and "layer6.weight" in message
    assert message.splitlines()[-1] == (
        "  hint: head keys differ (checkpoint heads: layer5, layer6; model heads: cls, context, "
        "dsn): was it trained with another --method?"
    )


def test_partial_load_needs_some_common_key(tmp_path):
    torch.save({"unrelated.weight": torch.zeros(1)}, tmp_path / "u.pth")
    with pytest.raises(CheckpointError, match="u.pth shares no weights with the model"):
        load_weights(make_model(), tmp_path / "u.pth", partial=True)


def test_file_that_is_not_a_state_dict(tmp_path):
    torch.save({"model": {"conv1.weight": torch.zeros(1), "step": 3}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError) as info:
        read_state_dict(tmp_path / "odd.pth")
    assert str(info.value) == (
        f"checkpoint {tmp_path / 'odd.pth'} is not a state_dict: entries step are not tensors"
    )
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list, not a state_dict"):
        read_state_dict(tmp_path / "list.pth")


# --- ImageNet backbones ---------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_imagenet_backbone_loads_and_heads_keep_init(tmp_path, legacy):
    model = make_model(seed=7)
    before = snapshot(model)
    path = tmp_path / "resnet18-imagenet.pth"
    weights = imagenet_file(path, depth=18, legacy=legacy)
    load_imagenet_backbone(model, path)
    state = model.state_dict()
    backbone = [k for k in weights if not k.startswith("fc.") and "num_batches" not in k]
    assert sorted(
        k
        for k in state
        if k.split(".")[0] in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")
        or k.startswith("layer")
    ) == sorted(backbone)
    for key in backbone:
        assert torch.equal(state[key], weights[key]), key
    heads = [k for k in state if k not in backbone]
    assert heads and any(k.startswith("context.") for k in heads)
    assert_same_state(model, before, heads)


def test_resnet101_layout_matches_original_imagenet_file(tmp_path):
    model = get_segmentation_model("resnet101_baseline")
    path = tmp_path / "resnet101-imagenet.pth"
    weights = imagenet_file(path, depth=101)
    assert restore_weights(model, path) == "backbone"
    state = model.state_dict()
    assert torch.equal(state["layer3.22.conv3.weight"], weights["layer3.22.conv3.weight"])
    assert torch.equal(
        state["layer1.0.downsample.1.running_var"], weights["layer1.0.downsample.1.running_var"]
    )


def test_imagenet_backbone_missing_and_wrong_shape_named(tmp_path):
    model = make_model(seed=7)
    before = snapshot(model)
    path = tmp_path / "bad.pth"
    imagenet_file(path, drop={"layer4.1.conv2.weight"}, change={"layer2.0.bn1.bias": (65,)})
    with pytest.raises(CheckpointError) as info:
        load_imagenet_backbone(model, path)
    assert str(info.value).splitlines() == [
        f"checkpoint {path} does not fit the model's backbone:",
        "  missing from the checkpoint (1): layer4.1.conv2.weight",
        "  wrong shape (1): layer2.0.bn1.bias (checkpoint [65], model [128])",
    ]
    assert_same_state(model, before)


def test_imagenet_backbone_of_other_depth_gets_depth_hint(tmp_path):
    path = tmp_path / "shallower.pth"
    last_block = {k for k in deep_stem_imagenet_shapes(18) if k.startswith("layer4.1.")}
    imagenet_file(path, drop=last_block)
    with pytest.raises(CheckpointError) as info:
        load_imagenet_backbone(make_model(), path)
    lines = str(info.value).splitlines()
    assert lines[1].startswith("  missing from the checkpoint (10): layer4.1.bn1.bias, ")
    assert (
        lines[-1]
        == "  hint: the residual blocks differ: is it a ResNet of another depth (--network)?"
    )


def test_torchvision_single_stem_refused_with_hint(tmp_path):
    path = tmp_path / "torchvision.pth"
    stem = {"conv2.weight", "conv3.weight"} | {
        f"bn{i}.{s}"
        for i in (2, 3)
        for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }
    imagenet_file(path, drop=stem, change={"conv1.weight": (64, 3, 7, 7)})
    with pytest.raises(CheckpointError) as info:
        restore_weights(make_model(), path)
    message = str(info.value)
    assert "conv2.weight" in message and "bn3.running_var" in message
    assert "conv1.weight (checkpoint [64, 3, 7, 7], model [64, 3, 3, 3])" in message
    assert "hint: conv1 is a single 7x7 stem (torchvision layout)" in message


def test_imagenet_loader_refuses_segmentation_checkpoint(tmp_path):
    path = tmp_path / "seg.pth"
    torch.save(make_model(seed=1).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_imagenet_backbone(make_model(seed=2), path)
    assert "cls.weight" in str(info.value)
    assert str(info.value).endswith("hint: it holds head keys: load it with load_weights instead")


# --- unsafe and damaged files ---------------------------------------------------------------------


class RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class CreatesFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("payload", [RunsShell, CreatesFile])
@pytest.mark.parametrize("container", ["torch.save", "raw-pickle"])
def test_code_running_pickle_is_refused_and_never_runs(tmp_path, payload, container):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    content = {"conv1.weight": torch.zeros(1), "x": payload(marker)}
    if container == "torch.save":
        torch.save(content, path)
    else:
        path.write_bytes(pickle.dumps(content, protocol=2))
        # The payload is real: plain unpickling does run it (on a copy of the marker path).
        pickle.loads(pickle.dumps(payload(tmp_path / "proof"), protocol=2))
        assert (tmp_path / "proof").exists()
    loaders = [
        checkpoint.load_checkpoint,
        read_state_dict,
        lambda p: load_weights(make_model(), p),
        lambda p: restore_weights(make_model(), p),
        lambda p: load_imagenet_backbone(make_model(), p),
    ]
    for load in loaders:
        with pytest.raises(CheckpointError) as info:
            load(path)
        message = str(info.value)
        assert message.startswith(f"checkpoint {path} was refused by torch.load(weights_only=True)")
        assert "weights_only=False" not in message
    assert not marker.exists()


def test_refusal_names_the_offending_global(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": RunsShell(tmp_path / "marker")}, path)
    with pytest.raises(
        CheckpointError, match=r"unsupported GLOBAL posix\.system|unsupported GLOBAL nt\.system"
    ):
        checkpoint.load_checkpoint(path)


def test_truncated_missing_and_empty_files(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(make_model().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_weights(make_model(), path)
    assert str(info.value).startswith(
        f"checkpoint {path} could not be read; it is truncated or corrupt ("
    )

    legacy = tmp_path / "cut-legacy.pth"
    torch.save({"w": torch.zeros(100)}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="cut-legacy.pth could not be read; it is truncated"):
        read_state_dict(legacy)

    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(
        CheckpointError, match="empty.pth could not be read; it is truncated or corrupt"
    ):
        read_state_dict(tmp_path / "empty.pth")

    with pytest.raises(CheckpointError) as info:
        restore_weights(make_model(), tmp_path / "nope.pth")
    assert str(info.value) == f"checkpoint {tmp_path / 'nope.pth'} does not exist"
    with pytest.raises(CheckpointError, match="is not a file"):
        read_state_dict(tmp_path)


# --- foreign layouts (openseg.pytorch, HRNet-OCR; details in tests/test_openseg_weights.py) ------


def test_no_project_model_is_taken_for_a_foreign_layout():
    """Project checkpoints must never be renamed: no model's keys may look like another codebase's."""
    for name in model_names():
        with torch.device("meta"):
            state = get_segmentation_model(name).state_dict()
        assert [layout.name for layout in FOREIGN_LAYOUTS if layout.detect(state)] == [], name


def test_foreign_layout_hook_takes_a_new_layout(tmp_path, monkeypatch):
    """A further codebase is one more ``ForeignLayout`` in the list: detect, drop, rename."""
    other = ForeignLayout(
        name="other",
        summary="net.* read as *",
        detect=lambda state: all(k.startswith(("net.", "ema.")) for k in state),
        drop=("ema.",),
        prefixes=(("net.", ""),),
    )
    monkeypatch.setattr(weights_module, "FOREIGN_LAYOUTS", [*FOREIGN_LAYOUTS, other])
    source, target = make_model(seed=1), make_model(seed=2)
    state = {f"net.{k}": v for k, v in source.state_dict().items()}
    state["ema.decay"] = torch.tensor(0.99)
    torch.save(state, tmp_path / "other.pth", _use_new_zipfile_serialization=False)
    assert load_weights(target, tmp_path / "other.pth") == []
    assert_same_state(target, snapshot(source))
    del state["net.cls.bias"]
    with pytest.raises(CheckpointError) as info:
        load_weights(target, state)
    assert str(info.value).splitlines()[:2] == [
        "checkpoint <state_dict> (other layout: net.* read as *) does not fit the model:",
        "  missing from the checkpoint (1): cls.bias",
    ]
