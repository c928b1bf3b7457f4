"""Model variants and checkpoint loading: ``create_model``, ``load_pretrained``."""

from .checkpoint import (
    CheckpointError,
    LoadResult,
    convert_state_dict,
    extract_state_dict,
    load_pretrained,
    safe_torch_load,
    to_point_mae_layout,
)
from .registry import create_model, list_models, model_defaults, pretrained_names, pretrained_path, register_model

__all__ = [
    "CheckpointError",
    "LoadResult",
    "convert_state_dict",
    "extract_state_dict",
    "load_pretrained",
    "safe_torch_load",
    "to_point_mae_layout",
    "create_model",
    "list_models",
    "model_defaults",
    "register_model",
    "pretrained_names",
    "pretrained_path",
]
from . import segmentation as _segmentation  # noqa: E402,F401  (registers the *_seg variants)
