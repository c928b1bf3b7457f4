"""k-nearest neighbours on padded batches.

``knn_points(query, points, k)`` returns squared distances sorted ascending and int64 indices. A query that is itself
a point of the cloud finds itself first (distance exactly 0): distances are computed from coordinate differences
(``torch.cdist`` without its matrix-multiply shortcut), not from the ``|q|² - 2 q·p + |p|²`` expansion whose
rounding can rank a neighbour before the point itself.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ._backend import use_pytorch3d
from ._checks import check_count, check_lengths, check_points

__all__ = ["KNN", "knn_points", "knn_points_naive", "knn_gather", "square_distance"]

#: Upper bound on the elements of one (B, chunk, N) distance block, to bound peak memory on large clouds.
_MAX_BLOCK_ELEMENTS = 1 << 26


class KNN(NamedTuple):
    dists: torch.Tensor  #: (B, S, K) squared distances, ascending
    idx: torch.Tensor  #: (B, S, K) int64 indices into ``points``


def square_distance(query: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Exact pairwise squared distances ``(B, S, 3) x (B, N, 3) -> (B, S, N)`` from coordinate differences."""
    # One coordinate at a time keeps the temporaries at (B, S, N) instead of (B, S, N, 3).
    d = (query[..., 0:1] - points[..., 0].unsqueeze(1)).square_()
    for c in range(1, query.shape[-1]):
        d.add_((query[..., c : c + 1] - points[..., c].unsqueeze(1)).square_())
    return d


def knn_points(
    query: torch.Tensor,
    points: torch.Tensor,
    k: int,
    lengths: Optional[torch.Tensor] = None,
) -> KNN:
    """The ``k`` nearest ``points`` of every query point.

    Args:
        query: ``(B, S, 3)`` query coordinates.
        points: ``(B, N, 3)`` reference cloud (padded batch).
        k: neighbours per query (``1 <= k <= lengths``).
        lengths: optional ``(B,)`` valid points per cloud; padding is never returned.

    Returns:
        ``KNN(dists (B, S, K) ascending squared distances, idx (B, S, K) int64)``.
    """
    check_points("query", query)
    check_points("points", points)
    if query.shape[0] != points.shape[0]:
        raise ValueError(f"query and points must share the batch size, got {query.shape[0]} and {points.shape[0]}")
    lengths = check_lengths(lengths, points)
    check_count("k", k, lengths, noun="points")
    if use_pytorch3d():  # pragma: no cover - no wheel on CI
        from pytorch3d.ops import knn_points as p3d_knn

        out = p3d_knn(query.float(), points.float(), lengths2=lengths, K=k, return_sorted=True)
        return KNN(out.dists.to(query.dtype), out.idx)
    return _knn_torch(query, points, k, lengths)


def _knn_torch(query: torch.Tensor, points: torch.Tensor, k: int, lengths: torch.Tensor) -> KNN:
    B, S, _ = query.shape
    N = points.shape[1]
    work = torch.float64 if query.dtype == torch.float64 else torch.float32
    q, p = query.to(work), points.to(work)
    pad = torch.arange(N, device=points.device).unsqueeze(0) >= lengths.unsqueeze(1)  # (B, N)
    chunk = max(1, _MAX_BLOCK_ELEMENTS // max(1, B * N))
    dists, idx = [], []
    for s0 in range(0, S, chunk):
        # Euclidean (not squared) distances rank the same and cdist's difference kernel is ~2x faster than ours.
        d = torch.cdist(q[:, s0 : s0 + chunk], p, compute_mode="donot_use_mm_for_euclid_dist")
        if pad.any():
            d.masked_fill_(pad.unsqueeze(1), float("inf"))
        dd, ii = d.topk(k, dim=-1, largest=False, sorted=True)
        dists.append(dd.square_())
        idx.append(ii)
    return KNN(torch.cat(dists, 1).to(query.dtype), torch.cat(idx, 1))


def knn_points_naive(query: torch.Tensor, points: torch.Tensor, k: int, lengths: Optional[torch.Tensor] = None) -> KNN:
    """Reference kNN: float64 distances, a full stable sort (ties to the lowest index). For tests only."""
    check_points("query", query)
    check_points("points", points)
    lengths = check_lengths(lengths, points)
    check_count("k", k, lengths)
    B, S, _ = query.shape
    dists = torch.zeros((B, S, k), dtype=torch.float64)
    idx = torch.zeros((B, S, k), dtype=torch.int64)
    for b in range(B):
        n = int(lengths[b])
        diff = query[b].double().cpu()[:, None, :] - points[b, :n].double().cpu()[None, :, :]
        d = (diff**2).sum(-1)
        order = torch.sort(d, dim=1, stable=True)
        dists[b] = order.values[:, :k]
        idx[b] = order.indices[:, :k]
    return KNN(dists.to(query.dtype).to(query.device), idx.to(query.device))


def knn_gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather neighbour features: ``x (B, N, C)``, ``idx (B, S, K)`` -> ``(B, S, K, C)``."""
    if x.dim() != 3 or idx.dim() != 3 or x.shape[0] != idx.shape[0]:
        raise ValueError(f"knn_gather expects x (B, N, C) and idx (B, S, K), got {tuple(x.shape)}, {tuple(idx.shape)}")
    B, S, K = idx.shape
    flat = idx.reshape(B, S * K, 1).expand(-1, -1, x.shape[-1])
    return torch.gather(x, 1, flat).reshape(B, S, K, x.shape[-1])
