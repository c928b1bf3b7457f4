"""Part-segmentation metrics computed the standard ShapeNetPart way (PointNet++ / Point-MAE ``test``):

- predictions are restricted to the parts of the shape's object category (argmax over those logits only);
- a shape's IoU is the mean over its category's parts of ``|pred ∩ gt| / |pred ∪ gt|``, where a part absent from
  both prediction and ground truth counts as IoU 1;
- **instance mIoU** = mean shape IoU over all shapes; **class mIoU** = mean over categories (with at least one shape)
  of the mean shape IoU of that category; plus point accuracy and a per-category table.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

__all__ = ["shape_iou", "SegmentationMeter", "format_category_table"]


def shape_iou(pred: np.ndarray, target: np.ndarray, parts: Sequence[int]) -> float:
    """Mean part IoU of one shape.

    Args:
        pred: ``(N,)`` predicted global part ids.
        target: ``(N,)`` ground-truth global part ids.
        parts: the global part ids of the shape's category.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {pred.shape} and {target.shape}")
    if len(parts) == 0:
        raise ValueError("parts must list at least one part id")
    ious = []
    for part in parts:
        p, t = pred == part, target == part
        union = np.logical_or(p, t).sum()
        # The standard convention: a part in neither the prediction nor the ground truth is perfectly segmented.
        ious.append(1.0 if union == 0 else float(np.logical_and(p, t).sum()) / float(union))
    return float(np.mean(ious))


class SegmentationMeter:
    """Accumulates shape IoUs over an evaluation.

    Args:
        category_parts: ``category_parts[c]`` = global part ids of category index ``c``.
        categories: category names in index order (for the table); defaults to ``"0", "1", ...``.

    ``update(logits (B, N, P) or pred (B, N), target (B, N), category (B,))``; ``compute()`` returns
    ``{"instance_miou", "class_miou", "accuracy", "num_shapes", "per_category": {name: {"miou", "shapes"}}}``
    (IoUs in percent, like the papers).
    """

    def __init__(self, category_parts: Sequence[Sequence[int]], categories: Optional[Sequence[str]] = None) -> None:
        self.category_parts = [list(map(int, parts)) for parts in category_parts]
        self.categories = list(categories) if categories is not None else [str(i) for i in range(len(category_parts))]
        if len(self.categories) != len(self.category_parts):
            raise ValueError(
                f"{len(self.categories)} category names for {len(self.category_parts)} category part lists"
            )
        self.reset()

    def reset(self) -> None:
        self._ious: Dict[int, List[float]] = {c: [] for c in range(len(self.category_parts))}
        self._correct = 0
        self._total = 0

    def update(self, logits_or_pred: torch.Tensor, target: torch.Tensor, category: torch.Tensor) -> None:
        from ..models.segmentation import predict_parts

        category = category.reshape(-1).long().cpu()
        if logits_or_pred.dim() == 3:
            pred = predict_parts(logits_or_pred.detach().float().cpu(), category, self.category_parts)
        elif logits_or_pred.dim() == 2:
            pred = logits_or_pred.detach().long().cpu()
        else:
            raise ValueError(f"expected logits (B, N, P) or predictions (B, N), got {tuple(logits_or_pred.shape)}")
        target = target.detach().long().cpu()
        if pred.shape != target.shape or pred.shape[0] != category.shape[0]:
            raise ValueError(
                f"shapes disagree: predictions {tuple(pred.shape)}, target {tuple(target.shape)}, "
                f"category {tuple(category.shape)}"
            )
        pred_np, target_np = pred.numpy(), target.numpy()
        self._correct += int((pred_np == target_np).sum())
        self._total += int(target_np.size)
        for b, c in enumerate(category.tolist()):
            if not 0 <= c < len(self.category_parts):
                raise ValueError(f"category id {c} outside [0, {len(self.category_parts)})")
            self._ious[c].append(shape_iou(pred_np[b], target_np[b], self.category_parts[c]))

    def compute(self) -> Dict[str, object]:
        all_ious = [iou for ious in self._ious.values() for iou in ious]
        if not all_ious:
            raise RuntimeError("SegmentationMeter.compute() called before any update()")
        per_category = {
            self.categories[c]: {"miou": 100.0 * float(np.mean(ious)), "shapes": len(ious)}
            for c, ious in self._ious.items()
            if ious
        }
        return {
            "instance_miou": 100.0 * float(np.mean(all_ious)),
            "class_miou": float(np.mean([v["miou"] for v in per_category.values()])),
            "accuracy": 100.0 * self._correct / max(1, self._total),
            "num_shapes": len(all_ious),
            "per_category": per_category,
        }


def format_category_table(metrics: Dict[str, object]) -> str:
    """A markdown table: one row per category (mIoU, shapes) and the class/instance mIoU summary."""
    lines = ["| category | shapes | mIoU |", "|---|---:|---:|"]
    for name, row in metrics["per_category"].items():  # type: ignore[union-attr]
        lines.append(f"| {name} | {row['shapes']} | {row['miou']:.2f} |")
    lines.append(f"| **class mIoU** | {metrics['num_shapes']} | {metrics['class_miou']:.2f} |")
    lines.append(f"| **instance mIoU** | {metrics['num_shapes']} | {metrics['instance_miou']:.2f} |")
    return "\n".join(lines)
