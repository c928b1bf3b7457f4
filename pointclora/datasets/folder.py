"""A class-per-folder dataset of the user's own files, like torchvision's ``ImageFolder``."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .base import ClassificationDataset, missing_dataset, pc_normalize, to_sample
from .io import DataFormatError, point_cloud_extensions, read_point_cloud

__all__ = ["PointCloudFolder"]

LAYOUT = """  <root>/<class>/<split>/<file>     (the official ModelNet10 layout: chair/train/chair_0001.off)
  <root>/<split>/<class>/<file>     (torchvision-style)
  <root>/<class>/<file>             (split=None)
  files: .pcd[.gz] .ply .off .obj (meshes are surface-sampled) .npy .txt[.gz] .xyz .pts"""


class PointCloudFolder(ClassificationDataset):
    """Classification over ``<class>/<split>/file`` or ``<split>/<class>/file`` (``split=None``: ``<class>/file``).

    Sample: ``{"points": float32 (N, C), "label": int}``. ``classes`` are the sorted folder names (or the
    ``classes`` argument, e.g. the names stored in a checkpoint, so label ids never depend on what folders exist);
    ``class_to_idx`` maps them to labels; ``samples`` is ``[(path, label)]``.

    Args:
        num_points: meshes are sampled to this many points (default 2048); clouds with a different count are
            resampled to exactly ``num_points`` by a draw fixed by ``seed`` and the index (without replacement when
            larger, all points plus repeats when smaller), so batches stack and evaluation is reproducible.
            ``None`` returns clouds as stored.
        normalize: centre and scale xyz to the unit sphere (scans come in arbitrary units: ModelNet10 PCDs span
            0.1 to 2e5).
        extensions: accepted file suffixes (case-insensitive; default: every registered point format).
        use_normals: return ``(N, 6)`` xyz + normals (mesh face normals, PCD ``normal_*`` fields, columns 3-5 of
            text/npy files); otherwise ``(N, 3)``.
        empty_classes: what to do with a class folder that holds no file of this split (an empty folder, or in the
            ``<class>/<split>/`` layout a class without this split's folder): ``"error"`` (default) refuses and names
            the folder; ``"skip"`` warns and leaves it out of ``classes`` (then pass the training set's ``classes``
            to the other splits, or their label ids differ). Ignored when ``classes`` is given: ids are fixed by it.
        up_axis: the axis pointing up in these files (``"z"`` for the ModelNet meshes and most scanners); only the
            viewer uses it.
        cache_dir: unused (accepted so every dataset takes it).
    """

    def __init__(
        self,
        root: Union[str, os.PathLike],
        split: Optional[str] = "train",
        num_points: Optional[int] = None,
        transform: Optional[Callable] = None,
        extensions: Optional[Sequence[str]] = None,
        normalize: bool = True,
        classes: Optional[Sequence[str]] = None,
        seed: int = 0,
        use_normals: bool = False,
        empty_classes: str = "error",
        up_axis: str = "z",
        cache_dir: Optional[Union[str, os.PathLike]] = None,
    ):
        super().__init__(root, split, transform)
        if empty_classes not in ("error", "skip"):
            raise ValueError(f"PointCloudFolder: empty_classes must be 'error' or 'skip', got {empty_classes!r}")
        if up_axis not in ("x", "y", "z"):
            raise ValueError(f"PointCloudFolder: up_axis must be 'x', 'y' or 'z', got {up_axis!r}")
        self.up_axis = up_axis
        if num_points is not None and num_points < 1:
            raise ValueError(f"PointCloudFolder: num_points must be >= 1 or None, got {num_points}")
        self.num_points, self.normalize, self.seed, self.use_normals = num_points, normalize, seed, use_normals
        # None: every format read_point_cloud reads when the dataset is built (registered ones included)
        self.extensions = tuple(e.lower() for e in (point_cloud_extensions() if extensions is None else extensions))
        if not self.root.is_dir():
            raise missing_dataset("PointCloudFolder", root, [self.root], "your own scans", LAYOUT)
        pairs = self._class_dirs()
        files_of = {name: self._files(d) for name, d in pairs}
        empty = [(name, d) for name, d in pairs if not files_of[name]]
        if empty and classes is None:
            shown = ", ".join(str(d) for _, d in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
            if empty_classes == "error":
                raise DataFormatError(
                    f"PointCloudFolder: {len(empty)} class folder(s) hold no {' '.join(self.extensions)} file for "
                    f"split {split!r}: {shown}. An empty class would be recorded as a class the model never sees; "
                    "add files, remove the folder, or pass empty_classes='skip' (and the training set's classes to "
                    "the other splits)"
                )
            warnings.warn(
                f"PointCloudFolder: skipping {len(empty)} empty class folder(s) (not recorded as classes): {shown}",
                stacklevel=2,
            )
            pairs = [(name, d) for name, d in pairs if files_of[name]]
        found = sorted(name for name, _ in pairs)
        if classes is None:
            self.classes = found
        else:
            self.classes = list(classes)
            extra = [c for c in found if c not in self.classes]
            if extra:
                raise ValueError(
                    f"PointCloudFolder: folders {extra} under {root} are not in the given classes {self.classes}"
                )
        idx = self.class_to_idx
        self.samples: List[Tuple[Path, int]] = []
        for name, _ in sorted(pairs):
            self.samples += [(p, idx[name]) for p in files_of[name]]
        if not self.samples:
            raise missing_dataset(
                f"PointCloudFolder (split={split!r})",
                root,
                [d for _, d in pairs] or [self.root],
                "your own scans",
                LAYOUT + f"\n  accepted extensions: {' '.join(self.extensions)}",
            )
        self.labels = np.asarray([lab for _, lab in self.samples], dtype=np.int64)

    def _files(self, folder: Path) -> List[Path]:
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(self.extensions))

    def sample_keys(self) -> List[str]:
        """Resolved file paths: one identity per sample, for the split-overlap check."""
        return [str(p.resolve()) for p, _ in self.samples]

    def source_files(self) -> List[Path]:
        return [p for p, _ in self.samples]

    def _class_dirs(self) -> List[Tuple[str, Path]]:
        """``[(class name, folder holding its files)]`` for the detected layout."""
        subdirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if self.split is None:
            return [(d.name, d) for d in subdirs]
        split_root = self.root / self.split
        if split_root.is_dir():  # <split>/<class>/
            return [(d.name, d) for d in sorted(split_root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        pairs = [(d.name, d / self.split) for d in subdirs if (d / self.split).is_dir()]  # <class>/<split>/
        if pairs:
            # A class folder with other split folders but not this one is a class with no samples in this split
            # (reported as empty), not a folder to ignore: ignoring it would shift every later label id.
            split_like = {"train", "test", "val", "valid", "validation", self.split}
            pairs += [
                (d.name, d / self.split)
                for d in subdirs
                if not (d / self.split).is_dir() and any((d / s).is_dir() for s in split_like)
            ]
            pairs.sort()
        if not pairs:
            raise missing_dataset(
                f"PointCloudFolder split {self.split!r}",
                self.root,
                [split_root, *(d / self.split for d in subdirs[:3])],
                f"your own scans (folders found: {[d.name for d in subdirs][:10]})",
                LAYOUT,
            )
        return pairs

    def get(self, index: int):
        path, label = self.samples[index]
        pts = read_point_cloud(path, num_points=self.num_points, seed=self.seed)
        if self.use_normals and pts.shape[1] < 6:
            raise DataFormatError(f"{path}: use_normals=True but the file holds no normals ({pts.shape[1]} columns)")
        pts = pts[:, : 6 if self.use_normals else 3]  # extra fields (colour, pixel ids) are not model input
        n = self.num_points
        if n is not None and len(pts) != n:
            rng = np.random.default_rng([self.seed, index])
            if len(pts) > n:
                choice = rng.choice(len(pts), n, replace=False)
            else:
                choice = np.concatenate([np.arange(len(pts)), rng.integers(0, len(pts), n - len(pts))])
            pts = pts[choice]
        if self.normalize:
            pts = pts.copy()
            pts[:, :3] = pc_normalize(pts[:, :3].astype(np.float64)).astype(np.float32)
        if not np.isfinite(pts).all():
            raise DataFormatError(f"{path}: non-finite coordinates after normalisation")
        return to_sample(pts, label=label)

    def extra_repr(self) -> str:
        return f"classes={self.num_classes}, num_points={self.num_points}"
