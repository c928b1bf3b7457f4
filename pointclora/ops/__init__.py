"""Stateless geometry ops on padded ``(B, N, 3)`` batches: FPS, kNN, grouping.

Each uses pytorch3d's kernels when importable and our pure-torch implementation otherwise (no compiled extension
needed); a ``*_naive`` reference sits beside each for tests.
"""

from ._backend import HAS_PYTORCH3D, use_pytorch3d
from .grouping import Grouping, group_points, group_points_naive
from .knn import KNN, knn_gather, knn_points, knn_points_naive, square_distance
from .sampling import SampledPoints, farthest_point_sample, farthest_point_sample_naive, gather_points

__all__ = [
    "HAS_PYTORCH3D",
    "use_pytorch3d",
    "Grouping",
    "group_points",
    "group_points_naive",
    "KNN",
    "knn_gather",
    "knn_points",
    "knn_points_naive",
    "square_distance",
    "SampledPoints",
    "farthest_point_sample",
    "farthest_point_sample_naive",
    "gather_points",
]

from .chamfer import ChamferTerms, chamfer_distance, chamfer_distance_naive, chamfer_terms  # noqa: E402
from .interpolate import three_nn_interpolate, three_nn_interpolate_naive  # noqa: E402

__all__ += [
    "ChamferTerms",
    "chamfer_distance",
    "chamfer_distance_naive",
    "chamfer_terms",
    "three_nn_interpolate",
    "three_nn_interpolate_naive",
]
