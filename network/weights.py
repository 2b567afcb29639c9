"""Loading weights into segmentation models: whole checkpoints, ImageNet backbones, partial reuse.

A model *is* the dilated ResNet (top-level ``conv1, bn1, conv2, bn2, conv3, bn3, layer1..layer4``)
plus its heads (``context``, ``cls``, ``dsn``; the baseline's ``layer5``, ``layer6``), as in the
original OCNet, so original checkpoints and the deep-stem ImageNet ResNet-101 it started from load
key for key. Every file is read with ``torch.load(weights_only=True)`` (see ``utils.checkpoint``).
Mismatches are collected and reported together, by key, in one ``CheckpointError``.

Checkpoints of other codebases are recognised by their keys and renamed by rule
(``FOREIGN_LAYOUTS``): openseg.pytorch's (``backbone.resinit.*``, ``backbone.*``) and HRNet-OCR's
(``model.*``, ``loss.*``). The renamed dict then meets the same strict key check as any other.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from utils.checkpoint import CheckpointError, load_checkpoint

from .hrnet import IMAGENET_ONLY_PREFIXES

__all__ = [
    "BACKBONE_MODULES",
    "FOREIGN_LAYOUTS",
    "CheckpointError",
    "ForeignLayout",
    "load_imagenet_backbone",
    "load_weights",
    "read_state_dict",
    "restore_weights",
]

# The deep-stem ResNet of the original (three 3x3 stem convs, then four stages).
BACKBONE_MODULES = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3") + tuple(
    f"layer{i}" for i in range(1, 5)
)
# Modules of ImageNet classification files that segmentation does not use.
CLASSIFIER_MODULES = ("fc", *IMAGENET_ONLY_PREFIXES)
# Wrappers that prefix every key: DataParallel / DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
MAX_LISTED = 12

StateDict = dict[str, torch.Tensor]
Source = str | os.PathLike | Mapping[str, torch.Tensor]


def _top(key: str) -> str:
    return key.split(".", 1)[0]


def _is_backbone(key: str, names: tuple[str, ...] = BACKBONE_MODULES) -> bool:
    return _top(key) in names


def _backbone_names(model: nn.Module) -> tuple[str, ...]:
    """Top-level modules an ImageNet file initialises: the segmentation models list theirs
    (``backbone_names``); a bare backbone is the original's deep-stem ResNet."""
    return tuple(getattr(model, "backbone_names", BACKBONE_MODULES))


def _is_classifier(key: str) -> bool:
    """ImageNet-only modules: the ResNet's ``fc``, HRNet's classification head."""
    return _top(key) in CLASSIFIER_MODULES


def _is_batch_count(key: str) -> bool:
    """``num_batches_tracked`` is bookkeeping, not a weight; the original ABN did not have it."""
    return key.rsplit(".", 1)[-1] == "num_batches_tracked"


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED])
    more = len(keys) - MAX_LISTED
    return f"{shown}, ... and {more} more" if more > 0 else shown


def _shape(shape: torch.Size) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _clean_state_dict(state: Mapping, name: str) -> StateDict:
    """Unwrap a project checkpoint ("model") or a {"state_dict": ...} file; strip wrapper prefixes."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint {name} holds a {type(state).__name__}, not a state_dict")
    for wrapper in ("model", "state_dict"):
        if isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    not_tensors = [str(k) for k, v in state.items() if not torch.is_tensor(v)]
    if not_tensors:
        raise CheckpointError(
            f"checkpoint {name} is not a state_dict: entries {_names(not_tensors)} are not tensors"
        )
    result = {str(k): v for k, v in state.items()}
    while result:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in result)), None)
        if prefix is None:
            break
        result = {k[len(prefix) :]: v for k, v in result.items()}
    return result


# --- checkpoints of other codebases ---------------------------------------------------------------


@dataclass(frozen=True)
class ForeignLayout:
    """Another codebase's checkpoint keys: how to recognise them and the rules renaming them to ours.

    ``convert`` drops keys under ``drop``, rewrites the first matching prefix of ``prefixes``
    (``(theirs, ours)``, in order) and then applies the regex rewrites ``patterns`` in order. Keys
    no rule touches are kept as they are: the strict comparison names whatever does not fit.
    """

    name: str
    summary: str  # the rules in a few words, shown with every error about such a file
    detect: Callable[[Mapping[str, torch.Tensor]], bool]
    drop: tuple[str, ...] = ()
    prefixes: tuple[tuple[str, str], ...] = ()
    patterns: tuple[tuple[str, str], ...] = ()

    def rename(self, key: str) -> str:
        for theirs, ours in self.prefixes:
            if key.startswith(theirs):
                key = ours + key[len(theirs) :]
                break
        for pattern, replacement in self.patterns:
            key = re.sub(pattern, replacement, key)
        return key

    def convert(self, state: StateDict, name: str) -> StateDict:
        result: StateDict = {}
        source: dict[str, str] = {}
        for key, value in state.items():
            if key.startswith(self.drop):
                continue
            ours = self.rename(key)
            if ours in result:  # two keys of the file would land on one key of the model
                raise CheckpointError(
                    f"checkpoint {name}: keys {source[ours]} and {key} both map to {ours}"
                )
            result[ours], source[ours] = value, key
        return result


def _is_openseg(state: Mapping[str, torch.Tensor]) -> bool:
    """openseg.pytorch models hold their backbone as ``self.backbone``; ours *are* the backbone."""
    return any(key.startswith("backbone.") for key in state)


def _is_hrnet_ocr(state: Mapping[str, torch.Tensor]) -> bool:
    """HRNet-OCR saves its ``FullModel(model, loss)`` wrapper: every key under model. or loss."""
    return any(k.startswith("model.") for k in state) and all(
        k.startswith(("model.", "loss.")) for k in state
    )


# openseg.pytorch (lib/models/nets/isanet.py, ocrnet.py over backbones/resnet/resnet_backbone.py):
# the deep stem is ``backbone.resinit.{conv,bn}{1,2,3}``, the stages ``backbone.layer1..4``. Heads
# (dsn_head, isa_head, cls_head, conv_3x3, spatial_ocr_head, head) keep openseg's names, which the
# project's isa_oc_dsn / ocr_dsn models use. ``module.`` (DataParallel) is stripped before.
OPENSEG = ForeignLayout(
    name="openseg.pytorch",
    summary="backbone.resinit.* and backbone.* read as *",
    detect=_is_openseg,
    prefixes=(("backbone.resinit.", ""), ("backbone.", "")),
)

# HRNet-OCR (HRNet-Semantic-Segmentation, branch HRNet-OCR, lib/models/seg_hrnet_ocr.py): heads are
# renamed to openseg's. aux_head (conv, BN, ReLU, conv) and conv3x3_ocr (conv, BN, ReLU) have
# their weights at the indices of openseg's dsn_head (conv, BNReLU, Dropout, conv) and conv_3x3
# (conv, BNReLU); inside the OCR module HRNet's BNReLU is nn.Sequential(BN, ReLU), openseg's one
# activated norm, so ``f_pixel.1.0.weight`` becomes ``f_pixel.1.weight``. ocr_gather_head has no
# weights. loss.* are the criterion's buffers (class weights).
HRNET_OCR = ForeignLayout(
    name="HRNet-OCR",
    summary="model.* read as *, OCR heads renamed to openseg's, loss.* dropped",
    detect=_is_hrnet_ocr,
    drop=("loss.",),
    prefixes=(
        ("model.aux_head.", "dsn_head."),
        ("model.conv3x3_ocr.", "conv_3x3."),
        ("model.ocr_gather_head.", "spatial_context_head."),
        ("model.ocr_distri_head.", "spatial_ocr_head."),
        ("model.cls_head.", "head."),
        ("model.", ""),
    ),
    patterns=((r"^(spatial_ocr_head\..+\.\d+)\.0\.(\w+)$", r"\1.\2"),),
)

# Tried in order; the first whose ``detect`` accepts the (unwrapped) keys converts them.
FOREIGN_LAYOUTS: list[ForeignLayout] = [OPENSEG, HRNET_OCR]


def _read_any(state: Mapping, name: str) -> tuple[StateDict, str]:
    """Unwrap ``state`` and rename a foreign layout's keys; the name says which layout was read."""
    result = _clean_state_dict(state, name)
    layout = next((layout for layout in FOREIGN_LAYOUTS if layout.detect(result)), None)
    if layout is None:
        return result, name
    return layout.convert(result, name), f"{name} ({layout.name} layout: {layout.summary})"


def _read_file(path: str | os.PathLike) -> tuple[StateDict, str]:
    return _read_any(load_checkpoint(path), os.fspath(path))


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Read a weights file as ``{key: tensor}`` in the project's names.

    Project checkpoints, plain or DDP state_dicts, and the layouts of ``FOREIGN_LAYOUTS``.
    """
    return _read_file(path)[0]


def _source(source: Source) -> tuple[StateDict, str]:
    if isinstance(source, Mapping):
        return _read_any(source, "<state_dict>")
    return _read_file(source)


def _compare(
    model_state: Mapping[str, torch.Tensor], state: StateDict, keys: set[str]
) -> tuple[list[str], list[str], list[str]]:
    """Missing, unexpected and wrong-shape keys among ``keys`` (batch counters never count)."""
    missing = sorted(k for k in keys if k not in state and not _is_batch_count(k))
    unexpected = sorted(k for k in state if k not in model_state and not _is_batch_count(k))
    wrong = sorted(k for k in keys if k in state and state[k].shape != model_state[k].shape)
    return missing, unexpected, wrong


def _class_count_hint(
    model_state: Mapping[str, torch.Tensor], state: StateDict, wrong: list[str]
) -> str | None:
    """Shapes differing only in the output channels of the classifiers mean another class count."""
    pairs = set()
    for key in wrong:
        theirs, ours = state[key].shape, model_state[key].shape
        if len(theirs) != len(ours) or len(ours) == 0 or theirs[1:] != ours[1:]:
            return None
        pairs.add((theirs[0], ours[0]))
    if len(pairs) != 1:
        return None
    theirs, ours = pairs.pop()
    return (
        f"the classifier has {theirs} outputs in the checkpoint and {ours} in the model: it was "
        "trained for another class count (check --dataset / --num-classes); to reuse everything "
        "else, load it partially"
    )


def _residual_layout(state: Mapping[str, torch.Tensor]) -> tuple[set[str], bool]:
    """The residual blocks present (``layer3.22`` ...) and whether they are bottlenecks."""
    blocks = {".".join(k.split(".")[:2]) for k in state if k.startswith("layer")}
    blocks = {b for b in blocks if _is_backbone(b)}
    bottleneck = any(k.split(".")[2:3] == ["conv3"] for k in state if _is_backbone(k))
    return blocks, bottleneck


def _hints(
    model_state: Mapping[str, torch.Tensor],
    state: StateDict,
    missing: list[str],
    unexpected: list[str],
    wrong: list[str],
    full: bool,
) -> list[str]:
    hints = []
    stem = state.get("conv1.weight")
    if stem is not None and stem.dim() == 4 and stem.shape[-1] == 7:
        hints.append(
            "conv1 is a single 7x7 stem (torchvision layout); OCNet needs the deep-stem ResNet "
            "with three 3x3 stem convs (see pretrained_model/README.md)"
        )
    if wrong and not (missing or unexpected):
        hint = _class_count_hint(model_state, state, wrong)
        if hint:
            hints.append(hint)
    if _residual_layout(state) != _residual_layout(model_state):
        hints.append("the residual blocks differ: is it a ResNet of another depth (--network)?")
    if not full:
        if any(not _is_backbone(k) for k in state):
            hints.append("it holds head keys: load it with load_weights instead")
    elif state and all(_is_backbone(k) or _top(k) == "fc" for k in state):
        hints.append(
            "the file holds only a backbone: load it with load_imagenet_backbone (--restore-from)"
        )
    elif any(not _is_backbone(k) for k in missing + unexpected):
        theirs = sorted({_top(k) for k in state if not _is_backbone(k)})
        ours = sorted({_top(k) for k in model_state if not _is_backbone(k)})
        hints.append(
            f"head keys differ (checkpoint heads: {', '.join(theirs) or 'none'}; model heads: "
            f"{', '.join(ours) or 'none'}): was it trained with another --method?"
        )
    return hints


def _mismatch_message(
    header: str,
    model_state: Mapping[str, torch.Tensor],
    state: StateDict,
    missing: list[str],
    unexpected: list[str],
    wrong: list[str],
    full: bool = True,
) -> str:
    lines = [header]
    if missing:
        lines.append(f"  missing from the checkpoint ({len(missing)}): {_names(missing)}")
    if unexpected:
        lines.append(f"  not in the model ({len(unexpected)}): {_names(unexpected)}")
    if wrong:
        shapes = [
            f"{k} (checkpoint {_shape(state[k].shape)}, model {_shape(model_state[k].shape)})"
            for k in wrong
        ]
        lines.append(f"  wrong shape ({len(wrong)}): {_names(shapes)}")
    lines += [f"  hint: {h}" for h in _hints(model_state, state, missing, unexpected, wrong, full)]
    return "\n".join(lines)


def _copy_into(model: nn.Module, state: StateDict) -> None:
    """Load the already-checked ``state`` (a subset of the model's keys) into ``model``."""
    result = model.load_state_dict(state, strict=False)
    stray = [k for k in result.unexpected_keys if not _is_batch_count(k)]
    if stray:  # _compare filtered these out; reaching here would be a bug, not a user error.
        raise RuntimeError(f"unexpected keys survived the key check: {stray}")


def _mismatches(
    model_state: StateDict, state: StateDict, name: str, strict: bool
) -> tuple[list[str], list[str], list[str]]:
    """Missing, unexpected and wrong-shape keys; with ``strict`` any of them raises."""
    missing, unexpected, wrong = _compare(model_state, state, set(model_state))
    if strict and (missing or unexpected or wrong):
        header = f"checkpoint {name} does not fit the model:"
        raise CheckpointError(
            _mismatch_message(header, model_state, state, missing, unexpected, wrong)
        )
    return missing, unexpected, wrong


def _load(model: nn.Module, state: StateDict, name: str, partial: bool) -> list[str]:
    model_state = model.state_dict()
    missing, unexpected, wrong = _mismatches(model_state, state, name, strict=not partial)
    matching = {k: v for k, v in state.items() if k in model_state and k not in wrong}
    if not any(not _is_batch_count(k) for k in matching):
        raise CheckpointError(f"checkpoint {name} shares no weights with the model")
    _copy_into(model, matching)
    skipped = sorted(set(missing) | set(unexpected) | set(wrong))
    if skipped:
        header = f"checkpoint {name} loaded partially; these keys were skipped:"
        message = _mismatch_message(header, model_state, state, missing, unexpected, wrong)
        warnings.warn(message, stacklevel=3)
    return skipped


def check_weights(model: nn.Module, path_or_state_dict: Source) -> None:
    """Raise ``CheckpointError`` unless the checkpoint fits ``model`` key for key, shape for shape.

    Copies nothing, so ``model`` may be built on the meta device: a cheap check of ``--ckpt``
    before any process starts, without materialising the model twice.
    """
    state, name = _source(path_or_state_dict)
    _mismatches(model.state_dict(), state, name, strict=True)


def load_weights(model: nn.Module, path_or_state_dict: Source, partial: bool = False) -> list[str]:
    """Load a whole-model checkpoint; every key and shape must match unless ``partial``.

    With ``partial=True`` the matching keys load and the rest (e.g. the classifiers of a model for
    another class count) keep their current values, listed in a warning and returned.
    """
    state, name = _source(path_or_state_dict)
    return _load(model, state, name, partial)


def _load_backbone(model: nn.Module, state: StateDict, name: str) -> None:
    state = {k: v for k, v in state.items() if not _is_classifier(k) and not _is_batch_count(k)}
    model_state = model.state_dict()
    names = _backbone_names(model)
    backbone = {k for k in model_state if _is_backbone(k, names)}
    if not backbone:
        raise CheckpointError(
            f"cannot load {name}: the model has no backbone modules ({', '.join(names)})"
        )
    missing, unexpected, wrong = _compare(model_state, state, backbone)
    unexpected = sorted(set(unexpected) | {k for k in state if not _is_backbone(k, names)})
    if missing or unexpected or wrong:
        header = f"checkpoint {name} does not fit the model's backbone:"
        raise CheckpointError(
            _mismatch_message(header, model_state, state, missing, unexpected, wrong, full=False)
        )
    _copy_into(model, state)


def load_imagenet_backbone(model: nn.Module, path: str | os.PathLike) -> None:
    """Load an ImageNet classification file into the model's backbone; heads keep their init.

    The deep-stem ResNet the original trained from (keys ``conv1 .. bn3``, ``layer1 .. layer4``,
    ``fc``) or HRNet-Image-Classification's ``hrnetv2_w*_imagenet_pretrained.pth`` (the official
    backbone names, plus ``incre_modules``, ``downsamp_modules``, ``final_layer``,
    ``classifier``). The classifiers and ``num_batches_tracked`` are ignored. Every backbone key
    of the model must be present with the right shape.
    """
    _load_backbone(model, *_read_file(path))


def restore_weights(model: nn.Module, path: str | os.PathLike, partial: bool = False) -> str:
    """Initialise for training from ``--restore-from``: a whole model if the file has heads.

    Returns ``"full"`` or ``"backbone"``, saying which was loaded. A file with keys beyond the
    backbone and ``fc`` is a segmentation checkpoint (``load_weights``, strict unless
    ``partial``); otherwise it is an ImageNet backbone (``load_imagenet_backbone``).
    """
    state, name = _read_file(path)
    names = _backbone_names(model)
    if any(not _is_backbone(k, names) and not _is_classifier(k) for k in state):
        _load(model, state, name, partial)
        return "full"
    _load_backbone(model, state, name)
    return "backbone"
