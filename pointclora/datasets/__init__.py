"""Datasets (ModelNet40, few-shot, ScanObjectNN, ShapeNetPart, ShapeNet-55, folders, Synthetic), readers, transforms.

Classification samples are ``{"points": float32 (N, 3|6), "label": int}``; part segmentation samples
``{"points": float32 (N, 3|6), "cls": int, "seg": int64 (N,)}``. Every class takes ``(root, split, transform, ...)``.
"""

from . import transforms
from .base import ClassificationDataset, PointCloudDataset, pc_normalize
from .builder import DATASETS, build_dataset, dataset_names, register_dataset
from .cache import default_cache_dir
from .fewshot import ModelNetFewShot, generate_fewshot_episodes
from .folder import PointCloudFolder
from .io import (
    DataFormatError,
    DatasetNotFoundError,
    UnsafePickleError,
    read_point_cloud,
    safe_pickle_load,
)
from .modelnet import ModelNet40, fps_cache_path, fps_order_numpy, official_fps_start, write_fps_cache
from .scanobjectnn import SCANOBJECTNN_CLASSES, ScanObjectNN
from .shapenet55 import ShapeNet55
from .shapenetpart import ShapeNetPart
from .synthetic import Synthetic, SyntheticParts
from .transforms import eval_transforms, seed_worker, train_transforms, vote_eval_transforms
from .validation import (
    DatasetValidationError,
    SplitOverlapError,
    ValidationReport,
    check_disjoint_splits,
    sample_keys,
    validate_dataset,
)

__all__ = [
    "transforms",
    "ClassificationDataset",
    "PointCloudDataset",
    "pc_normalize",
    "DATASETS",
    "build_dataset",
    "dataset_names",
    "register_dataset",
    "ModelNetFewShot",
    "generate_fewshot_episodes",
    "PointCloudFolder",
    "DataFormatError",
    "DatasetNotFoundError",
    "UnsafePickleError",
    "read_point_cloud",
    "safe_pickle_load",
    "ModelNet40",
    "fps_cache_path",
    "fps_order_numpy",
    "official_fps_start",
    "default_cache_dir",
    "DatasetValidationError",
    "SplitOverlapError",
    "ValidationReport",
    "check_disjoint_splits",
    "sample_keys",
    "validate_dataset",
    "write_fps_cache",
    "SCANOBJECTNN_CLASSES",
    "ScanObjectNN",
    "ShapeNet55",
    "ShapeNetPart",
    "Synthetic",
    "SyntheticParts",
    "eval_transforms",
    "seed_worker",
    "train_transforms",
    "vote_eval_transforms",
]
