"""ScanObjectNN (OBJ_BG, OBJ_ONLY, PB_T50_RS) from the official ``h5_files`` release."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch

from .base import ClassificationDataset, check_labels, check_split, content_keys, missing_dataset, to_sample
from .io import DataFormatError, check_finite, read_h5_arrays

__all__ = ["ScanObjectNN", "SCANOBJECTNN_CLASSES", "VARIANT_FILES"]

#: Class names (Point-BERT ``ScanObjectNN_shape_names.txt``); label = index.
SCANOBJECTNN_CLASSES: List[str] = [
    "bag",
    "bin",
    "box",
    "cabinet",
    "chair",
    "desk",
    "display",
    "door",
    "shelf",
    "table",
    "bed",
    "pillow",
    "sink",
    "sofa",
    "toilet",
]

#: variant -> (folder, train file, test file)
VARIANT_FILES = {
    "OBJ_BG": ("main_split", "training_objectdataset.h5", "test_objectdataset.h5"),
    "OBJ_ONLY": ("main_split_nobg", "training_objectdataset.h5", "test_objectdataset.h5"),
    "PB_T50_RS": (
        "main_split",
        "training_objectdataset_augmentedrot_scale75.h5",
        "test_objectdataset_augmentedrot_scale75.h5",
    ),
}
_ALIASES = {
    "hardest": "PB_T50_RS",
    "objectbg": "OBJ_BG",
    "objbg": "OBJ_BG",
    "objectonly": "OBJ_ONLY",
    "objonly": "OBJ_ONLY",
}

WHERE = (
    "https://hkust-vgd.github.io/scanobjectnn/ (h5_files.zip; download requires agreeing to the terms of use "
    "form, research use only)"
)
LAYOUT = """  <root>/main_split/training_objectdataset.h5, test_objectdataset.h5                        (OBJ_BG)
  <root>/main_split_nobg/training_objectdataset.h5, test_objectdataset.h5                   (OBJ_ONLY)
  <root>/main_split/training_objectdataset_augmentedrot_scale75.h5, test_..._scale75.h5     (PB_T50_RS)
  each with 'data' (n, 2048, 3) float32, 'label' (n,) int in 0..14, optional 'mask' (n, 2048)
  <root> may also be the folder holding h5_files/, or main_split/ itself"""


class ScanObjectNN(ClassificationDataset):
    """ScanObjectNN classification. Sample: ``{"points": float32 (2048, 3), "label": int in 0..14}``.

    No normalisation (as the reference); point order is shuffled in train (``shuffle=None`` -> train only).
    ``return_mask=True`` adds ``"mask"`` (int64 (2048,), -1 = background) when the file has one.
    ``classes`` overrides the 15 standard names (e.g. for a re-labelled release).
    """

    #: Axis pointing up (the PEFT papers' rotation augmentation spins about y, the vertical); ``visualize`` uses it.
    up_axis = "y"

    def __init__(
        self,
        root: Union[str, os.PathLike],
        split: str = "train",
        variant: str = "PB_T50_RS",
        transform: Optional[Callable] = None,
        shuffle: Optional[bool] = None,
        return_mask: bool = False,
        classes: Optional[Sequence[str]] = None,
    ):
        super().__init__(root, check_split(split, ("train", "test"), "ScanObjectNN"), transform)
        v = _ALIASES.get(str(variant).lower().replace("_", ""), str(variant).upper())
        if v not in VARIANT_FILES:
            raise ValueError(f"ScanObjectNN: variant must be one of {list(VARIANT_FILES)}, got {variant!r}")
        self.variant = v
        self.shuffle = (split == "train") if shuffle is None else shuffle
        self.return_mask = return_mask
        self.classes = list(classes) if classes is not None else list(SCANOBJECTNN_CLASSES)
        self.path = self._resolve()
        d = read_h5_arrays(self.path, ["data", "label"], ["mask"])
        data, label = d["data"], d["label"]
        if data.ndim != 3 or data.shape[2] < 3 or data.dtype.kind != "f":
            raise DataFormatError(f"{self.path}: 'data' must be float (n, 2048, 3), got {data.dtype} {data.shape}")
        if label.ndim == 2 and label.shape[1] == 1:
            label = label[:, 0]
        if label.ndim != 1 or len(label) != len(data):
            raise DataFormatError(f"{self.path}: 'label' must be (n,) with n={len(data)}, got shape {label.shape}")
        if len(data) == 0 or data.shape[1] == 0:
            raise DataFormatError(f"{self.path}: no points in 'data' (shape {data.shape})")
        check_finite(data.reshape(-1, data.shape[2]), self.path, "coordinates in 'data'")
        self.labels = check_labels(label, len(self.classes), f"{self.path} ('label')", "the ScanObjectNN classes")
        self._data = np.ascontiguousarray(data[:, :, :3], dtype=np.float32)
        self._mask = d.get("mask")
        if self._mask is not None and self._mask.shape != data.shape[:2]:
            raise DataFormatError(f"{self.path}: 'mask' must be {data.shape[:2]}, got {self._mask.shape}")

    def _resolve(self) -> Path:
        folder, train, test = VARIANT_FILES[self.variant]
        name = train if self.split == "train" else test
        # Accepted roots: <root>/<folder>/<file>, <root>/h5_files/<folder>/<file>, or <root>=<folder> itself
        # (Point-MAE's configs point ROOT at .../main_split).
        candidates = [self.root / folder / name, self.root / "h5_files" / folder / name]
        if self.root.name == folder:
            candidates.append(self.root / name)
        for c in candidates:
            if c.is_file():
                return c
        raise missing_dataset(f"ScanObjectNN {self.variant}", self.root, [candidates[0]], WHERE, LAYOUT)

    def sample_keys(self) -> List[str]:
        """A hash of each object's points (the release holds every split in its own HDF5 file)."""
        return content_keys(self._data)

    def source_files(self) -> List[Path]:
        return [Path(self.path)]

    def get(self, index: int):
        pts = self._data[index]
        perm = torch.randperm(len(pts)).numpy() if self.shuffle else None
        if perm is not None:
            pts = pts[perm]
        extra = {}
        if self.return_mask and self._mask is not None:
            m = self._mask[index]
            extra["mask"] = (m[perm] if perm is not None else m).astype(np.int64)
        return to_sample(pts, label=int(self.labels[index]), **extra)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"
