"""Atomic file writes: a temporary file in the same folder, flushed and fsync'ed, then ``os.replace`` over the target
and the folder fsync'ed, so a kill at any moment leaves either the old file or the new one, never a torn one.

Lives in ``utils`` because models (encoder export), peft (adapter folders) and the engine (checkpoints) all write
files this way, and models must not import the engine.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_save"]

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
