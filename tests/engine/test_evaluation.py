"""Accuracy, mean class accuracy, confusion matrix and voting."""

import pytest
import torch
from torch import nn

from pointclora.engine.evaluation import (
    accuracy_from_confusion,
    confusion_matrix,
    evaluate,
    mean_class_accuracy,
    per_class_accuracy,
    scale_translate,
)


def test_confusion_and_class_accuracies():
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 2])
    cm = confusion_matrix(preds, targets, 4)
    assert cm.tolist() == [[3, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert accuracy_from_confusion(cm) == pytest.approx(100 * 5 / 7)
    assert per_class_accuracy(cm) == [75.0, 50.0, 100.0, None]  # class 3 absent: not counted in mAcc
    assert mean_class_accuracy(cm) == pytest.approx(75.0)


def test_scale_translate_ranges_and_determinism():
    pts = torch.ones(64, 10, 3)
    out = scale_translate(pts, generator=torch.Generator().manual_seed(0))
    assert out.shape == pts.shape
    assert out.min() >= 2 / 3 - 0.2 - 1e-6 and out.max() <= 1.5 + 0.2 + 1e-6
    assert torch.equal(out, scale_translate(pts, generator=torch.Generator().manual_seed(0)))
    per_sample = out[:, :, 0]
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample))  # one scale/shift per sample and axis


class _SignOfMeanX(nn.Module):
    """Class 1 when the cloud's mean x is positive: scale & translate can flip clouds near x = 0."""

    def forward(self, points):
        m = points[..., 0].mean(dim=1)
        return torch.stack([-m, m], dim=-1) * 10


def test_evaluate_with_and_without_voting():
    xs = torch.tensor([-1.0, -0.5, -0.05, 0.05, 0.5, 1.0])
    points = xs[:, None, None].expand(6, 8, 3).clone()
    labels = torch.tensor([0, 0, 1, 0, 1, 1])  # the two near-zero clouds are labelled "wrong" for the model
    loader = [{"points": points[:3], "label": labels[:3]}, {"points": points[3:], "label": labels[3:]}]
    res = evaluate(_SignOfMeanX(), loader, 2, torch.device("cpu"), vote=10, vote_seed=0)
    assert res["acc"] == pytest.approx(100 * 4 / 6) and res["num_samples"] == 6
    assert res["confusion"] == [[2, 1], [1, 2]]
    assert 0 <= res["vote_acc"] <= 100 and res["vote_views"] == 10
    again = evaluate(_SignOfMeanX(), loader, 2, torch.device("cpu"), vote=10, vote_seed=0)
    assert again["vote_acc"] == res["vote_acc"]  # one fixed pass, reproducible
    assert sum(map(sum, res["vote_confusion"])) == 6


def test_scale_translate_equals_its_formula_and_keeps_extra_channels():
    from pointclora.engine.evaluation import format_confusion

    pts = torch.randn(3, 10, 6)
    out = scale_translate(pts, generator=torch.Generator().manual_seed(4), scale_low=0.5, scale_high=2.5,
                          translate_range=0.3)  # fmt: skip
    g = torch.Generator().manual_seed(4)
    scale = torch.rand(3, 1, 3, generator=g) * 2.0 + 0.5
    shift = (torch.rand(3, 1, 3, generator=g) * 2 - 1) * 0.3
    torch.testing.assert_close(out[..., :3], pts[..., :3] * scale + shift)
    assert torch.equal(out[..., 3:], pts[..., 3:])  # normals / ids pass through untouched
    table = format_confusion([[3, 1], [0, 2]], ["airplane_long_name", "bed"])
    assert table.splitlines() == ["| true \\ pred | airplane_l | bed |", "|---|---|---|",
                                  "| airplane_l | 3 | 1 |", "| bed | 0 | 2 |"]  # fmt: skip


def test_class_accuracies_divide_by_the_true_class_rows_not_the_predicted_columns():
    # Row totals (true) 5, 1, 2 differ from column totals (predicted) 2, 4, 2: recall needs the rows.
    targets = torch.tensor([0, 0, 0, 0, 0, 1, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 1, 0, 2])
    cm = confusion_matrix(preds, targets, 3)
    assert cm.tolist() == [[1, 3, 1], [0, 1, 0], [1, 0, 1]]
    assert per_class_accuracy(cm) == [20.0, 100.0, 50.0]
    assert mean_class_accuracy(cm) == pytest.approx((20 + 100 + 50) / 3)
    assert accuracy_from_confusion(cm) == pytest.approx(100 * 3 / 8)
    assert accuracy_from_confusion(torch.zeros(3, 3, dtype=torch.long)) == 0.0
    assert mean_class_accuracy(torch.zeros(3, 3, dtype=torch.long)) == 0.0


def test_scale_translate_without_a_generator_and_in_half_precision():
    pts = torch.randn(4, 10, 3)
    torch.manual_seed(3)
    out = scale_translate(pts)  # the global generator
    torch.manual_seed(3)
    scale = torch.rand(4, 1, 3) * (1.5 - 2 / 3) + 2 / 3
    shift = (torch.rand(4, 1, 3) * 2 - 1) * 0.2
    torch.testing.assert_close(out, pts * scale + shift)
    half = scale_translate(pts.half(), generator=torch.Generator().manual_seed(0))
    assert half.dtype == torch.float16
