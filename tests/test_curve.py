import json

import numpy as np
import pytest
from PIL import Image

from utils.curve import COLOURS, PANEL_H, PANEL_W, draw_curves, read_metrics


def write_lines(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_reads_series_and_skips_non_finite(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_lines(
        path,
        [
            {"iteration": 1, "loss": 2.0, "lr": 0.01},
            {"iteration": 2, "loss": float("nan")},
            {"iteration": 3, "loss": 1.0, "val_mIoU": 0.25},
        ],
    )
    series = read_metrics(path)
    assert series["loss"] == [(1, 2.0), (3, 1.0)]
    assert series["val_mIoU"] == [(3, 0.25)]


def test_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1, "loss": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2"):
        read_metrics(path)


def test_draws_both_panels_with_their_colours(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_lines(
        path,
        [{"iteration": i, "loss": 3.0 / i} for i in range(1, 30)]
        + [{"iteration": 10, "val_mIoU": 0.1}, {"iteration": 20, "val_mIoU": 0.3}],
    )
    out = tmp_path / "curve.png"
    draw_curves(path, out)
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape == (PANEL_H, 2 * PANEL_W, 3)
    left, right = image[:, :PANEL_W], image[:, PANEL_W:]
    assert (left == COLOURS["loss"]).all(axis=-1).sum() > 50
    assert (right == COLOURS["mIoU"]).all(axis=-1).sum() > 50
    assert not (left == COLOURS["mIoU"]).all(axis=-1).any()
    # the loss falls, so its first point is drawn higher (smaller row) than its last
    rows, cols = np.nonzero((left == COLOURS["loss"]).all(axis=-1))
    assert rows[cols.argmin()] < rows[cols.argmax()]
    assert not list(tmp_path.glob("*.tmp*"))
