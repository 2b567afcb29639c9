"""The Python API (``engine.predictor.Segmenter``) and the attention pictures' weights.

Predictions are compared with a forward pass written out here (normalise, run, upsample with
align_corners, argmax); attention weights with explicit softmax matrices built from the inputs
the model's modules saw, and with the context the model computed from them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine.attention_maps import attention_maps, attention_picture, map_position
from engine.cli import UserError
from engine.predictor import Segmenter, as_rgb, find_images, read_image
from inplace_abn import ABN
from network import METHODS, get_segmentation_model
from oc_module import ISABlock, ObjectContext, RegionObjectContext, SpatialGather, SpatialOCR

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGENET_MEAN = np.array((0.485, 0.456, 0.406), dtype=np.float32)
IMAGENET_STD = np.array((0.229, 0.224, 0.225), dtype=np.float32)
ATTENTION_METHODS = [m for m in METHODS if m != "baseline"]


def small_model(method: str = "base_oc_dsn", num_classes: int = 5, seed: int = 0):
    """A random resnet18 model whose predictions vary over an image: context branches switched
    on (W is zero at init) and batch-norm statistics taken from a few images."""
    torch.manual_seed(seed)
    model = get_segmentation_model(f"resnet18_{method}", num_classes, norm_layer=ABN)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ObjectContext):
                module.W.weight.normal_(0, 0.2)
        for norm in norms:
            norm.momentum = 1.0
        model.train()
        model(torch.randn(2, 3, 64, 64))
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()


def save_checkpoint(path, model, method="base_oc_dsn", num_classes=5, meta=True):
    obj = {"model": model.state_dict()}
    if meta:
        obj["meta"] = {
            "network": "resnet18",
            "method": method,
            "num_classes": num_classes,
            "dataset": "cityscapes",
            "normalize": "imagenet",
        }
    torch.save(obj, path)
    return path


def blocky_image(height, width, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), channels), np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    return image if channels > 1 else image.reshape(height, width)


def reference_logits(model, rgb):
    """Independent: imagenet normalisation, forward, bilinear align_corners upsampling."""
    x = (rgb.astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    x = torch.from_numpy(x.transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        out = model(x)
    logits = out[-1] if isinstance(out, list) else out
    return F.interpolate(logits, size=rgb.shape[:2], mode="bilinear", align_corners=True)[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("segmenter")
    model = small_model()
    return {"path": save_checkpoint(root / "model.pth", model), "model": model, "root": root}


def test_segmenter_matches_an_independent_forward_pass(checkpoint):
    rgb = blocky_image(45, 67)  # not a multiple of 8
    segmenter = Segmenter.from_checkpoint(checkpoint["path"], device="cpu")
    assert (segmenter.num_classes, segmenter.normalize) == (5, "imagenet")
    expected = reference_logits(checkpoint["model"], rgb)
    logits = segmenter.predict_logits(rgb)
    assert logits.shape == (5, 45, 67)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    labels = segmenter.predict(rgb)
    assert labels.shape == (45, 67) and labels.dtype == np.uint8
    assert np.array_equal(labels, expected.argmax(0).numpy())
    assert len(np.unique(labels)) >= 2


def test_path_pil_and_array_inputs_agree(checkpoint, tmp_path):
    rgb = blocky_image(40, 52, seed=3)
    path = tmp_path / "image.png"
    cv2.imwrite(str(path), rgb[:, :, ::-1])
    segmenter = Segmenter.from_checkpoint(checkpoint["path"])
    from_array = segmenter.predict(rgb)
    assert np.array_equal(segmenter.predict(str(path)), from_array)
    assert np.array_equal(segmenter.predict(path), from_array)
    assert np.array_equal(segmenter.predict(Image.fromarray(rgb)), from_array)


def test_grayscale_and_rgba_become_rgb(checkpoint, tmp_path):
    gray = blocky_image(33, 47, channels=1, seed=4)
    rgba = np.dstack([blocky_image(33, 47, seed=5), np.full((33, 47), 7, np.uint8)])
    assert np.array_equal(as_rgb(gray), np.dstack([gray] * 3))
    assert np.array_equal(as_rgb(rgba), rgba[:, :, :3])
    assert np.array_equal(as_rgb(Image.fromarray(gray, "L")), np.dstack([gray] * 3))
    assert np.array_equal(as_rgb(Image.fromarray(rgba, "RGBA")), rgba[:, :, :3])
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba[:, :, [2, 1, 0, 3]])
    assert np.array_equal(read_image(tmp_path / "gray.png"), np.dstack([gray] * 3))
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgba[:, :, :3])
    segmenter = Segmenter.from_checkpoint(checkpoint["path"])
    assert np.array_equal(segmenter.predict(gray), segmenter.predict(np.dstack([gray] * 3)))
    assert np.array_equal(segmenter.predict(tmp_path / "rgba.png"), segmenter.predict(rgba))


def test_test_time_options_pass_through(checkpoint):
    rgb = blocky_image(48, 64, seed=6)
    segmenter = Segmenter.from_checkpoint(checkpoint["path"])
    probs = segmenter.predict_probabilities(rgb, scales=(0.75, 1.0), flip=True)
    assert probs.shape == (5, 48, 64)
    torch.testing.assert_close(probs.sum(0), torch.ones(48, 64))
    sliding = segmenter.predict(rgb, mode="sliding", tile=(32, 40))
    assert sliding.shape == (48, 64)


def test_checkpoint_without_meta_needs_the_model(checkpoint, tmp_path):
    bare = tmp_path / "bare.pth"
    torch.save(checkpoint["model"].state_dict(), bare)
    with pytest.raises(UserError, match="does not record its model"):
        Segmenter.from_checkpoint(bare)
    segmenter = Segmenter.from_checkpoint(
        bare, network="resnet18", method="base_oc_dsn", num_classes=5, normalize="imagenet"
    )
    rgb = blocky_image(40, 40, seed=7)
    expected = reference_logits(checkpoint["model"], rgb).argmax(0).numpy()
    assert np.array_equal(segmenter.predict(rgb), expected)


def test_find_images_names_results_relative_to_what_was_given(tmp_path):
    (tmp_path / "photos" / "day").mkdir(parents=True)
    for name in ("photos/a.png", "photos/day/b.JPG", "photos/day/c.jpeg", "single.png"):
        cv2.imwrite(str(tmp_path / name), blocky_image(8, 8))
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    found = find_images(
        [
            str(tmp_path / "photos"),
            str(tmp_path / "single.png"),
            str(tmp_path / "photos" / "*.png"),  # a.png again: read once
            str(tmp_path / "missing.png"),
        ]
    )
    assert [i.relative for i in found.images] == ["a", "day/b", "day/c", "single"]
    assert found.problems == [f"{tmp_path / 'missing.png'}: no such file or folder"]


# --- attention weights -------------------------------------------------------------------------


def record(model, image):
    """Independent hooks: each attention module's inputs and what it passed on to ``W``."""
    seen, handles = {}, []
    for name, module in model.named_modules():
        if isinstance(module, ObjectContext):

            def keep(prefix):
                def hook(mod, args, out):
                    seen[prefix] = out.detach().clone()

                return hook

            handles.append(module.f_key.register_forward_hook(keep(name + ":key")))
            handles.append(module.f_value.register_forward_hook(keep(name + ":value")))
            handles.append(
                module.W.register_forward_pre_hook(
                    lambda mod, args, name=name: seen.__setitem__(name + ":context", args[0])
                )
            )
        elif isinstance(module, (ISABlock, SpatialGather, SpatialOCR)):
            handles.append(
                module.register_forward_pre_hook(
                    lambda mod, args, name=name: seen.__setitem__(name, args)
                )
            )
    with torch.no_grad():
        model(image)
    for handle in handles:
        handle.remove()
    return seen


def original_region(length, parts, index):
    """The original's split: step length // parts, the last part takes the remainder."""
    step = length // parts
    part = min(index // step, parts - 1) if step else parts - 1
    return part * step, (part + 1) * step if part < parts - 1 else length


def explicit_row(key, row, col, allowed=None):
    """Row (row, col) of softmax(K^T K / sqrt(C)) over every pixel: the whole N x N matrix."""
    channels, height, width = key.shape[1:]
    flat = key[0].reshape(channels, -1).double()
    similarity = flat.T @ flat / math.sqrt(channels)
    if allowed is not None:
        similarity[:, ~allowed.flatten()] = float("-inf")
    return torch.softmax(similarity, dim=1)[row * width + col].reshape(height, width)


@pytest.mark.parametrize(
    "method", [m for m in ("base_oc_dsn", "pyramid_oc_dsn", "asp_oc_dsn") if m in METHODS]
)
@pytest.mark.parametrize("point", [(0, 0), (50, 29), (70, 44)])
def test_object_context_weights_equal_an_explicit_softmax(method, point):
    model = small_model(method)
    image = torch.randn(1, 3, 45, 71)
    maps = attention_maps(model, image, point)
    seen = record(model, image)
    blocks = [n for n, m in model.named_modules() if isinstance(m, ObjectContext)]
    assert [m.name for m in maps] == blocks
    for item in maps:
        module = model.get_submodule(item.name)
        key, value = seen[item.name + ":key"], seen[item.name + ":value"]
        height, width = key.shape[2:]
        row, col = map_position(point, (45, 71), (height, width))
        assert item.query == (row, col)
        allowed = None
        if isinstance(module, RegionObjectContext):
            top, bottom = original_region(height, module.partitions, row)
            left, right = original_region(width, module.partitions, col)
            allowed = torch.zeros(height, width, dtype=torch.bool)
            allowed[top:bottom, left:right] = True
        expected = explicit_row(key, row, col, allowed)
        torch.testing.assert_close(item.weights.double(), expected, rtol=1e-5, atol=1e-6)
        # The weights are those the model used: they mix the values into its context.
        context = (value[0].double() * item.weights.double()).sum((1, 2))
        model_context = seen[item.name + ":context"][0, :, row, col].double()
        torch.testing.assert_close(context, model_context, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif("isa_oc_dsn" not in METHODS, reason="ISA is not in the method table yet")
def test_isa_weights_equal_long_range_times_short_range():
    model = small_model("isa_oc_dsn")
    image = torch.randn(1, 3, 75, 83)  # 10x11 features: padded to 16x16 for 8x8 factors
    point = (40, 30)
    maps = attention_maps(model, image, point)
    seen = record(model, image)
    (name,) = [n for n, m in model.named_modules() if isinstance(m, ISABlock)]
    block = model.get_submodule(name)
    (item,) = maps
    x = seen[name][0].double()
    block = block.double()
    _, channels, height, width = x.shape
    dh, dw = block.down_factor
    # Explicit zero padding, half on each side, the odd pixel at the bottom / right.
    pad_h, pad_w = -height % dh, -width % dw
    top, left = pad_h // 2, pad_w // 2
    padded = F.pad(x, (left, pad_w - left, top, pad_h - top))
    big_h, big_w = padded.shape[2:]
    row, col = map_position(point, (75, 83), (height, width))
    p = (row + top, col + left)

    def project(module, features):  # 1x1 convs and norms act on each pixel alone
        return module(features[:, :, None, None].double())[:, :, 0, 0]

    def softmax_row(query, keys):
        return torch.softmax(keys @ query / math.sqrt(query.shape[0]), dim=0)

    pixels = padded[0].permute(1, 2, 0).reshape(-1, channels)  # [big_h * big_w, C]
    index = lambda i, j: i * big_w + j  # noqa: E731
    long_sa, short_sa = block.long_range_sa, block.short_range_sa

    def long_range(r):  # weights of pixel r over its interlaced group, and its output
        group = [(i, j) for i in range(r[0] % dh, big_h, dh) for j in range(r[1] % dw, big_w, dw)]
        members = pixels[[index(*g) for g in group]]
        weights = softmax_row(
            project(long_sa.f_query, pixels[[index(*r)]])[0], project(long_sa.f_key, members)
        )
        context = weights @ project(long_sa.f_value, members)
        return group, weights, project(long_sa.W, context[None])[0]

    block_pixels = [
        (p[0] - p[0] % dh + a, p[1] - p[1] % dw + b) for a in range(dh) for b in range(dw)
    ]
    outputs = torch.stack([long_range(r)[2] for r in block_pixels])
    query_out = outputs[block_pixels.index(p)]
    short = softmax_row(
        project(short_sa.f_query, query_out[None])[0], project(short_sa.f_key, outputs)
    )
    combined = torch.zeros(big_h, big_w, dtype=torch.float64)
    for r, weight in zip(block_pixels, short):
        group, weights, _ = long_range(r)
        for (i, j), w in zip(group, weights):
            combined[i, j] += weight * w
    expected = combined[top : top + height, left : left + width]
    torch.testing.assert_close(item.weights.double(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif("ocr_dsn" not in METHODS, reason="OCR is not in the method table yet")
def test_ocr_weights_are_region_weights_times_region_maps():
    model = small_model("ocr_dsn")
    image = torch.randn(1, 3, 50, 66)
    point = (33, 20)
    (item,) = attention_maps(model, image, point, class_names=list("abcde"))
    seen = record(model, image)
    gather_name = next(n for n, m in model.named_modules() if isinstance(m, SpatialGather))
    ocr_name = next(n for n, m in model.named_modules() if isinstance(m, SpatialOCR))
    feats, logits = (t.double() for t in seen[gather_name])
    block = model.get_submodule(ocr_name).object_context_block.double()
    soft = torch.softmax(logits[0].flatten(1), dim=1)  # [K, N]: each region's map
    regions = soft @ feats[0].flatten(1).T  # [K, C]
    row, col = map_position(point, (50, 66), tuple(feats.shape[2:]))
    query = block.f_pixel(feats)[0, :, row, col]
    keys = block.f_object(regions.T[None, :, :, None])[0, :, :, 0].T  # [K, C_k]
    weights = torch.softmax(keys @ query / math.sqrt(query.shape[0]), dim=0)
    expected = (weights[:, None] * soft).sum(0).reshape(feats.shape[2:])
    torch.testing.assert_close(item.weights.double(), expected, rtol=1e-4, atol=1e-7)
    assert item.title.startswith("OCR ") and item.title.count(",") == 2


def test_the_baseline_has_no_attention_and_pictures_have_one_panel_per_map():
    model = small_model("baseline")
    assert attention_maps(model, torch.randn(1, 3, 40, 40), (3, 3)) == []
    model = small_model("pyramid_oc_dsn")
    rgb = blocky_image(41, 57)
    maps = attention_maps(model, torch.randn(1, 3, 41, 57), (10, 20))
    picture = attention_picture(rgb, maps, (10, 20))
    assert picture.dtype == np.uint8
    assert picture.shape == (41 + 22, 4 * 57 + 3 * 4, 3)
