"""Object-context attention against a naive N x N implementation of the original formulation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inplace_abn import ABN
from oc_module import (
    ASPOC,
    BaseOC,
    BaseOCContext,
    ObjectContext,
    PyramidOC,
    RegionObjectContext,
    object_attention,
    region_bounds,
)
from oc_module.pyramid_oc import region_index

TOL = {"rtol": 1e-10, "atol": 1e-12}


def naive_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The original's layout: [B, C, N] maps, explicit similarity matrix, softmax over keys."""
    batch, key_channels = key.shape[:2]
    value_channels, spatial = value.shape[1], value.shape[2:]
    q = query.reshape(batch, key_channels, -1).permute(0, 2, 1)
    k = key.reshape(batch, key_channels, -1)
    v = value.reshape(batch, value_channels, -1).permute(0, 2, 1)
    sim = torch.softmax(torch.matmul(q, k) * key_channels**-0.5, dim=-1)
    context = torch.matmul(sim, v).permute(0, 2, 1).contiguous()
    return context.view(batch, value_channels, *spatial)


def naive_object_context(block: ObjectContext, x: torch.Tensor, scale: int) -> torch.Tensor:
    height, width = x.shape[2:]
    if scale > 1:
        x = nn.MaxPool2d(kernel_size=(scale, scale))(x)
    context = naive_attention(block.f_query(x), block.f_key(x), block.f_value(x))
    context = block.W(context)
    if scale > 1:
        context = F.interpolate(context, size=(height, width), mode="bilinear", align_corners=True)
    return context


def naive_region_context(block: RegionObjectContext, x: torch.Tensor, s: int) -> torch.Tensor:
    """The original's pyramid loop: regions by step h // s, last takes the rest; rows by cat."""
    h, w = x.shape[2:]
    query, key, value = block.f_query(x), block.f_key(x), block.f_value(x)
    step_h, step_w = h // s, w // s
    rows = []
    for i in range(s):
        pieces = []
        for j in range(s):
            top, left = i * step_h, j * step_w
            bottom = h if i == s - 1 else min(top + step_h, h)
            right = w if j == s - 1 else min(left + step_w, w)
            region = (slice(None), slice(None), slice(top, bottom), slice(left, right))
            pieces.append(naive_attention(query[region], key[region], value[region]))
        rows.append(torch.cat(pieces, 3))
    return block.W(torch.cat(rows, 2))


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere (W is zero-initialised, which would make comparisons vacuous)
    and random running statistics; eval mode so BN uses them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.3)
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=generator) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=generator) + 0.5)
    return module.double().eval()


def features(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(
    ("key_ch", "value_ch"),
    [(8, 8), (8, 24), (8, 12)],
    ids=["equal-width", "value-split-into-heads", "value-not-a-multiple"],
)
def test_object_attention_equals_naive(key_ch: int, value_ch: int) -> None:
    key, value = features(2, key_ch, 5, 7), features(2, value_ch, 5, 7, seed=2)
    torch.testing.assert_close(
        object_attention(key, value), naive_attention(key, key, value), **TOL
    )


@pytest.mark.parametrize(("scale", "size"), [(1, (9, 11)), (2, (9, 11)), (2, (10, 12))])
def test_object_context_equals_naive(scale: int, size: tuple[int, int]) -> None:
    block = randomise(ObjectContext(16, 8, 16, 12, scale=scale, norm_layer=ABN))
    x = features(2, 16, *size)
    out = block(x)
    assert out.shape == (2, 12, *size)
    torch.testing.assert_close(out, naive_object_context(block, x, scale), **TOL)


def test_object_context_layout_of_original() -> None:
    block = ObjectContext(16, 8, 12, 10, norm_layer=ABN)
    assert block.f_query is block.f_key
    assert list(block.state_dict()) == [
        "f_key.0.weight",
        "f_key.0.bias",
        "f_key.1.weight",
        "f_key.1.bias",
        "f_key.1.running_mean",
        "f_key.1.running_var",
        "f_query.0.weight",
        "f_query.0.bias",
        "f_query.1.weight",
        "f_query.1.bias",
        "f_query.1.running_mean",
        "f_query.1.running_var",
        "f_value.weight",
        "f_value.bias",
        "W.weight",
        "W.bias",
    ]
    assert block.f_key[1].activation == "leaky_relu"
    assert torch.count_nonzero(block.W.weight) == 0 and torch.count_nonzero(block.W.bias) == 0
    assert torch.count_nonzero(block(torch.randn(1, 16, 5, 5))) == 0


def test_region_bounds_match_original_split() -> None:
    assert region_bounds(7, 3) == [(0, 2), (2, 4), (4, 7)]
    assert region_bounds(12, 6) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12)]
    assert region_bounds(2, 3) == [(0, 0), (0, 0), (0, 2)]


@pytest.mark.parametrize(
    ("partitions", "size"),
    [(1, (7, 9)), (2, (8, 10)), (3, (9, 12)), (6, (12, 18)), (2, (7, 9)), (3, (11, 13)),
     (6, (13, 8)), (6, (4, 9)), (6, (9, 4)), (6, (6, 6)), (3, (1, 2))],
    ids=["s1", "s2-equal", "s3-equal", "s6-equal", "s2-odd", "s3-odd", "s6-odd", "s6-smaller",
         "s6-narrower", "s6-exact", "s3-tiny"],
)  # fmt: skip
def test_region_object_context_equals_naive(partitions: int, size: tuple[int, int]) -> None:
    block = randomise(RegionObjectContext(12, 6, 12, 10, partitions, norm_layer=ABN))
    x = features(2, 12, *size)
    expected = naive_region_context(block, x, partitions)
    torch.testing.assert_close(block(x), expected, **TOL)
    # The exported graphs' form: one attention over the map, masked to each pixel's region.
    key, value = block.f_key(x), block.f_value(x)
    torch.testing.assert_close(block.W(block.attend_masked(key, value)), expected, **TOL)


def test_region_index_matches_region_bounds() -> None:
    for length in range(15):
        for parts in range(1, 8):
            expected = [
                next(j for j, (a, b) in enumerate(region_bounds(length, parts)) if a <= i < b)
                for i in range(length)
            ]
            assert region_index(length, parts, torch.device("cpu")).tolist() == expected


def test_base_oc_equals_naive() -> None:
    head = randomise(BaseOC(16, 16, 8, 8, dropout=0.05, norm_layer=ABN))
    x = features(2, 16, 7, 9)
    context = naive_object_context(head.stages[0], x, 1)
    expected = head.conv_bn_dropout(torch.cat([context, x], 1))
    torch.testing.assert_close(head(x), expected, **TOL)


def test_base_oc_context_equals_naive() -> None:
    head = randomise(BaseOCContext(16, 16, 8, 16, sizes=(2,), norm_layer=ABN))
    x = features(2, 16, 9, 11)
    expected = head.conv_bn_dropout(naive_object_context(head.stages[0], x, 2))
    torch.testing.assert_close(head(x), expected, **TOL)


@pytest.mark.parametrize("size", [(12, 18), (13, 17)], ids=["regions-equal", "regions-unequal"])
def test_pyramid_oc_equals_naive(size: tuple[int, int]) -> None:
    head = randomise(PyramidOC(8, 8, norm_layer=ABN))
    x = features(2, 8, *size)
    contexts = [head.up_dr(x)] + [
        naive_region_context(stage, x, s) for stage, s in zip(head.stages, (1, 2, 3, 6))
    ]
    expected = head.conv_bn_dropout(torch.cat(contexts, 1))
    torch.testing.assert_close(head(x), expected, **TOL)
    assert [stage.key_channels for stage in head.stages] == [4] * 4
    assert [stage.value_channels for stage in head.stages] == [8] * 4
    assert head.conv_bn_dropout[0].in_channels == 2 * 8 * 4


def test_aspoc_equals_naive() -> None:
    head = randomise(ASPOC(12, width=8, dilations=(1, 2, 3), norm_layer=ABN))
    x = features(2, 12, 9, 11)
    stem = head.context[1](head.context[0](x))
    oc = head.context[2]
    context = oc.conv_bn_dropout(naive_object_context(oc.stages[0], stem, 2))
    branches = [context] + [
        branch(x) for branch in (head.conv2, head.conv3, head.conv4, head.conv5)
    ]
    expected = head.conv_bn_dropout(torch.cat(branches, 1))
    torch.testing.assert_close(head(x), expected, **TOL)
    attention = oc.stages[0]
    assert (attention.scale, attention.key_channels, attention.value_channels) == (2, 4, 8)
    assert [head.conv3[0].dilation, head.conv4[0].dilation, head.conv5[0].dilation] == [
        (1, 1),
        (2, 2),
        (3, 3),
    ]
    assert head.conv_bn_dropout[2].p == 0.1


@pytest.mark.parametrize(("partitions", "size"), [(3, (7, 8)), (6, (4, 9))])
def test_gradients_match_naive(partitions: int, size: tuple[int, int]) -> None:
    """Also through empty regions (a 4-row map in 6 row parts)."""
    block = randomise(RegionObjectContext(8, 4, 8, 8, partitions, norm_layer=ABN))
    x = features(1, 8, *size).requires_grad_()
    (grad,) = torch.autograd.grad(block(x).square().sum(), x)
    naive = naive_region_context(block, x, partitions)
    (expected,) = torch.autograd.grad(naive.square().sum(), x)
    torch.testing.assert_close(grad, expected, **TOL)


@pytest.mark.parametrize("size", [(12, 18), (13, 8), (97, 97)])
def test_regions_share_four_attention_calls(monkeypatch, size) -> None:
    """s = 6 gives 36 regions in four calls, whatever the size: the 5 x 5 inner grid, the last
    column, the last row and the corner (one shape each)."""
    import oc_module.pyramid_oc as pyramid_oc

    counted = []

    def counting(key, value):
        counted.append(key.shape[0])
        return object_attention(key, value)

    monkeypatch.setattr(pyramid_oc, "object_attention", counting)
    block = randomise(RegionObjectContext(4, 2, 4, 4, partitions=6, norm_layer=ABN))
    block(features(2, 4, *size))
    assert counted == [2 * 25, 2 * 5, 2 * 5, 2]
    assert sum(counted) == 2 * 36  # every region of both images, once
