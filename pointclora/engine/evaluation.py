"""Classification metrics and the evaluation pass, with optional multi-view voting.

Voting follows Point-MAE's ``validate_vote`` as one honest pass: ``num_views`` copies of each test cloud, each with
Point-MAE's scale & translate augmentation (anisotropic scale U(2/3, 3/2), translation U(-0.2, 0.2) per axis), logits
averaged, argmax. The views come from a generator seeded once, so the number is reproducible; it is never the max over
repeated votes.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "confusion_matrix",
    "accuracy_from_confusion",
    "mean_class_accuracy",
    "per_class_accuracy",
    "scale_translate",
    "evaluate",
    "format_confusion",
]


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes, num_classes)`` int64 counts; row = true class, column = predicted class."""
    idx = targets.long().cpu() * num_classes + preds.long().cpu()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy_from_confusion(cm: torch.Tensor) -> float:
    """Overall accuracy in percent."""
    total = int(cm.sum())
    return 100.0 * float(cm.diag().sum()) / total if total else 0.0


def per_class_accuracy(cm: torch.Tensor) -> List[Optional[float]]:
    """Recall of each class in percent; None for a class absent from the targets."""
    support = cm.sum(dim=1)
    return [100.0 * float(cm[i, i]) / float(support[i]) if support[i] > 0 else None for i in range(cm.shape[0])]


def mean_class_accuracy(cm: torch.Tensor) -> float:
    """Mean of the per-class accuracies over the classes present in the targets (the field's mAcc), percent."""
    values = [v for v in per_class_accuracy(cm) if v is not None]
    return sum(values) / len(values) if values else 0.0


def scale_translate(
    points: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    scale_low: float = 2.0 / 3.0,
    scale_high: float = 3.0 / 2.0,
    translate_range: float = 0.2,
) -> torch.Tensor:
    """Point-MAE's ``PointcloudScaleAndTranslate`` on a batch ``(B, N, 3+)``: xyz * s + t, per sample and axis."""
    B = points.shape[0]
    gen_device = generator.device if generator is not None else points.device
    scale = torch.rand(B, 1, 3, generator=generator, device=gen_device) * (scale_high - scale_low) + scale_low
    shift = (torch.rand(B, 1, 3, generator=generator, device=gen_device) * 2 - 1) * translate_range
    scale, shift = scale.to(points.device, points.dtype), shift.to(points.device, points.dtype)
    xyz = points[..., :3] * scale + shift
    return torch.cat([xyz, points[..., 3:]], dim=-1) if points.shape[-1] > 3 else xyz


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    num_classes: int,
    device: torch.device,
    vote: int = 0,
    vote_seed: int = 0,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    progress: Optional[Callable[[Any], Any]] = None,
) -> Dict[str, Any]:
    """Score ``model`` on ``loader`` (batches ``{"points", "label"}``).

    Returns ``loss``, ``acc``, ``mean_class_acc`` (percent), ``per_class_acc``, ``confusion`` (list of lists) and, with
    ``vote > 0``, the same for the ``vote``-view average as ``vote_acc``, ``vote_mean_class_acc``,
    ``vote_per_class_acc``, ``vote_confusion``.
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator(device="cpu").manual_seed(vote_seed)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    cm_vote = torch.zeros_like(cm)
    loss_sum, count = 0.0, 0
    batches = progress(loader) if progress is not None else loader
    for batch in batches:
        points = batch["points"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True).long().view(-1)
        with autocast():
            logits = model(points).float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        count += labels.numel()
        cm += confusion_matrix(logits.argmax(-1), labels, num_classes)
        if vote > 0:
            total = torch.zeros_like(logits)
            for _ in range(vote):
                with autocast():
                    total += model(scale_translate(points, generator=gen)).float()
            cm_vote += confusion_matrix((total / vote).argmax(-1), labels, num_classes)
    model.train(was_training)
    out: Dict[str, Any] = {
        "loss": loss_sum / max(count, 1),
        "acc": accuracy_from_confusion(cm),
        "mean_class_acc": mean_class_accuracy(cm),
        "per_class_acc": per_class_accuracy(cm),
        "confusion": cm.tolist(),
        "num_samples": count,
    }
    if vote > 0:
        out.update(
            vote_views=vote,
            vote_acc=accuracy_from_confusion(cm_vote),
            vote_mean_class_acc=mean_class_accuracy(cm_vote),
            vote_per_class_acc=per_class_accuracy(cm_vote),
            vote_confusion=cm_vote.tolist(),
        )
    return out


def format_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """Markdown confusion matrix (rows true, columns predicted)."""
    short = [str(c)[:10] for c in classes]
    lines = ["| true \\ pred | " + " | ".join(short) + " |", "|---" * (len(classes) + 1) + "|"]
    for name, row in zip(short, confusion):
        lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines)
