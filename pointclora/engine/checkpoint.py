"""Atomic, resumable checkpoints.

Every file is written to a temporary file in the same folder, flushed and fsync'ed, then moved over the target with
``os.replace`` (atomic on POSIX and Windows) and the folder fsync'ed: a kill at any moment leaves either the old file or
the new one, never a torn one. Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(weights_only=True)``; the config is stored as YAML text and RNG states as tensors.
"""

from __future__ import annotations

import io
import os
import random
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np
import torch

from ..utils.atomic import atomic_save, atomic_write_bytes, atomic_write_text

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_save",
    "load_checkpoint",
    "get_rng_state",
    "set_rng_state",
]

PathLike = Union[str, os.PathLike]


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """``torch.load(weights_only=True)`` with a message that names the file when it is missing or unreadable."""
    from ..models.checkpoint import safe_torch_load

    obj = safe_torch_load(path, map_location=map_location)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    return obj


# --------------------------------------------------------------------------------------------------- RNG state
def _numpy_state_to_tensors(state: tuple) -> Dict[str, torch.Tensor]:
    name, keys, pos, has_gauss, cached = state
    assert name == "MT19937", name
    return {
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64)),
        "pos": torch.tensor(int(pos)),
        "has_gauss": torch.tensor(int(has_gauss)),
        "cached_gaussian": torch.tensor(float(cached), dtype=torch.float64),
    }


def _numpy_state_from_tensors(t: Mapping[str, torch.Tensor]) -> tuple:
    keys = t["keys"].numpy().astype(np.uint32)
    return ("MT19937", keys, int(t["pos"]), int(t["has_gauss"]), float(t["cached_gaussian"]))


def _python_state_to_tensors(state: tuple) -> Dict[str, torch.Tensor]:
    version, internal, gauss_next = state
    return {
        "version": torch.tensor(int(version)),
        "internal": torch.tensor(list(internal), dtype=torch.int64),
        "has_gauss_next": torch.tensor(int(gauss_next is not None)),
        "gauss_next": torch.tensor(0.0 if gauss_next is None else float(gauss_next), dtype=torch.float64),
    }


def _python_state_from_tensors(t: Mapping[str, torch.Tensor]) -> tuple:
    gauss = float(t["gauss_next"]) if int(t["has_gauss_next"]) else None
    return (int(t["version"]), tuple(int(v) for v in t["internal"].tolist()), gauss)


def get_rng_state(generators: Optional[Mapping[str, torch.Generator]] = None) -> Dict[str, Any]:
    """Every RNG a training step can touch, as tensors: torch (CPU, CUDA), numpy, Python, and named generators."""
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_tensors(np.random.get_state()),
        "python": _python_state_to_tensors(random.getstate()),
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any], generators: Optional[Mapping[str, torch.Generator]] = None) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(_numpy_state_from_tensors(state["numpy"]))
    random.setstate(_python_state_from_tensors(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states: List[torch.Tensor] = list(state["cuda"])
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
    for name, gen in (generators or {}).items():
        saved = state.get("generators", {}).get(name)
        if saved is not None:
            gen.set_state(saved.cpu())


def torch_save_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
