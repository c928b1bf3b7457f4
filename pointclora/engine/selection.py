"""Which epoch a run reports: best on validation, or the last epoch when the validation set is too small to choose.

Why: with 10 labelled shapes per class, a 10 % carve leaves ~10 validation shapes, and the epoch chosen on them scored
worse on held-out shapes than the last epoch, with 10x the spread over seeds (issue 19: CLoRA 80.0 ± 5.8 % chosen vs
85.7 ± 0.5 % last). ``train.select: auto`` therefore falls back to the last epoch under :data:`MIN_PER_CLASS` samples
of some class or :data:`MIN_TOTAL` in all, says so once, and records it in ``metrics.json`` and the table.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .data import TaskData, dataset_labels

__all__ = ["MIN_PER_CLASS", "MIN_TOTAL", "small_validation_reason", "choose_selection"]

MIN_PER_CLASS = 20
MIN_TOTAL = 100


def small_validation_reason(val: Any, min_per_class: int = MIN_PER_CLASS, min_total: int = MIN_TOTAL
                            ) -> Optional[str]:  # fmt: skip
    """Why ``val`` is too small to choose an epoch on (a short phrase), or None when it is large enough."""
    n = len(val)
    if n < min_total:
        return f"{n} validation samples, under {min_total}"
    labels = dataset_labels(val)
    if labels is not None and labels.size:
        counts = np.bincount(labels.astype(np.int64))
        counts = counts[counts > 0]
        if counts.min() < min_per_class:
            return f"{int(counts.min())} validation samples in the smallest class, under {min_per_class}"
    return None


def choose_selection(mode: str, data: TaskData, small_val_selects_last: bool = True) -> Tuple[bool, Optional[str]]:
    """``(select the last epoch?, why)`` for ``train.select`` = auto | best | last. Selection on the test split (the
    field's protocol, chosen explicitly) is left as asked, and so is a task that declares its validation score steady
    on few samples (``small_val_selects_last = False``)."""
    if mode not in ("auto", "best", "last"):
        raise ValueError(f"train.select must be auto, best or last, got {mode!r}")
    if mode == "last":
        return True, "train.select: last"
    if mode == "best" or data.val_is_test or not small_val_selects_last:
        return False, None
    reason = small_validation_reason(data.val)
    return (reason is not None), reason
