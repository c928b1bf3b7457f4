"""Checks run once before training: splits that do not overlap, and every file readable and sane.

Files are read lazily by the datasets, so without these checks a malformed row crashes the run in the middle of an
epoch (or, for a test file, after hours of training), and a train list reused as the test list gives a test score
that is a training score. Both checks are library functions the trainer calls after building the datasets:

    check_disjoint_splits({"train": train, "val": val, "test": test})   # SplitOverlapError
    validate_dataset(train); validate_dataset(test)                      # DatasetValidationError

``validate_dataset`` remembers a fingerprint of what it checked (dataset class, arguments, every source file's
size and modification time) under the cache folder, so an unchanged dataset is not read twice.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from .cache import resolve_cache_dir, stable_digest
from .io import DataFormatError

__all__ = [
    "SplitOverlapError",
    "DatasetValidationError",
    "ValidationReport",
    "sample_keys",
    "source_files",
    "check_disjoint_splits",
    "validate_dataset",
    "dataset_fingerprint",
]

PathLike = Union[str, os.PathLike]


class SplitOverlapError(ValueError):
    """The same sample is in two splits (names the splits, the count, an example and a correct pair)."""


class DatasetValidationError(DataFormatError):
    """One or more samples cannot be read or are not sane; ``problems`` lists ``(index, source, message)``."""

    def __init__(self, message: str, problems: Sequence[Tuple[int, str, str]]):
        super().__init__(message)
        self.problems = list(problems)


# ---------------------------------------------------------------------------------------------------------------
# identities of samples
# ---------------------------------------------------------------------------------------------------------------


def _unwrap(ds: Any) -> Tuple[Any, Optional[List[int]]]:
    """``(base dataset, indices into it or None for all)`` through nested ``Subset``s."""
    indices: Optional[List[int]] = None
    while True:
        if isinstance(ds, Subset):
            idx = list(ds.indices)
            indices = idx if indices is None else [idx[i] for i in indices]
            ds = ds.dataset
        elif getattr(type(ds), "index_preserving", False):  # sample i is the wrapped dataset's sample i (seeding)
            ds = ds.dataset
        else:
            return ds, indices


def sample_keys(ds: Any) -> Optional[List[str]]:
    """One identity string per sample of ``ds`` (same order), or None when the dataset gives no way to tell.

    Each dataset declares its samples' identity (:meth:`~pointclora.datasets.base.PointCloudDataset.sample_keys`:
    ModelNet40 text the shape id, folders and ShapeNetPart the resolved path, ShapeNet-55 the list entry, in-memory
    releases a hash of the points, so two splits built from the same file are caught too); nothing is guessed here.
    ``Subset`` and ``ConcatDataset`` are followed.
    """
    if isinstance(ds, ConcatDataset):
        parts = [sample_keys(d) for d in ds.datasets]
        return None if any(p is None for p in parts) else [k for p in parts for k in p]
    base, indices = _unwrap(ds)
    own = getattr(base, "sample_keys", None)  # a dataset from elsewhere may not declare it
    keys = (own() or None) if callable(own) else None
    if keys is None:
        return None
    return keys if indices is None else [keys[i] for i in indices]


def check_disjoint_splits(splits: Mapping[str, Any], hint: Optional[str] = None) -> Dict[str, str]:
    """Raise :class:`SplitOverlapError` if any two of ``splits`` (``{"train": ds, "val": ds, "test": ds}``) share a
    sample. The same object under two names (validation on the test split, by choice) is not an overlap.

    Returns ``{"train/test": "disjoint" | "same split" | "not checked (...)"}`` for the run's record.
    ``hint``: the "use this instead" sentence; by default the first dataset's ``split_hint()`` if it has one.
    """
    names = [n for n, d in splits.items() if d is not None]
    keys = {n: sample_keys(splits[n]) for n in names}
    report: Dict[str, str] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pair = f"{a}/{b}"
            if splits[a] is splits[b]:
                report[pair] = "same split"
                continue
            if keys[a] is None or keys[b] is None:
                missing = a if keys[a] is None else b
                report[pair] = f"not checked ({type(_unwrap(splits[missing])[0]).__name__} gives no sample identity)"
                continue
            seen = set(keys[a])
            common = [k for k in keys[b] if k in seen]
            if common:
                if hint is None:
                    base = _unwrap(splits[a])[0]
                    fn = getattr(base, "split_hint", None)
                    hint = fn() if callable(fn) else "give each split its own list of samples"
                example = common[0][:80]
                raise SplitOverlapError(
                    f"the {a} and {b} splits overlap: {len(set(common))} of the {len(keys[b])} {b} samples are also "
                    f"in {a} (e.g. {example!r}), so the {b} score would measure memorisation. Use disjoint splits: "
                    f"{hint}"
                )
            report[pair] = "disjoint"
    return report


# ---------------------------------------------------------------------------------------------------------------
# reading every sample once
# ---------------------------------------------------------------------------------------------------------------


def source_files(ds: Any) -> List[Path]:
    """The files a dataset reads, as it declares them (:meth:`~pointclora.datasets.base.PointCloudDataset.source_files`:
    for the fingerprint and to name a bad sample); empty when it declares none."""
    if isinstance(ds, ConcatDataset):
        return [p for d in ds.datasets for p in source_files(d)]
    base, indices = _unwrap(ds)
    own = getattr(base, "source_files", None)
    files = [Path(p) for p in own()] if callable(own) else []
    if indices is not None and len(files) == len(base):
        files = [files[i] for i in indices]
    return files


def _source_of(base: Any, index: int) -> str:
    files = source_files(base)
    return str(files[index]) if index < len(files) and len(files) == len(base) else f"sample {index}"


def dataset_fingerprint(ds: Any) -> str:
    """Hash of the dataset's class, its arguments (``repr``), the package version and every source file's path, size
    and modification time: equal fingerprints mean the same bytes would be read."""
    from .. import __version__

    stats = []
    for p in source_files(ds):
        try:
            st = p.stat()
            stats.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((str(p), -1, -1))
    base, indices = _unwrap(ds)
    return stable_digest(type(base).__name__, repr(base), __version__, indices, stats, length=24)


@dataclass
class ValidationReport:
    """What :func:`validate_dataset` checked. ``cached``: skipped because the fingerprint was already validated."""

    dataset: str
    num_samples: int
    fingerprint: str
    cached: bool
    seconds: float
    point_counts: List[int] = field(default_factory=list)  #: min and max points per sample
    channels: List[int] = field(default_factory=list)  #: columns per point seen (3 = xyz, 6 = with normals)
    skipped: str = ""  #: why nothing was read (data held in memory, already checked when the dataset was built)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _check_sample(base: Any, index: int) -> Dict[str, Any]:
    """Read one sample without the transform and check it; returns a summary or ``{"error": message}``."""
    try:
        sample = base.get(index) if hasattr(base, "get") else base[index]
    except Exception as e:  # noqa: BLE001 - every failure is reported with its sample, never raised mid-scan
        msg = str(e) if isinstance(e, (DataFormatError, FileNotFoundError)) else f"{type(e).__name__}: {e}"
        return {"error": msg}
    pts = sample.get("points") if isinstance(sample, Mapping) else None
    if not isinstance(pts, torch.Tensor) or pts.ndim != 2 or pts.shape[1] < 3:
        desc = tuple(pts.shape) if isinstance(pts, torch.Tensor) else type(pts).__name__
        return {"error": f"points must be an (N, 3+) tensor, got {desc}"}
    if pts.shape[0] == 0:
        return {"error": "no points"}
    if not torch.isfinite(pts).all():
        row = int((~torch.isfinite(pts)).any(dim=1).nonzero()[0, 0])
        return {"error": f"non-finite coordinates (first at row {row} after loading)"}
    want = getattr(base, "num_points", None)
    if isinstance(want, int) and pts.shape[0] != want:
        return {"error": f"{pts.shape[0]} points, the dataset promises num_points={want}"}
    n_cls = getattr(base, "num_classes", None)
    if "label" in sample and isinstance(n_cls, int) and not 0 <= int(sample["label"]) < n_cls:
        return {"error": f"label {int(sample['label'])} outside 0..{n_cls - 1}"}
    if "seg" in sample:
        seg = sample["seg"]
        if not isinstance(seg, torch.Tensor) or seg.shape[0] != pts.shape[0]:
            return {
                "error": f"'seg' must hold one part id per point ({pts.shape[0]}), got {getattr(seg, 'shape', seg)}"
            }
    return {"n": int(pts.shape[0]), "c": int(pts.shape[1])}


class _Probe(Dataset):
    """Runs :func:`_check_sample` in DataLoader workers (file parsing and FPS caching in parallel)."""

    def __init__(self, base: Any, indices: Sequence[int]):
        self.base, self.indices = base, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        out = _check_sample(self.base, self.indices[i])
        out["index"] = self.indices[i]
        return out


def _identity(x: Any) -> Any:
    return x


def validate_dataset(
    ds: Any,
    cache_dir: Optional[PathLike] = None,
    num_workers: int = 0,
    max_errors: int = 20,
    use_cache: bool = True,
    progress: Optional[Callable[[Iterable], Iterable]] = None,
    worker_init_fn: Optional[Callable[[int], None]] = None,
    full: bool = False,
) -> ValidationReport:
    """Read every sample of ``ds`` once (without its transform) and check it, before training starts.

    Checks: the file parses (the error names the file and line), points are an ``(N, 3+)`` array of finite values,
    ``N`` equals the dataset's ``num_points`` when it fixes one, labels lie in ``[0, num_classes)``, ``seg`` has one
    id per point. ModelNet40 text files also get their FPS order computed and cached on the way.

    Args:
        ds: a dataset of this package, or a ``Subset``/``ConcatDataset`` of them.
        cache_dir: where the fingerprint of a validated dataset is remembered (default cache folder).
        num_workers: DataLoader workers reading files in parallel (0: in this process).
        max_errors: problems listed in the error (all are counted).
        use_cache: False re-reads even when this exact dataset was validated before.
        progress: wraps the iterable (e.g. ``tqdm``) to show progress.
        full: also read datasets that hold their data in memory (HDF5, pickles, generated); by default they are
            skipped (``report.skipped`` says so): they were checked when built and read nothing lazily.

    Returns a :class:`ValidationReport`; raises :class:`DatasetValidationError` naming each bad sample's file.
    """
    t0 = time.time()
    if isinstance(ds, ConcatDataset):
        reports = [
            validate_dataset(d, cache_dir, num_workers, max_errors, use_cache, progress, worker_init_fn, full)
            for d in ds.datasets
        ]
        return ValidationReport(
            dataset="ConcatDataset",
            num_samples=sum(r.num_samples for r in reports),
            fingerprint=stable_digest([r.fingerprint for r in reports]),
            cached=all(r.cached for r in reports),
            seconds=time.time() - t0,
            point_counts=[min(r.point_counts[0] for r in reports), max(r.point_counts[1] for r in reports)]
            if all(r.point_counts for r in reports)
            else [],
            channels=sorted({c for r in reports for c in r.channels}),
        )
    base, indices = _unwrap(ds)
    indices = list(range(len(base))) if indices is None else indices
    name = type(base).__name__
    if not full and len(source_files(base)) != len(base):
        # HDF5 / pickle sources are read and checked (shape, finite, labels) when the dataset is built, generated
        # data has no file: nothing is read lazily, so there is nothing left to fail mid-epoch.
        return ValidationReport(
            dataset=name,
            num_samples=len(indices),
            fingerprint="",
            cached=False,
            seconds=time.time() - t0,
            skipped="held in memory, checked when the dataset was built",
        )
    fp = dataset_fingerprint(ds)
    marker = resolve_cache_dir(cache_dir, "validated", f"{fp}.json")
    if use_cache and marker.is_file():
        try:
            rep = ValidationReport(**json.loads(marker.read_text()))
            rep.cached, rep.seconds = True, time.time() - t0
            return rep
        except (OSError, ValueError, TypeError):
            pass  # unreadable marker: validate again
    loader = DataLoader(
        _Probe(base, indices),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_identity,
        worker_init_fn=worker_init_fn,
    )
    problems: List[Tuple[int, str, str]] = []
    counts, channels = [], set()
    # Datasets draw random shuffles/subsets in get(): keep the caller's RNG streams exactly as they were.
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        for out in progress(loader) if progress is not None else loader:
            if "error" in out:
                src = _source_of(base, out["index"])
                msg = out["error"]
                problems.append((out["index"], src, msg if msg.startswith(src) else f"{src}: {msg}"))
            else:
                counts.append(out["n"])
                channels.add(out["c"])
    np.random.set_state(np_state)
    random.setstate(py_state)
    if problems:
        shown = "\n  ".join(m for _, _, m in problems[:max_errors])
        more = f"\n  ... and {len(problems) - max_errors} more" if len(problems) > max_errors else ""
        raise DatasetValidationError(
            f"{name} ({getattr(base, 'split', None)!r} split, root {str(getattr(base, 'root', ''))!r}): "
            f"{len(problems)} of {len(indices)} samples failed the check before training:\n  {shown}{more}\n"
            "Fix or remove these files (or drop them from the split list) and start again.",
            problems,
        )
    rep = ValidationReport(
        dataset=name,
        num_samples=len(indices),
        fingerprint=fp,
        cached=False,
        seconds=time.time() - t0,
        point_counts=[min(counts), max(counts)] if counts else [],
        channels=sorted(channels),
    )
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rep.to_dict()))
        os.replace(tmp, marker)
    except OSError:
        pass  # a read-only cache only means the check runs again next time
    return rep
