"""Which way is up: the axis a dataset's files use, and the exact rotation that turns clouds into a model's frame.

Why (issue 19 item 7): a CLoRA model fine-tuned from the z-up ``point_mae_mn10`` classified 13 of 42 y-up
ModelNet40-resampled shapes of its own ten classes; the same files turned y-up -> z-up: 38 of 42. Every dataset
declares the axis of its files (``up_axis``: a class attribute, or a constructor argument for folders); every
backbone records the axis it was pre-trained in; clouds are turned into the backbone's frame when the two differ.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch

__all__ = ["AXES", "rotation_between", "ToUpAxis", "dataset_up_axis", "check_axis"]

AXES = ("x", "y", "z")
_UNIT = {"x": np.array([1.0, 0, 0]), "y": np.array([0, 1.0, 0]), "z": np.array([0, 0, 1.0])}


def check_axis(axis: Any, what: str) -> Optional[str]:
    """``axis`` if it is x, y, z or None; a ValueError naming ``what`` otherwise."""
    if axis is None or axis in AXES:
        return axis
    raise ValueError(f"{what} must be x, y or z, got {axis!r}")


def rotation_between(src: str, dst: str) -> np.ndarray:
    """The proper rotation ``R`` (det +1, a quarter turn about ``src x dst``) with ``R @ e_src = e_dst``: applied as
    ``points @ R.T``, a cloud whose up is ``src`` gets its up along ``dst``. y -> z maps (x, y, z) to (x, -z, y)."""
    check_axis(src, "up axis")
    check_axis(dst, "up axis")
    if src == dst:
        return np.eye(3)
    k = np.cross(_UNIT[src], _UNIT[dst])
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + K + K @ K  # Rodrigues with sin = 1, 1 - cos = 1 (exact integers)


class ToUpAxis:
    """Turn a sample's xyz (and normals, columns 3-5) from ``src``-up to ``dst``-up. Exact: entries are 0 / ±1."""

    def __init__(self, src: str, dst: str) -> None:
        self.src, self.dst = src, dst
        self.R = torch.as_tensor(rotation_between(src, dst), dtype=torch.float32)

    def __call__(self, sample: Dict[str, Any]) -> Dict[str, Any]:
        out = dict(sample)
        pts = sample["points"]
        pts = pts.clone() if isinstance(pts, torch.Tensor) else torch.as_tensor(np.asarray(pts), dtype=torch.float32)
        pts[:, :3] = pts[:, :3] @ self.R.T.to(pts.dtype)
        if pts.shape[1] >= 6:
            pts[:, 3:6] = pts[:, 3:6] @ self.R.T.to(pts.dtype)
        out["points"] = pts
        return out

    def __repr__(self) -> str:
        return f"ToUpAxis(src={self.src!r}, dst={self.dst!r})"


def dataset_up_axis(dataset_cfg: Mapping[str, Any]) -> Optional[str]:
    """The axis a dataset config's files use: its ``up_axis`` key, else the class's declared ``up_axis`` (or its
    constructor default); None for datasets that declare none (generated shapes)."""
    from .builder import _ALIASES, DATASETS

    if dataset_cfg.get("up_axis") is not None:
        return check_axis(dataset_cfg["up_axis"], "dataset.up_axis")
    name = str(dataset_cfg.get("name", "")).lower()
    cls = DATASETS.get(_ALIASES.get(name, name))
    if cls is None:
        return None
    param = inspect.signature(cls).parameters.get("up_axis")
    if param is not None and param.default is not inspect.Parameter.empty:
        return check_axis(param.default, f"{cls.__name__} up_axis")
    return check_axis(getattr(cls, "up_axis", None), f"{cls.__name__}.up_axis")
