import numpy as np
import pytest
import torch

from pointclora.models.segmentation import predict_parts
from pointclora.tasks.segmentation_metrics import SegmentationMeter, format_category_table, shape_iou


def test_shape_iou_hand_computed():
    # parts 6, 7; gt = [6,6,7,7], pred = [6,7,7,7]: part 6 I=1 U=2 -> .5; part 7 I=2 U=3 -> 2/3
    assert shape_iou(np.array([6, 7, 7, 7]), np.array([6, 6, 7, 7]), [6, 7]) == pytest.approx((0.5 + 2 / 3) / 2)


def test_absent_part_counts_one():
    # part 52 appears in neither -> 1; part 50 perfect -> 1; part 51 predicted but absent in gt -> 0
    pred, gt = np.array([50, 50, 51]), np.array([50, 50, 50])
    # part 50: I=2, U=3; 51: I=0 U=1 -> 0; 52: 1; 53: 1
    assert shape_iou(pred, gt, [50, 51, 52, 53]) == pytest.approx((2 / 3 + 0 + 1 + 1) / 4)


def test_meter_class_vs_instance_hand_computed():
    # Two categories: A = parts [0, 1], B = parts [2, 3, 4]. Three shapes of 4 points.
    meter = SegmentationMeter([[0, 1], [2, 3, 4]], ["A", "B"])
    target = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 3, 3]])
    pred = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 3, 3, 3]])
    meter.update(pred, target, torch.tensor([0, 0, 1]))
    out = meter.compute()
    s1 = 1.0
    s2 = (1 / 2 + 2 / 3) / 2
    s3 = (1 / 2 + 2 / 3 + 1.0) / 3  # part 4 absent in both
    assert out["instance_miou"] == pytest.approx(100 * (s1 + s2 + s3) / 3)
    assert out["class_miou"] == pytest.approx(100 * (((s1 + s2) / 2) + s3) / 2)
    assert out["accuracy"] == pytest.approx(100 * 10 / 12)
    assert out["per_category"]["B"] == {"miou": pytest.approx(100 * s3), "shapes": 1}
    table = format_category_table(out)
    assert "| A | 2 |" in table and "instance mIoU" in table


def test_predictions_restricted_to_category_parts():
    logits = torch.zeros(2, 3, 5)
    logits[:, :, 4] = 10.0  # the globally best part belongs to category B
    logits[:, 0, 1] = 1.0
    pred = predict_parts(logits, torch.tensor([0, 1]), [[0, 1], [2, 3, 4]])
    assert pred[0].tolist() == [1, 0, 0]  # category A may only answer 0 or 1
    assert pred[1].tolist() == [4, 4, 4]
    meter = SegmentationMeter([[0, 1], [2, 3, 4]])
    meter.update(logits, torch.tensor([[1, 0, 0], [4, 4, 4]]), torch.tensor([0, 1]))
    assert meter.compute()["instance_miou"] == pytest.approx(100.0)


def test_meter_errors():
    meter = SegmentationMeter([[0, 1]])
    with pytest.raises(RuntimeError, match="before any update"):
        meter.compute()
    with pytest.raises(ValueError, match="category id 3"):
        meter.update(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long), torch.tensor([3]))
    with pytest.raises(ValueError, match="outside the model"):
        predict_parts(torch.zeros(1, 2, 2), torch.tensor([0]), [[0, 5]])
