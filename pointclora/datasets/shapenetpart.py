"""ShapeNetPart (``shapenetcore_partanno_segmentation_benchmark_v0_normal``) and datasets in the same layout."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .base import PointCloudDataset, check_split, missing_dataset, pc_normalize, to_sample
from .io import DataFormatError, DatasetNotFoundError, check_finite, read_text_points

__all__ = ["ShapeNetPart"]

WHERE = (
    "https://shapenet.cs.stanford.edu/media/shapenetcore_partanno_segmentation_benchmark_v0_normal.zip "
    "(PointNet++ release; ShapeNet terms: academic non-commercial use)"
)
LAYOUT = """  <root>/synsetoffset2category.txt                 'Category<TAB>synset' lines; category id = line index
  <root>/train_test_split/shuffled_{train,val,test}_file_list.json   ["shape_data/<synset>/<id>", ...]
  <root>/<synset>/<id>.txt                         rows 'x y z nx ny nz part' (or 'x y z part'), part = global id"""

SPLITS = ("trainval", "train", "val", "test")


class ShapeNetPart(PointCloudDataset):
    """Part segmentation. Sample: ``{"points": float32 (N, 3 or 6), "cls": int, "seg": int64 (N,)}``.

    Args:
        root: the ``shapenetcore_partanno_segmentation_benchmark_v0_normal`` folder (or any folder in its layout).
        split: ``"trainval"`` (training, as the reference), ``"train"``, ``"val"`` or ``"test"``.
        num_points: points per sample (drawn with replacement, as the reference); ``None`` keeps every point.
        use_normals: keep normals -> ``(N, 6)``; needs 7-column rows.
        eval_sampling: for val/test, ``"deterministic"`` (the draw depends only on ``seed`` and the index, so every
            evaluation sees the same points) or ``"random"`` (the reference's stochastic resampling). Training
            draws are always random.
        categories: restrict to these category names; ``cls`` keeps the line index of the full category file.
        category_parts: ``{category: [global part ids]}`` (e.g. from ``datasets/shapenetpart.yaml``). When None it
            is read from the data: every file of every split list is scanned once for its labels.
        up_axis: the axis pointing up in these files (``y`` for ShapeNet; say so for your own scans in this layout):
            runs turn the clouds into their backbone's frame.

    Attributes: ``categories`` (all names, ``cls`` = index), ``category_parts``, ``num_parts`` (max id + 1),
    ``num_categories``, ``items`` (``[(category, path)]``).
    """

    #: Axis pointing up in the stored clouds (ShapeNet models are y-up); ``visualize`` uses it by default.
    up_axis = "y"

    def __init__(
        self,
        root: Union[str, os.PathLike],
        split: str = "trainval",
        num_points: Optional[int] = 2048,
        use_normals: bool = False,
        eval_sampling: str = "deterministic",
        categories: Optional[Sequence[str]] = None,
        transform: Optional[Callable] = None,
        category_parts: Optional[Mapping[str, Sequence[int]]] = None,
        seed: int = 0,
        normalize: bool = True,
        up_axis: str = "y",
    ):
        super().__init__(root, check_split(split, SPLITS, "ShapeNetPart"), transform)
        if up_axis not in ("x", "y", "z"):
            raise ValueError(f"ShapeNetPart: up_axis must be 'x', 'y' or 'z', got {up_axis!r}")
        self.up_axis = up_axis  # ShapeNet's files are y-up; your own scans in this layout may not be
        if eval_sampling not in ("deterministic", "random"):
            raise ValueError(f"ShapeNetPart: eval_sampling must be 'deterministic' or 'random', got {eval_sampling!r}")
        if num_points is not None and num_points < 1:
            raise ValueError(f"ShapeNetPart: num_points must be >= 1 or None, got {num_points}")
        self.num_points, self.use_normals, self.eval_sampling = num_points, use_normals, eval_sampling
        self.seed, self.normalize = seed, normalize
        catfile = self.root / "synsetoffset2category.txt"
        split_dir = self.root / "train_test_split"
        lists = {s: split_dir / f"shuffled_{s}_file_list.json" for s in ("train", "val", "test")}
        missing = [p for p in [catfile, *lists.values()] if not p.is_file()]
        if missing:
            raise missing_dataset("ShapeNetPart", root, missing, WHERE, LAYOUT)
        self.categories, self.synsets = self._read_categories(catfile)
        syn_to_cat = dict(zip(self.synsets, self.categories))
        if categories is not None:
            unknown = [c for c in categories if c not in self.categories]
            if unknown:
                raise ValueError(f"ShapeNetPart: unknown categories {unknown}; {catfile.name} lists {self.categories}")
        wanted = set(categories) if categories is not None else set(self.categories)

        all_items = {s: self._read_list(lists[s], syn_to_cat) for s in lists}
        parts = ("train", "val") if split == "trainval" else (split,)
        # A category whose folder is absent is simply not part of this copy (the reference lists the folders).
        present = {c for c, s in zip(self.categories, self.synsets) if (self.root / s).is_dir()}
        self.items: List[Tuple[str, Path]] = [
            it for s in parts for it in all_items[s] if it[0] in wanted and it[0] in present
        ]
        absent = [p for _, p in self.items if not p.is_file()]
        if absent:
            raise DatasetNotFoundError(
                f"ShapeNetPart: {len(absent)} of {len(self.items)} shapes listed in the {split} split are missing, "
                f"e.g. {', '.join(str(a) for a in absent[:3])} (layout:\n{LAYOUT})"
            )
        if not self.items:
            raise missing_dataset(
                f"ShapeNetPart ({split} split, categories {sorted(wanted)})",
                root,
                [self.root / s for c, s in zip(self.categories, self.synsets) if c in wanted],
                WHERE,
                LAYOUT,
            )
        self.cat_to_idx = {c: i for i, c in enumerate(self.categories)}
        if category_parts is not None:
            self.category_parts = self._check_table(category_parts)
        else:
            scan = [it for s in lists for it in all_items[s] if it[0] in present and it[1].is_file()]
            self.category_parts = self._scan_parts(scan)
        for c, _ in self.items:
            if c not in self.category_parts:
                raise DataFormatError(
                    f"ShapeNetPart: category_parts has no entry for category {c!r} (has {sorted(self.category_parts)})"
                )
        self.num_parts = max(max(v) for v in self.category_parts.values() if v) + 1

    # -- metadata --------------------------------------------------------------------------------------------------
    @staticmethod
    def _read_categories(path: Path) -> Tuple[List[str], List[str]]:
        names, syns = [], []
        for i, line in enumerate(path.read_text().splitlines()):
            if not line.strip():
                continue
            f = line.split()
            if len(f) != 2:
                raise DataFormatError(f"{path}: line {i + 1} {line!r}: expected 'Category<TAB>synset'")
            names.append(f[0])
            syns.append(f[1])
        if not names:
            raise DataFormatError(f"{path}: no categories")
        if len(set(syns)) != len(syns) or len(set(names)) != len(names):
            raise DataFormatError(f"{path}: duplicate category name or synset")
        return names, syns

    def _read_list(self, path: Path, syn_to_cat: Dict[str, str]) -> List[Tuple[str, Path]]:
        try:
            entries = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise DataFormatError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise DataFormatError(f"{path}: expected a JSON list of 'shape_data/<synset>/<id>' strings")
        out = []
        for e in entries:
            f = e.split("/")
            if len(f) != 3:
                raise DataFormatError(f"{path}: entry {e!r} is not 'shape_data/<synset>/<id>'")
            if f[1] not in syn_to_cat:
                raise DataFormatError(f"{path}: entry {e!r} has synset {f[1]} not in synsetoffset2category.txt")
            out.append((syn_to_cat[f[1]], self.root / f[1] / f"{f[2]}.txt"))
        return out

    def _check_table(self, table: Mapping[str, Sequence[int]]) -> Dict[str, List[int]]:
        out = {}
        for c, ids in table.items():
            if c not in self.categories:
                raise ValueError(
                    f"ShapeNetPart: category_parts names {c!r}, not in the category file ({self.categories}); "
                    "for your own categories read the parts from the files: --set dataset.category_parts=null"
                )
            ids = [int(i) for i in ids]
            if not ids or min(ids) < 0:
                raise ValueError(f"ShapeNetPart: category_parts[{c!r}] must be non-negative part ids, got {ids}")
            out[c] = sorted(ids)
        return out

    def _scan_parts(self, items: Sequence[Tuple[str, Path]]) -> Dict[str, List[int]]:
        found: Dict[str, set] = {}
        for c, p in items:
            found.setdefault(c, set()).update(np.unique(self._seg_of(self._read(p)[1], p)).tolist())
        return {c: sorted(found[c]) for c in self.categories if c in found}

    # -- samples ---------------------------------------------------------------------------------------------------
    def _read(self, path: Path) -> Tuple[np.ndarray, np.ndarray]:
        arr = read_text_points(path)
        if arr.shape[1] not in (4, 7):
            raise DataFormatError(
                f"{path}: rows hold {arr.shape[1]} values, expected 7 (x y z nx ny nz part) or 4 (x y z part)"
            )
        if self.use_normals and arr.shape[1] != 7:
            raise DataFormatError(f"{path}: use_normals=True but rows have no normals (x y z part)")
        check_finite(arr, path)
        return arr[:, : (6 if arr.shape[1] == 7 and self.use_normals else 3)], arr[:, -1]

    @staticmethod
    def _seg_of(raw: np.ndarray, path: Path) -> np.ndarray:
        seg = np.rint(raw)
        if np.abs(seg - raw).max() > 1e-3 or seg.min() < 0:
            raise DataFormatError(f"{path}: part labels must be non-negative integers (last column)")
        return seg.astype(np.int64)

    def sample_keys(self) -> List[str]:
        """The resolved path of each shape's file."""
        return [str(Path(p).resolve()) for _, p in self.items]

    def source_files(self) -> List[Path]:
        return [Path(p) for _, p in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def get(self, index: int):
        cat, path = self.items[index]
        pts, raw_seg = self._read(path)
        seg = self._seg_of(raw_seg, path)
        allowed = self.category_parts[cat]
        bad = ~np.isin(seg, allowed)
        if bad.any():
            raise DataFormatError(
                f"{path}: part label {int(seg[bad][0])} out of range for category {cat!r} (its parts are {allowed})"
            )
        pts = np.array(pts, dtype=np.float32)
        if self.normalize:
            pts[:, :3] = pc_normalize(pts[:, :3])
        if self.num_points is not None:
            if self.split in ("val", "test") and self.eval_sampling == "deterministic":
                rng = np.random.default_rng([self.seed, index])
                choice = rng.choice(len(seg), self.num_points, replace=True)
            else:
                choice = torch.randint(len(seg), (self.num_points,)).numpy()  # reference: choice(replace=True)
            pts, seg = pts[choice], seg[choice]
        return to_sample(pts, cls=self.cat_to_idx[cat], seg=seg)

    @property
    def num_categories(self) -> int:
        return len(self.categories)

    def extra_repr(self) -> str:
        return f"num_points={self.num_points}, categories={sorted({c for c, _ in self.items})}"
