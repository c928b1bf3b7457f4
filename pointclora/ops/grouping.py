"""Point-MAE's tokenizer geometry: FPS centres, kNN neighbourhoods, coordinates relative to their centre."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .knn import knn_gather, knn_points, knn_points_naive
from .sampling import farthest_point_sample, farthest_point_sample_naive

__all__ = ["Grouping", "group_points", "group_points_naive"]


class Grouping(NamedTuple):
    neighborhood: torch.Tensor  #: (B, G, K, 3) coordinates relative to each centre
    centers: torch.Tensor  #: (B, G, 3) FPS centres
    center_idx: torch.Tensor  #: (B, G) int64 indices of the centres
    idx: torch.Tensor  #: (B, G, K) int64 indices of the neighbours (the centre itself first)


def group_points(
    points: torch.Tensor,
    num_groups: int,
    group_size: int,
    lengths: Optional[torch.Tensor] = None,
    start: str = "first",
    skip_near_origin: bool = False,
    generator: Optional[torch.Generator] = None,
) -> Grouping:
    """Split clouds into ``num_groups`` patches of ``group_size`` points (Point-MAE's ``Group``).

    Args:
        points: ``(B, N, 3)`` coordinates.
        num_groups: G, FPS centres per cloud.
        group_size: K, neighbours per centre (the centre included).

    Returns:
        ``Grouping(neighborhood (B, G, K, 3), centers (B, G, 3), center_idx (B, G), idx (B, G, K))``.
    """
    centers, center_idx = farthest_point_sample(
        points, num_groups, lengths=lengths, start=start, skip_near_origin=skip_near_origin, generator=generator
    )
    _, idx = knn_points(centers, points, group_size, lengths=lengths)
    neighborhood = knn_gather(points, idx) - centers.unsqueeze(2)
    return Grouping(neighborhood, centers, center_idx, idx)


def group_points_naive(points: torch.Tensor, num_groups: int, group_size: int) -> Grouping:
    """Reference grouping from the naive FPS and kNN. For tests only."""
    centers, center_idx = farthest_point_sample_naive(points, num_groups)
    _, idx = knn_points_naive(centers, points, group_size)
    neighborhood = knn_gather(points, idx) - centers.unsqueeze(2)
    return Grouping(neighborhood, centers, center_idx, idx)
