"""Atomic, resumable checkpoints.

Every file is written to a temporary file in the same folder, flushed and fsync'ed, then moved over the target with
``os.replace`` (atomic on POSIX and Windows) and the folder fsync'ed: a kill at any moment leaves either the old file or
the new one, never a torn one. Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(weights_only=True)``; the config is stored as YAML text and RNG states as tensors.
"""

from __future__ import annotations

import io
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import numpy as np
import torch

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_save",
    "load_checkpoint",
    "get_rng_state",
    "set_rng_state",
]

PathLike = Union[str, os.PathLike]


def _fsync_dir(folder: Path) -> None:
    # The rename itself lives in the directory entry; without this a power loss can forget it. Not possible on Windows.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would (0666 minus umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        # Any failure (including KeyboardInterrupt) leaves the previous file untouched and no stray temp file.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(data: bytes, path: PathLike) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(text: str, path: PathLike) -> None:
    atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_json(obj: Any, path: PathLike) -> None:
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)`` that never leaves a partially written ``path`` behind."""
    _atomic_write(path, lambda f: torch.save(obj, f))


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
