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
    "stratified_carve",
    "dataset_labels",
    "CarvedSplit",
    "resolve_data_root",
    "carved_test_for_evaluation",
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

    #: sample ``i`` is ``dataset[i]``: the split-overlap check and file validation look through it
    index_preserving = True

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

    index_preserving = True

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


def dataset_labels(ds: Any) -> Optional[np.ndarray]:
    """The class label of every sample of ``ds`` (through ``Subset`` / :class:`SeededDataset` / :class:`CachedDataset`
    wrappers) without reading a file, or None when the base dataset keeps no ``labels`` array."""
    indices: Optional[List[int]] = None
    while True:
        if isinstance(ds, Subset):
            idx = list(ds.indices)
            indices = idx if indices is None else [idx[i] for i in indices]
            ds = ds.dataset
        elif isinstance(ds, (SeededDataset, CachedDataset)):
            ds = ds.dataset
        else:
            break
    labels = getattr(ds, "labels", None)
    if labels is None:
        return None
    labels = np.asarray(labels).reshape(-1)
    return labels if indices is None else labels[np.asarray(indices, dtype=np.int64)]


def stratified_carve(labels: Optional[np.ndarray], n: int, fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """``(kept indices, held-out indices)``: ``round(fraction * n_c)`` samples of every class ``c`` held out with
    ``seed`` (at least 1 from a class of 2 or more; a class of 1 stays whole), so a small carve still holds every
    class in proportion. ``labels=None`` (no class per sample): a plain seeded carve."""
    if not 0 < fraction < 1:
        raise ValueError(f"data.test_fraction must be in (0, 1), got {fraction}")
    if labels is None:
        return carve_indices(n, fraction, seed)
    g = torch.Generator().manual_seed(int(seed))
    held: List[int] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = min(len(members) - 1, max(1, int(round(fraction * len(members))))) if len(members) > 1 else 0
        order = torch.randperm(len(members), generator=g).tolist()
        held += [int(members[i]) for i in order[:k]]
    held_set = set(held)
    return [i for i in range(n) if i not in held_set], sorted(held)


class CarvedSplit(Subset):
    """A ``Subset`` that still answers the base dataset's metadata (``classes``, ``categories``, ``up_axis``...), so
    a carved test split stands where a dataset's own split would. Per-sample arrays are not forwarded."""

    _PER_SAMPLE = ("labels", "samples", "files", "data", "points")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("dataset", "indices") or name in self._PER_SAMPLE:
            raise AttributeError(name)
        ds = self.__dict__.get("dataset")
        while isinstance(ds, (Subset, SeededDataset, CachedDataset)) and not hasattr(type(ds), name) \
                and name not in vars(ds):  # fmt: skip
            ds = ds.dataset
        return getattr(ds, name)

    @property
    def labels(self) -> Optional[np.ndarray]:
        return dataset_labels(self)


def _with_test_carve(build: Callable[[str, bool], Optional[Dataset]], data_cfg: Mapping[str, Any], train_split: str
                     ) -> Tuple[Callable[[str, bool], Optional[Dataset]], Optional[str]]:  # fmt: skip
    """``data.test_split: carve`` (a folder with only a train split): the test split becomes ``test_fraction`` of
    train, stratified by class with ``test_seed``, read with evaluation transforms; train (and any validation carve)
    is the rest. Returns the wrapped builder and the description recorded in metrics.json."""
    mode = str(data_cfg.get("test_split", "dataset"))
    if mode not in ("dataset", "carve"):
        raise ValueError(f"data.test_split must be dataset or carve, got {mode!r}")
    if mode == "dataset":
        return build, None
    frac, tseed = float(data_cfg.get("test_fraction", 0.2)), int(data_cfg.get("test_seed", 0))
    full_train = build(train_split, True)
    if full_train is None or len(full_train) == 0:
        raise ValueError(f"data.test_split: carve needs a {train_split!r} split to carve from, and it is empty")
    keep, held = stratified_carve(dataset_labels(full_train), len(full_train), frac, tseed)
    if not keep:
        raise ValueError(f"data.test_fraction={frac} leaves no training samples out of {len(full_train)}")

    def carved(split: str, train: bool) -> Optional[Dataset]:
        if split == "test":
            # evaluation transforms, one fixed draw per index (readers that sample points at random stay repeatable)
            return CarvedSplit(SeededDataset(build(train_split, False), tseed), held)
        if split == train_split:
            return CarvedSplit(full_train if train else build(train_split, False), keep)
        return build(split, train)

    return carved, (f"{len(held)} of {len(full_train)} {train_split} samples carved as the test split (stratified by "
                    f"class, test_fraction {frac}, test_seed {tseed}; never trained on)")  # fmt: skip


def carved_test_for_evaluation(data_cfg: Mapping[str, Any], split: str, own_dataset: bool,
                               build_train: Callable[[], Dataset]) -> Optional[Dataset]:  # fmt: skip
    """Scoring a run whose test split was carved (``data.test_split: carve``): the same held-out samples, rebuilt from
    ``build_train()`` (its train split with evaluation transforms) exactly as in training. None when the run used
    the dataset's own test split, another split is asked for, or another dataset is scored."""
    if not own_dataset or split != "test" or str(data_cfg.get("test_split", "dataset")) != "carve":
        return None
    full = build_train()
    frac, tseed = float(data_cfg.get("test_fraction", 0.2)), int(data_cfg.get("test_seed", 0))
    _, held = stratified_carve(dataset_labels(full), len(full), frac, tseed)
    return CarvedSplit(SeededDataset(full, tseed), held)


def resolve_data_root(dataset_cfg: Mapping[str, Any], data_root: Optional[str]) -> Optional[str]:
    """The absolute data folder a run reads (``--data-root`` over the config's ``root``), or None for datasets
    without one. Recorded in the run's config so ``evaluate RUN`` and ``--resume`` read the same files (#19)."""
    import os

    root = data_root if data_root is not None else dataset_cfg.get("root")
    if root is None:
        return None
    return os.path.abspath(os.path.expanduser(os.fspath(root)))


def split_with_validation(
    build: Callable[[str, bool], Optional[Dataset]],
    data_cfg: Mapping[str, Any],
    train_split: str = "train",
    need_test: bool = True,
) -> TaskData:
    """Train / val / test from ``build(split, train_transforms) -> dataset or None (split absent)``.

    ``data.val_split``: ``auto`` uses the dataset's own ``val`` split when it has one, else carves; ``carve`` always
    carves ``val_fraction`` of train with ``val_seed``; ``test`` selects on the test split (the papers' protocol,
    labelled so in every output) and trains on all of train. ``data.test_split: carve`` first holds out a stratified
    test split from train (``test_fraction``, ``test_seed``) for a folder that has only ``train/``.
    """
    build, test_source = _with_test_carve(build, data_cfg, train_split) if need_test else (build, None)
    out = _split_with_validation(build, data_cfg, train_split, need_test)
    out.meta["test_source"] = test_source or ("the dataset's test split" if out.test is not None else None)
    return out


def _split_with_validation(build: Callable[[str, bool], Optional[Dataset]], data_cfg: Mapping[str, Any],
                           train_split: str, need_test: bool) -> TaskData:  # fmt: skip
    mode = str(data_cfg.get("val_split", "auto"))
    if mode not in ("auto", "carve", "test"):
        raise ValueError(f"data.val_split must be auto, carve or test, got {mode!r}")
    try:
        test = build("test", False) if (need_test or mode == "test") else None
    except FileNotFoundError as err:
        if str(data_cfg.get("test_split", "dataset")) != "dataset":
            raise
        # A folder with only train/: say how to carve a test split instead of the bare missing-folder message.
        raise FileNotFoundError(f"{err} -- no test split: to hold out part of {train_split!r} as the test split, "
                                "add --set data.test_split=carve (data.test_fraction, data.test_seed)") from err
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
