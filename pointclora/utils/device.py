"""Device selection: ``auto`` picks CUDA when present, else CPU; no module hard-codes a CUDA device."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` if available else ``cpu``; ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` as given.

    Raises ValueError for an unknown name and RuntimeError when CUDA is asked for but absent.
    """
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use --device auto or cpu")
    return dev
