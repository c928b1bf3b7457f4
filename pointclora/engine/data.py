"""Data plumbing shared by every task: seeded per-sample augmentation, evaluation caches, the one validation carve,
and the loaders the Trainer uses.

One carve for every task: ``carve_indices(n, fraction, seed)`` is the only place a validation split is cut from a
training split, so the same ``data.val_seed`` holds out the same shapes in pre-training, classification and part
segmentation (a pre-trained backbone is never validated on shapes another stage trained on by accident).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

__all__ = [
    "TaskData",
    "SeededDataset",
    "CachedDataset",
    "carve_indices",
    "split_with_validation",
    "seed_everything",
    "autocast_context",
]


@dataclass
class TaskData:
    """What a task's datasets are: ``train`` / ``val`` / ``test`` (``test`` may be None for pre-training), where the
    validation came from (printed and stored in metrics.json), and task metadata (classes, categories, parts...)."""

    train: Dataset
    val: Dataset
    test: Optional[Dataset]
    val_source: str
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def val_is_test(self) -> bool:
        return self.val is self.test


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class SeededDataset(Dataset):
    """Sample ``i`` in epoch ``e`` draws its random transforms from seed ``(seed, e, i)``.

    Augmentation then no longer depends on which process or worker loads the sample, or on what ran before: the same
    global batch gets the same augmentation with 1 or 2 processes, and a resumed run sees the same data.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample_seed = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed % 2**63)
            return self.dataset[index]


class CachedDataset(Dataset):
    """Keeps each sample after its first load. For evaluation splits only (their transforms are deterministic, or
    seeded per index): re-running FPS on every sample every epoch dominates small runs on a CPU."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.cache: Dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        if index not in self.cache:
            self.cache[index] = self.dataset[index]
        return self.cache[index]


def carve_indices(n: int, fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """``(train indices, val indices)``: ``round(fraction * n)`` (at least 1) shapes held out with ``seed``.

    The order depends only on ``(n, seed)``, never on the training seed or the task.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {fraction}")
    n_val = max(1, int(round(fraction * n)))
    if n_val >= n:
        raise ValueError(
            f"cannot carve a validation set of {n_val} out of {n} training samples; lower data.val_fraction or use "
            "data.val_split: test"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


def split_with_validation(
    build: Callable[[str, bool], Optional[Dataset]],
    data_cfg: Mapping[str, Any],
    train_split: str = "train",
    need_test: bool = True,
) -> TaskData:
    """Train / val / test from ``build(split, train_transforms) -> dataset or None (split absent)``.

    ``data.val_split``: ``auto`` uses the dataset's own ``val`` split when it has one, else carves; ``carve`` always
    carves ``val_fraction`` of train with ``val_seed``; ``test`` selects on the test split (the papers' protocol,
    labelled so in every output) and trains on all of train.
    """
    mode = str(data_cfg.get("val_split", "auto"))
    if mode not in ("auto", "carve", "test"):
        raise ValueError(f"data.val_split must be auto, carve or test, got {mode!r}")
    test = build("test", False) if (need_test or mode == "test") else None
    if mode == "test" and test is None:
        raise ValueError("data.val_split: test needs a test split, and this dataset has none")
    train = build(train_split, True)
    if train is None or len(train) == 0:
        raise ValueError(f"the dataset has no {train_split!r} samples")
    if mode == "test":
        return TaskData(train, test, test, "test (papers' protocol: best epoch chosen on test, optimistic)")
    if mode == "auto" and train_split == "train":
        val = build("val", False)
        if val is not None and len(val) > 0:
            return TaskData(train, val, test, "the dataset's val split")
    frac, vseed = float(data_cfg.get("val_fraction", 0.1)), int(data_cfg.get("val_seed", 0))
    tr_idx, va_idx = carve_indices(len(train), frac, vseed)
    # Carved shapes come from the train split read with evaluation transforms; a fixed seed per index makes readers
    # whose point draw is random (segmentation) give every evaluation the same points.
    train_eval = SeededDataset(build(train_split, False), vseed)
    val = Subset(train_eval, va_idx)
    return TaskData(Subset(train, tr_idx), val, test, f"{len(va_idx)} of {len(train)} {train_split} samples "
                    f"carved (val_fraction {frac}, val_seed {vseed})")  # fmt: skip


def autocast_context(device: torch.device, enabled: bool, dtype_name: str = "auto") -> Tuple[Callable, torch.dtype]:
    """``train.amp``: bf16 on CPU; fp16 on CUDA (with a GradScaler) unless ``train.amp_dtype`` asks for bf16."""
    if dtype_name == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    elif dtype_name in ("bfloat16", "bf16"):
        dtype = torch.bfloat16
    elif dtype_name in ("float16", "fp16", "half"):
        dtype = torch.float16
    else:
        raise ValueError(f"train.amp_dtype must be auto, bfloat16 or float16, got {dtype_name!r}")
    if not enabled:
        return contextlib.nullcontext, torch.float32
    return (lambda: torch.autocast(device_type=device.type, dtype=dtype)), dtype
