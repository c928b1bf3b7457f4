"""ModelNet40 few-shot episodes: the official ``{way}way{shot}shot/{fold}.pkl`` files and a seeded generator."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .base import ClassificationDataset, check_split, content_keys, missing_dataset, pc_normalize, to_sample
from .io import DataFormatError, check_finite, read_lines, safe_pickle_load

__all__ = ["ModelNetFewShot", "generate_fewshot_episodes", "episode_path"]

WHERE = (
    "the Point-BERT release (ModelNetFewshot.zip linked from Point-BERT/Point-MAE DATASET.md), or write "
    "reproducible episodes with pointclora.datasets.generate_fewshot_episodes(...)"
)
LAYOUT = """  <root>/{5way10shot,5way20shot,10way10shot,10way20shot}/{0..9}.pkl
  each a pickle {'train': [(points float32 (N, 6|3), new_label int, original_label np.int32), ...], 'test': [...]}
  <root>/modelnet40_shape_names.txt   optional: names for the original labels"""


def episode_path(root: Union[str, os.PathLike], way: int, shot: int, fold: int) -> Path:
    return Path(root) / f"{way}way{shot}shot" / f"{fold}.pkl"


class ModelNetFewShot(ClassificationDataset):
    """One few-shot episode. Sample: ``{"points": float32 (N, 3 or 6), "label": int in [0, way)}``.

    ``split="train"`` reads the pickle's ``'train'`` list (way x shot supports), ``"test"`` its ``'test'`` list
    (way x 20 queries; the reference validates on it). xyz is normalised to the unit sphere and normals dropped
    unless ``use_normals``; ``num_points`` keeps the first rows (the pickles hold 8192).
    ``classes[new_label]`` is the original class name when ``shape_names`` (a list or a file; default
    ``<root>/modelnet40_shape_names.txt`` if present) is available, else ``"label_<original id>"``.
    """

    #: Axis pointing up (clouds of the y-up ModelNet40 resampled release); ``visualize`` uses it by default.
    up_axis = "y"

    def __init__(
        self,
        root: Union[str, os.PathLike],
        way: int = 5,
        shot: int = 10,
        fold: int = 0,
        split: str = "train",
        transform: Optional[Callable] = None,
        use_normals: bool = False,
        num_points: Optional[int] = None,
        shape_names: Optional[Union[str, Sequence[str]]] = None,
    ):
        super().__init__(root, check_split(split, ("train", "test"), "ModelNetFewShot"), transform)
        self.way, self.shot, self.fold = int(way), int(shot), int(fold)
        self.use_normals, self.num_points = use_normals, num_points
        path = episode_path(root, way, shot, fold)
        if not path.is_file():
            raise missing_dataset("ModelNet few-shot episode", root, [path], WHERE, LAYOUT)
        self.path = path
        obj = safe_pickle_load(path)
        if not isinstance(obj, dict) or not {"train", "test"} <= set(obj):
            keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise DataFormatError(f"{path}: expected a dict with keys 'train' and 'test', got {keys}")
        items = obj[split]
        if not isinstance(items, (list, tuple)) or not items:
            raise DataFormatError(f"{path}: '{split}' must be a non-empty list of (points, label, original_label)")
        pts, labels, orig = [], [], {}
        for i, it in enumerate(items):
            where = f"{path} ['{split}'][{i}]"
            if not (isinstance(it, (tuple, list)) and len(it) == 3):
                raise DataFormatError(f"{where}: expected a (points, new_label, original_label) tuple")
            p, lab, o = it
            if not (isinstance(p, np.ndarray) and p.ndim == 2 and p.shape[1] >= 3 and p.dtype.kind == "f"):
                raise DataFormatError(
                    f"{where}: points must be a float (N, 6|3) array, got "
                    f"{getattr(p, 'dtype', type(p).__name__)} {getattr(p, 'shape', '')}"
                )
            if p.shape[0] == 0:
                raise DataFormatError(f"{where}: empty point cloud")
            if use_normals and p.shape[1] < 6:
                raise DataFormatError(f"{where}: use_normals=True but points have {p.shape[1]} columns")
            if num_points is not None and p.shape[0] < num_points:
                raise DataFormatError(f"{where}: {p.shape[0]} points, fewer than num_points={num_points}")
            check_finite(p, where)
            try:
                lab_i, o_i = int(lab), int(np.asarray(o).reshape(-1)[0])
            except (TypeError, ValueError, IndexError):
                raise DataFormatError(f"{where}: labels must be integers, got {lab!r}, {o!r}") from None
            if not 0 <= lab_i < self.way:
                raise DataFormatError(f"{where}: new_label {lab_i} out of range for a {self.way}-way episode")
            if orig.setdefault(lab_i, o_i) != o_i:
                raise DataFormatError(f"{where}: new_label {lab_i} maps to original labels {orig[lab_i]} and {o_i}")
            pts.append(p)
            labels.append(lab_i)
        self._points, self.labels = pts, np.asarray(labels, dtype=np.int64)
        self.original_labels = [orig.get(k, -1) for k in range(self.way)]
        names: Optional[List[str]] = None
        if shape_names is None and (self.root / "modelnet40_shape_names.txt").is_file():
            shape_names = str(self.root / "modelnet40_shape_names.txt")
        if isinstance(shape_names, (str, os.PathLike)):
            names = read_lines(shape_names, "shape names")
        elif shape_names is not None:
            names = list(shape_names)
        self.classes = [
            names[o] if names is not None and 0 <= o < len(names) else f"label_{o}" for o in self.original_labels
        ]

    def sample_keys(self) -> List[str]:
        """A hash of each episode cloud's points (every split of an episode comes from one pickle)."""
        return content_keys(self._points)

    def source_files(self) -> List[Path]:
        return [Path(self.path)]

    def get(self, index: int):
        p = self._points[index]
        if self.num_points is not None:
            p = p[: self.num_points]
        p = np.array(p[:, : 6 if self.use_normals else 3], dtype=np.float32)
        p[:, :3] = pc_normalize(p[:, :3])
        return to_sample(p, label=int(self.labels[index]))

    def extra_repr(self) -> str:
        return f"way={self.way}, shot={self.shot}, fold={self.fold}"


def _labels_of(dataset) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    if labels is None:  # any labelled dataset: fall back to reading every sample once
        labels = [int(dataset[i]["label"]) for i in range(len(dataset))]
    return np.asarray(labels, dtype=np.int64)


def _raw(dataset, i: int) -> np.ndarray:
    """The sample's points before the dataset's transform (episodes store data, not augmentations), in file order
    (a dataset's train-time point shuffling is switched off while reading)."""
    shuffle = getattr(dataset, "shuffle", None)
    if shuffle:
        dataset.shuffle = False
    try:
        sample = dataset.get(i) if hasattr(dataset, "get") else dataset[i]
    finally:
        if shuffle:
            dataset.shuffle = shuffle
    p = sample["points"]
    return np.ascontiguousarray(p.numpy() if hasattr(p, "numpy") else p, dtype=np.float32)


def generate_fewshot_episodes(
    dataset,
    out_dir: Union[str, os.PathLike],
    ways: Sequence[int] = (5, 10),
    shots: Sequence[int] = (10, 20),
    folds: Union[int, Sequence[int]] = 10,
    seed: int = 0,
    num_query: int = 20,
    query_dataset=None,
) -> List[Path]:
    """Write episodes in the official format: ``<out_dir>/{way}way{shot}shot/{fold}.pkl``.

    Each pickle is ``{'train': [(points np.float32 (N, C), new_label int, original_label np.int32)] * way*shot,
    'test': [...] * way*num_query}``. Classes are drawn without replacement; supports come from ``dataset``, queries
    from ``query_dataset`` (e.g. the test split) or, when it is None, from the remaining samples of ``dataset``
    (disjoint from the supports). Every file uses its own RNG seeded by ``(seed, way, shot, fold)``, so one episode
    can be regenerated alone and always comes out identical. Returns the written paths.
    """
    sup_labels = _labels_of(dataset)
    qry_labels = sup_labels if query_dataset is None else _labels_of(query_dataset)
    qds = dataset if query_dataset is None else query_dataset
    fold_ids = list(range(folds)) if isinstance(folds, int) else list(folds)
    same = query_dataset is None
    written = []
    for way in ways:
        for shot in shots:
            need_sup = shot + (num_query if same else 0)
            ok = [
                c
                for c in np.unique(sup_labels)
                if (sup_labels == c).sum() >= need_sup and (same or (qry_labels == c).sum() >= num_query)
            ]
            if len(ok) < way:
                raise ValueError(
                    f"generate_fewshot_episodes: {way}-way {shot}-shot needs {way} classes with >= {need_sup} samples"
                    f"{'' if same else f' (and >= {num_query} queries)'}; only {len(ok)} qualify"
                )
            for fold in fold_ids:
                rng = np.random.default_rng([seed, way, shot, fold])
                # Datasets that draw from torch's RNG (random subsets) must not make the file depend on global state.
                chosen = rng.choice(ok, size=way, replace=False)
                episode: Dict[str, list] = {"train": [], "test": []}
                with torch.random.fork_rng(devices=[]):  # the caller's RNG state is left untouched
                    torch.manual_seed(int(rng.integers(2**31)))
                    for new, c in enumerate(chosen):
                        pool = rng.permutation(np.nonzero(sup_labels == c)[0])
                        sup = pool[:shot]
                        qry = (
                            pool[shot : shot + num_query]
                            if same
                            else rng.permutation(np.nonzero(qry_labels == c)[0])[:num_query]
                        )
                        episode["train"] += [(_raw(dataset, int(i)), new, np.int32(c)) for i in sup]
                        episode["test"] += [(_raw(qds, int(i)), new, np.int32(c)) for i in qry]
                out = episode_path(out_dir, way, shot, fold)
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(out.name + ".tmp")
                with open(tmp, "wb") as f:
                    pickle.dump(episode, f, protocol=4)
                os.replace(tmp, out)
                written.append(out)
    return written
