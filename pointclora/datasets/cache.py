"""Where derived data (FPS orders of ModelNet40 text files, validation fingerprints) is cached on disk.

Never beside the data by default: dataset folders are often read-only or shared between users, and a cache written
there by one version would be trusted by another. The folder is ``$POINTCLORA_CACHE`` (one variable for every cache:
derived data and the demo's backbone; the old ``$POINTCLORA_CACHE_DIR`` is still read, with a deprecation note), else
``$XDG_CACHE_HOME/pointclora``, else ``~/.cache/pointclora``; every dataset class takes a ``cache_dir`` argument to
override it (``cache_dir: null`` in a dataset YAML keeps the default).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["default_cache_dir", "resolve_cache_dir", "stable_digest"]

PathLike = Union[str, os.PathLike]


_NOTED = set()


def default_cache_dir() -> Path:
    """``$POINTCLORA_CACHE``, ``$XDG_CACHE_HOME/pointclora`` or ``~/.cache/pointclora`` (not created here).

    ``$POINTCLORA_CACHE_DIR`` (the dataset cache's old name) is read when ``$POINTCLORA_CACHE`` is unset, with a
    one-line note on stderr, once per process."""
    env = os.environ.get("POINTCLORA_CACHE")
    if env:
        return Path(env).expanduser()
    old = os.environ.get("POINTCLORA_CACHE_DIR")
    if old:
        if "POINTCLORA_CACHE_DIR" not in _NOTED:
            _NOTED.add("POINTCLORA_CACHE_DIR")
            import sys

            print("note: POINTCLORA_CACHE_DIR is deprecated; set POINTCLORA_CACHE (one cache folder for everything)",
                  file=sys.stderr)  # fmt: skip
        return Path(old).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "pointclora"


def resolve_cache_dir(cache_dir: Optional[PathLike], *parts: str) -> Path:
    """``cache_dir`` (or :func:`default_cache_dir`) joined with ``parts``; created on first use by the writers."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base.joinpath(*parts)


def stable_digest(*items: Any, length: int = 16) -> str:
    """Hex digest of the ``repr`` of ``items`` (paths resolved by the caller): a cache key stable across runs."""
    h = hashlib.sha1()
    for item in items:
        h.update(repr(item).encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()[:length]
