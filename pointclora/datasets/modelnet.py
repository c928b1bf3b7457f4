"""ModelNet40 (and ModelNet10) from its three official releases: resampled text files, FPS caches, HDF5.

Class ids and names are the same whichever source: the line index in the shape-names file.
"""

from __future__ import annotations

import os
import pickle
import zlib
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch

from ..ops.sampling import squared_distances_to
from .base import (
    ClassificationDataset,
    check_labels,
    check_split,
    content_keys,
    missing_dataset,
    pc_normalize,
    to_sample,
)
from .cache import resolve_cache_dir, stable_digest
from .io import (
    DataFormatError,
    DatasetNotFoundError,
    check_finite,
    read_h5_arrays,
    read_lines,
    read_text_points,
    safe_pickle_load,
)

__all__ = ["ModelNet40", "write_fps_cache", "fps_cache_path", "fps_order_numpy", "official_fps_start"]

WHERE = (
    "modelnet40_normal_resampled.zip (PointNet++ release, https://shapenet.cs.stanford.edu/media/"
    "modelnet40_normal_resampled.zip, mirrored by the Point-BERT/Point-MAE READMEs) or "
    "modelnet40_ply_hdf5_2048.zip (PointNet release); ModelNet terms: Princeton, academic non-commercial use"
)
LAYOUT_TXT = """  <root>/modelnet40_shape_names.txt        40 class names, label = line index
  <root>/modelnet40_train.txt              9843 ids (airplane_0001, ...)
  <root>/modelnet40_test.txt               2468 ids
  <root>/<class>/<id>.txt (or .txt.gz)     10000 rows x,y,z,nx,ny,nz (comma-separated)
  <root>/modelnet40_{train,test}_8192pts_fps.dat   optional FPS caches (source='fps_cache')"""
LAYOUT_H5 = """  <root>/shape_names.txt                   40 class names, label = line index
  <root>/train_files.txt, test_files.txt   lists of ply_data_{train,test}N.h5 (directory prefixes ignored)
  <root>/ply_data_train0.h5 ...            'data' (n, 2048, 3) float32, 'label' (n, 1) int, optional 'normal'"""


def _class_of(shape_id: str) -> str:
    """Official rule: the class directory is the id without its trailing ``_NNNN`` (``night_stand_0001``)."""
    return "_".join(shape_id.split("_")[:-1])


def _shape_id(path: Path) -> str:
    name = path.name
    for ext in (".txt.gz", ".txt"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def official_fps_start(shape_id: str, num_rows: int, seed: int = 0) -> int:
    """Start index of the FPS of one shape: uniform in ``[0, num_rows)`` like the official ``np.random.randint(0, N)``
    (which is unseeded), drawn from ``seed`` and the shape id so it does not depend on which other shapes are loaded."""
    rng = np.random.default_rng([int(seed), zlib.crc32(shape_id.encode("utf-8"))])
    return int(rng.integers(0, num_rows))


def fps_order_numpy(xyz: np.ndarray, num_points: int, start: int) -> np.ndarray:
    """The official ModelNet loader's numpy FPS: ``xyz (N, 3)`` float32 -> ``(num_points,)`` int64 row indices.

    Squared distances in the input precision (float32 for the text files, as the official ``astype(np.float32)``),
    summed x, y, z in that order; the running minimum starts at 1e10; the next point is the first index of the
    maximum (``np.argmax``), so ties go to the lowest index.
    """
    planar = np.ascontiguousarray(np.asarray(xyz).T)  # (3, N): one contiguous row per axis
    n = planar.shape[1]
    if not 1 <= num_points <= n:
        raise ValueError(f"fps_order_numpy: num_points must be in [1, {n}], got {num_points}")
    best = np.full(n, 1e10, dtype=planar.dtype)
    dist, diff = np.empty_like(best), np.empty_like(best)
    idx = np.empty(num_points, dtype=np.int64)
    current = int(start)
    for i in range(num_points):
        idx[i] = current
        squared_distances_to(planar, current, dist, diff)
        np.minimum(best, dist, out=best)
        current = int(best.argmax())
    return idx


def fps_cache_path(root: Union[str, os.PathLike], split: str, num_points: int = 8192, num_categories: int = 40) -> Path:
    """``<root>/modelnet{40}_{split}_{8192}pts_fps.dat`` (the Point-BERT/Point-MAE cache name)."""
    return Path(root) / f"modelnet{num_categories}_{split}_{num_points}pts_fps.dat"


class ModelNet40(ClassificationDataset):
    """ModelNet40 classification. Sample: ``{"points": float32 (num_points, 3 or 6), "label": int}``.

    Args:
        root: ``modelnet40_normal_resampled`` (``source="txt"``/``"fps_cache"``) or ``modelnet40_ply_hdf5_2048``
            (``source="h5"``).
        split: ``"train"`` or ``"test"``.
        source: ``"txt"`` official text files; ``"fps_cache"`` the ``*_8192pts_fps.dat`` pickles (read with the
            restricted unpickler; build them with :func:`write_fps_cache` or ``build_cache=True``); ``"h5"``.
        num_points: points per sample. ``None``: 8192 (txt), the cache's count (fps_cache), all 2048 (h5). A text
            file with fewer rows is an error naming it.
        sampling: txt only. ``"fps"`` (default, the official loader's ``uniform=True``): farthest point sampling of
            ``num_points`` of the file's rows on xyz, float32 distances, ties to the lowest index, from a start
            index drawn uniformly as the official ``np.random.randint(0, N)`` but from ``fps_seed`` and the shape id,
            so each shape's cloud is reproducible. The order is computed once per file and cached under
            ``cache_dir`` (FPS of 8192 of 10,000 rows takes ~0.3 s). ``"first_rows"``: the first ``num_points``
            rows (what older versions did; 16.8 % of the points differ from the official clouds).
        fps_seed: seed of the FPS start indices (``sampling="fps"``).
        cache_dir: where FPS orders are cached (default :func:`pointclora.datasets.cache.default_cache_dir`).
        use_normals: keep normals (columns 3-5) -> ``(N, 6)``.
        num_categories: 40, or 10 for the ``modelnet10_*`` lists in the same folder.
        split_file: a list file (relative to ``root``) replacing ``modelnet{40}_{split}.txt``; it must contain
            ``{split}`` (``"present_{split}.txt"``), because one list for both splits would make test = train.
        train_split_file / test_split_file: the list file of one split (win over ``split_file``).
        shuffle: shuffle point order (default: in train only, as the reference).
        files / classes: h5 only: explicit h5 file names instead of ``{split}_files.txt``; class names instead of
            ``shape_names.txt``.
        build_cache: fps_cache only: build a missing cache from the text files first.
    """

    SOURCES = ("txt", "fps_cache", "h5")
    SAMPLINGS = ("fps", "first_rows")
    #: Axis pointing up in the stored clouds (ModelNet40 resampled / HDF5 releases are y-up); ``visualize`` uses it.
    up_axis = "y"

    def __init__(
        self,
        root: Union[str, os.PathLike],
        split: str = "train",
        source: str = "txt",
        num_points: Optional[int] = None,
        use_normals: bool = False,
        transform: Optional[Callable] = None,
        num_categories: int = 40,
        split_file: Optional[str] = None,
        shuffle: Optional[bool] = None,
        files: Optional[Sequence[str]] = None,
        classes: Optional[Sequence[str]] = None,
        build_cache: bool = False,
        train_split_file: Optional[str] = None,
        test_split_file: Optional[str] = None,
        sampling: str = "fps",
        fps_seed: int = 0,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
    ):
        super().__init__(root, check_split(split, ("train", "test"), "ModelNet40"), transform)
        if source not in self.SOURCES:
            raise ValueError(f"ModelNet40: source must be one of {list(self.SOURCES)}, got {source!r}")
        if num_categories not in (10, 40):
            raise ValueError(f"ModelNet40: num_categories must be 40 or 10, got {num_categories}")
        if num_points is not None and num_points < 1:
            raise ValueError(f"ModelNet40: num_points must be >= 1, got {num_points}")
        if sampling not in self.SAMPLINGS:
            raise ValueError(f"ModelNet40: sampling must be one of {list(self.SAMPLINGS)}, got {sampling!r}")
        self.source, self.use_normals, self.num_categories = source, use_normals, num_categories
        self.sampling, self.fps_seed = sampling, int(fps_seed)
        self.cache_dir = cache_dir
        split_file = self._split_file_for(split, split_file, train_split_file, test_split_file)
        self.shuffle = (split == "train") if shuffle is None else shuffle
        self._points: Optional[List[np.ndarray]] = None
        if not self.root.is_dir():
            layout = LAYOUT_H5 if source == "h5" else LAYOUT_TXT
            raise missing_dataset("ModelNet40", root, [self.root], WHERE, layout)
        if source == "txt":
            self._init_txt(split_file)
            self.num_points = 8192 if num_points is None else num_points
        elif source == "fps_cache":
            self._init_cache(num_points or 8192, build_cache, split_file)
            self.num_points = num_points or 8192
        else:
            self._init_h5(files, classes)
            self.num_points = num_points if num_points is not None else self._points[0].shape[0]
            if self.num_points > self._points[0].shape[0]:
                raise DataFormatError(
                    f"{self._h5_files[0]}: clouds hold {self._points[0].shape[0]} points, fewer "
                    f"than num_points={self.num_points}"
                )

    @staticmethod
    def _split_file_for(
        split: str, split_file: Optional[str], train_split_file: Optional[str], test_split_file: Optional[str]
    ) -> Optional[str]:
        own = train_split_file if split == "train" else test_split_file
        if own is not None:
            return own
        if split_file is None:
            return None
        if "{split}" not in split_file:
            raise ValueError(
                f"ModelNet40: split_file={split_file!r} would be used for both the train and the test split, making "
                "the test set equal the training set. Give a pattern with {split} (e.g. "
                "split_file='present_{split}.txt') or one list per split (train_split_file='present_train.txt', "
                "test_split_file='present_test.txt')"
            )
        return split_file.format(split=split)

    def sample_keys(self) -> Optional[List[str]]:
        """One identity per sample: the shape id (text source), else a hash of the points (HDF5, FPS cache)."""
        if getattr(self, "shape_ids", None) is not None:
            return list(self.shape_ids)
        return content_keys(self._points) if self._points is not None else None

    def source_files(self) -> List[Path]:
        """The text files (one per shape) or the HDF5 files; [] for the FPS cache (one file, read when built)."""
        return list(getattr(self, "paths", None) or getattr(self, "_h5_files", None) or [])

    def split_hint(self) -> str:
        """A correct pair of split lists found in ``root`` (for the overlap error)."""
        pairs = sorted(
            p.name.replace("_train.txt", "_{split}.txt")
            for p in self.root.glob("*_train.txt")
            if (p.parent / p.name.replace("_train.txt", "_test.txt")).is_file()
        )
        if not pairs:
            return "give each split its own list (train_split_file=..., test_split_file=...)"
        shown = ", ".join(f"split_file={p!r}" for p in pairs[:4])
        return f"lists found in {self.root} that form a train/test pair: {shown}"

    # -- sources ---------------------------------------------------------------------------------------------------
    def _names_file(self) -> Path:
        return self.root / f"modelnet{self.num_categories}_shape_names.txt"

    def _init_txt(self, split_file: Optional[str]) -> None:
        names = self._names_file()
        lst = self.root / (split_file or f"modelnet{self.num_categories}_{self.split}.txt")
        missing = [p for p in (names, lst) if not p.is_file()]
        if missing:
            raise missing_dataset("ModelNet40 (text release)", self.root, missing, WHERE, LAYOUT_TXT)
        self.classes = read_lines(names, "shape names")
        idx = self.class_to_idx
        self.shape_ids = read_lines(lst, "split list")
        self.paths, labels, absent = [], [], []
        for sid in self.shape_ids:
            cls = _class_of(sid)
            if cls not in idx:
                raise DataFormatError(f"{lst}: id {sid!r} names class {cls!r}, which is not in {names.name}")
            p = self.root / cls / f"{sid}.txt"
            if not p.is_file():
                gz = p.with_name(p.name + ".gz")
                p = gz if gz.is_file() else p
                if not gz.is_file():
                    absent.append(p)
            self.paths.append(p)
            labels.append(idx[cls])
        if absent:
            raise DatasetNotFoundError(
                f"ModelNet40: {len(absent)} of {len(self.shape_ids)} shapes listed in {lst} are missing, e.g. "
                f"{', '.join(str(a) for a in absent[:3])}. Complete the dataset ({WHERE}) or pass lists of the ids you "
                "have, one per split (e.g. split_file='present_{split}.txt', or train_split_file=... and "
                "test_split_file=...)."
            )
        self.labels = np.asarray(labels, dtype=np.int64)

    def _load_txt(self, path: Path, num_points: Optional[int]) -> np.ndarray:
        arr = read_text_points(path)
        need = 6 if self.use_normals else 3
        if arr.shape[1] < need:
            raise DataFormatError(
                f"{path}: rows hold {arr.shape[1]} values, expected >= {need} "
                f"({'x,y,z,nx,ny,nz' if self.use_normals else 'x,y,z'})"
            )
        arr = check_finite(arr[:, :6], path)
        if num_points is not None:
            if arr.shape[0] < num_points:
                raise DataFormatError(f"{path}: {arr.shape[0]} points, fewer than num_points={num_points}")
            if self.sampling == "fps":
                arr = arr[self._fps_order(path, arr, num_points)]
            else:
                arr = arr[:num_points]
        return arr

    def _fps_cache_file(self, path: Path, num_points: int) -> Path:
        folder = resolve_cache_dir(self.cache_dir, "modelnet_fps", stable_digest(str(self.root.resolve())))
        return folder / f"{_shape_id(path)}.n{num_points}.s{self.fps_seed}.npz"

    def _fps_order(self, path: Path, arr: np.ndarray, num_points: int) -> np.ndarray:
        """FPS order of ``num_points`` rows of ``arr`` (the file at ``path``), from the on-disk cache when valid."""
        st = path.stat()
        stamp = np.array([st.st_size, st.st_mtime_ns, len(arr)], dtype=np.int64)
        cache = self._fps_cache_file(path, num_points)
        try:
            with np.load(cache, allow_pickle=False) as z:
                if np.array_equal(z["stamp"], stamp):
                    return z["idx"].astype(np.int64)
        except (OSError, KeyError, ValueError, EOFError):
            pass  # absent, torn or stale: recompute
        start = official_fps_start(_shape_id(path), len(arr), self.fps_seed)
        idx = fps_order_numpy(arr[:, :3], num_points, start)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.savez(f, idx=idx.astype(np.uint16 if len(arr) <= 65535 else np.int32), stamp=stamp)
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only cache folder only costs time
        return idx

    def _init_cache(self, num_points: int, build: bool, split_file: Optional[str]) -> None:
        path = fps_cache_path(self.root, self.split, num_points, self.num_categories)
        if not path.is_file():
            if not build:
                raise missing_dataset(
                    "ModelNet40 FPS cache",
                    self.root,
                    [path],
                    f"build it from the text files with pointclora.datasets.write_fps_cache(root, '{self.split}') "
                    f"or ModelNet40(..., source='fps_cache', build_cache=True); text files: {WHERE}",
                    LAYOUT_TXT,
                )
            write_fps_cache(
                self.root, self.split, num_points, num_categories=self.num_categories, split_file=split_file
            )
        names = self._names_file()
        if not names.is_file():
            raise missing_dataset("ModelNet40 shape names", self.root, [names], WHERE, LAYOUT_TXT)
        self.classes = read_lines(names, "shape names")
        obj = safe_pickle_load(path)
        if not (
            isinstance(obj, (list, tuple))
            and len(obj) == 2
            and isinstance(obj[0], (list, tuple))
            and isinstance(obj[1], (list, tuple))
            and len(obj[0]) == len(obj[1])
        ):
            raise DataFormatError(
                f"{path}: expected a pickled [list_of_points, list_of_labels] of equal length, got {type(obj).__name__}"
            )
        pts, labs = obj
        for i, p in enumerate(pts):
            if not (isinstance(p, np.ndarray) and p.ndim == 2 and p.shape[1] >= 3 and p.dtype.kind == "f"):
                desc = f"{type(p).__name__} {getattr(p, 'shape', '')} {getattr(p, 'dtype', '')}"
                raise DataFormatError(f"{path}: points[{i}] must be a float (N, 6) array, got {desc}")
            if p.shape[0] < num_points:
                raise DataFormatError(f"{path}: points[{i}] has {p.shape[0]} points, fewer than {num_points}")
            if self.use_normals and p.shape[1] < 6:
                raise DataFormatError(f"{path}: points[{i}] has no normals (shape {p.shape}), use_normals=True")
            check_finite(p, f"{path} (points[{i}])")
        try:
            labels = np.asarray([np.asarray(lb).reshape(1)[0] for lb in labs])  # exactly one value each
        except (IndexError, TypeError, ValueError):
            raise DataFormatError(f"{path}: labels must be arrays of shape (1,) (np.int32), one per shape") from None
        self.labels = check_labels(labels, len(self.classes), path, names.name)
        self._points = list(pts)

    def _init_h5(self, files: Optional[Sequence[str]], classes: Optional[Sequence[str]]) -> None:
        if files is None:
            lst = self.root / f"{self.split}_files.txt"
            if not lst.is_file():
                raise missing_dataset("ModelNet40 (HDF5 release)", self.root, [lst], WHERE, LAYOUT_H5)
            # The official lists hold 'data/modelnet40_ply_hdf5_2048/ply_data_train0.h5': resolve by basename.
            files = [Path(ln).name for ln in read_lines(lst)]
        if classes is None:
            names = self.root / "shape_names.txt"
            if not names.is_file():
                raise missing_dataset("ModelNet40 (HDF5 release)", self.root, [names], WHERE, LAYOUT_H5)
            self.classes = read_lines(names, "shape names")
            names_src = str(names)
        else:
            self.classes, names_src = list(classes), "the classes argument"
        self._h5_files = [self.root / f for f in files]
        missing = [p for p in self._h5_files if not p.is_file()]
        if missing:
            raise missing_dataset("ModelNet40 (HDF5 release)", self.root, missing, WHERE, LAYOUT_H5)
        pts, labs, held = [], [], None
        for f in self._h5_files:
            d = read_h5_arrays(f, ["data", "label"], ["normal"])
            data, label = d["data"], d["label"]
            if data.ndim != 3 or data.shape[2] != 3 or data.dtype.kind != "f":
                raise DataFormatError(f"{f}: 'data' must be float (n, P, 3), got {data.dtype} {data.shape}")
            # num_points (and its check below) come from the first cloud: a file of shorter clouds would give shorter
            # samples than num_points
            if held is None and len(data):
                held = (f, data.shape[1])
            elif len(data) and data.shape[1] != held[1]:
                raise DataFormatError(
                    f"{f}: clouds hold {data.shape[1]} points, those of {held[0]} {held[1]}; every h5 file of a split "
                    "must hold the same number of points"
                )
            if label.ndim == 2 and label.shape[1] == 1:
                label = label[:, 0]  # the official files store (n, 1); some copies store (n,)
            if label.ndim != 1 or len(label) != len(data):
                raise DataFormatError(f"{f}: 'label' must be (n,) or (n, 1) with n={len(data)}, got {label.shape}")
            if self.use_normals:
                if "normal" not in d or d["normal"].shape != data.shape:
                    raise DataFormatError(f"{f}: use_normals=True needs a 'normal' dataset of shape {data.shape}")
                data = np.concatenate([data, d["normal"]], axis=2)
            check_finite(data.reshape(-1, data.shape[-1]), f, "coordinates in 'data'")
            labs.append(check_labels(label, len(self.classes), f"{f} ('label')", names_src))
            pts.extend(data.astype(np.float32))
        if not pts:
            raise DataFormatError(f"ModelNet40: the h5 files {files} hold no shapes")
        self._points, self.labels = pts, np.concatenate(labs)

    # -- access ----------------------------------------------------------------------------------------------------
    def raw_points(self, index: int) -> np.ndarray:
        """Points before normalisation/shuffling: ``(num_points, 3 or 6)``."""
        if self._points is not None:
            pts = self._points[index][: self.num_points]
        else:
            pts = self._load_txt(self.paths[index], self.num_points)
        return pts[:, : 6 if self.use_normals else 3]

    def get(self, index: int):
        pts = np.array(self.raw_points(index), dtype=np.float32)
        if self.source != "h5":  # the reference normalises ModelNet text/cache clouds, not the h5 ones
            pts[:, :3] = pc_normalize(pts[:, :3])
        if self.shuffle:
            pts = pts[torch.randperm(len(pts)).numpy()]
        return to_sample(pts, label=int(self.labels[index]))

    def extra_repr(self) -> str:
        extra = f", sampling={self.sampling!r}, fps_seed={self.fps_seed}" if self.source == "txt" else ""
        return f"source={self.source!r}, num_points={self.num_points}, use_normals={self.use_normals}{extra}"


def write_fps_cache(
    root: Union[str, os.PathLike],
    split: str,
    num_points: int = 8192,
    seed: int = 0,
    num_categories: int = 40,
    split_file: Optional[str] = None,
    out_path: Optional[Union[str, os.PathLike]] = None,
) -> Path:
    """Write ``modelnet40_{split}_{num_points}pts_fps.dat`` from the text files with the official FPS.

    Same format as the Point-BERT cache: a pickle of ``[list of np.float32 (num_points, 6), list of np.int32 (1,)]``;
    the clouds are exactly those of ``ModelNet40(root, split, source="txt", sampling="fps", fps_seed=seed)``
    (:func:`fps_order_numpy` from :func:`official_fps_start`). ``split_file``: the list of this split (a
    ``{split}`` pattern is filled in). Written to a temporary file and renamed, so an interrupted run never leaves a
    truncated cache behind.
    """
    if split_file is not None:
        split_file = split_file.format(split=split)
    ds = ModelNet40(
        root,
        split,
        source="txt",
        use_normals=True,
        num_categories=num_categories,
        shuffle=False,
        sampling="first_rows",
        **{f"{split}_split_file": split_file},
    )
    points, labels = [], []
    for i, path in enumerate(ds.paths):
        arr = ds._load_txt(path, None)
        if arr.shape[1] < 6:
            raise DataFormatError(f"{path}: the FPS cache stores normals; rows hold only {arr.shape[1]} values")
        if len(arr) < num_points:
            raise DataFormatError(f"{path}: {len(arr)} points, fewer than num_points={num_points}")
        idx = fps_order_numpy(arr[:, :3], num_points, official_fps_start(ds.shape_ids[i], len(arr), seed))
        points.append(np.ascontiguousarray(arr[idx], dtype=np.float32))
        labels.append(np.array([ds.labels[i]], dtype=np.int32))
    out = Path(out_path) if out_path is not None else fps_cache_path(root, split, num_points, num_categories)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump([points, labels], f, protocol=4)
    os.replace(tmp, out)
    return out
