"""The generalised attention primitive, ISA and OCR against naive implementations written here.

Naive means the upstream formulation spelled out: explicit similarity matrices and softmax,
explicit zero padding and Python loops over ISA's groups and blocks. Everything runs in float64
in eval mode (BN per pixel), so comparisons can be tight.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import oc_module.attention as attention_module
import oc_module.isa as isa_module
from inplace_abn import ABN
from oc_module import (
    ISABlock,
    ISAModule,
    SpatialGather,
    SpatialOCR,
    attention_weights,
    softmax_attention,
)
from oc_module.isa import pad_to_multiple

TOL = {"rtol": 1e-10, "atol": 1e-12}


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and running statistics, float64, eval mode (BN uses the statistics)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.4)
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=generator) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=generator) + 0.5)
    return module.double().eval()


def features(*shape: int, seed: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def naive_attention(query, key, value):
    """[B, Ck, Nq], [B, Ck, Nk], [B, Cv, Nk] -> [B, Cv, Nq], similarity matrix materialised."""
    sim = torch.softmax(query.transpose(1, 2) @ key * query.shape[1] ** -0.5, dim=-1)
    return (sim @ value.transpose(1, 2)).transpose(1, 2)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected).abs().max() / expected.abs().max()).item()


# --- the primitive ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_ch", "value_ch", "queries", "keys"),
    [(8, 8, 35, 20), (8, 8, 20, 35), (8, 24, 35, 20), (8, 12, 19, 19), (6, 5, 7, 40)],
    ids=["sdpa-nq>nk", "sdpa-nq<nk", "value-3x-key", "value-1.5x-key", "value-narrower"],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_attention_equals_naive(key_ch, value_ch, queries, keys, dtype) -> None:
    query = features(3, key_ch, queries, seed=1)
    key = features(3, key_ch, keys, seed=2)
    value = features(3, value_ch, keys, seed=3)
    expected = naive_attention(query, key, value)
    out = softmax_attention(query.to(dtype), key.to(dtype), value.to(dtype))
    assert out.shape == (3, value_ch, queries) and out.dtype == dtype
    if dtype == torch.float64:
        torch.testing.assert_close(out, expected, **TOL)
    else:
        assert relative_error(out, expected) < 1e-5


def test_path_per_shape_on_cpu(monkeypatch) -> None:
    """On CPU, SDPA's flash kernel needs one width for q, k, v; a wider value takes the chunks,
    and so does any call that needs a backward (the chunked backward is the faster there)."""
    calls = []
    chunked = attention_module.chunked_attention
    monkeypatch.setattr(
        attention_module, "chunked_attention", lambda *a: calls.append(1) or chunked(*a)
    )
    equal = [features(1, 8, 30), features(1, 8, 30), features(1, 8, 30)]
    softmax_attention(*equal)
    assert calls == []
    softmax_attention(features(1, 8, 30), features(1, 8, 30), features(1, 16, 30))
    assert calls == [1]
    softmax_attention(*equal[:2], equal[2].requires_grad_())
    assert calls == [1, 1]
    with torch.no_grad():
        softmax_attention(*equal)
    assert calls == [1, 1]


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "with-backward"])
def test_chunks_bounded_and_each_similarity_once(monkeypatch, grad) -> None:
    """Every query row goes through exactly one chunk per pass (the forward; the backward
    recomputes once), no chunk exceeds its budget: here 3 full chunks of 6 rows and a remainder
    of 2, batch 2 x 40 keys = 80 similarities per row."""
    shapes = []
    exp_similarities = attention_module.exp_similarities

    def recording(query, key_t, out=None):
        shapes.append((query.shape[0], query.shape[1], key_t.shape[2]))
        return exp_similarities(query, key_t, out)

    monkeypatch.setattr(attention_module, "exp_similarities", recording)
    query, key, value = features(2, 4, 20), features(2, 4, 40, seed=2), features(2, 8, 40, seed=3)
    for t in (query, key, value):
        t.requires_grad_(grad)
    out = softmax_attention(query, key, value, chunk_elements=6 * 80 + 50)
    torch.testing.assert_close(out, naive_attention(query, key, value), **TOL)
    if grad:
        out.sum().backward()
    assert [rows for _, rows, _ in shapes] == [6, 6, 6, 2] * (2 if grad else 1)
    assert all(batch * rows * keys <= 6 * 80 + 50 for batch, rows, keys in shapes)


def test_chunked_attention_gradcheck() -> None:
    """The hand-written backward against finite differences, with chunks and a remainder."""
    inputs = [features(2, 7, 3, seed=1), features(2, 5, 3, seed=2), features(2, 5, 4, seed=3)]
    inputs = [t.requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(
        lambda q, k, v: attention_module.chunked_attention(q, k, v, chunk_elements=2 * 5 * 3),
        inputs,
    )


def test_chunked_gradients_equal_naive() -> None:
    """The checkpointed chunks recompute in the backward; gradients for q, k and v are exact."""
    inputs = [features(2, 4, 21, seed=1), features(2, 4, 13, seed=2), features(2, 12, 13, seed=3)]
    inputs = [t.requires_grad_() for t in inputs]
    out = softmax_attention(*inputs, chunk_elements=2 * 13 * 5)
    grads = torch.autograd.grad(out.square().sum(), inputs)
    expected = torch.autograd.grad(naive_attention(*inputs).square().sum(), inputs)
    for grad, reference in zip(grads, expected):
        torch.testing.assert_close(grad, reference, **TOL)


def test_attention_weights_equal_naive() -> None:
    query, key = features(2, 6, 3), features(2, 6, 11, seed=2)
    logits = torch.einsum("bcq,bck->bqk", query, key) / 6**0.5
    expected = logits.exp() / logits.exp().sum(-1, keepdim=True)
    torch.testing.assert_close(attention_weights(query, key), expected, **TOL)


# --- ISA --------------------------------------------------------------------------------------


def naive_self_attention(block, x):
    """openseg's SelfAttentionBlock2D: returns the output and the [B, N, N] softmax map."""
    batch, _, height, width = x.shape
    query = block.f_query(x).flatten(2).transpose(1, 2)
    key = block.f_key(x).flatten(2)
    value = block.f_value(x).flatten(2).transpose(1, 2)
    sim = torch.softmax(query @ key * key.shape[1] ** -0.5, dim=-1)
    context = (sim @ value).transpose(1, 2).reshape(batch, -1, height, width)
    return block.W(context), sim


def naive_isa(block: ISABlock, x: torch.Tensor, pixel: tuple[int, int] | None = None):
    """Explicit padding, then a Python loop over the dh*dw interlaced groups and one over the
    blocks. With ``pixel``, also that pixel's long- and short-range weight maps."""
    dh, dw = block.down_factor
    n, c, h, w = x.shape
    full_h, full_w = -(-h // dh) * dh, -(-w // dw) * dw
    top, left = (full_h - h) // 2, (full_w - w) // 2  # openseg: pad // 2 before, the rest after
    padded = x.new_zeros(n, c, full_h, full_w)
    padded[:, :, top : top + h, left : left + w] = x
    if pixel is not None:
        row, col = pixel[0] + top, pixel[1] + left
        long_map, short_map = x.new_zeros(n, full_h, full_w), x.new_zeros(n, full_h, full_w)
    long_range = None
    for a in range(dh):
        for b in range(dw):
            out, sim = naive_self_attention(block.long_range_sa, padded[:, :, a::dh, b::dw])
            if long_range is None:
                long_range = x.new_zeros(n, out.shape[1], full_h, full_w)
            long_range[:, :, a::dh, b::dw] = out
            if pixel is not None and (row % dh, col % dw) == (a, b):
                index = (row // dh) * (full_w // dw) + col // dw
                long_map[:, a::dh, b::dw] = sim[:, index].reshape(n, full_h // dh, full_w // dw)
    short_range = torch.zeros_like(long_range)
    for i in range(0, full_h, dh):
        for j in range(0, full_w, dw):
            out, sim = naive_self_attention(
                block.short_range_sa, long_range[:, :, i : i + dh, j : j + dw]
            )
            short_range[:, :, i : i + dh, j : j + dw] = out
            if pixel is not None and (row // dh * dh, col // dw * dw) == (i, j):
                index = (row % dh) * dw + col % dw
                short_map[:, i : i + dh, j : j + dw] = sim[:, index].reshape(n, dh, dw)
    crop = (slice(None), slice(None), slice(top, top + h), slice(left, left + w))
    if pixel is None:
        return short_range[crop]
    return long_map[crop[1:]], short_map[crop[1:]]


def test_padding_follows_openseg() -> None:
    """13 x 17 to 16 x 24: pad_h 3 = 1 top + 2 bottom, pad_w 7 = 3 left + 4 right."""
    x = features(1, 2, 13, 17)
    padded, top, left = pad_to_multiple(x, 8, 8)
    assert padded.shape == (1, 2, 16, 24) and (top, left) == (1, 3)
    torch.testing.assert_close(padded[:, :, 1:14, 3:20], x, rtol=0, atol=0)
    inside = torch.zeros(16, 24, dtype=torch.bool)
    inside[1:14, 3:20] = True
    assert torch.count_nonzero(padded[:, :, ~inside]) == 0


ISA_CASES = [
    ((13, 17), (8, 8)),
    ((9, 8), (8, 8)),
    ((8, 8), (8, 8)),
    ((16, 24), (8, 8)),
    ((7, 10), (4, 3)),
    ((3, 5), (8, 8)),
]
ISA_IDS = ["13x17", "9x8", "8x8", "16x24", "7x10-factor-4x3", "smaller-than-factor"]


@pytest.mark.parametrize(("size", "factor"), ISA_CASES, ids=ISA_IDS)
def test_isa_block_equals_naive(size, factor) -> None:
    block = randomise(ISABlock(6, 4, 8, 6, down_factor=factor, norm_layer=ABN))
    x = features(2, 6, *size)
    out = block(x)
    assert out.shape == (2, 6, *size)
    torch.testing.assert_close(out, naive_isa(block, x), **TOL)


@pytest.mark.parametrize(
    ("size", "factor"), ISA_CASES[:2] + ISA_CASES[4:5], ids=ISA_IDS[:2] + ISA_IDS[4:5]
)
def test_isa_attention_weights_equal_naive(size, factor) -> None:
    block = randomise(ISABlock(6, 4, 8, 6, down_factor=factor, norm_layer=ABN))
    x = features(2, 6, *size)
    for pixel in [(0, 0), (size[0] - 1, size[1] - 1), (size[0] // 2, 1)]:
        long_map, short_map = block.attention_weights(x, *pixel)
        expected_long, expected_short = naive_isa(block, x, pixel)
        assert long_map.shape == short_map.shape == (2, *size)
        torch.testing.assert_close(long_map, expected_long, **TOL)
        torch.testing.assert_close(short_map, expected_short, **TOL)


def test_isa_steps_are_one_batched_attention_call_each(monkeypatch) -> None:
    batches = []
    monkeypatch.setattr(
        isa_module,
        "softmax_attention",
        lambda q, k, v: batches.append(q.shape[0]) or softmax_attention(q, k, v),
    )
    block = randomise(ISABlock(6, 4, 8, 6, norm_layer=ABN))
    block(features(2, 6, 13, 17))  # padded to 16 x 24: 64 groups of 2 x 3, 6 blocks of 8 x 8
    assert batches == [2 * 64, 2 * 6]


@pytest.mark.parametrize("factors", [((8, 8),), ((8, 8), (4, 4))], ids=["one", "two-stages"])
def test_isa_module_equals_naive(factors) -> None:
    head = randomise(ISAModule(6, 4, 8, 5, down_factors=factors, norm_layer=ABN))
    x = features(2, 6, 13, 17)
    context = torch.cat([naive_isa(stage, x) for stage in head.stages], 1)
    inputs = head.up_conv(x) if len(factors) > 1 else x
    expected = head.conv_bn(torch.cat([inputs, context], 1))  # openseg: input first
    torch.testing.assert_close(head(x), expected, **TOL)


def test_isa_gradients_equal_naive() -> None:
    head = randomise(ISAModule(6, 4, 8, 6, norm_layer=ABN))
    x = features(1, 6, 9, 11).requires_grad_()
    (grad,) = torch.autograd.grad(head(x).square().sum(), x)
    naive = head.conv_bn(torch.cat([x, naive_isa(head.stages[0], x)], 1))
    (expected,) = torch.autograd.grad(naive.square().sum(), x)
    torch.testing.assert_close(grad, expected, **TOL)


def self_attention_keys(prefix: str) -> list[str]:
    """openseg's SelfAttentionBlock2D with bn_type inplace_abn: BNReLU is one InPlaceABNSync
    (weight, bias, running stats; no num_batches_tracked), every conv has bias=False."""
    norm = ["weight", "bias", "running_mean", "running_var"]
    keys = []
    for projection in ("f_key", "f_query"):
        keys += [f"{projection}.0.weight"] + [f"{projection}.1.{n}" for n in norm]
        keys += [f"{projection}.2.weight"] + [f"{projection}.3.{n}" for n in norm]
    keys += ["f_value.weight", "W.0.weight"] + [f"W.1.{n}" for n in norm]
    return [prefix + k for k in keys]


def test_isa_state_dict_keys_are_opensegs() -> None:
    norm = ["weight", "bias", "running_mean", "running_var"]
    head = ISAModule(512, 256, 512, 512, norm_layer=ABN)
    assert list(head.state_dict()) == (
        self_attention_keys("stages.0.long_range_sa.")
        + self_attention_keys("stages.0.short_range_sa.")
        + ["conv_bn.0.weight"]
        + [f"conv_bn.1.{n}" for n in norm]
    )
    assert isinstance(head.conv_bn[2], nn.Dropout2d) and head.conv_bn[2].p == 0.05
    assert head.stages[0].down_factor == (8, 8)
    assert head.stages[0].long_range_sa.f_key[1].activation == "leaky_relu"
    assert head.stages[0].long_range_sa.W[1].activation == "leaky_relu"
    assert torch.count_nonzero(head.stages[0].long_range_sa.W[0].weight) > 0  # not zeroed
    block = 512 * 256 + 256 * 256 + 4 * 256  # f_key / f_query: two convs, two norms
    block = 2 * block + 512 * 512 + (512 * 512 + 2 * 512)  # + f_value, W
    assert sum(p.numel() for p in head.parameters()) == 2 * block + 1024 * 512 + 2 * 512

    two = ISAModule(8, 4, 8, 6, down_factors=((8, 8), (4, 4)), norm_layer=ABN)
    extra = [k for k in two.state_dict() if not k.startswith("stages.")]
    assert extra == ["up_conv.0.weight"] + [f"up_conv.1.{n}" for n in norm] + [
        "conv_bn.0.weight"
    ] + [f"conv_bn.1.{n}" for n in norm]
    assert two.up_conv[0].out_channels == 12 and two.conv_bn[0].in_channels == 24


# --- OCR --------------------------------------------------------------------------------------


def naive_gather(feats, logits):
    """Each region: the softmax-over-pixels weighted sum of pixel features, by explicit loop."""
    batch, regions = logits.shape[:2]
    out = feats.new_zeros(batch, feats.shape[1], regions, 1)
    for r in range(regions):
        weights = logits[:, r].flatten(1).exp()
        weights = weights / weights.sum(1, keepdim=True)  # [B, H*W]
        out[:, :, r, 0] = (feats.flatten(2) * weights[:, None]).sum(2)
    return out


def naive_object_attention(block, x, regions):
    """openseg's _ObjectAttentionBlock.forward (scale 1): also returns the [B, N, K] map."""
    batch, _, height, width = x.shape
    query = block.f_pixel(x).flatten(2).transpose(1, 2)
    key = block.f_object(regions).flatten(2)
    value = block.f_down(regions).flatten(2).transpose(1, 2)
    sim = torch.softmax(query @ key * key.shape[1] ** -0.5, dim=-1)
    context = (sim @ value).transpose(1, 2).reshape(batch, -1, height, width)
    return block.f_up(context), sim


def test_spatial_gather_equals_naive() -> None:
    feats, logits = features(2, 6, 7, 9), features(2, 5, 7, 9, seed=2) * 3
    out = SpatialGather()(feats, logits)
    assert out.shape == (2, 6, 5, 1)
    torch.testing.assert_close(out, naive_gather(feats, logits), **TOL)


relu_norm = functools.partial(ABN, activation="leaky_relu", slope=0.0)  # BN + ReLU


@pytest.mark.parametrize(
    ("bias", "norm_layer"), [(True, ABN), (False, relu_norm)], ids=["openseg", "hrnet-ocr"]
)
def test_spatial_ocr_equals_naive(bias, norm_layer) -> None:
    head = randomise(SpatialOCR(8, 4, 6, bias=bias, norm_layer=norm_layer))
    feats, logits = features(2, 8, 7, 9), features(2, 5, 7, 9, seed=2)
    regions = SpatialGather()(feats, logits)
    context, sim = naive_object_attention(head.object_context_block, feats, regions)
    expected = head.conv_bn_dropout(torch.cat([context, feats], 1))
    torch.testing.assert_close(head(feats, regions), expected, **TOL)
    weights = head.region_weights(feats, regions)  # [B, K, H, W]
    torch.testing.assert_close(weights, sim.transpose(1, 2).reshape(2, 5, 7, 9), **TOL)


def test_spatial_ocr_pooled_equals_naive() -> None:
    head = randomise(SpatialOCR(8, 4, 8, scale=2, norm_layer=ABN))
    feats = features(1, 8, 9, 11)
    regions = SpatialGather()(feats, features(1, 3, 9, 11, seed=2))
    pooled = nn.MaxPool2d(kernel_size=(2, 2))(feats)
    context, _ = naive_object_attention(head.object_context_block, pooled, regions)
    context = nn.functional.interpolate(context, size=(9, 11), mode="bilinear", align_corners=True)
    expected = head.conv_bn_dropout(torch.cat([context, feats], 1))
    torch.testing.assert_close(head(feats, regions), expected, **TOL)


def ocr_keys(bias: bool) -> list[str]:
    """openseg's SpatialOCR_Module: convs keep PyTorch's default bias=True; each BNReLU is one
    InPlaceABNSync. Without bias: HRNet-OCR's convs (its norms sit at ``.1.0.``, mapped away)."""
    norm = ["weight", "bias", "running_mean", "running_var"]
    conv = ["weight", "bias"] if bias else ["weight"]
    keys = []
    for name, pairs in (("f_pixel", 2), ("f_object", 2), ("f_down", 1), ("f_up", 1)):
        for i in range(pairs):
            keys += [f"object_context_block.{name}.{2 * i}.{c}" for c in conv]
            keys += [f"object_context_block.{name}.{2 * i + 1}.{n}" for n in norm]
    return (
        keys + [f"conv_bn_dropout.0.{c}" for c in conv] + [f"conv_bn_dropout.1.{n}" for n in norm]
    )


@pytest.mark.parametrize("bias", [True, False], ids=["openseg", "hrnet-ocr"])
def test_ocr_state_dict_keys(bias) -> None:
    head = SpatialOCR(512, 256, 512, bias=bias, norm_layer=ABN)
    assert list(head.state_dict()) == ocr_keys(bias)
    assert head.conv_bn_dropout[2].p == 0.05
    block = head.object_context_block
    assert block.f_up[0].out_channels == 512 and block.f_down[0].out_channels == 256
    assert head.conv_bn_dropout[0].in_channels == 1024
    b = 1 if bias else 0
    pixel = (512 + b) * 256 + (256 + b) * 256 + 4 * 256
    expected = 2 * pixel + (512 + b) * 256 + 2 * 256 + (256 + b) * 512 + 2 * 512
    expected += (1024 + b) * 512 + 2 * 512
    assert sum(p.numel() for p in head.parameters()) == expected
    assert list(SpatialGather().state_dict()) == []


def test_gradients_reach_every_parameter_in_training() -> None:
    """Training mode (batch statistics, dropout): every parameter of both heads gets a finite,
    non-zero gradient, and so does the input."""
    torch.manual_seed(0)
    isa = ISAModule(8, 4, 8, 8, norm_layer=ABN).train()
    ocr = SpatialOCR(8, 4, 8, norm_layer=ABN).train()
    x = torch.randn(2, 8, 13, 17, requires_grad=True)
    feats = isa(x)
    out = ocr(feats, SpatialGather()(feats, torch.randn(2, 5, 13, 17)))
    out.square().mean().backward()
    for name, p in [*isa.named_parameters(), *ocr.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
