"""Shared pieces of the dataset classes: the sample contract, missing-data messages, label checks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .io import DataFormatError, DatasetNotFoundError

__all__ = [
    "PointCloudDataset",
    "ClassificationDataset",
    "missing_dataset",
    "pc_normalize",
    "content_keys",
    "check_split",
    "check_labels",
    "to_sample",
]


def content_keys(arrays: Iterable[Any]) -> List[str]:
    """A sample identity for in-memory clouds: the sha1 of each array's bytes (same points, same key)."""
    return ["content:" + hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest() for a in arrays]


def pc_normalize(xyz: np.ndarray) -> np.ndarray:
    """Centre on the centroid and divide by the max radius: ``(N, 3)`` -> ``(N, 3)`` (Point-MAE ``pc_normalize``)."""
    xyz = xyz - xyz.mean(axis=0, keepdims=True)
    radius = np.sqrt((xyz**2).sum(axis=1)).max() if len(xyz) else 0.0
    return xyz / radius if radius > 0 else xyz


def missing_dataset(name: str, root: Any, missing: Sequence[Any], where: str, layout: str) -> DatasetNotFoundError:
    """Build the error for an absent dataset: what is missing, where to get it, the exact layout expected."""
    shown = "\n  ".join(str(m) for m in list(missing)[:5])
    more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
    return DatasetNotFoundError(
        f"{name} not found under root={str(root)!r}. Missing:\n  {shown}{more}\n"
        f"Get it from: {where}\nExpected layout:\n{layout.rstrip()}\n"
        "Point the dataset config's `root` at that folder (see datasets/README.md)."
    )


def check_split(split: Optional[str], allowed: Sequence[str], name: str) -> str:
    if split not in allowed:
        raise ValueError(f"{name}: split must be one of {list(allowed)}, got {split!r}")
    return split


def check_labels(labels: np.ndarray, num_classes: int, source: Any, names_source: str = "class names") -> np.ndarray:
    """Labels must be integers in ``[0, num_classes)``; out-of-range ids are an error, never silently wrapped."""
    labels = np.asarray(labels)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise DataFormatError(
                f"{source}: labels must be integers, got dtype {labels.dtype} with non-integer values"
            )
    labels = labels.astype(np.int64)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        first = int(np.nonzero(bad)[0][0])
        raise DataFormatError(
            f"{source}: label {int(labels[first])} (sample {first}) out of range: {names_source} define "
            f"{num_classes} classes (valid ids 0..{num_classes - 1})"
        )
    return labels


def to_sample(points: np.ndarray, **extra: Any) -> Dict[str, Any]:
    """Points as a float32 tensor; integer fields as Python ints; arrays (``seg``) as int64 tensors."""
    out: Dict[str, Any] = {"points": torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))}
    for k, v in extra.items():
        if isinstance(v, np.ndarray):
            out[k] = torch.from_numpy(v.astype(np.int64))
        elif isinstance(v, (np.integer, int)):
            out[k] = int(v)
        else:
            out[k] = v
    return out


class PointCloudDataset(Dataset):
    """Base class: ``root``, ``split``, ``transform``; subclasses implement ``__len__`` and ``get(index)``.

    ``dataset[i]`` returns ``transform(get(i))`` (a sample dict).
    """

    def __init__(self, root: Any, split: Optional[str], transform: Optional[Callable] = None):
        self.root = Path(root) if root is not None else None
        self.split = split
        self.transform = transform

    def get(self, index: int) -> Dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {len(self)} samples")
        sample = self.get(index)
        return self.transform(sample) if self.transform is not None else sample

    # ---- what the dataset declares about its samples (the split-overlap and file checks use only these)
    def sample_keys(self) -> Optional[List[str]]:
        """One identity per sample, in order (its source file, list entry, or a hash of its points: see
        :func:`content_keys`), or None when the dataset cannot tell (its splits are then reported as not checked)."""
        return None

    def source_files(self) -> List[Path]:
        """The files the dataset reads, one per sample when it reads one file per sample (they name a bad sample in
        the validation report and make the validation cache's fingerprint); [] when there are none."""
        return []

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, samples={len(self)}"
            f"{', ' + extra if extra else ''})"
        )


class ClassificationDataset(PointCloudDataset):
    """Adds ``classes``, ``num_classes`` and ``labels`` (``(len,)`` int64, so label statistics and few-shot episode
    generation need no point loading)."""

    classes: List[str]
    labels: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_to_idx(self) -> Dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.labels)
