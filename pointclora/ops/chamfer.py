"""Chamfer-L2 distance between point sets, the Point-MAE reconstruction loss.

``chamfer_distance(x, y)`` = mean over clouds of ``mean_i min_j |x_i - y_j|² + mean_j min_i |x_i - y_j|²`` — the
same number as Point-MAE's ``ChamferDistanceL2`` (squared distances, no square root) and as pytorch3d's
``chamfer_distance`` with its default ``point_reduction="mean"``. pytorch3d's kernel is used when importable (and not
disabled with ``POINTCLORA_OPS_BACKEND=torch``), our pure-torch code otherwise; ``chamfer_distance_naive`` is the
float64 loop reference for tests.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._backend import use_pytorch3d
from ._checks import check_points

__all__ = ["ChamferTerms", "chamfer_distance", "chamfer_distance_naive", "chamfer_terms"]

#: Upper bound on the elements of one (b, N, M) distance block (bounds memory for many large clouds).
_MAX_BLOCK_ELEMENTS = 1 << 25


class ChamferTerms(NamedTuple):
    dist_xy: torch.Tensor  #: (B, N) squared distance from every x_i to its nearest y
    dist_yx: torch.Tensor  #: (B, M) squared distance from every y_j to its nearest x


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    check_points("x", x)
    check_points("y", y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must share the batch size, got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if x.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError(f"chamfer distance needs non-empty clouds, got x {tuple(x.shape)} and y {tuple(y.shape)}")


def _pairwise_sq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(b, N, 3) x (b, M, 3) -> (b, N, M)`` squared distances from coordinate differences.

    Not the ``|x|² - 2x·y + |y|²`` expansion: its cancellation gives small negative values (and wrong gradients) for
    near-identical points, which is exactly where a converging reconstruction lives. Out-of-place ops only, so
    autograd can differentiate it.
    """
    d = (x[..., 0:1] - y[..., 0].unsqueeze(1)) ** 2
    for c in range(1, x.shape[-1]):
        d = d + (x[..., c : c + 1] - y[..., c].unsqueeze(1)) ** 2
    return d


def chamfer_terms(x: torch.Tensor, y: torch.Tensor) -> ChamferTerms:
    """Nearest-neighbour squared distances both ways (pure torch, differentiable).

    Args:
        x: ``(B, N, 3)``; y: ``(B, M, 3)``.

    Returns:
        ``ChamferTerms(dist_xy (B, N), dist_yx (B, M))``.
    """
    _check_pair(x, y)
    B, N, M = x.shape[0], x.shape[1], y.shape[1]
    chunk = max(1, _MAX_BLOCK_ELEMENTS // max(1, N * M))
    xy, yx = [], []
    for b0 in range(0, B, chunk):
        d = _pairwise_sq(x[b0 : b0 + chunk], y[b0 : b0 + chunk])
        xy.append(d.min(dim=2).values)
        yx.append(d.min(dim=1).values)
    return ChamferTerms(torch.cat(xy, 0), torch.cat(yx, 0))


def chamfer_distance(x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Chamfer-L2 distance (squared distances, averaged over the points of each cloud, both directions summed).

    Args:
        x: ``(B, N, 3)`` predicted points.
        y: ``(B, M, 3)`` target points.
        reduction: ``"mean"`` (scalar, mean over the B clouds), ``"sum"`` (scalar) or ``"none"`` (``(B,)``).

    Returns:
        a scalar tensor, or ``(B,)`` for ``reduction="none"``.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    _check_pair(x, y)
    if use_pytorch3d():  # pragma: no cover - no pytorch3d wheel on the CPU CI
        from pytorch3d.loss import chamfer_distance as p3d_chamfer

        per_cloud, _ = p3d_chamfer(x.float(), y.float(), batch_reduction=None, point_reduction="mean")
        per_cloud = per_cloud.to(x.dtype)
    else:
        terms = chamfer_terms(x, y)
        per_cloud = terms.dist_xy.mean(dim=1) + terms.dist_yx.mean(dim=1)
    if reduction == "none":
        return per_cloud
    return per_cloud.mean() if reduction == "mean" else per_cloud.sum()


def chamfer_distance_naive(x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Reference: explicit float64 loops over clouds and points. For tests only."""
    _check_pair(x, y)
    out = torch.zeros(x.shape[0], dtype=torch.float64)
    for b in range(x.shape[0]):
        xb, yb = x[b].double().cpu(), y[b].double().cpu()
        d_xy = torch.stack([((yb - p) ** 2).sum(-1).min() for p in xb])
        d_yx = torch.stack([((xb - q) ** 2).sum(-1).min() for q in yb])
        out[b] = d_xy.mean() + d_yx.mean()
    out = out.to(x.dtype).to(x.device)
    if reduction == "none":
        return out
    return out.mean() if reduction == "mean" else out.sum()
