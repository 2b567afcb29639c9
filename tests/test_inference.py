import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.inference import final_logits, predict, predict_sliding, predict_whole, tile_windows


class PerPixel(nn.Module):
    """1x1 convolution: translation- and flip-equivariant, blind to zero padding elsewhere."""

    def __init__(self, classes=4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x):
        return self.conv(x)


class Strided(nn.Module):
    """Like the real models: ``[dsn, logits]`` at 1/8 resolution (ceil), context-dependent."""

    def __init__(self, classes=4):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, classes, 3, padding=1)
        self.dsn = nn.Conv2d(3, classes, 1)
        self.sizes = []
        self.batches = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        self.batches.append(x.shape[0])
        pooled = F.avg_pool2d(x, 8, ceil_mode=True)
        return [self.dsn(pooled), self.conv(pooled)]


def images(b=1, h=20, w=28, seed=0):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_final_logits_takes_last_output():
    a, b = torch.zeros(1), torch.ones(1)
    assert final_logits([a, b]) is b and final_logits(a) is a


def test_tile_windows_cityscapes_769():
    windows = tile_windows(1024, 2048, (769, 769), 1 / 3)  # stride ceil(769 * 2 / 3) = 513
    ys = sorted({(y1, y2) for y1, y2, _, _ in windows})
    xs = sorted({(x1, x2) for _, _, x1, x2 in windows})
    assert ys == [(0, 769), (255, 1024)]
    assert xs == [(0, 769), (513, 1282), (1026, 1795), (1279, 2048)]
    assert len(windows) == 8


def test_tile_windows_image_smaller_than_tile():
    assert tile_windows(100, 50, (769, 769), 0.0) == [(0, 100, 0, 50)]


def test_sliding_equals_whole_when_tile_is_the_image():
    model = Strided().eval()
    x = images(2, 24, 40)
    whole = predict_whole(model, x)
    sliding = predict_sliding(model, x, 4, tile=(24, 40), overlap=0.5)
    torch.testing.assert_close(sliding, whole, rtol=0, atol=0)
    via_predict = predict(model, x, 4, mode="sliding", tile=(24, 40))
    torch.testing.assert_close(via_predict, whole, rtol=0, atol=0)


@pytest.mark.parametrize("tile", [(8, 12), (13, 9), (40, 40)])
def test_sliding_equals_whole_for_a_per_pixel_model(tile):
    # Every pixel's probability is the same in each tile, so any (padded, overlapping) tiling
    # averages back to the whole-image result: checks placement, cropping and counting.
    model = PerPixel().eval()
    x = images(2, 20, 28)
    sliding = predict_sliding(model, x, 4, tile=tile, overlap=1 / 3, tile_batch=3)
    torch.testing.assert_close(sliding, predict_whole(model, x), rtol=1e-6, atol=1e-6)


def test_sliding_is_independent_of_batching():
    model = Strided().eval()
    x = images(2, 30, 44)
    together = predict_sliding(model, x, 4, tile=(16, 16), overlap=0.25)
    one_by_one = torch.cat(
        [predict_sliding(model, x[i : i + 1], 4, (16, 16), 0.25, tile_batch=1) for i in range(2)]
    )
    torch.testing.assert_close(together, one_by_one, rtol=1e-5, atol=1e-6)


def test_sliding_averages_overlapping_tiles():
    # Two 1-D tiles over a 1 x 3 image; the middle pixel is covered twice.
    class Position(nn.Module):
        def forward(self, x):  # class-0 logit = column index inside the tile, class 1 = 0
            cols = torch.arange(x.shape[-1], dtype=x.dtype).expand(x.shape[0], 1, *x.shape[-2:])
            return torch.cat([cols, torch.zeros_like(cols)], 1)

    out = predict_sliding(Position(), torch.zeros(1, 3, 1, 3), 2, tile=(1, 2), overlap=0.5)
    p = torch.sigmoid(torch.tensor([0.0, 1.0]))
    expected = torch.tensor([p[0], (p[1] + p[0]) / 2, p[1]])
    torch.testing.assert_close(out[0, 0, 0], expected)


def test_flip_is_identity_for_a_flip_equivariant_model():
    model = PerPixel().eval()
    x = images(1, 16, 24)
    torch.testing.assert_close(predict(model, x, 4, flip=True), predict(model, x, 4))


def test_flip_averages_mirrored_prediction():
    model = Strided().eval()
    x = images(1, 32, 48)
    plain = predict_whole(model, x)
    mirrored = predict_whole(model, x.flip(-1)).flip(-1)
    assert not torch.allclose(plain, mirrored)
    torch.testing.assert_close(predict(model, x, 4, flip=True), (plain + mirrored) / 2)


def test_multi_scale_uses_every_scale_and_returns_input_size():
    model = Strided().eval()
    x = images(2, 32, 48)
    scales = (0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    out = predict(model, x, 4, scales=scales, flip=True)
    assert out.shape == (2, 4, 32, 48)
    expected = [(24, 36), (24, 36), (32, 48), (32, 48), (40, 60), (40, 60)]
    expected += [(48, 72), (48, 72), (56, 84), (56, 84), (64, 96), (64, 96)]
    assert model.sizes == expected
    torch.testing.assert_close(out.sum(1), torch.ones(2, 32, 48))


def test_multi_scale_sliding_tiles_each_scale():
    model = Strided().eval()
    out = predict(model, images(1, 32, 32), 4, mode="sliding", tile=(32, 32), scales=(0.75, 1.5))
    assert out.shape == (1, 4, 32, 32)
    # 0.75 -> 24x24 padded into one 32x32 tile; 1.5 -> 48x48 in 2 x 2 tiles (stride 22),
    # the four tiles of one scale going through the network as one batch
    assert model.sizes == [(32, 32), (32, 32)]
    assert model.batches == [1, 4]


def test_multi_scale_average_matches_manual_computation():
    model = PerPixel().eval()
    x = images(1, 12, 16)
    manual = 0
    for size in ((6, 8), (12, 16)):  # scales 0.5 and 1.0
        small = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        probs = model(small).softmax(1)
        manual = manual + F.interpolate(probs, size=(12, 16), mode="bilinear", align_corners=True)
    torch.testing.assert_close(predict(model, x, 4, scales=(0.5, 1.0)), manual / 2)


def test_wrong_class_count_is_reported():
    with pytest.raises(ValueError, match="model predicts 4 classes, expected 19"):
        predict(PerPixel(), images(), 19)


def test_flip_channels_swap_classes_of_the_mirrored_prediction():
    # LIP-style: class 1 is "left", class 2 "right"; in the mirrored image they trade places.
    model, x, perm = PerPixel(classes=4).eval(), images(h=12, w=16), [0, 2, 1, 3]
    with torch.inference_mode():
        plain = torch.softmax(model(x), 1)
        mirrored = torch.softmax(model(x.flip(-1)), 1).flip(-1)[:, perm]
        expected = (plain + mirrored) / 2
        got = predict(model, x, 4, flip=True, flip_channels=perm)
        unswapped = predict(model, x, 4, flip=True)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, unswapped)
