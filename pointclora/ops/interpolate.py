"""3-NN inverse-distance feature interpolation (PointNet++'s feature propagation, used by the segmentation head).

Each target point takes the features of its ``k`` (3) nearest source points, weighted by ``1 / (d² + 1e-8)``
normalised to sum to 1, where ``d²`` is the squared distance — exactly Point-MAE's ``PointNetFeaturePropagation``.
With a single source point every target gets its features (the official code's ``S == 1`` branch).
"""

from __future__ import annotations

import torch

from ._checks import check_points
from .knn import knn_gather, knn_points, knn_points_naive

__all__ = ["three_nn_interpolate", "three_nn_interpolate_naive", "INTERPOLATION_EPS"]

#: Added to the squared distance before inverting: a target that coincides with a source gets (almost) its features.
INTERPOLATION_EPS = 1e-8


def _check(target_xyz: torch.Tensor, source_xyz: torch.Tensor, source_features: torch.Tensor) -> None:
    check_points("target_xyz", target_xyz)
    check_points("source_xyz", source_xyz)
    if source_features.dim() != 3 or source_features.shape[:2] != source_xyz.shape[:2]:
        raise ValueError(
            f"source_features must have shape (B, S, C) matching source_xyz {tuple(source_xyz.shape)}, "
            f"got {tuple(source_features.shape)}"
        )
    if target_xyz.shape[0] != source_xyz.shape[0]:
        raise ValueError(f"batch sizes differ: target {target_xyz.shape[0]} vs source {source_xyz.shape[0]}")


def three_nn_interpolate(
    target_xyz: torch.Tensor, source_xyz: torch.Tensor, source_features: torch.Tensor, k: int = 3
) -> torch.Tensor:
    """Interpolate features from ``S`` source points onto ``N`` target points.

    Args:
        target_xyz: ``(B, N, 3)`` where features are wanted (all points of the cloud).
        source_xyz: ``(B, S, 3)`` where features are known (the patch centres).
        source_features: ``(B, S, C)``.
        k: neighbours used (3 in PointNet++/Point-MAE; fewer when ``S < k``).

    Returns:
        ``(B, N, C)`` interpolated features (differentiable w.r.t. ``source_features``).
    """
    _check(target_xyz, source_xyz, source_features)
    B, N, _ = target_xyz.shape
    S = source_xyz.shape[1]
    if S == 1:
        return source_features.expand(B, N, source_features.shape[-1])
    k = min(k, S)
    dists, idx = knn_points(target_xyz.detach(), source_xyz.detach(), k)  # squared distances (B, N, k)
    weight = 1.0 / (dists + INTERPOLATION_EPS)
    weight = weight / weight.sum(dim=2, keepdim=True)
    neighbours = knn_gather(source_features, idx)  # (B, N, k, C)
    return (neighbours * weight.unsqueeze(-1).to(neighbours.dtype)).sum(dim=2)


def three_nn_interpolate_naive(
    target_xyz: torch.Tensor, source_xyz: torch.Tensor, source_features: torch.Tensor, k: int = 3
) -> torch.Tensor:
    """Reference: float64 loops, naive kNN. For tests only."""
    _check(target_xyz, source_xyz, source_features)
    B, N, _ = target_xyz.shape
    S, C = source_features.shape[1:]
    if S == 1:
        return source_features.expand(B, N, C).clone()
    k = min(k, S)
    dists, idx = knn_points_naive(target_xyz.double(), source_xyz.double(), k)
    out = torch.zeros(B, N, C, dtype=torch.float64)
    feats = source_features.double().cpu()
    for b in range(B):
        for n in range(N):
            w = [1.0 / (float(dists[b, n, j]) + INTERPOLATION_EPS) for j in range(k)]
            total = sum(w)
            for j in range(k):
                out[b, n] += (w[j] / total) * feats[b, int(idx[b, n, j])]
    return out.to(source_features.dtype).to(source_features.device)
