"""Argument validation shared by the ops: clear errors instead of tracebacks from deep inside torch."""

from __future__ import annotations

from typing import Optional

import torch


def check_points(name: str, points: torch.Tensor, dims: int = 3) -> None:
    """Require a float tensor of shape ``(B, N, dims)``."""
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, N, {dims}), got {type(points).__name__}")
    if points.dim() != 3 or points.shape[-1] != dims:
        raise ValueError(f"{name} must have shape (B, N, {dims}), got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {points.dtype}")


def check_lengths(lengths: Optional[torch.Tensor], points: torch.Tensor, name: str = "lengths") -> torch.Tensor:
    """Return per-cloud lengths ``(B,)`` int64 on the points' device; defaults to N for every cloud."""
    B, N = points.shape[:2]
    if lengths is None:
        return torch.full((B,), N, dtype=torch.int64, device=points.device)
    lengths = torch.as_tensor(lengths, device=points.device).to(torch.int64)
    if lengths.shape != (B,):
        raise ValueError(f"{name} must have shape ({B},), got {tuple(lengths.shape)}")
    if (lengths < 0).any() or (lengths > N).any():
        raise ValueError(f"{name} must lie in [0, {N}], got {lengths.tolist()}")
    return lengths


def check_count(what: str, count: int, lengths: torch.Tensor, noun: str = "points") -> None:
    """Require ``1 <= count <= min(lengths)``."""
    if int(count) < 1:
        raise ValueError(f"{what} must be >= 1, got {count}")
    smallest = int(lengths.min()) if lengths.numel() else 0
    if count > smallest:
        raise ValueError(
            f"{what}={count} is larger than the number of {noun} available ({smallest}); "
            f"sample fewer, or pad/resample the cloud to at least {count} {noun} first"
        )
