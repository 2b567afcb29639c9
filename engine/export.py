"""Checkpoints for other runtimes: safetensors (weights + meta, no pickle) and ONNX.

The ONNX graph is the model in eval mode returning the final logits upsampled to the input
(``[B, C, H, W]``, bilinear with ``align_corners=True`` as in evaluation), with dynamic batch,
height and width. Both exporters refuse a model whose Python code turns the input size into
numbers (loops, ``if``, ``math.ceil`` on sizes) instead of writing a graph that only fits the
size it was traced at: ``torchscript`` (tracing) through torch's ``TracerWarning``, ``dynamo``
(``torch.export`` with ``Dim.DYNAMIC``) through its symbolic shapes. Before writing, the file is
run by onnxruntime (when installed) at three other sizes and compared with torch.
"""

from __future__ import annotations

import importlib.util
import io
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dataset.transforms import CAFFE_MEAN, IMAGENET_MEAN, IMAGENET_STD
from engine.cli import UserError
from engine.models import META_KEYS
from utils.checkpoint import save_safetensors
from utils.fileio import atomic_path
from utils.inference import final_logits

try:  # development dependencies (requirements-dev.txt): only ONNX export needs them
    import onnx
except ImportError:
    onnx = None
try:
    import onnxruntime as ort
except ImportError:
    ort = None

FORMATS = ("safetensors", "onnx")
EXPORTERS = ("torchscript", "dynamo")
TORCHSCRIPT_OPSET = 18
VERIFY_TOLERANCE = 1e-4
ONNX_PACKAGES = ("onnx", "onnxscript")
# A batch of 2 and a size of 64x96: large enough for every head, and no dimension is 0 or 1,
# sizes torch.export would specialise to constants.
DEFAULT_EXPORT_SIZE = (64, 96)


class ExportError(UserError):
    """A model that cannot be exported as asked (a missing package, an untraceable module)."""


def meta_header(meta: Mapping[str, Any]) -> dict[str, str]:
    """The model facts as the string table of a safetensors header or ONNX metadata."""
    return {key: str(meta[key]) for key in META_KEYS if meta.get(key) is not None}


def export_safetensors(model: nn.Module, meta: Mapping[str, Any], path: str | os.PathLike) -> None:
    """The model's state_dict and ``meta`` in one safetensors file, written atomically."""
    save_safetensors(model.state_dict(), path, meta_header(meta))


class LogitsAtInputSize(nn.Module):
    """The graph ONNX users get: normalised image ``[B, 3, H, W]`` -> logits ``[B, C, H, W]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = final_logits(self.model(image))
        return F.interpolate(logits, size=image.shape[2:], mode="bilinear", align_corners=True)


def normalization_metadata(mode: str) -> dict[str, str]:
    """How to prepare the ``image`` input (``dataset.transforms.normalize``), in words."""
    caffe = ",".join(f"{v:g}" for v in CAFFE_MEAN)
    texts = {
        "imagenet": "RGB in [0, 1], minus mean ({}), divided by std ({})".format(
            ",".join(f"{v:g}" for v in IMAGENET_MEAN), ",".join(f"{v:g}" for v in IMAGENET_STD)
        ),
        # The original OCNet's: BGR means subtracted from the RGB channels, kept for its weights.
        "caffe": f"RGB in [0, 255], minus ({caffe}) channel by channel",
        "openseg": f"BGR in [0, 255], minus ({caffe}) channel by channel",
    }
    return {"input": texts.get(mode, mode) + "; NCHW float32"}


def check_onnx_packages(exporter: str) -> None:
    needed = ONNX_PACKAGES if exporter == "dynamo" else ONNX_PACKAGES[:1]
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(
            f"ONNX export needs the package(s) {', '.join(missing)}: "
            "pip install -r requirements-dev.txt"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def trace(model: nn.Module, size: tuple[int, int] = DEFAULT_EXPORT_SIZE, name: str = "model"):
    """``torch.export`` of ``LogitsAtInputSize(model)`` with dynamic batch, height and width."""
    wrapper = LogitsAtInputSize(model).eval()
    sample = torch.zeros(2, 3, *size)
    dynamic = torch.export.Dim.DYNAMIC
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(
                wrapper,
                (sample,),
                dynamic_shapes={"image": {0: dynamic, 2: dynamic, 3: dynamic}},
                strict=False,
            )
    except Exception as error:  # torch.export raises many types; all mean "not traceable"
        raise ExportError(
            f"{name} cannot be exported with a dynamic input size: torch.export failed with "
            f"{_first_line(error)}"
        ) from error


def _dynamo_proto(model: nn.Module, size: tuple[int, int], name: str):
    exported = trace(model, size, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            exported,
            dynamo=True,
            input_names=["image"],
            output_names=["logits"],
            external_data=False,
            optimize=True,
            verbose=False,
        )
    return program.model_proto


def _torchscript_proto(model: nn.Module, size: tuple[int, int], name: str):
    """The tracing exporter, refusing any trace that turned a size into a Python number.

    Tracing records tensor operations on sizes (slices, reshapes, interpolation sizes) as graph
    operations, but a size that becomes a Python int, float or bool (``math.ceil``, ``range``,
    ``if``) is frozen at the traced value: torch says so with a ``TracerWarning``, here an
    error naming the line.
    """
    buffer = io.BytesIO()
    sample = torch.zeros(2, 3, *size)
    dims = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.onnx.export(
                LogitsAtInputSize(model).eval(),
                (sample,),
                buffer,
                dynamo=False,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": dims, "logits": dims},
                opset_version=TORCHSCRIPT_OPSET,
            )
        except Exception as error:
            raise ExportError(f"{name} cannot be traced for ONNX: {_first_line(error)}") from error
    places = {
        f"{os.path.relpath(w.filename)}:{w.lineno}"
        for w in caught
        if issubclass(w.category, torch.jit.TracerWarning)
    }
    # The project's lines say what to change; torch's own lines only where there are none.
    frozen = sorted(p for p in places if "site-packages" not in p) or sorted(places)
    if frozen:
        raise ExportError(
            f"{name} cannot be exported with a dynamic input size: the trace turned sizes into "
            f"Python numbers (frozen at the export size) at {', '.join(frozen)}"
        )
    return onnx.load_from_string(buffer.getvalue())


def verify_onnx(
    proto, model: nn.Module, sizes: list[tuple[int, int]], name: str = "model"
) -> list[float]:
    """Relative errors ``max |ort - torch| / max |torch|`` of onnxruntime against the model.

    Raises ``ExportError`` above ``VERIFY_TOLERANCE``; returns [] without onnxruntime.
    """
    if ort is None:
        return []
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    wrapper = LogitsAtInputSize(model).eval()
    generator = torch.Generator().manual_seed(0)
    errors = []
    for height, width in sizes:
        image = torch.randn(1, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = wrapper(image).numpy()
        actual = session.run(None, {"image": image.numpy()})[0]
        error = float(abs(actual - expected).max() / max(abs(expected).max(), 1e-12))
        if actual.shape != expected.shape or not error < VERIFY_TOLERANCE:
            raise ExportError(
                f"{name}: onnxruntime differs from torch at {height}x{width} "
                f"(shape {actual.shape} vs {expected.shape}, relative error {error:.2e})"
            )
        errors.append(error)
    return errors


def verification_sizes(size: tuple[int, int]) -> list[tuple[int, int]]:
    """Three sizes other than the export size, two not divisible by 8, one about twice as
    large: a graph that fixed ``h // s`` (Pyramid-OC's region size) at the export size fails
    there."""
    height, width = size
    return [(height + 8, width + 24), (height - 7, width + 5), (2 * height + 8, 2 * width - 7)]


def export_onnx(
    model: nn.Module,
    meta: Mapping[str, Any],
    path: str | os.PathLike,
    size: tuple[int, int] = DEFAULT_EXPORT_SIZE,
    exporter: str = "torchscript",
    verify: bool = True,
) -> None:
    """The model as an ONNX file (weights inside, atomically written) that onnx.checker accepts.

    Input ``image`` ``[batch, 3, height, width]`` (normalised as the metadata ``input`` says),
    output ``logits`` ``[batch, classes, height, width]``; the metadata also holds ``meta``.
    ``exporter``: ``torchscript`` (tracing; fast) or ``dynamo`` (``torch.export``; the exporter
    PyTorch develops, minutes for the larger heads on a small CPU). Either refuses a model
    whose graph would be fixed to the export size, as far as tracing warns of it and the
    check at other sizes shows. With ``verify`` (and onnxruntime installed) the file is run at
    three other sizes and compared with torch before it is written.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    check_onnx_packages(exporter)
    name = f"{meta.get('network')}_{meta.get('method')}"
    model = model.eval()
    with torch.no_grad():
        if exporter == "dynamo":
            proto = _dynamo_proto(model, size, name)
        else:
            proto = _torchscript_proto(model, size, name)
    info = {**meta_header(meta), **normalization_metadata(str(meta.get("normalize")))}
    onnx.helper.set_model_props(proto, info)
    onnx.checker.check_model(proto, full_check=True)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    static = [i for i in (0, 2, 3) if dims[i].HasField("dim_value")]
    if static:
        raise ExportError(f"{name}: the exported input kept static dimensions {static}")
    if verify:
        verify_onnx(proto, model, verification_sizes(size), name)
    with atomic_path(path) as tmp:
        onnx.save(proto, tmp)
