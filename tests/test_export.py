"""Checkpoints that know their model, safetensors files every tool reads, and ONNX export.

ONNX files are compared with torch by onnxruntime at two sizes other than the export size (one
not divisible by 8), for every method of the method table.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from test_evaluate import MODEL, make_model, make_tree

import evaluate
import export
import generate_submit
from engine.cli import UserError
from engine.export import ExportError, export_onnx
from engine.models import meta_from_checkpoint, resolve_model_args
from inplace_abn import ABN
from network import METHODS, get_segmentation_model
from network.weights import read_state_dict, restore_weights
from oc_module import ObjectContext, RegionObjectContext
from utils.checkpoint import CheckpointError, is_safetensors, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

META = {
    "network": MODEL[0],
    "method": MODEL[1],
    "num_classes": 19,
    "dataset": "cityscapes",
    "normalize": "caffe",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A labelled tree, a model, and its weights as a bare state_dict and with meta."""
    root = tmp_path_factory.mktemp("export")
    list_path = make_tree(str(root))
    images = [root / line.split()[0] for line in Path(list_path).read_text().splitlines()]
    model = make_model(images)
    bare, with_meta = root / "bare.pth", root / "with_meta.pth"
    torch.save(model.state_dict(), bare)
    torch.save({"model": model.state_dict(), "meta": META}, with_meta)
    return {"root": str(root), "list": list_path, "model": model, "bare": bare, "meta": with_meta}


def run_export(*args: str) -> None:
    export.main(export.get_args_parser().parse_args(list(args)))


def data_args(setup, out, ckpt):
    return [
        "--ckpt", str(ckpt), "--data-dir", setup["root"], "--data-list", setup["list"],
        "--device", "cpu", "--workers", "0", "--output-path", str(out),
    ]  # fmt: skip


# --- the checkpoint knows its model ------------------------------------------------------------


def namespace(**given):
    return argparse.Namespace(
        **{
            key: given.get(key)
            for key in ("network", "method", "num_classes", "dataset", "normalize")
        }
    )


def test_meta_fills_unset_flags_and_given_flags_win(setup):
    args = namespace()
    resolve_model_args(args, setup["meta"])
    assert vars(args) == META
    args = namespace(method="asp_oc_dsn", normalize="imagenet")
    resolve_model_args(args, setup["meta"])
    assert (args.network, args.method, args.normalize) == (MODEL[0], "asp_oc_dsn", "imagenet")


def test_a_file_without_meta_needs_the_model_flags(setup):
    with pytest.raises(UserError, match="does not record its model.*give --network and --method"):
        resolve_model_args(namespace(), setup["bare"])
    args = namespace(network=MODEL[0], method=MODEL[1])
    resolve_model_args(args, setup["bare"])
    assert (args.dataset, args.normalize, args.num_classes) == ("cityscapes", "caffe", None)


def test_older_project_checkpoints_are_read_through_their_args():
    checkpoint = {"model": {}, "args": {"network": "resnet50", "method": "baseline", "seed": 1}}
    assert meta_from_checkpoint(checkpoint) == {
        "network": "resnet50",
        "method": "baseline",
        "num_classes": None,
        "dataset": None,
        "normalize": None,
    }
    assert meta_from_checkpoint({"conv1.weight": torch.zeros(1)}) is None


def test_evaluate_and_submit_need_only_the_checkpoint(setup, tmp_path):
    with_flags = data_args(setup, tmp_path / "flags", setup["bare"])
    with_flags += ["--network", MODEL[0], "--method", MODEL[1]]
    evaluate.main(evaluate.get_args_parser().parse_args(with_flags))
    evaluate.main(
        evaluate.get_args_parser().parse_args(data_args(setup, tmp_path / "meta", setup["meta"]))
    )
    scores = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("flags", "meta")]
    assert scores[0] == scores[1]
    # A test list holds images only; --dataset (which decides the split) comes from the file.
    images_only = tmp_path / "test.lst"
    lines = Path(setup["list"]).read_text().splitlines()
    images_only.write_text("".join(line.split()[0] + "\n" for line in lines))
    args = data_args(setup, tmp_path / "submit", setup["meta"])
    args[args.index("--data-list") + 1] = str(images_only)
    generate_submit.main(generate_submit.get_args_parser().parse_args(args))
    assert (tmp_path / "submit" / "submission.zip").is_file()


def test_evaluate_without_meta_or_flags_is_one_clear_line(setup, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        evaluate.main(
            evaluate.get_args_parser().parse_args(data_args(setup, tmp_path, setup["bare"]))
        )
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"evaluate.py: error: checkpoint {setup['bare']} does not record its model (no 'meta'; "
        "e.g. an original OCNet or openseg.pytorch file): give --network and --method"
    )


# --- safetensors -------------------------------------------------------------------------------


def test_safetensors_holds_the_weights_and_the_meta(setup, tmp_path):
    out = tmp_path / "model.safetensors"
    run_export("--ckpt", str(setup["meta"]), "--output", str(out))
    with safe_open(str(out), framework="pt") as archive:
        assert archive.metadata() == {k: str(v) for k, v in META.items()}
    state = setup["model"].state_dict()
    loaded = read_state_dict(out)
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    # No pickle: the file is not a torch.save archive, and reading it never calls the unpickler.
    assert is_safetensors(out) and not out.read_bytes().startswith(b"PK")


def test_safetensors_are_read_without_unpickling(setup, tmp_path, monkeypatch):
    out = tmp_path / "renamed.pth"  # recognised by its header, whatever the name
    run_export("--ckpt", str(setup["meta"]), "--output", str(tmp_path / "m.safetensors"))
    out.write_bytes((tmp_path / "m.safetensors").read_bytes())

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling")

    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    checkpoint = load_checkpoint(out)
    assert meta_from_checkpoint(checkpoint) == META
    assert set(checkpoint["model"]) == set(setup["model"].state_dict())


def test_a_broken_safetensors_file_is_a_checkpoint_error(setup, tmp_path):
    out = tmp_path / "model.safetensors"
    run_export("--ckpt", str(setup["meta"]), "--output", str(out))
    out.write_bytes(out.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="could not be read as safetensors"):
        load_checkpoint(out)


def test_every_tool_takes_a_safetensors_checkpoint(setup, tmp_path):
    st = tmp_path / "model.safetensors"
    run_export(
        "--ckpt", str(setup["bare"]), "--network", MODEL[0], "--method", MODEL[1],
        "--output", str(st),
    )  # fmt: skip
    evaluate.main(evaluate.get_args_parser().parse_args(data_args(setup, tmp_path / "st", st)))
    evaluate.main(
        evaluate.get_args_parser().parse_args(data_args(setup, tmp_path / "pth", setup["meta"]))
    )
    scores = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("st", "pth")]
    assert scores[0] == scores[1]
    # train.py --restore-from reads it through the same loader.
    model = get_segmentation_model("_".join(MODEL), 19, norm_layer=ABN)
    assert restore_weights(model, st) == "full"
    for key, value in setup["model"].state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_export_errors_are_one_line(setup, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        run_export("--ckpt", str(setup["meta"]), "--output", str(tmp_path / "model.bin"))
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("export.py: error: --output")
    with pytest.raises(SystemExit) as info:
        run_export("--ckpt", str(setup["bare"]), "--output", str(tmp_path / "m.safetensors"))
    assert info.value.code == 2
    assert "give --network and --method" in capsys.readouterr().err
    # An unknown dataset is refused, not recorded in the file's header.
    with pytest.raises(SystemExit) as info:
        run_export("--ckpt", str(setup["meta"]), "--output", str(tmp_path / "m.safetensors"),
                   "--dataset", "foo")  # fmt: skip
    assert info.value.code == 2
    assert "argument --dataset: invalid choice: 'foo'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# --- ONNX --------------------------------------------------------------------------------------


def onnx_model(method: str, seed: int = 0):
    """A small random model with its context switched on (W starts at zero)."""
    torch.manual_seed(seed)
    model = get_segmentation_model(f"resnet18_{method}", 5, norm_layer=ABN)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ObjectContext):
                module.W.weight.normal_(0, 0.2)
    return model.eval()


def torch_logits(model, image):
    """Independent of the export wrapper: final logits upsampled as evaluation does."""
    with torch.no_grad():
        out = model(image)
    logits = out[-1] if isinstance(out, list) else out
    return F.interpolate(logits, size=image.shape[2:], mode="bilinear", align_corners=True)


def check_onnx(path: Path, model, method: str) -> None:
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["method"] == method and props["num_classes"] == "5"
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[2] and dims[3] and dims[1] == ""  # batch, height, width dynamic
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    for batch, height, width in ((1, 80, 112), (3, 53, 71)):  # export size 64x96
        image = torch.randn(batch, 3, height, width, generator=generator)
        expected = torch_logits(model, image).numpy()
        actual = session.run(["logits"], {"image": image.numpy()})[0]
        assert actual.shape == (batch, 5, height, width)
        error = np.abs(actual - expected).max() / np.abs(expected).max()
        assert error < 1e-4, (height, width, error)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_onnx_matches_torch_at_other_sizes(method, tmp_path):
    model = onnx_model(method)
    path = tmp_path / f"{method}.onnx"
    meta = {**META, "network": "resnet18", "method": method, "num_classes": 5}
    export_onnx(model, meta, path, size=(64, 96))
    check_onnx(path, model, method)


class Regions(torch.nn.Module):
    """Pyramid-OC's s = 6 stage on the image itself: the stride-8 maps of tiny inputs (fewer
    rows or columns than parts, empty regions) at sizes a test can afford."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.block = RegionObjectContext(3, 2, 4, 5, partitions=6, norm_layer=ABN).eval()
        torch.nn.init.normal_(self.block.W.weight, 0, 0.5)

    def forward(self, x):
        return self.block(x)


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_pyramid_regions_export_at_every_size(exporter, tmp_path):
    """Exported at 8x12 (one row per region); right at maps smaller than 6x6 and at maps with
    several rows per region, where a graph fixed to the export size would fail."""
    model, path = Regions(), tmp_path / "regions.onnx"
    export_onnx(model, {**META, "method": "regions"}, path, size=(8, 12), exporter=exporter)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for height, width in ((3, 5), (6, 6), (5, 13), (13, 17), (26, 31)):
        image = torch.randn(2, 3, height, width)
        with torch.no_grad():
            expected = model(image).numpy()
        actual = session.run(["logits"], {"image": image.numpy()})[0]
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


class FrozenSize(torch.nn.Module):
    """Pads to a multiple of 8 the way that freezes a trace: ``math.ceil`` on a size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 1)

    def forward(self, x):
        padded = math.ceil(x.shape[2] / 8) * 8  # the line the error must name
        return self.conv(F.pad(x, (0, 0, 0, padded - x.shape[2])))


def test_onnx_export_refuses_a_graph_frozen_to_the_export_size(tmp_path):
    path = tmp_path / "frozen.onnx"
    with pytest.raises(ExportError) as error:
        export_onnx(FrozenSize(), {**META, "method": "frozen"}, path, size=(60, 96))
    line = next(
        number
        for number, text in enumerate(Path(__file__).read_text().splitlines(), 1)
        if "the line the error must name" in text
    )
    assert "cannot be exported with a dynamic input size" in str(error.value)
    assert f"test_export.py:{line}" in str(error.value)
    assert not path.exists() and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_onnx_through_torch_export(tmp_path):
    """The dynamo exporter (torch.export with dynamic dimensions) on the plainest model."""
    model = onnx_model("baseline")
    path = tmp_path / "baseline.onnx"
    meta = {**META, "network": "resnet18", "method": "baseline", "num_classes": 5}
    export_onnx(model, meta, path, size=(64, 96), exporter="dynamo")
    check_onnx(path, model, "baseline")


@pytest.mark.slow
def test_export_cli_writes_onnx(setup, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    run_export("--ckpt", str(setup["meta"]), "--output", str(out))
    assert f"wrote {out} (onnx" in capsys.readouterr().out
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["network"] == MODEL[0] and "input" in props
    leftovers = [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert leftovers == []
