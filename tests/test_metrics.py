import csv
import json
import math

import numpy as np
import pytest
import torch

from utils.metrics import confusion_matrix, format_table, save_scores, scores


def test_confusion_matrix_counts_pairs_and_skips_ignore():
    label = torch.tensor([[0, 0, 1, 255], [2, 2, 2, 1]])
    pred = torch.tensor([[0, 1, 1, 2], [2, 0, 2, 1]])
    expected = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 2]])
    got = confusion_matrix(pred, label, 3)
    assert got.dtype == torch.int64
    assert torch.equal(got, expected)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8])  # uint8 pairs: a faster path
def test_confusion_matrix_matches_naive_loop(dtype):
    generator = torch.Generator().manual_seed(0)
    label = torch.randint(0, 5, (2, 7, 9), generator=generator).to(dtype)
    label[0, :2] = 255
    pred = torch.randint(0, 5, (2, 7, 9), generator=generator).to(dtype)
    pred[0, 0, :3] = 200  # out of range only where the label is ignored: not an error
    naive = np.zeros((5, 5), dtype=np.int64)
    for g, p in zip(label.flatten().tolist(), pred.flatten().tolist()):
        if g != 255:
            naive[g, p] += 1
    assert np.array_equal(confusion_matrix(pred, label, 5).numpy(), naive)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8])
def test_confusion_matrix_rejects_unmapped_labels_and_predictions(dtype):
    label = torch.tensor([0, 26, 1, 255], dtype=dtype)
    with pytest.raises(ValueError, match=r"label value 26 is outside 0\.\.18"):
        confusion_matrix(torch.zeros(4, dtype=dtype), label, 19)
    with pytest.raises(ValueError, match=r"prediction values must lie in 0\.\.18"):
        confusion_matrix(torch.tensor([0, 19, 1, 1], dtype=dtype), torch.zeros(4, dtype=dtype), 19)


def test_scores_hand_computed():
    # rows: ground truth, columns: prediction
    conf = torch.tensor([[3, 1, 0, 0], [2, 4, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    result = scores(conf, ["a", "b", "c", "d"])
    iou_a = 3 / (4 + 5 - 3)  # gt row 4, pred column 5
    iou_b = 4 / (6 + 5 - 4)
    assert result["per_class"]["a"] == pytest.approx(iou_a)
    assert result["per_class"]["b"] == pytest.approx(iou_b)
    assert math.isnan(result["per_class"]["c"]) and math.isnan(result["per_class"]["d"])
    assert result["mIoU"] == pytest.approx((iou_a + iou_b) / 2)
    assert result["pixel_acc"] == pytest.approx(7 / 10)
    assert result["mean_acc"] == pytest.approx((3 / 4 + 4 / 6) / 2)


def test_class_only_predicted_has_zero_iou_and_counts_in_mean():
    conf = torch.tensor([[2, 2], [0, 0]])  # class 1 never in GT but predicted twice
    result = scores(conf, ["x", "y"])
    assert result["per_class"] == {"x": pytest.approx(0.5), "y": 0.0}
    assert result["mIoU"] == pytest.approx(0.25)
    assert result["mean_acc"] == pytest.approx(0.5)  # accuracy of y undefined (no GT)


def test_save_scores_writes_json_with_null_and_csv(tmp_path):
    conf = torch.tensor([[5, 0, 0], [1, 1, 0], [0, 0, 0]])
    json_path, csv_path = save_scores(conf, tmp_path, ["road", "car", "bus"])
    data = json.loads(open(json_path).read())
    assert set(data) == {"mIoU", "pixel_acc", "mean_acc", "per_class"}
    assert data["per_class"] == {"road": pytest.approx(5 / 6), "car": 0.5, "bus": None}
    assert data["mIoU"] == pytest.approx((5 / 6 + 0.5) / 2)
    assert data["pixel_acc"] == pytest.approx(6 / 7)
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["class"] for r in rows] == ["road", "car", "bus"]
    assert rows[1]["accuracy"] == "0.500000" and rows[1]["gt_pixels"] == "2"
    assert rows[2]["iou"] == "" and rows[0]["pred_pixels"] == "6"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "metrics.json"]


def test_format_table_lists_every_class_in_percent():
    conf = torch.tensor([[1, 1], [0, 2]])
    text = format_table(conf, ["sky", "person"])
    assert "sky" in text and "person" in text
    assert " 50.00" in text  # IoU of sky: 1 / (2 + 1 - 1)
    assert "66.67" in text  # IoU of person: 2 / 3
    assert text.splitlines()[-3].split() == ["mIoU", "58.33"]
