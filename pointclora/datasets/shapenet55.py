"""ShapeNet-55 pre-training clouds (Point-BERT release: ``shapenet_pc/*.npy`` + ``ShapeNet-55/{train,test}.txt``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional, Union

import numpy as np
import torch

from .base import ClassificationDataset, check_split, missing_dataset, pc_normalize, to_sample
from .io import DataFormatError, check_finite, read_lines

__all__ = ["ShapeNet55"]

WHERE = (
    "the Point-BERT release (ShapeNet55-34.zip linked from Point-BERT/Point-MAE DATASET.md; ShapeNet terms: "
    "academic non-commercial use)"
)
LAYOUT = """  <root>/ShapeNet-55/train.txt, test.txt   lines '<synset>-<model id>.npy' (41,952 / 10,518)
  <root>/shapenet_pc/<synset>-<model id>.npy   (8192, 3) arrays
  (root may also be the ShapeNet-55 folder itself, with shapenet_pc/ beside it; or pass pc_path=)"""


class ShapeNet55(ClassificationDataset):
    """ShapeNet-55. Sample: ``{"points": float32 (num_points, 3), "label": int}`` (label = synset index in sorted
    order, handy for linear probing; pre-training ignores it).

    Train draws a random subset of ``num_points`` (as the reference); test takes a subset fixed by ``seed`` and the
    index, so evaluation is reproducible. ``num_points=None`` keeps all 8192. ``whole=True`` prepends test.txt to
    train (Point-BERT). Attributes ``taxonomy_ids`` and ``model_ids`` follow the file names.
    """

    #: Axis pointing up in the stored clouds (ShapeNet models are y-up); ``visualize`` uses it by default.
    up_axis = "y"

    def __init__(
        self,
        root: Union[str, os.PathLike],
        split: str = "train",
        num_points: Optional[int] = 1024,
        transform: Optional[Callable] = None,
        pc_path: Optional[Union[str, os.PathLike]] = None,
        whole: bool = False,
        seed: int = 0,
    ):
        super().__init__(root, check_split(split, ("train", "test"), "ShapeNet55"), transform)
        data_dir = self.root / "ShapeNet-55"
        if not (data_dir / f"{split}.txt").is_file() and (self.root / f"{split}.txt").is_file():
            data_dir = self.root  # DATA_PATH style: root is the ShapeNet-55 folder
        self.pc_path = Path(pc_path) if pc_path is not None else data_dir.parent / "shapenet_pc"
        lists = (
            [data_dir / "test.txt", data_dir / "train.txt"]
            if (whole and split == "train")
            else [data_dir / f"{split}.txt"]
        )
        missing = [p for p in lists if not p.is_file()] + ([self.pc_path] if not self.pc_path.is_dir() else [])
        if missing:
            raise missing_dataset("ShapeNet-55", root, missing, WHERE, LAYOUT)
        self.files = [ln for lst in lists for ln in read_lines(lst)]
        self.taxonomy_ids, self.model_ids = [], []
        for ln in self.files:
            if "-" not in ln:
                raise DataFormatError(f"{lists[0].parent}: line {ln!r} is not '<synset>-<model id>.npy'")
            tax, rest = ln.split("-", 1)
            self.taxonomy_ids.append(tax)
            self.model_ids.append(rest.split(".")[0])
        self.classes = sorted(set(self.taxonomy_ids))
        idx = self.class_to_idx
        self.labels = np.asarray([idx[t] for t in self.taxonomy_ids], dtype=np.int64)
        self.num_points, self.seed = num_points, seed

    def sample_keys(self) -> List[str]:
        """The split list's entry of each shape (its file name under ``pc_path``)."""
        return list(self.files)

    def source_files(self) -> List[Path]:
        return [Path(self.pc_path) / f for f in self.files]

    def get(self, index: int):
        path = self.pc_path / self.files[index]
        if not path.is_file():
            raise missing_dataset("ShapeNet-55 cloud", self.root, [path], WHERE, LAYOUT)
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise DataFormatError(f"{path}: not a plain numeric .npy array ({e})") from None
        if arr.ndim != 2 or arr.shape[1] < 3 or arr.shape[0] == 0:
            raise DataFormatError(f"{path}: expected an (8192, 3) array, got shape {arr.shape}")
        arr = check_finite(arr[:, :3].astype(np.float32), path)
        if self.num_points is not None:
            n = len(arr)
            if n < self.num_points:
                raise DataFormatError(f"{path}: {n} points, fewer than num_points={self.num_points}")
            if self.split == "train":
                choice = torch.randperm(n)[: self.num_points].numpy()
            else:
                choice = np.random.default_rng([self.seed, index]).permutation(n)[: self.num_points]
            arr = arr[choice]
        return to_sample(pc_normalize(arr), label=int(self.labels[index]))

    def extra_repr(self) -> str:
        return f"num_points={self.num_points}, synsets={self.num_classes}"
