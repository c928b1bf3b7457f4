"""Which implementation the ops use: compiled kernels when importable (pytorch3d's; our numba FPS), our pure
torch/numpy code otherwise.

The choice is made once at import time and can be forced with the environment variable
``POINTCLORA_OPS_BACKEND=torch`` (tests use it to exercise the fallback even where pytorch3d or numba exists).
"""

from __future__ import annotations

import os

__all__ = ["HAS_PYTORCH3D", "use_numba", "use_pytorch3d"]

try:  # pragma: no cover - pytorch3d has no wheel on the CI machine
    import pytorch3d.ops as _p3d_ops  # noqa: F401

    HAS_PYTORCH3D = True
except Exception:  # ImportError, or a binary built for another torch
    _p3d_ops = None
    HAS_PYTORCH3D = False


def use_pytorch3d() -> bool:
    """True when pytorch3d is importable and not disabled by ``POINTCLORA_OPS_BACKEND=torch``."""
    return HAS_PYTORCH3D and os.environ.get("POINTCLORA_OPS_BACKEND", "auto").lower() != "torch"


def use_numba() -> bool:
    """True when numba is importable and not disabled by ``POINTCLORA_OPS_BACKEND=torch``."""
    from ._fps_numba import has_numba

    return os.environ.get("POINTCLORA_OPS_BACKEND", "auto").lower() != "torch" and has_numba()
