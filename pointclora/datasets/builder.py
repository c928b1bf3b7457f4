"""Build a dataset from its YAML config (``datasets/*.yaml``): ``name`` + constructor keyword arguments."""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional

from ..config import register_section_schema
from .fewshot import ModelNetFewShot
from .folder import PointCloudFolder
from .modelnet import ModelNet40
from .scanobjectnn import ScanObjectNN
from .shapenet55 import ShapeNet55
from .shapenetpart import ShapeNetPart
from .synthetic import Synthetic, SyntheticParts

__all__ = ["DATASETS", "build_dataset", "dataset_names", "register_dataset", "dataset_constructor_keys"]

#: name -> class. Names are matched case-insensitively; the reference's NAMEs are aliases.
DATASETS: Dict[str, Callable[..., Any]] = {
    "modelnet40": ModelNet40,
    "modelnet_fewshot": ModelNetFewShot,
    "scanobjectnn": ScanObjectNN,
    "shapenetpart": ShapeNetPart,
    "shapenet55": ShapeNet55,
    "folder": PointCloudFolder,
    "synthetic": Synthetic,
    "synthetic_parts": SyntheticParts,
}
_ALIASES = {
    "modelnet": "modelnet40",
    "modelnetfewshot": "modelnet_fewshot",
    "shapenet": "shapenet55",
    "pointcloudfolder": "folder",
    "syntheticparts": "synthetic_parts",
}


def register_dataset(name: str, cls: Callable[..., Any]) -> None:
    """Add a dataset class under ``name`` (its constructor must take ``root``, ``split``, ``transform``)."""
    DATASETS[name.lower()] = cls


def dataset_names() -> List[str]:
    return sorted(DATASETS)


def _closest(word: str, options) -> str:
    m = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" (did you mean {m[0]!r}?)" if m else ""


def dataset_constructor_keys(name: str) -> Optional[List[str]]:
    """The config keys dataset ``name`` accepts (its constructor's keywords), or None for an unknown name."""
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in DATASETS:
        return None
    return [p for p in inspect.signature(DATASETS[key]).parameters if p not in ("self", "split", "transform")]


def build_dataset(cfg: Mapping[str, Any], split: str, transform: Optional[Callable] = None, root: Optional[str] = None):
    """``cfg``: the parsed dataset YAML, e.g. ``{"name": "scanobjectnn", "root": "data/ScanObjectNN",
    "variant": "PB_T50_RS"}``. ``split`` and ``transform`` are passed through; ``root`` (e.g. a ``--data-root``
    flag) overrides the config's. Unknown keys are errors naming the closest valid key.
    """
    if not isinstance(cfg, Mapping) or "name" not in cfg:
        raise ValueError(f"dataset config must be a mapping with a 'name' key (one of {dataset_names()}), got {cfg!r}")
    name = str(cfg["name"]).lower()
    name = _ALIASES.get(name, name)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {cfg['name']!r}{_closest(name, DATASETS)}; known: {dataset_names()}")
    cls = DATASETS[name]
    params = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    for reserved in ("split", "transform"):
        if reserved in kwargs:
            raise ValueError(
                f"dataset config for {name!r}: {reserved!r} is set by the caller, remove it from the config"
            )
    valid = [p for p in params if p not in ("self", "split", "transform")]
    for k in kwargs:
        if k not in valid:
            raise ValueError(f"dataset config for {name!r}: unknown key {k!r}{_closest(k, valid)}; valid keys: {valid}")
    if root is not None:
        kwargs["root"] = root
    return cls(split=split, transform=transform, **kwargs)


def _dataset_section_keys(cfg: Mapping[str, Any]) -> Optional[List[str]]:
    """The ``dataset`` schema: the named class's constructor keywords plus ``name`` / ``train_split`` (None until a
    name is known: a base may add it; :func:`build_dataset` checks the final section)."""
    section = cfg.get("dataset") if isinstance(cfg.get("dataset"), Mapping) else {}
    name = section.get("name")
    keys = dataset_constructor_keys(str(name)) if name else None
    return None if keys is None else sorted({"name", "train_split", *keys})


register_section_schema("dataset", _dataset_section_keys)
